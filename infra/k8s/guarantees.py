"""The Kubernetes layer's guarantees, checked on deployed objects (plan or state records).

Each function returns the violations it finds — (URN, JSON pointer, what is wrong) — and an empty
list when its guarantee holds. They read the resources, not the catalogue: a hand edit, a drifted
object or a mutated manifest is caught the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

import yaml

from infra.k8s.analysis import INTERNET, rbac_grants, reachability
from infra.catalogue import EGRESS_PROXY
from infra.naming import NAME_LABEL, POOL_LABEL, WORKLOAD_IDENTITY_ANNOTATION

PROXY_NAMESPACE = "perfloop-egress"
PROXY_PORT = 3128
SANDBOX = "sandbox"
SESSION_CONTROLLER = "session-controller"
SANDBOX_TEMPLATE = "sandbox-pod-template"
# The exact RBAC of the session controller: verify callers, manage sandbox pods. Nothing else.
CONTROLLER_RULES = {
    ("cluster", "authentication.k8s.io", "tokenreviews", ("create",)),
    ("sandbox", "", "pods", ("create", "delete", "get", "list", "watch")),
}
# Never granted to anyone: ways into other workloads, escalation, and credentials.
DANGEROUS_RESOURCES = {"*", "secrets", "pods/exec", "pods/attach", "pods/portforward", "serviceaccounts/token", "roles", "clusterroles", "rolebindings", "clusterrolebindings"}
DANGEROUS_VERBS = {"*", "escalate", "bind", "impersonate"}
REQUIRED_CONTAINER_SECURITY = {
    "runAsNonRoot": True,
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}


@dataclass(frozen=True)
class Violation:
    urn: str
    path: str
    problem: str


def _kind(r: Any) -> str:
    return r.type.rsplit(":", 1)[-1] if r.type.startswith("kubernetes:") else ""


def _of(resources: Iterable[Any], *kinds: str) -> list[Any]:
    return [r for r in resources if _kind(r) in kinds]


def _urn(resources: Iterable[Any], kind: str, name: str, namespace: str | None = None, default: str = "") -> str:
    for r in _of(resources, kind):
        meta = r.inputs["metadata"]
        if meta["name"] == name and (namespace is None or meta.get("namespace") == namespace):
            return r.urn
    return default or f"{kind}/{namespace + '/' if namespace else ''}{name}"


def sandbox_template(resources: Iterable[Any]) -> tuple[Any, dict[str, Any]] | tuple[None, None]:
    for r in _of(resources, "ConfigMap"):
        if r.inputs["metadata"]["name"] == SANDBOX_TEMPLATE:
            return r, yaml.safe_load(r.inputs["data"]["pod.yaml"])
    return None, None


def _sandbox_namespaces(resources: list[Any]) -> set[str]:
    return {r.inputs["metadata"]["namespace"] for r in _of(resources, "ServiceAccount") if r.inputs["metadata"]["name"] == SANDBOX}


def _proxy_peer_only(rule: dict[str, Any]) -> bool:
    """An egress rule that allows the egress proxy's pods, on the proxy port, and nothing else."""
    peers = rule.get("to") or []
    return bool(peers) and all(
        set(p) == {"podSelector", "namespaceSelector"}
        and dict(p["podSelector"].get("matchLabels") or {}) == {NAME_LABEL: EGRESS_PROXY}
        and not p["podSelector"].get("matchExpressions")
        and dict(p["namespaceSelector"].get("matchLabels") or {}) == {"kubernetes.io/metadata.name": PROXY_NAMESPACE}
        and not p["namespaceSelector"].get("matchExpressions")
        for p in peers
    ) and [dict(x) for x in rule.get("ports") or []] == [{"protocol": "TCP", "port": PROXY_PORT}]


def sandbox_one_path_out(resources: list[Any]) -> list[Violation]:
    """Sandboxes open connections to the egress proxy and nothing else — no DNS, no metadata
    server, no API server, no nodes, no database, no other pod, no internet. Checked twice: on
    the rules themselves (every egress rule selecting sandbox pods names the proxy alone), and on
    the reachability they add up to wherever the proxy's pods are part of the stack."""
    out = []
    namespaces = _sandbox_namespaces(resources)
    for r in _of(resources, "NetworkPolicy"):
        meta, spec = r.inputs["metadata"], r.inputs.get("spec", {})
        if meta.get("namespace") not in namespaces or "Egress" not in spec.get("policyTypes", []):
            continue
        selector = spec.get("podSelector") or {}
        if (selector.get("matchLabels") or {}) not in ({}, {NAME_LABEL: SANDBOX}) or selector.get("matchExpressions"):
            continue
        for i, rule in enumerate(spec.get("egress") or []):
            if not _proxy_peer_only(rule):
                out.append(Violation(r.urn, f"/spec/egress/{i}", "a sandbox egress rule allows more than the egress proxy on its port"))
    if any(_kind(r) == "Deployment" and r.inputs["metadata"]["name"] == EGRESS_PROXY for r in resources):
        edges = [e for e in reachability(resources) if e.source == SANDBOX]
        reached = {e.source_namespace for e in edges if (e.destination, e.port) == (EGRESS_PROXY, PROXY_PORT)}
        for e in edges:
            if (e.destination, e.port) != (EGRESS_PROXY, PROXY_PORT):
                out.append(Violation(_urn(resources, "NetworkPolicy", "sandbox-egress", e.source_namespace), "/spec/egress", f"sandbox may reach {e.destination}:{e.port}/{e.protocol}"))
        for namespace in sorted(namespaces - reached):
            out.append(Violation(_urn(resources, "NetworkPolicy", "sandbox-egress", namespace), "/spec/egress", "sandbox cannot reach the egress proxy"))
    urn, pod = sandbox_template(resources)
    if pod is not None:
        spec = pod["spec"]
        if spec.get("dnsPolicy") != "None" or (spec.get("dnsConfig") or {}).get("nameservers") != ["127.0.0.1"]:
            out.append(Violation(urn.urn, "/data/pod.yaml#/spec/dnsPolicy", "the sandbox has a resolver; DNS must go through the proxy"))
        if spec.get("hostNetwork"):
            out.append(Violation(urn.urn, "/data/pod.yaml#/spec/hostNetwork", "the sandbox shares the node's network"))
    return out


def sandbox_cannot_reach_infrastructure(resources: list[Any]) -> list[Violation]:
    """No sandbox edge to the node, its metadata servers, the API server, Google APIs or the
    database (all also ruled out by the one-path-out rules; this reports them by name)."""
    infrastructure = {"metadata-server", "gke-metadata-server", "kubernetes-api", "nodes", "cloud-sql", "google-apis"}
    return [
        Violation(_urn(resources, "NetworkPolicy", "sandbox-egress", e.source_namespace), "/spec/egress", f"sandbox may reach {e.destination}:{e.port}")
        for e in reachability(resources)
        if e.source == SANDBOX and e.destination in infrastructure
    ]


def only_proxy_reaches_internet(resources: list[Any]) -> list[Violation]:
    return [
        Violation(_urn(resources, "NetworkPolicy", f"{e.source}-egress", e.source_namespace), "/spec/egress", f"{e.source} reaches the internet on {e.port}/{e.protocol}")
        for e in reachability(resources)
        if e.destination == INTERNET and e.source != EGRESS_PROXY
    ]


def control_plane_paths_declared(resources: list[Any], declared: set[tuple[str, str, int]]) -> list[Violation]:
    """Every pod-to-pod connection the policies allow is one declared call (source, destination,
    port); DNS goes to kube-dns only."""
    out = []
    for e in reachability(resources):
        if e.destination_namespace is None or e.destination == "kube-dns":
            continue
        if (e.source, e.destination, e.port) not in declared:
            out.append(Violation(_urn(resources, "NetworkPolicy", f"{e.source}-egress", e.source_namespace), "/spec/egress", f"undeclared path {e.source} -> {e.destination}:{e.port}"))
    return out


def default_deny_everywhere(resources: list[Any]) -> list[Violation]:
    """Every platform namespace denies all ingress and egress unless a declared edge allows it."""
    denied: set[str] = set()
    for r in _of(resources, "NetworkPolicy"):
        spec = r.inputs.get("spec", {})
        if spec.get("podSelector") in ({}, None) and set(spec.get("policyTypes", [])) == {"Ingress", "Egress"} and not spec.get("ingress") and not spec.get("egress"):
            denied.add(r.inputs["metadata"]["namespace"])
    return [
        Violation(r.urn, "/metadata/name", f"namespace {r.inputs['metadata']['name']} has no default-deny NetworkPolicy")
        for r in _of(resources, "Namespace")
        if r.inputs["metadata"]["name"] not in denied
    ]


def pod_security_restricted(resources: list[Any]) -> list[Violation]:
    return [
        Violation(r.urn, "/metadata/labels/pod-security.kubernetes.io~1enforce", "Pod Security Admission is not enforcing 'restricted'")
        for r in _of(resources, "Namespace")
        if r.inputs["metadata"].get("labels", {}).get("pod-security.kubernetes.io/enforce") != "restricted"
    ]


def service_account_tokens(resources: list[Any]) -> list[Violation]:
    """No API token unless the workload is bound to RBAC; Workload Identity only on workloads that
    have a Google identity, never on the sandbox."""
    bound = {
        (s.get("namespace"), s["name"])
        for r in _of(resources, "RoleBinding", "ClusterRoleBinding")
        for s in r.inputs.get("subjects", [])
        if s.get("kind") == "ServiceAccount"
    }
    out = [
        Violation(r.urn, "/automountServiceAccountToken", f"{r.inputs['metadata']['name']} mounts an API token it has no use for")
        for r in _of(resources, "ServiceAccount")
        if r.inputs.get("automountServiceAccountToken", True) and (r.inputs["metadata"]["namespace"], r.inputs["metadata"]["name"]) not in bound
    ]
    return out + sandbox_no_credentials(resources)


def session_controller_rbac(resources: list[Any]) -> list[Violation]:
    """The session controller holds exactly: create TokenReviews; create/get/list/watch/delete
    pods in sandbox namespaces (a tenant stack, which holds only its own sandbox namespace's
    part, holds a subset). No other workload may create pods, and nobody holds a wildcard, an
    escalation verb, secrets or a way into another pod."""
    sandbox_namespaces = _sandbox_namespaces(resources)
    held: dict[tuple[str, str], set[tuple[str, str, str, tuple[str, ...]]]] = {}
    urns: dict[tuple[str, str], str] = {}
    out = []
    for g in rbac_grants(resources):
        scope = "sandbox" if g.scope in sandbox_namespaces else g.scope
        keys = {(scope, group, resource, g.verbs) for group in g.api_groups for resource in g.resources}
        held.setdefault(g.subject, set()).update(keys)
        urns.setdefault(g.subject, g.role_urn or g.binding_urn)
        if g.subject[1] == SESSION_CONTROLLER:
            continue
        for _, _, resource, verbs in sorted(keys):
            if resource in DANGEROUS_RESOURCES or DANGEROUS_VERBS & set(verbs) or (resource == "pods" and "create" in verbs):
                out.append(Violation(g.role_urn or g.binding_urn, "/rules", f"{'/'.join(g.subject)} holds {', '.join(verbs)} on {resource} ({g.scope})"))
    controller_here = any(r.inputs["metadata"]["name"] == SESSION_CONTROLLER for r in _of(resources, "ServiceAccount"))
    for subject, granted in held.items():
        if subject[1] != SESSION_CONTROLLER:
            continue
        # All of it where the controller and a sandbox namespace are both part of the stack; a
        # cell without workspaces, or a tenant, holds its part.
        exact = granted == CONTROLLER_RULES if controller_here and sandbox_namespaces else granted <= CONTROLLER_RULES
        if not exact:
            out.append(Violation(urns[subject], "/rules", f"session controller holds {sorted(granted)}, not exactly {sorted(CONTROLLER_RULES)}"))
    if controller_here and not any(s[1] == SESSION_CONTROLLER for s in held):
        out.append(Violation(_urn(resources, "ServiceAccount", SESSION_CONTROLLER), "", "the session controller holds no RBAC: it cannot verify callers or manage sandboxes"))
    return out


def _pod_specs(resources: list[Any]) -> list[tuple[str, str, dict[str, Any]]]:
    specs = []
    for r in _of(resources, "Deployment", "Job"):
        specs.append((r.urn, "/spec/template/spec", r.inputs["spec"]["template"]["spec"]))
    for r in _of(resources, "CronJob"):
        specs.append((r.urn, "/spec/jobTemplate/spec/template/spec", r.inputs["spec"]["jobTemplate"]["spec"]["template"]["spec"]))
    urn, pod = sandbox_template(resources)
    if pod is not None:
        specs.append((urn.urn, "/data/pod.yaml#/spec", pod["spec"]))
    return specs


def workload_hardening(resources: list[Any]) -> list[Violation]:
    """Every container: non-root, read-only root, no escalation, no capabilities, RuntimeDefault
    seccomp, requests and limits; images by digest; no secret material in env or volumes."""
    out = []
    for urn, base, spec in _pod_specs(resources):
        if spec.get("securityContext", {}).get("runAsNonRoot") is not True:
            out.append(Violation(urn, f"{base}/securityContext/runAsNonRoot", "pod may run as root"))
        if spec.get("hostNetwork") or spec.get("hostPID") or spec.get("hostIPC"):
            out.append(Violation(urn, base, "pod shares a host namespace"))
        for volume in spec.get("volumes", []):
            if not set(volume) - {"name"} <= {"emptyDir", "configMap"}:
                out.append(Violation(urn, f"{base}/volumes", f"volume {volume['name']} is not an emptyDir or a platform ConfigMap"))
        for group in ("initContainers", "containers"):
            for i, c in enumerate(spec.get(group, [])):
                where = f"{base}/{group}/{i}"
                security = c.get("securityContext", {})
                for key, value in REQUIRED_CONTAINER_SECURITY.items():
                    if security.get(key) != value:
                        out.append(Violation(urn, f"{where}/securityContext/{key}", f"{c['name']}: {key} is {security.get(key)!r}, must be {value!r}"))
                limits = c.get("resources", {})
                if not (limits.get("requests", {}).get("cpu") and limits.get("limits", {}).get("memory")):
                    out.append(Violation(urn, f"{where}/resources", f"{c['name']} has no requests or limits"))
                if "@sha256:" not in c.get("image", ""):
                    out.append(Violation(urn, f"{where}/image", f"{c['name']} image is not pinned by digest"))
                for j, env in enumerate(c.get("env", [])):
                    if "valueFrom" in env and "secretKeyRef" in env["valueFrom"]:
                        out.append(Violation(urn, f"{where}/env/{j}", f"{c['name']} reads a Kubernetes Secret"))
    return out


def no_kubernetes_secrets(resources: list[Any]) -> list[Violation]:
    """Master keys and credentials live in Secret Manager; no Kubernetes Secret holds one."""
    return [Violation(r.urn, "", "a Kubernetes Secret is part of the platform") for r in resources if _kind(r) == "Secret"]


def sandbox_runtime(resources: list[Any]) -> list[Violation]:
    """The sandbox pod: gVisor, on the sandbox pool, never restarted, with a deadline, and no
    storage but size-limited emptyDirs: destroyed with the session."""
    urn, pod = sandbox_template(resources)
    if pod is None:
        # The template is the cell's; a tenant's view without it is judged by the cell's evidence.
        return []
    spec, u, base = pod["spec"], urn.urn, "/data/pod.yaml#/spec"
    required = {"runtimeClassName": "gvisor", "restartPolicy": "Never", "nodeSelector": {POOL_LABEL: SANDBOX}}
    out = [Violation(u, f"{base}/{k}", f"{k} is {spec.get(k)!r}, must be {v!r}") for k, v in required.items() if spec.get(k) != v]
    if not spec.get("activeDeadlineSeconds"):
        out.append(Violation(u, f"{base}/activeDeadlineSeconds", "a session has no deadline"))
    for volume in spec.get("volumes", []):
        if set(volume) - {"name"} != {"emptyDir"} or not volume["emptyDir"].get("sizeLimit"):
            out.append(Violation(u, f"{base}/volumes", f"volume {volume['name']} is not a size-limited emptyDir"))
    return out


def sandbox_no_credentials(resources: list[Any]) -> list[Violation]:
    """The sandbox holds no credential: no API token, no Google identity, no role, no secret,
    nothing taken from another object. (Its session token is added per session and grants
    nothing by itself.)"""
    out = []
    urn, pod = sandbox_template(resources)
    if pod is not None:
        spec, u, base = pod["spec"], urn.urn, "/data/pod.yaml#/spec"
        for k, v in {"automountServiceAccountToken": False, "serviceAccountName": SANDBOX, "enableServiceLinks": False}.items():
            if spec.get(k) != v:
                out.append(Violation(u, f"{base}/{k}", f"{k} is {spec.get(k)!r}, must be {v!r}"))
        for i, c in enumerate(spec.get("containers", []) + spec.get("initContainers", [])):
            if c.get("envFrom"):
                out.append(Violation(u, f"{base}/containers/{i}/envFrom", "the sandbox takes its environment from another object"))
            for j, env in enumerate(c.get("env", [])):
                if "valueFrom" in env:
                    out.append(Violation(u, f"{base}/containers/{i}/env/{j}", "the sandbox takes a value from another object"))
    for r in _of(resources, "ServiceAccount"):
        meta = r.inputs["metadata"]
        if meta["name"] != SANDBOX:
            continue
        if r.inputs.get("automountServiceAccountToken", True):
            out.append(Violation(r.urn, "/automountServiceAccountToken", "the sandbox mounts an API token"))
        if WORKLOAD_IDENTITY_ANNOTATION in (meta.get("annotations") or {}):
            out.append(Violation(r.urn, "/metadata/annotations", "the sandbox has a Google identity"))
    for r in _of(resources, "RoleBinding", "ClusterRoleBinding"):
        for i, subject in enumerate(r.inputs.get("subjects", [])):
            if subject.get("kind") == "ServiceAccount" and subject["name"] == SANDBOX:
                out.append(Violation(r.urn, f"/subjects/{i}", "the sandbox is bound to a role"))
    return out


GUARANTEES = {
    "sandbox_one_path_out": sandbox_one_path_out,
    "sandbox_cannot_reach_infrastructure": sandbox_cannot_reach_infrastructure,
    "sandbox_no_credentials": sandbox_no_credentials,
    "only_proxy_reaches_internet": only_proxy_reaches_internet,
    "default_deny_everywhere": default_deny_everywhere,
    "pod_security_restricted": pod_security_restricted,
    "service_account_tokens": service_account_tokens,
    "session_controller_rbac": session_controller_rbac,
    "workload_hardening": workload_hardening,
    "no_kubernetes_secrets": no_kubernetes_secrets,
    "sandbox_runtime": sandbox_runtime,
}
