"""What the NetworkPolicies actually allow, computed from the manifests alone.

This reads the policies the way the cluster enforces them (Kubernetes NetworkPolicy semantics,
as Dataplane V2 applies them after Service address translation), not the catalogue that produced
them, so a policy edited by hand or mutated in a test shows up here as a changed edge.

Inputs are plain resource records (`type`, `inputs`) from an offline plan or a `pulumi stack
export`, so the same analysis backs `plan --show network`, the claims and the evidence.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any, Iterable, Optional

import yaml

from infra.naming import NAME_LABEL, NAMESPACE_NAME_LABEL

INTERNET = "internet"
POD_TEMPLATE_KINDS = ("Deployment", "Job", "CronJob")


@dataclass(frozen=True)
class Endpoint:
    """A place a connection can go: a workload's pods, or a network destination outside them."""

    name: str
    namespace: Optional[str]  # None for destinations outside the cluster's pods
    labels: tuple[tuple[str, str], ...] = ()
    ip: Optional[str] = None
    ports: tuple[tuple[str, int], ...] = ()  # (protocol, port) it listens on


@dataclass(frozen=True)
class Edge:
    source: str
    source_namespace: str
    destination: str
    destination_namespace: Optional[str]
    protocol: str
    port: int


@dataclass
class Cluster:
    pods: list[Endpoint] = field(default_factory=list)
    namespace_labels: dict[str, dict[str, str]] = field(default_factory=dict)
    policies: list[dict[str, Any]] = field(default_factory=list)
    external: list[Endpoint] = field(default_factory=list)


def _kind(resource_type: str) -> str:
    return resource_type.rsplit(":", 1)[-1]


def _ports(pod_spec: dict[str, Any]) -> tuple[tuple[str, int], ...]:
    return tuple(
        sorted({(p.get("protocol", "TCP"), p["containerPort"]) for c in pod_spec.get("containers", []) for p in c.get("ports", [])})
    )


def _pod_template(kind: str, manifest: dict[str, Any]) -> dict[str, Any]:
    spec = manifest.get("spec", {})
    if kind == "CronJob":
        spec = spec.get("jobTemplate", {}).get("spec", {})
    return spec.get("template", {})


def infrastructure(resources: Iterable[Any]) -> list[Endpoint]:
    """Representative addresses of what lies outside the pods, read from the GCP resources."""
    endpoints = [
        Endpoint(INTERNET, None, ip="1.1.1.1", ports=(("TCP", 443), ("TCP", 80), ("UDP", 53))),
        Endpoint("metadata-server", None, ip="169.254.169.254", ports=(("TCP", 80),)),
        Endpoint("gke-metadata-server", None, ip="169.254.169.252", ports=(("TCP", 988),)),
        Endpoint("google-apis", None, ip="199.36.153.8", ports=(("TCP", 443),)),
    ]
    for r in resources:
        kind, inputs = _kind(r.type), r.inputs
        if kind == "Cluster" and r.type.startswith("gcp:"):
            cidr = inputs.get("privateClusterConfig", {}).get("masterIpv4CidrBlock")
            if cidr:
                endpoints.append(Endpoint("kubernetes-api", None, ip=str(ipaddress.ip_network(cidr)[2]), ports=(("TCP", 443),)))
        elif kind == "Subnetwork":
            endpoints.append(Endpoint("nodes", None, ip=str(ipaddress.ip_network(inputs["ipCidrRange"])[2]), ports=(("TCP", 10250), ("TCP", 22))))
        elif kind == "GlobalAddress" and inputs.get("purpose") == "VPC_PEERING":
            network = ipaddress.ip_network(f"{inputs['address']}/{inputs['prefixLength']}")
            endpoints.append(Endpoint("cloud-sql", None, ip=str(network[2]), ports=(("TCP", 3307), ("TCP", 5432))))
    return endpoints


def load_cluster(resources: Iterable[Any]) -> Cluster:
    resources = list(resources)
    cluster = Cluster(external=infrastructure(resources))
    templates: list[dict[str, Any]] = []
    service_accounts: list[tuple[str, str]] = []
    for r in resources:
        if not r.type.startswith("kubernetes:"):
            continue
        kind, m = _kind(r.type), r.inputs
        meta = m.get("metadata", {})
        if kind == "Namespace":
            cluster.namespace_labels[meta["name"]] = {**meta.get("labels", {}), NAMESPACE_NAME_LABEL: meta["name"]}
        elif kind == "NetworkPolicy":
            cluster.policies.append(m)
        elif kind in POD_TEMPLATE_KINDS:
            template = _pod_template(kind, m)
            labels = template.get("metadata", {}).get("labels", {})
            cluster.pods.append(
                Endpoint(labels.get(NAME_LABEL, meta["name"]), meta.get("namespace", "default"), tuple(sorted(labels.items())), ports=_ports(template.get("spec", {})))
            )
        elif kind == "ConfigMap" and "pod.yaml" in m.get("data", {}):
            templates.append(yaml.safe_load(m["data"]["pod.yaml"]))
        elif kind == "ServiceAccount":
            service_accounts.append((meta.get("namespace", "default"), meta["name"]))
    # A pod template runs in every namespace that holds the service account it names.
    for pod in templates:
        labels = pod.get("metadata", {}).get("labels", {})
        account = pod.get("spec", {}).get("serviceAccountName")
        for namespace, name in service_accounts:
            if name == account and name == labels.get(NAME_LABEL):
                cluster.pods.append(Endpoint(labels[NAME_LABEL], namespace, tuple(sorted(labels.items())), ports=_ports(pod.get("spec", {}))))
    # kube-dns lives in kube-system, which the platform does not manage.
    cluster.namespace_labels.setdefault("kube-system", {NAMESPACE_NAME_LABEL: "kube-system"})
    cluster.pods.append(Endpoint("kube-dns", "kube-system", (("k8s-app", "kube-dns"),), ports=(("TCP", 53), ("UDP", 53))))
    return cluster


def _selects(selector: Optional[dict[str, Any]], labels: dict[str, str]) -> bool:
    if selector is None:
        return False
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], expr.get("values") or []
        present = key in labels
        if (op == "In" and (not present or labels[key] not in values)) or (op == "NotIn" and present and labels[key] in values):
            return False
        if (op == "Exists" and not present) or (op == "DoesNotExist" and present):
            return False
    return True


def _peer_matches(peer: dict[str, Any], policy_namespace: str, target: Endpoint, cluster: Cluster) -> bool:
    if "ipBlock" in peer:
        if target.ip is None:
            return False  # pod traffic is matched by selectors; pods have no stable address
        address = ipaddress.ip_address(target.ip)
        block = peer["ipBlock"]
        return address in ipaddress.ip_network(block["cidr"]) and not any(address in ipaddress.ip_network(e) for e in block.get("except", []))
    if target.namespace is None:
        return False  # selectors match pods only
    if "namespaceSelector" in peer:
        if not _selects(peer["namespaceSelector"], cluster.namespace_labels.get(target.namespace, {})):
            return False
    elif target.namespace != policy_namespace:
        return False
    return _selects(peer.get("podSelector", {}), dict(target.labels)) if "podSelector" in peer else True


def _port_matches(rule_ports: Optional[list[dict[str, Any]]], protocol: str, port: int) -> bool:
    if not rule_ports:
        return True
    for p in rule_ports:
        if p.get("protocol", "TCP") == protocol and ("port" not in p or p["port"] == port or (p.get("endPort") and p["port"] <= port <= p["endPort"])):
            return True
    return False


def _allowed(direction: str, subject: Endpoint, other: Endpoint, protocol: str, port: int, cluster: Cluster) -> bool:
    """Is `subject`'s side of the connection allowed (egress for the source, ingress for the
    destination)? Not selected by any policy of that type: allowed (Kubernetes' default)."""
    policy_type, rules_key, peers_key = (
        ("Egress", "egress", "to") if direction == "egress" else ("Ingress", "ingress", "from")
    )
    selected = False
    for policy in cluster.policies:
        namespace = policy["metadata"].get("namespace", "default")
        spec = policy.get("spec", {})
        if namespace != subject.namespace or policy_type not in spec.get("policyTypes", ["Ingress"]):
            continue
        if not _selects(spec.get("podSelector", {}), dict(subject.labels)):
            continue
        selected = True
        for rule in spec.get(rules_key) or []:
            peers = rule.get(peers_key)
            if (not peers or any(_peer_matches(p, namespace, other, cluster) for p in peers)) and _port_matches(rule.get("ports"), protocol, port):
                return True
    return not selected


def reachability(resources: Iterable[Any]) -> list[Edge]:
    """Every (source workload, destination, port) a connection may be opened on."""
    cluster = load_cluster(resources)
    edges: set[Edge] = set()
    for source in cluster.pods:
        if source.name == "kube-dns":
            continue
        for target in cluster.pods + cluster.external:
            if target == source:
                continue
            for protocol, port in target.ports:
                if not _allowed("egress", source, target, protocol, port, cluster):
                    continue
                if target.namespace is not None and not _allowed("ingress", target, source, protocol, port, cluster):
                    continue
                edges.add(Edge(source.name, source.namespace, target.name, target.namespace, protocol, port))
    return sorted(edges, key=lambda e: (e.source_namespace, e.source, e.destination_namespace or "~", e.destination, e.protocol, e.port))


@dataclass(frozen=True)
class RbacGrant:
    """One rule bound to one service account: where it applies ("cluster" or a namespace), and
    the binding and role that grant it."""

    subject: tuple[str, str]  # (namespace, service account)
    scope: str
    api_groups: tuple[str, ...]
    resources: tuple[str, ...]
    verbs: tuple[str, ...]
    binding_urn: str
    role_urn: str


def rbac_grants(resources: Iterable[Any]) -> list[RbacGrant]:
    """Every RBAC rule each service account holds, resolved through its bindings. A binding to a
    role that is not part of the stack grants an unknown set: it is reported with no rules."""
    resources = list(resources)
    roles = {}
    for r in resources:
        kind = _kind(r.type)
        if r.type.startswith("kubernetes:") and kind in ("Role", "ClusterRole"):
            meta = r.inputs["metadata"]
            roles[(kind, meta.get("namespace") if kind == "Role" else None, meta["name"])] = r
    out = []
    for r in resources:
        kind = _kind(r.type)
        if not (r.type.startswith("kubernetes:") and kind in ("RoleBinding", "ClusterRoleBinding")):
            continue
        ref = r.inputs["roleRef"]
        scope = r.inputs["metadata"].get("namespace") if kind == "RoleBinding" else None
        role = roles.get((ref["kind"], scope if ref["kind"] == "Role" else None, ref["name"]))
        rules = role.inputs.get("rules", []) if role is not None else [{"apiGroups": ["?"], "resources": [f"unresolved role {ref['name']}"], "verbs": ["?"]}]
        for subject in r.inputs.get("subjects", []):
            if subject.get("kind") != "ServiceAccount":
                continue
            for rule in rules:
                out.append(
                    RbacGrant(
                        (subject.get("namespace") or scope or "default", subject["name"]),
                        scope or "cluster",
                        tuple(rule.get("apiGroups", [])),
                        tuple(rule.get("resources", [])),
                        tuple(sorted(rule.get("verbs", []))),
                        r.urn,
                        role.urn if role is not None else "",
                    )
                )
    return out


def render_reachability(edges: list[Edge]) -> str:
    rows: dict[tuple[str, str], list[str]] = {}
    for e in edges:
        where = f"{e.destination}.{e.destination_namespace}" if e.destination_namespace else e.destination
        rows.setdefault((e.source_namespace, e.source), []).append(f"{where}:{e.port}/{e.protocol}")
    width = max((len(f"{ns}/{src}") for ns, src in rows), default=10)
    lines = [f"{'source':<{width}}  may open connections to", f"{'-' * width}  {'-' * 40}"]
    for (ns, src), dests in sorted(rows.items()):
        lines.append(f"{ns + '/' + src:<{width}}  {', '.join(dests)}")
    internet = sorted({f"{e.source_namespace}/{e.source}" for e in edges if e.destination == INTERNET})
    lines.append(f"reaches the internet: {', '.join(internet) or 'nothing'}")
    return "\n".join(lines) + "\n"
