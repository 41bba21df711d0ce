"""The Kubernetes layer of byoc-example: derived from the catalogue, valid, and least-privilege.

Each guarantee is checked on the planned objects, then broken by a one-line mutation of those
objects (or of the catalogue), and the check must notice.
"""

from __future__ import annotations

import copy
import dataclasses

import kubernetes_validate
import pytest
import yaml

from infra.catalogue import CATALOGUE_PATH, load_catalogue
from infra.config import parse_stack_config
from infra.errors import ConfigError
from infra.evidence.ledger import build_ledger
from infra.evidence.view import from_plan
from infra.k8s.analysis import reachability
from infra.k8s.guarantees import GUARANTEES, sandbox_template
from infra.k8s.manifests import render_manifests
from infra.topology import build_topology
from tests.conftest import stack_config


def k8s(plan, kind, name=None, namespace=None):
    return [
        r for r in plan.resources
        if r.type.startswith("kubernetes:") and r.type.endswith(f":{kind}")
        and (name is None or r.inputs["metadata"]["name"] == name)
        and (namespace is None or r.inputs["metadata"].get("namespace") == namespace)
    ]


@pytest.fixture(scope="module")
def topology(layout):
    raw = {k.split(":", 1)[1]: v for k, v in stack_config(layout).items()}
    return build_topology(parse_stack_config(raw), load_catalogue())


def test_plan_shows_kubernetes_objects_alongside_gcp(byoc_plan):
    types = {r.type.split(":")[0] for r in byoc_plan.resources if r.custom}
    assert {"gcp", "kubernetes"} <= types
    provider = next(r for r in byoc_plan.resources if r.type == "pulumi:providers:kubernetes")
    assert all(r.provider == provider.urn for r in byoc_plan.resources if r.type.startswith("kubernetes:") and r.custom)
    assert "gke-gcloud-auth-plugin" in provider.inputs["kubeconfig"]


def test_every_manifest_validates_strictly_for_the_cluster_version(topology):
    version = f"{topology.config.cluster.kubernetes_version}.0"
    for m in render_manifests(topology, "perfloop"):
        kubernetes_validate.validate(m.body, version, strict=True)
    _, pod = sandbox_template([_as_record(m) for m in render_manifests(topology, "perfloop")])
    kubernetes_validate.validate(pod, version, strict=True)


def _as_record(manifest):
    kind = manifest.body["kind"]
    return type("R", (), {"type": f"kubernetes:x/v1:{kind}", "inputs": manifest.body, "urn": manifest.resource_name})()


@pytest.mark.parametrize("name", list(GUARANTEES))
def test_guarantee_holds_on_byoc_example(byoc_plan, name):
    assert GUARANTEES[name](byoc_plan.resources) == []


def test_reachability_sandbox_row_is_exactly_the_proxy(byoc_plan):
    rows = [(e.destination, e.destination_namespace, e.port) for e in reachability(byoc_plan.resources) if e.source == "sandbox"]
    assert rows == [("egress-proxy", "perfloop-egress", 3128)]


def test_only_the_egress_proxy_reaches_the_internet(byoc_plan):
    internet = {e.source for e in reachability(byoc_plan.resources) if e.destination == "internet"}
    assert internet == {"egress-proxy"}
    (policy,) = k8s(byoc_plan, "NetworkPolicy", "egress-proxy-egress")
    block = next(rule["to"][0]["ipBlock"] for rule in policy.inputs["spec"]["egress"] if rule["to"][0].get("ipBlock", {}).get("cidr") == "0.0.0.0/0")
    assert {"169.254.0.0/16", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"} <= set(block["except"])


def test_control_plane_paths_are_exactly_the_declared_calls(byoc_plan):
    catalogue = load_catalogue()
    pod_edges = {(e.source, e.destination, e.port) for e in reachability(byoc_plan.resources) if e.destination_namespace and e.destination != "kube-dns"}
    declared = {(w.name, c.workload, c.port) for w in catalogue.workloads if w.connection is None for c in w.calls}
    assert pod_edges == declared


def _rbac(plan):
    ledger = build_ledger(from_plan(plan))
    return {
        principal.removeprefix("system:serviceaccount:"): sorted((r["scope"], tuple(r["apiGroups"]), tuple(r["resources"]), tuple(r["verbs"])) for r in entry["rbac"])
        for principal, entry in ledger.items()
        if entry["rbac"]
    }


def test_session_controller_grants_are_exactly_verify_and_manage_sandboxes(byoc_plan):
    """As `plan --show grants` lists them (the evidence ledger)."""
    assert _rbac(byoc_plan)["perfloop-system:session-controller"] == [
        ("cluster", ("authentication.k8s.io",), ("tokenreviews",), ("create",)),
        ("perfloop-sandbox-acme", ("",), ("pods",), ("create", "delete", "get", "list", "watch")),
    ]
    (account,) = k8s(byoc_plan, "ServiceAccount", "session-controller")
    assert account.inputs["automountServiceAccountToken"] is True


def test_rbac_is_only_what_the_catalogue_declares(byoc_plan):
    holders = _rbac(byoc_plan)
    assert set(holders) == {"perfloop-system:session-controller", "perfloop-egress:egress-proxy", "perfloop-system:workspace-reconciler"}
    assert holders["perfloop-egress:egress-proxy"] == [("perfloop-egress", ("",), ("configmaps",), ("get", "list", "watch"))]
    assert holders["perfloop-system:workspace-reconciler"] == [("perfloop-egress", ("",), ("configmaps",), ("get", "list"))]


def test_sandbox_template(byoc_plan):
    _, pod = sandbox_template(byoc_plan.resources)
    spec = pod["spec"]
    assert spec["runtimeClassName"] == "gvisor"
    assert spec["nodeSelector"] == {"perfloop.ai/pool": "sandbox"}
    assert {"key": "sandbox.gke.io/runtime", "operator": "Equal", "value": "gvisor", "effect": "NoSchedule"} in spec["tolerations"]
    env = {e["name"]: e["value"] for e in spec["containers"][0]["env"]}
    assert env["HTTPS_PROXY"] == "http://egress-proxy:3128"
    proxy = k8s(byoc_plan, "Service", "egress-proxy")[0].inputs["spec"]["clusterIP"]
    assert spec["hostAliases"] == [{"ip": proxy, "hostnames": ["egress-proxy"]}]
    assert spec["activeDeadlineSeconds"] > 0


def test_sandbox_namespace_is_bounded(byoc_plan):
    (quota,) = k8s(byoc_plan, "ResourceQuota", namespace="perfloop-sandbox-acme")
    hard = quota.inputs["spec"]["hard"]
    assert hard["persistentvolumeclaims"] == "0" and hard["secrets"] == "0" and hard["services"] == "0"
    assert {"pods", "limits.cpu", "limits.memory"} <= set(hard)
    assert k8s(byoc_plan, "LimitRange", namespace="perfloop-sandbox-acme")


def test_secrets_are_passed_by_name_only(byoc_plan):
    (proxy,) = k8s(byoc_plan, "Deployment", "egress-proxy")
    env = proxy.inputs["spec"]["template"]["spec"]["containers"][0]["env"]
    assert env == [{"name": "PERFLOOP_SECRET_CODE_HOST_APP_KEY", "value": "projects/acme-perfloop-prod/secrets/perfloop-code-host-app-key/versions/latest"}]


def test_proxy_and_control_plane_have_pdb_and_zone_spread(byoc_plan):
    for name in ("egress-proxy", "control-plane-api", "session-controller"):
        assert k8s(byoc_plan, "PodDisruptionBudget", name)[0].inputs["spec"]["minAvailable"] == 1
        spec = k8s(byoc_plan, "Deployment", name)[0].inputs["spec"]["template"]["spec"]
        assert spec["topologySpreadConstraints"][0]["topologyKey"] == "topology.kubernetes.io/zone"


def test_pools_by_selector_and_toleration(byoc_plan):
    spec = k8s(byoc_plan, "Deployment", "egress-proxy")[0].inputs["spec"]["template"]["spec"]
    assert spec["nodeSelector"] == {"perfloop.ai/pool": "egress"}
    assert spec["tolerations"] == [{"key": "perfloop.ai/pool", "operator": "Equal", "value": "egress", "effect": "NoSchedule"}]
    assert "tolerations" not in k8s(byoc_plan, "Deployment", "control-plane-api")[0].inputs["spec"]["template"]["spec"]


def test_kubernetes_labels(byoc_plan):
    for r in k8s(byoc_plan, "Deployment"):
        labels = r.inputs["metadata"]["labels"]
        assert labels["app.kubernetes.io/part-of"] == "perfloop" and labels["app.kubernetes.io/name"] == r.inputs["metadata"]["name"]


def test_migration_job_and_cleanup_cron_job(byoc_plan):
    (job,) = k8s(byoc_plan, "Job")
    spec = job.inputs["spec"]["template"]["spec"]
    assert spec["initContainers"][0]["name"] == "cloud-sql-proxy"
    assert "--auto-iam-authn" in spec["initContainers"][0]["args"] and "--private-ip" in spec["initContainers"][0]["args"]
    mounted = spec["volumes"][1]["configMap"]["name"]
    assert k8s(byoc_plan, "ConfigMap", mounted) and job.inputs["metadata"]["name"].endswith(mounted.rsplit("-", 1)[1])
    (cron,) = k8s(byoc_plan, "CronJob", "audit-cleanup")
    (reconciler,) = k8s(byoc_plan, "CronJob", "workspace-reconciler")
    assert "--max-drops=1" in reconciler.inputs["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["command"]
    command = cron.inputs["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["command"]
    assert command[-1] == "--command=SELECT audit.purge_events(13)"


# --- mutations: each breaks one guarantee, and its check must notice -------------------------

def _mutated(plan, kind, name, edit):
    resources = copy.deepcopy(plan.resources)
    target = next(r for r in resources if r.type.endswith(f":{kind}") and r.inputs["metadata"]["name"] == name)
    edit(target.inputs)
    return resources


def _edit_template(edit):
    def apply(inputs):
        pod = yaml.safe_load(inputs["data"]["pod.yaml"])
        edit(pod["spec"])
        inputs["data"]["pod.yaml"] = yaml.safe_dump(pod)
    return apply


KUBE_DNS = {"to": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}}, "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}], "ports": [{"protocol": "UDP", "port": 53}]}

MUTATIONS = {
    "kube-dns in the sandbox's egress": ("sandbox_one_path_out", "NetworkPolicy", "sandbox-egress", lambda i: i["spec"]["egress"].append(KUBE_DNS)),
    "metadata server for the sandbox": ("sandbox_one_path_out", "NetworkPolicy", "sandbox-egress", lambda i: i["spec"]["egress"].append({"to": [{"ipBlock": {"cidr": "169.254.169.254/32"}}]})),
    "sandbox egress to any pod": ("sandbox_one_path_out", "NetworkPolicy", "sandbox-egress", lambda i: i["spec"]["egress"].append({"to": [{"namespaceSelector": {}}]})),
    "sandbox egress opened": ("sandbox_one_path_out", "NetworkPolicy", "sandbox-egress", lambda i: i["spec"].__setitem__("egress", [{}])),
    "sandbox egress policy no longer selects it": ("sandbox_one_path_out", "NetworkPolicy", "sandbox-egress", lambda i: i["spec"]["podSelector"].__setitem__("matchLabels", {"app.kubernetes.io/name": "sandbox-old"})),
    "internet for the control plane": ("only_proxy_reaches_internet", "NetworkPolicy", "control-plane-api-egress", lambda i: i["spec"]["egress"].append({"to": [{"ipBlock": {"cidr": "0.0.0.0/0"}}]})),
    "default-deny dropped": ("default_deny_everywhere", "NetworkPolicy", "default-deny", lambda i: i["spec"].__setitem__("egress", [{}])),
    "pod security baseline": ("pod_security_restricted", "Namespace", "perfloop-system", lambda i: i["metadata"]["labels"].__setitem__("pod-security.kubernetes.io/enforce", "baseline")),
    "pods/exec for the controller": ("session_controller_rbac", "Role", "session-controller", lambda i: i["rules"].append({"apiGroups": [""], "resources": ["pods/exec"], "verbs": ["create"]})),
    "secrets for the controller": ("session_controller_rbac", "ClusterRole", "perfloop:session-controller", lambda i: i["rules"].append({"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]})),
    "impersonate for the controller": ("session_controller_rbac", "ClusterRole", "perfloop:session-controller", lambda i: i["rules"][0]["verbs"].append("impersonate")),
    "wildcard for the controller": ("session_controller_rbac", "Role", "session-controller", lambda i: i["rules"][0].__setitem__("verbs", ["*"])),
    "sandbox Workload Identity annotation": ("sandbox_no_credentials", "ServiceAccount", "sandbox", lambda i: i["metadata"].__setitem__("annotations", {"iam.gke.io/gcp-service-account": "x@p.iam.gserviceaccount.com"})),
    "token mounted without RBAC": ("service_account_tokens", "ServiceAccount", "agent-orchestrator", lambda i: i.__setitem__("automountServiceAccountToken", True)),
    "secrets for the proxy": ("session_controller_rbac", "Role", "egress-proxy", lambda i: i["rules"][0]["resources"].append("secrets")),
    "pods/exec for the proxy": ("session_controller_rbac", "Role", "egress-proxy", lambda i: i["rules"].append({"apiGroups": [""], "resources": ["pods/exec"], "verbs": ["create"]})),
    "privilege escalation allowed": ("workload_hardening", "Deployment", "egress-proxy", lambda i: i["spec"]["template"]["spec"]["containers"][0]["securityContext"].__setitem__("allowPrivilegeEscalation", True)),
    "image by tag": ("workload_hardening", "Deployment", "control-plane-api", lambda i: i["spec"]["template"]["spec"]["containers"][0].__setitem__("image", "x/y:latest")),
    "secret from a Kubernetes Secret": ("workload_hardening", "Deployment", "egress-proxy", lambda i: i["spec"]["template"]["spec"]["containers"][0]["env"].append({"name": "K", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}})),
    "sandbox without gVisor": ("sandbox_runtime", "ConfigMap", "sandbox-pod-template", _edit_template(lambda s: s.pop("runtimeClassName"))),
    "sandbox with a token": ("sandbox_no_credentials", "ConfigMap", "sandbox-pod-template", _edit_template(lambda s: s.__setitem__("automountServiceAccountToken", True))),
    "sandbox with cluster DNS": ("sandbox_one_path_out", "ConfigMap", "sandbox-pod-template", _edit_template(lambda s: s.__setitem__("dnsPolicy", "ClusterFirst"))),
    "sandbox with a hostPath": ("sandbox_runtime", "ConfigMap", "sandbox-pod-template", _edit_template(lambda s: s["volumes"].append({"name": "h", "hostPath": {"path": "/"}}))),
    "sandbox bound to a role": ("sandbox_no_credentials", "RoleBinding", "session-controller", lambda i: i["subjects"].append({"kind": "ServiceAccount", "name": "sandbox", "namespace": "perfloop-sandbox-acme"})),
    "sandbox env from a Secret": ("sandbox_no_credentials", "ConfigMap", "sandbox-pod-template", _edit_template(lambda s: s["containers"][0]["env"].append({"name": "T", "valueFrom": {"secretKeyRef": {"name": "x", "key": "k"}}}))),
    "sandbox egress to the API server": ("sandbox_cannot_reach_infrastructure", "NetworkPolicy", "sandbox-egress", lambda i: i["spec"]["egress"].append({"to": [{"ipBlock": {"cidr": "172.16.40.0/28"}}], "ports": [{"protocol": "TCP", "port": 443}]})),
    "sandbox egress to the database": ("sandbox_cannot_reach_infrastructure", "NetworkPolicy", "sandbox-egress", lambda i: i["spec"]["egress"].append({"to": [{"ipBlock": {"cidr": "10.60.0.0/20"}}]})),
    "sandbox without deadline": ("sandbox_runtime", "ConfigMap", "sandbox-pod-template", _edit_template(lambda s: s.pop("activeDeadlineSeconds"))),
}


@pytest.mark.parametrize("mutation", list(MUTATIONS))
def test_each_guarantee_catches_its_mutation(byoc_plan, mutation):
    guarantee, kind, name, edit = MUTATIONS[mutation]
    assert GUARANTEES[guarantee](_mutated(byoc_plan, kind, name, edit)), mutation


def test_a_kubernetes_secret_is_caught(byoc_plan):
    secret = dataclasses.replace(byoc_plan.resources[0], urn="urn:x::kubernetes:core/v1:Secret::s", type="kubernetes:core/v1:Secret", inputs={"metadata": {"name": "s"}})
    assert GUARANTEES["no_kubernetes_secrets"]([*byoc_plan.resources, secret])


# --- catalogue errors name the entry ---------------------------------------------------------

def _catalogue_error(tmp_path, edit) -> str:
    raw = yaml.safe_load(CATALOGUE_PATH.read_text())
    edit(raw)
    path = tmp_path / "catalogue.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError) as exc:
        load_catalogue(path)
    return str(exc.value)


def _workload(raw, name):
    return next(w for w in raw["workloads"] if w["name"] == name)


@pytest.mark.parametrize(
    "edit,expected",
    [
        (lambda r: _workload(r, "control-plane-api")["calls"].append({"workload": "billing", "port": 80}), ["'control-plane-api'", "unknown workload 'billing'"]),
        (lambda r: _workload(r, "agent-orchestrator").__setitem__("internet", True), ["'agent-orchestrator'", "only 'egress-proxy' may reach the internet"]),
        (lambda r: _workload(r, "sandbox").__setitem__("secrets", ["workos-api-key"]), ["'sandbox'", "holds no credentials", "secrets"]),
        (lambda r: _workload(r, "sandbox").__setitem__("gcp_roles", ["roles/aiplatform.user"]), ["'sandbox'", "gcp_roles"]),
        (lambda r: r["workloads"].append(copy.deepcopy(_workload(r, "db-migrate"))), ["'db-migrate'", "duplicate name"]),
        (lambda r: _workload(r, "sandbox")["calls"].append({"workload": "session-controller", "port": 8443}), ["'sandbox'", "nothing else"]),
        (lambda r: _workload(r, "session-controller")["kubernetes_api"].append({"api_group": "", "resource": "pods/exec", "verbs": ["create"]}), ["'session-controller'", "pods/exec"]),
        (lambda r: _workload(r, "agent-orchestrator")["gcp_roles"].append("roles/editor"), ["'agent-orchestrator'", "roles/editor", "never granted"]),
        (lambda r: _workload(r, "control-plane-api")["secrets"].append("code-host-app-key"), ["code-host-app-key", "exactly one reader"]),
        (lambda r: _workload(r, "egress-proxy").__setitem__("image", "egress-proxy:latest"), ["'egress-proxy'", "not pinned by digest"]),
    ],
)
def test_catalogue_errors_name_the_entry(tmp_path, edit, expected):
    message = _catalogue_error(tmp_path, edit)
    for fragment in expected:
        assert fragment in message, f"{fragment!r} not in {message}"
