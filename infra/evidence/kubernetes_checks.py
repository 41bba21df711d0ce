"""Checks for the claims the Kubernetes layer keeps, over the same stack view as every check.

Each reads the deployed objects through `infra.k8s.guarantees` (which reads NetworkPolicies,
RBAC and pod specs the way the cluster enforces them) and records, besides every violation at
its URN and path, what it examined when the promise holds: a check that saw nothing fails.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any, Callable

import yaml

from infra.evidence.policies import Recorder, check
from infra.evidence.view import StackView, thaw
from infra.k8s import guarantees
from infra.k8s.analysis import reachability
from infra.k8s.manifests import AUDIT_RETENTION_MONTHS, WORKSPACE_REGISTRATION_LABEL
from infra.naming import DATABASE_ROLE_ANNOTATION, WORKLOAD_IDENTITY_ANNOTATION
from infra.sql_migrations import SQL_DIR

KUBERNETES = "kubernetes:"
CONNECTOR_PREFIX = "connector-"


@dataclass(frozen=True)
class _Record:
    urn: str
    type: str
    inputs: dict[str, Any]


# Where the infrastructure lies (cluster endpoint, node and database ranges), for reachability.
INFRASTRUCTURE_TYPES = ("gcp:container/cluster:Cluster", "gcp:compute/subnetwork:Subnetwork", "gcp:compute/globalAddress:GlobalAddress")


def records_of(view: StackView) -> list[_Record]:
    """The view's Kubernetes objects and infrastructure ranges as plain records, as
    infra.k8s reads them."""
    return [_Record(r.urn, r.type, thaw(r.inputs)) for r in view.resources if r.type.startswith(KUBERNETES) or r.type in INFRASTRUCTURE_TYPES]


def _of(records: list[_Record], kind: str) -> list[_Record]:
    return [r for r in records if r.type.endswith(f":{kind}")]


def _named(records: list[_Record], kind: str, name: str) -> list[_Record]:
    return [r for r in _of(records, kind) if r.inputs["metadata"]["name"] == name]


def _report(view: StackView, e: Recorder, violations: list[guarantees.Violation], required: str, examined: list[tuple[str, str, Any]]) -> None:
    """Every violation fails at its place; with none, what was examined passes."""
    for v in violations:
        urn = v.urn if v.urn in view.by_urn else view.stack_urn
        e.record(urn, v.path, v.problem, required, False)
    if not violations:
        for urn, path, actual in examined:
            e.record(urn, path, actual, required, True)


def _sandbox_examined(records: list[_Record]) -> list[tuple[str, str, Any]]:
    examined = [(r.urn, "/spec/egress", r.inputs["spec"].get("egress")) for r in _named(records, "NetworkPolicy", "sandbox-egress")]
    template, pod = guarantees.sandbox_template(records)
    if pod is not None:
        examined.append((template.urn, "/data/pod.yaml", template.inputs["data"]["pod.yaml"]))
    return examined


def _not_here(view: StackView, e: Recorder, records: list[_Record], what: str) -> bool:
    """No sandbox template (the cell's) and no sandbox namespace (a workspace's) in this view:
    nothing of the promise to prove here."""
    if guarantees.sandbox_template(records)[1] is None and not _named(records, "ServiceAccount", guarantees.SANDBOX):
        e.not_applicable(f"this stack creates no {what}")
        return True
    return False


@check
def sandbox_pods_gvisor_ephemeral(view: StackView, e: Recorder) -> None:
    records = records_of(view)
    if guarantees.sandbox_template(records)[1] is None:
        e.not_applicable("this stack holds no sandbox pod template (a tenant's is its cell's, proven by the cell's evidence)")
        return
    _report(view, e, guarantees.sandbox_runtime(records), "gVisor, the sandbox pool, never restarted, a deadline, only size-limited emptyDirs", _sandbox_examined(records))


def _sandbox_check(name: str, guarantee: Callable[[list[_Record]], list[guarantees.Violation]], required: str, *, with_account: bool = False) -> None:
    """A check of one sandbox guarantee: not applicable where the stack has no sandbox; else
    every violation, or what was examined (its egress policy, its template, its account)."""

    def run(view: StackView, e: Recorder) -> None:
        records = records_of(view)
        if _not_here(view, e, records, "sandbox"):
            return
        accounts = [(r.urn, "", r.inputs) for r in _named(records, "ServiceAccount", guarantees.SANDBOX)] if with_account else []
        _report(view, e, guarantee(records), required, accounts + _sandbox_examined(records))

    run.__name__ = name
    check(run)


_sandbox_check("sandbox_holds_no_credentials", guarantees.sandbox_no_credentials, "no API token, no Google identity, no role binding, no secret or value from another object", with_account=True)
_sandbox_check("sandbox_egress_only_to_proxy", guarantees.sandbox_one_path_out, "the sandbox's only egress is the egress proxy on 3128/TCP; no resolver")
_sandbox_check("sandbox_cannot_reach_infrastructure", guarantees.sandbox_cannot_reach_infrastructure, "no path to nodes, metadata servers, the API server, Google APIs or the database")


@check
def no_kubernetes_secret_credentials(view: StackView, e: Recorder) -> None:
    records = records_of(view)
    violations = guarantees.no_kubernetes_secrets(records) + [
        v for v in guarantees.workload_hardening(records) if "Secret" in v.problem or "volume" in v.problem
    ]
    if not records:
        e.not_applicable("this stack creates no Kubernetes object")
        return
    examined = [(r.urn, "", r.type) for r in records if r.type.endswith((":Deployment", ":Job", ":CronJob", ":ServiceAccount"))]
    _report(view, e, violations, "no Kubernetes Secret; no pod reads one through env or volume", examined)


@check
def control_plane_paths_declared(view: StackView, e: Recorder) -> None:
    from infra.evidence.policies import _catalogue

    records = records_of(view)
    if not _of(records, "Namespace"):
        e.not_applicable("this stack creates no Kubernetes namespace")
        return
    declared = {(w.name, c.workload, c.port) for w in _catalogue().workloads for c in w.calls}
    violations = (
        guarantees.default_deny_everywhere(records)
        + guarantees.control_plane_paths_declared(records, declared)
        + guarantees.only_proxy_reaches_internet(records)
    )
    examined = [(r.urn, "/spec", r.inputs["spec"]) for r in _named(records, "NetworkPolicy", "default-deny")]
    _report(view, e, violations, "a default-deny policy in every namespace; every allowed path a declared call; the internet for the egress proxy alone", examined)


@check
def session_controller_rbac_minimal(view: StackView, e: Recorder) -> None:
    records = records_of(view)
    bindings = _of(records, "RoleBinding") + _of(records, "ClusterRoleBinding")
    if not bindings:
        e.not_applicable("this stack binds no Kubernetes role")
        return
    _report(
        view,
        e,
        guarantees.session_controller_rbac(records),
        "session controller: tokenreviews create, sandbox pods create/get/list/watch/delete; nobody: exec, attach, port-forward, secrets, escalate, bind, impersonate, wildcards",
        [(r.urn, "/subjects", r.inputs.get("subjects")) for r in bindings],
    )


def _migrations(records: list[_Record]) -> list[_Record]:
    return [r for r in _of(records, "ConfigMap") if r.inputs["metadata"]["name"].startswith("db-migrations-")]


_HEADER = re.compile(r"^-- perfloop-migration source-sha256=([0-9a-f]{64})$", re.M)


@check
def database_floor_migrations_applied(view: StackView, e: Recorder) -> None:
    """The SQL the Job applies is, byte for byte, the SQL the database tests prove (their
    sources' SHA-256), the floor is 13 months, and the migration Job mounts it."""
    records = records_of(view)
    config_maps = _migrations(records)
    if not config_maps and view.output("shape") == "tenant":
        e.not_applicable("tenant stack: the cell applies the database migrations and its evidence proves this")
        return
    if len(config_maps) != 1:
        e.record(view.stack_urn, "", [r.urn for r in config_maps], "exactly one migrations ConfigMap", False)
        return
    cm = config_maps[0]
    data = cm.inputs.get("data", {})
    for source in sorted(SQL_DIR.glob("[0-9][0-9][0-9]_*.sql*")):
        name = source.name.removesuffix(".j2")
        digest = hashlib.sha256(source.read_bytes()).hexdigest()
        found = _HEADER.search(data.get(name, ""))
        e.record(cm.urn, "", {"file": name, "source-sha256": found.group(1) if found else None}, f"{name} with source-sha256 {digest} (platform/sql/{source.name}, proven in tests/db)", bool(found) and found.group(1) == digest)
    floor = re.search(r"FUNCTION audit\.retention_floor_months\(\).*?RETURN\s+(\d+);", data.get("004_audit.sql", ""), re.S)
    e.record(cm.urn, "", {"audit.retention_floor_months()": int(floor.group(1)) if floor else None}, f"a retention floor of at least {AUDIT_RETENTION_MONTHS} months", bool(floor) and int(floor.group(1)) >= AUDIT_RETENTION_MONTHS)
    jobs = [j for j in _of(records, "Job") if any((v.get("configMap") or {}).get("name") == cm.inputs["metadata"]["name"] for v in j.inputs["spec"]["template"]["spec"].get("volumes", []))]
    e.record(cm.urn, "", {"mounted by": [j.urn for j in jobs]}, "mounted by the migration Job", bool(jobs))


@check
def cleanup_job_purge_only(view: StackView, e: Recorder) -> None:
    records = records_of(view)
    crons = _named(records, "CronJob", "audit-cleanup")
    if not crons and view.output("shape") == "tenant":
        e.not_applicable("tenant stack: the cell runs the audit cleanup and its evidence proves this")
        return
    if len(crons) != 1:
        e.record(view.stack_urn, "", [r.urn for r in crons], "exactly one audit-cleanup CronJob", False)
        return
    cron = crons[0]
    spec = cron.inputs["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    command = spec["containers"][0].get("command")
    e.record(cron.urn, "/spec/jobTemplate/spec/template/spec/containers/0/command", command, f"calls audit.purge_events({AUDIT_RETENTION_MONTHS}) and nothing else",
             command == ["psql", "--no-psqlrc", "--set=ON_ERROR_STOP=1", f"--command=SELECT audit.purge_events({AUDIT_RETENTION_MONTHS})"])
    account = _named(records, "ServiceAccount", spec.get("serviceAccountName", ""))
    role = (account[0].inputs["metadata"].get("annotations") or {}).get(DATABASE_ROLE_ANNOTATION) if account else None
    e.record(account[0].urn if account else cron.urn, "/metadata/annotations/perfloop.ai~1database-role", role, "= audit_cleanup", role == "audit_cleanup")
    sql = "\n".join(r.inputs.get("data", {}).get("004_audit.sql", "") for r in _migrations(records))
    grants = sorted(set(re.findall(r"GRANT\s+([^;]*?)\s+TO\s+[^;]*\baudit_cleanup\b", sql, re.S | re.I)))
    allowed = {"USAGE ON SCHEMA audit", "EXECUTE ON FUNCTION audit.purge_events(integer)"}
    cm = _migrations(records)
    e.record(cm[0].urn if cm else view.stack_urn, "", {"grants to audit_cleanup": grants}, f"audit_cleanup granted only {sorted(allowed)}", bool(grants) and {" ".join(g.split()) for g in grants} <= allowed)


@check
def connections_are_separate_grants(view: StackView, e: Recorder) -> None:
    """Nothing is connected unless configured, and each configured connection is its own
    connector, Kubernetes identity, Google identity and credential: revoking one (removing it
    from the stack) removes exactly those."""
    records = records_of(view)
    registrations = [r for r in _of(records, "ConfigMap") if (r.inputs["metadata"].get("labels") or {}).get(WORKSPACE_REGISTRATION_LABEL) == "true"]
    if not registrations:
        e.not_applicable("this stack has no workspace")
        return
    for registration in registrations:
        workspace = json.loads(registration.inputs["data"]["workspace.json"])
        configured = sorted(t["kind"] for t in workspace["policy"]["telemetry"])
        ws = workspace["workspace"]
        connectors = sorted(
            r.inputs["metadata"]["name"].removeprefix(CONNECTOR_PREFIX)
            for r in _of(records, "Deployment")
            if r.inputs["metadata"]["name"].startswith(CONNECTOR_PREFIX) and r.inputs["metadata"]["namespace"].endswith(f"-{ws}")
        )
        e.record(registration.urn, "/data/workspace.json", registration.inputs["data"]["workspace.json"], f"the connectors deployed for {ws} ({connectors}) are exactly its configured connections ({configured})", configured == connectors)
        identities = []
        for kind in connectors:
            for account in _named(records, "ServiceAccount", f"{CONNECTOR_PREFIX}{kind}"):
                if account.inputs["metadata"]["namespace"].endswith(f"-{ws}"):
                    email = (account.inputs["metadata"].get("annotations") or {}).get(WORKLOAD_IDENTITY_ANNOTATION)
                    identities.append(email)
                    e.record(account.urn, "/metadata/annotations/iam.gke.io~1gcp-service-account", email, f"the {kind} connection's own Google identity (pf-{ws}-{kind})", isinstance(email, str) and email.startswith(f"pf-{ws}-{kind}@"))
        e.record(registration.urn, "", identities, "no two connections share an identity", len(identities) == len(set(identities)))
