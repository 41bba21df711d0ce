"""The estimated critical path of a first `pulumi up`, read from the offline plan's resource graph.

A resource starts when everything it waits for is done: its `dependencies`, its parent (the engine
creates a child after its parent) and its provider. It then takes the latency of its type from
LATENCY below; component resources and the stack cost nothing. The longest chain is the critical
path: a lower bound on the update's wall time, since it assumes unlimited parallelism (Pulumi runs
independent steps concurrently), no API quota waits, no per-instance serialisation (Cloud SQL
runs one operation per instance at a time; the GCP provider serialises IAM edits of one policy)
and no fixed start-up (language host, program imports, backend round trips). Reports; asserts nothing.

    python -m benchmarks.critical_path [--stack tenant-acme --stack cell-example ...]
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from infra.engine import Plan, PlannedResource, plan_stack

# Seconds to create one resource of a type, and why. Typical values from GCP's and Kubernetes'
# behaviour, not measurements: they matter relative to each other.
LATENCY: dict[str, tuple[float, str]] = {
    "pulumi:providers:gcp": (2, "starts the provider plugin and configures it; no API call"),
    "pulumi:providers:kubernetes": (2, "starts the plugin and reads the cluster's API discovery"),
    # project and network
    "gcp:projects/service:Service": (45, "enabling an API is a long-running operation, typically 30–60 s"),
    "gcp:compute/network:Network": (25, "a global insert operation, ~20–30 s"),
    "gcp:compute/subnetwork:Subnetwork": (20, "a regional operation, secondary ranges included"),
    "gcp:compute/router:Router": (15, "a regional operation"),
    "gcp:compute/routerNat:RouterNat": (20, "a patch of the router: another regional operation"),
    "gcp:compute/route:Route": (12, "a global operation"),
    "gcp:compute/firewall:Firewall": (12, "a global operation"),
    "gcp:compute/globalAddress:GlobalAddress": (12, "a global operation reserving the private services range"),
    "gcp:servicenetworking/connection:Connection": (90, "peering with Google's service producer network, ~1–2 min"),
    "gcp:dns/managedZone:ManagedZone": (4, "a synchronous Cloud DNS call"),
    "gcp:dns/recordSet:RecordSet": (4, "a Cloud DNS change, applied in seconds"),
    # GKE
    "gcp:container/cluster:Cluster": (600, "a regional private cluster takes ~8–12 min to reach RUNNING"),
    "gcp:container/nodePool:NodePool": (300, "VMs in three zones, booted, registered and Ready: ~4–6 min"),
    # Cloud SQL
    "gcp:sql/databaseInstance:DatabaseInstance": (720, "a private-IP, HA instance with backups: ~10–15 min"),
    "gcp:sql/database:Database": (15, "an Admin API operation on the instance"),
    "gcp:sql/user:User": (15, "an Admin API operation on the instance"),
    # identity, secrets, logging
    "gcp:serviceaccount/account:Account": (2, "synchronous; the provider re-reads until the new account is visible"),
    "gcp:serviceaccount/iAMBinding:IAMBinding": (8, "read-modify-write of the account's IAM policy, then propagation"),
    "gcp:projects/iAMMember:IAMMember": (8, "read-modify-write of the project's IAM policy, then propagation"),
    "gcp:projects/iAMAuditConfig:IAMAuditConfig": (8, "also a read-modify-write of the project's IAM policy"),
    "gcp:secretmanager/secret:Secret": (1, "one synchronous call; no long-running operation"),
    "gcp:secretmanager/secretIamBinding:SecretIamBinding": (8, "read-modify-write of the secret's IAM policy, then propagation"),
    "gcp:logging/projectBucketConfig:ProjectBucketConfig": (5, "synchronous; the bucket exists when the call returns"),
    "gcp:logging/projectSink:ProjectSink": (3, "synchronous create"),
    # Kubernetes: an API write unless the provider awaits readiness for the kind
    "kubernetes:core/v1:Namespace": (1, "an API write; Active at once"),
    "kubernetes:core/v1:ServiceAccount": (1, "an API write"),
    "kubernetes:core/v1:ConfigMap": (1, "an API write"),
    "kubernetes:core/v1:LimitRange": (1, "an API write"),
    "kubernetes:core/v1:ResourceQuota": (1, "an API write; the quota controller fills status within a second"),
    "kubernetes:networking.k8s.io/v1:NetworkPolicy": (1, "an API write; the dataplane enforces it seconds later"),
    "kubernetes:rbac.authorization.k8s.io/v1:Role": (1, "an API write"),
    "kubernetes:rbac.authorization.k8s.io/v1:RoleBinding": (1, "an API write"),
    "kubernetes:rbac.authorization.k8s.io/v1:ClusterRole": (1, "an API write"),
    "kubernetes:rbac.authorization.k8s.io/v1:ClusterRoleBinding": (1, "an API write"),
    "kubernetes:policy/v1:PodDisruptionBudget": (1, "an API write"),
    "kubernetes:batch/v1:CronJob": (1, "not awaited: done once stored"),
    "kubernetes:apps/v1:Deployment": (60, "awaited until Available: scheduling, image pull, readiness probes"),
    "kubernetes:core/v1:Service": (60, "awaited until its endpoints are ready (its pods' rollout), plus 10 s for stragglers"),
    "kubernetes:batch/v1:Job": (90, "awaited until Complete: image pull, then the run (migrations)"),
}
# A type missing from LATENCY is costed at this and named in the report, so the table is extended.
DEFAULT_LATENCY = 10.0


@dataclass(frozen=True)
class Step:
    resource: PlannedResource
    cost: float
    start: float

    @property
    def finish(self) -> float:
        return self.start + self.cost


def cost(resource: PlannedResource) -> float:
    if not resource.custom:  # components and the stack: bookkeeping, no API call
        return 0.0
    return LATENCY.get(resource.type, (DEFAULT_LATENCY, ""))[0]


def critical_path(plan: Plan) -> list[Step]:
    """The longest chain of waits, first step first."""
    by_urn = {r.urn: r for r in plan.resources}
    steps: dict[str, Step] = {}
    via: dict[str, str] = {}  # the predecessor whose finish a step waited for

    def step(urn: str) -> Step:
        if urn not in steps:
            resource = by_urn[urn]
            waits = [u for u in (*resource.dependencies, resource.parent, resource.provider) if u in by_urn]
            start = 0.0
            for predecessor in waits:
                if step(predecessor).finish > start:
                    start, via[urn] = step(predecessor).finish, predecessor
            steps[urn] = Step(resource, cost(resource), start)
        return steps[urn]

    last = max((step(urn) for urn in by_urn), key=lambda s: s.finish)
    path, urn = [last], last.resource.urn
    while urn in via:
        urn = via[urn]
        path.append(steps[urn])
    return path[::-1]


def report(plan: Plan) -> str:
    path = critical_path(plan)
    total = path[-1].finish
    lines = [f"{plan.stack}: {len(plan.resources)} resources; critical path {_minutes(total)} (components omitted, cost 0)"]
    lines += [
        f"  {_minutes(s.start):>8} +{s.cost:>4.0f} s  {s.resource.type}  {s.resource.name}"
        for s in path
        if s.cost
    ]
    unknown = sorted({r.type for r in plan.resources if r.custom and r.type not in LATENCY})
    if unknown:
        lines.append(f"  types without a latency (costed {DEFAULT_LATENCY:.0f} s; add them to LATENCY): {', '.join(unknown)}")
    return "\n".join(lines) + "\n"


def _minutes(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stack", action="append", help="stack to report (repeatable; default: tenant-acme, cell-example, byoc-example)")
    args = parser.parse_args()
    for stack in args.stack or ["tenant-acme", "cell-example", "byoc-example"]:
        print(report(plan_stack(stack)))
    print("latency per type:")
    for type_, (seconds, why) in LATENCY.items():
        print(f"  {seconds:>4g} s  {type_}: {why}")


if __name__ == "__main__":
    main()
