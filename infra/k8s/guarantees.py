"""The Kubernetes layer's guarantees, checked on deployed objects (plan or state records).

Each function returns the violations it finds — (URN, JSON pointer, what is wrong) — and an empty
list when its guarantee holds. They read the resources, not the catalogue: a hand edit, a drifted
object or a mutated manifest is caught the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

import yaml

from infra.k8s.analysis import INTERNET, reachability

NAME_LABEL = "app.kubernetes.io/name"
EGRESS_PROXY = "egress-proxy"
SANDBOX = "sandbox"
SESSION_CONTROLLER = "session-controller"
WORKLOAD_IDENTITY_ANNOTATION = "iam.gke.io/gcp-service-account"
SANDBOX_TEMPLATE = "sandbox-pod-template"
# The exact RBAC of the session controller: verify callers, manage sandbox pods. Nothing else.
CONTROLLER_RULES = {
    ("cluster", "authentication.k8s.io", "tokenreviews", ("create",)),
    ("sandbox", "", "pods", ("create", "delete", "get", "list", "watch")),
}
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


def sandbox_template(resources: Iterable[Any]) -> tuple[Any, dict[str, Any]] | tuple[None, None]:
    for r in _of(resources, "ConfigMap"):
        if r.inputs["metadata"]["name"] == SANDBOX_TEMPLATE:
            return r, yaml.safe_load(r.inputs["data"]["pod.yaml"])
    return None, None


def sandbox_one_path_out(resources: list[Any]) -> list[Violation]:
    """Sandboxes open connections to the egress proxy and nothing else — no DNS, no metadata
    server, no API server, no nodes, no database, no other pod, no internet."""
    edges = [e for e in reachability(resources) if e.source == SANDBOX]
    sandboxes = {e.source_namespace for e in edges}
    out = [
        Violation(f"namespace/{e.source_namespace}", "/spec/egress", f"sandbox may reach {e.destination}:{e.port}/{e.protocol}")
        for e in edges
        if (e.destination, e.port) != (EGRESS_PROXY, 3128)
    ]
    template_urn, pod = sandbox_template(resources)
    sandbox_namespaces = {
        r.inputs["metadata"]["namespace"] for r in _of(resources, "ServiceAccount") if r.inputs["metadata"]["name"] == SANDBOX
    }
    for namespace in sandbox_namespaces - sandboxes:
        out.append(Violation(f"namespace/{namespace}", "/spec/egress", "sandbox cannot reach the egress proxy"))
    return out


def only_proxy_reaches_internet(resources: list[Any]) -> list[Violation]:
    return [
        Violation(f"{e.source_namespace}/{e.source}", "/spec/egress", f"{e.source} reaches the internet on {e.port}/{e.protocol}")
        for e in reachability(resources)
        if e.destination == INTERNET and e.source != EGRESS_PROXY
    ]


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
    out = []
    for r in _of(resources, "ServiceAccount"):
        meta = r.inputs["metadata"]
        if r.inputs.get("automountServiceAccountToken", True) and (meta["namespace"], meta["name"]) not in bound:
            out.append(Violation(r.urn, "/automountServiceAccountToken", f"{meta['name']} mounts an API token it has no use for"))
        if meta["name"] == SANDBOX:
            if r.inputs.get("automountServiceAccountToken", True):
                out.append(Violation(r.urn, "/automountServiceAccountToken", "the sandbox mounts an API token"))
            if WORKLOAD_IDENTITY_ANNOTATION in (meta.get("annotations") or {}):
                out.append(Violation(r.urn, "/metadata/annotations", "the sandbox has a Google identity"))
    return out


def _rule_keys(rule: dict[str, Any], scope: str) -> set[tuple[str, str, str, tuple[str, ...]]]:
    return {(scope, g, res, tuple(sorted(rule.get("verbs", [])))) for g in rule.get("apiGroups", []) for res in rule.get("resources", [])}


# Never granted to anyone: ways into other workloads, escalation, and credentials.
DANGEROUS_RESOURCES = {"*", "secrets", "pods/exec", "pods/attach", "pods/portforward", "serviceaccounts/token", "roles", "clusterroles", "rolebindings", "clusterrolebindings"}
DANGEROUS_VERBS = {"*", "escalate", "bind", "impersonate"}


def session_controller_rbac(resources: list[Any]) -> list[Violation]:
    """The session controller holds exactly: create TokenReviews; create/get/list/watch/delete
    pods in sandbox namespaces. No other workload may create pods, and nobody holds a wildcard,
    an escalation verb, secrets or a way into another pod."""
    from infra.grants import ledger

    out = []
    sandbox_namespaces = {
        r.inputs["metadata"]["namespace"] for r in _of(resources, "ServiceAccount") if r.inputs["metadata"]["name"] == SANDBOX
    }
    for key, entry in ledger(resources).items():
        if not entry["kubernetes_service_account"]:
            continue
        granted = set()
        for rule in entry["rbac"]:
            scope = rule["scope"]
            granted |= _rule_keys(rule, "sandbox" if scope in sandbox_namespaces else scope)
        if key.endswith(f"/{SESSION_CONTROLLER}"):
            if granted != CONTROLLER_RULES:
                out.append(Violation(key, "/rules", f"session controller holds {sorted(granted)}, not exactly {sorted(CONTROLLER_RULES)}"))
            continue
        for scope, group, resource, verbs in sorted(granted):
            if resource in DANGEROUS_RESOURCES or DANGEROUS_VERBS & set(verbs) or (resource == "pods" and "create" in verbs):
                out.append(Violation(key, "/rules", f"{key} holds {', '.join(verbs)} on {resource} ({scope})"))
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
    """The sandbox pod: gVisor, ephemeral, no token, no identity, no secrets, no DNS."""
    urn, pod = sandbox_template(resources)
    if pod is None:
        return [Violation("configmap/sandbox-pod-template", "", "no sandbox pod template")]
    spec, u, base = pod["spec"], urn.urn, "/data/pod.yaml#/spec"
    required = {
        "runtimeClassName": "gvisor",
        "automountServiceAccountToken": False,
        "restartPolicy": "Never",
        "serviceAccountName": SANDBOX,
        "dnsPolicy": "None",
        "enableServiceLinks": False,
    }
    out = [Violation(u, f"{base}/{k}", f"{k} is {spec.get(k)!r}, must be {v!r}") for k, v in required.items() if spec.get(k) != v]
    if not spec.get("activeDeadlineSeconds"):
        out.append(Violation(u, f"{base}/activeDeadlineSeconds", "a session has no deadline"))
    if spec.get("dnsConfig", {}).get("nameservers") != ["127.0.0.1"]:
        out.append(Violation(u, f"{base}/dnsConfig", "the sandbox has a resolver"))
    for i, c in enumerate(spec.get("containers", [])):
        for j, env in enumerate(c.get("env", [])):
            if "valueFrom" in env:
                out.append(Violation(u, f"{base}/containers/{i}/env/{j}", "the sandbox takes a value from another object"))
    for volume in spec.get("volumes", []):
        if set(volume) - {"name"} != {"emptyDir"} or not volume["emptyDir"].get("sizeLimit"):
            out.append(Violation(u, f"{base}/volumes", f"volume {volume['name']} is not a size-limited emptyDir"))
    return out


GUARANTEES = {
    "sandbox_one_path_out": sandbox_one_path_out,
    "only_proxy_reaches_internet": only_proxy_reaches_internet,
    "default_deny_everywhere": default_deny_everywhere,
    "pod_security_restricted": pod_security_restricted,
    "service_account_tokens": service_account_tokens,
    "session_controller_rbac": session_controller_rbac,
    "workload_hardening": workload_hardening,
    "no_kubernetes_secrets": no_kubernetes_secrets,
    "sandbox_runtime": sandbox_runtime,
}
