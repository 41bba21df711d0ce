"""Policy functions: each proves one part of a claim from a `StackView` and returns the exact
resource URN, JSON-pointer path, actual value and requirement of every setting it relied on.

Rules every check follows:
- Requirements are written here, in the words of the promise, not imported from the components
  that implement them: if a component weakens a setting, the check still asks for the strong one.
  Only names (tags, range names, labels, workload and secret names) come from the code, because
  they identify things rather than decide how safe they are.
- Fail closed. A value the check needs that is unknown (`COMPUTED`, any engine or preview
  sentinel) is a violation at its path. A required resource that is missing is a violation. A
  check that examined nothing is a violation. A setting may be absent only where a check says so
  and why (the provider's default is the strict value).
- A loosening (`perfloop:loosen`, exported as the stack output `loosenings`) only excuses the one
  weaker value it names, and is recorded in the result.
"""

from __future__ import annotations

import ipaddress
import json
import re
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Callable, Iterable, Mapping, Optional

from infra.catalogue import EGRESS_PROXY, SANDBOX_KIND, Catalogue, load_catalogue
from infra.config import Loosening
from infra.evidence.view import ABSENT, Resource, StackView, contains_unknown, is_unknown, pointer, thaw
from infra.gcp.audit_logging import AUDIT_BUCKET
from infra.gcp.network import EGRESS_NODE_TAG, EGRESS_PODS_RANGE, PRIVATE_GOOGLE_APIS_CIDR
from infra.gcp.node_pools import POOL_LABEL
from infra.topology import SECRET_PREFIX

PASS, FAIL, NOT_APPLICABLE = "pass", "fail", "not-applicable"

GCP_PROVIDER = "pulumi:providers:gcp"
NETWORK = "gcp:compute/network:Network"
ROUTE = "gcp:compute/route:Route"
NAT = "gcp:compute/routerNat:RouterNat"
FIREWALL = "gcp:compute/firewall:Firewall"
CLUSTER = "gcp:container/cluster:Cluster"
NODE_POOL = "gcp:container/nodePool:NodePool"
SQL_INSTANCE = "gcp:sql/databaseInstance:DatabaseInstance"
SQL_DATABASE = "gcp:sql/database:Database"
SQL_USER = "gcp:sql/user:User"
SECRET = "gcp:secretmanager/secret:Secret"
SERVICE_ACCOUNT = "gcp:serviceaccount/account:Account"
AUDIT_CONFIG = "gcp:projects/iAMAuditConfig:IAMAuditConfig"
LOG_BUCKET = "gcp:logging/projectBucketConfig:ProjectBucketConfig"
LOG_SINK = "gcp:logging/projectSink:ProjectSink"
# Resources whose state holds a secret value (key material, payloads, passwords, certificates).
SECRET_MATERIAL_TYPES = (
    "gcp:secretmanager/secretVersion:SecretVersion",
    "gcp:serviceaccount/key:Key",
    "gcp:kms/secretCiphertext:SecretCiphertext",
    "gcp:sql/sslCert:SslCert",
    "gcp:apikeys/key:Key",
    "gcp:storage/hmacKey:HmacKey",
)

# The promises' own numbers and values.
# 13 calendar months are at most 397 days (8 months of 31 days, 4 of 30, a leap February).
AUDIT_RETENTION_FLOOR_DAYS = 397
AUDIT_LOG_FILTER = 'logName:"/logs/cloudaudit.googleapis.com%2F"'
# Services that hold secrets or derived customer data: their Data Access logs must be on.
DATA_ACCESS_SERVICES = ("aiplatform.googleapis.com", "container.googleapis.com", "secretmanager.googleapis.com", "sqladmin.googleapis.com")
DATA_ACCESS_LOG_TYPES = ("ADMIN_READ", "DATA_READ", "DATA_WRITE")
CLIENT_CERT_SSL_MODE = "TRUSTED_CLIENT_CERTIFICATE_REQUIRED"
TLS_ONLY_SSL_MODE = "ENCRYPTED_ONLY"  # TLS without client certificates: only with the loosening
PRIMITIVE_ROLES = frozenset({"roles/owner", "roles/editor", "roles/viewer"})
# Roles that read secret payloads project-wide (owner and editor include secret access).
SECRET_READING_ROLE = re.compile(r"^roles/(secretmanager\..+|owner|editor)$")
# Roles that create or manage service-account keys.
KEY_MAKING_ROLE = re.compile(r"^roles/(iam\.serviceAccountKeyAdmin|iam\.serviceAccountAdmin|owner|editor)$")
# Roles that call a model endpoint (Vertex AI; its predecessor ML Engine).
MODEL_ROLE = re.compile(r"^roles/(aiplatform\..+|ml\..+|owner|editor)$")
# IAM roles that reach the Kubernetes API around RBAC (GKE maps them onto API permissions).
KUBERNETES_IAM_ROLE = re.compile(r"^roles/(container\.(?!defaultNodeServiceAccount$).+|owner|editor|viewer)$")
ACCESSOR_ROLE = "roles/secretmanager.secretAccessor"
WORKLOAD_IDENTITY_ROLE = "roles/iam.workloadIdentityUser"
DATABASE_ROLES = frozenset({"roles/cloudsql.client", "roles/cloudsql.instanceUser"})
IAM_DATABASE_USER_TYPES = frozenset({"CLOUD_IAM_SERVICE_ACCOUNT", "CLOUD_IAM_USER", "CLOUD_IAM_GROUP"})
_PRIVATE_RANGES = [ipaddress.ip_network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16")]
_KMS_LOCATION = re.compile(r"projects/[^/]+/locations/([^/]+)/keyRings/")
_WORKLOAD_MEMBER = re.compile(r"^serviceAccount:(?P<pool>[^\[]+)\.svc\.id\.goog\[(?P<ns>[^/\]]+)/(?P<ksa>[^\]]+)\]$")


# --- results ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Finding:
    """One setting a check relied on. `path` is an RFC 6901 pointer into the resource's inputs
    (for the `pulumi:pulumi:Stack` resource: its exports); "" is the resource as a whole."""

    urn: str
    path: str
    actual: Any  # ABSENT when the path does not exist
    required: str
    ok: bool

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"urn": self.urn, "path": self.path, "required": self.required, "ok": self.ok}
        if self.actual is ABSENT:
            data["present"] = False
        else:
            data["actual"] = thaw(self.actual)
        return data


@dataclass(frozen=True)
class CheckResult:
    check: str
    status: str
    findings: tuple[Finding, ...]
    reason: str = ""
    loosenings: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "check": self.check,
            "status": self.status,
            "findings": [f.to_json() for f in self.findings],
            "loosenings": list(self.loosenings),
        }
        if self.reason:
            data["reason"] = self.reason
        return data


class Recorder:
    """What a check writes its findings to."""

    def __init__(self, view: StackView):
        self.view = view
        self.findings: list[Finding] = []
        self.na_reason: Optional[str] = None
        self.loosenings: set[str] = set()

    def record(self, urn: str, path: str, actual: Any, required: str, ok: bool) -> bool:
        self.findings.append(Finding(urn, path, actual, required, bool(ok)))
        return bool(ok)

    def expect(self, resource: Resource, path: str, ok: Callable[[Any], bool], required: str) -> Any:
        """Record the value at `path`; it passes if it is fully known and `ok(value)`."""
        value = resource.at(path)
        self.record(resource.urn, path, value, required, not contains_unknown(value) and ok(value))
        return value

    def equals(self, resource: Resource, path: str, expected: Any, *, absent_ok: bool = False) -> Any:
        """`path` must hold `expected`; `absent_ok` where the provider's default is `expected`."""
        note = " (absent: the provider default is that)" if absent_ok else ""
        return self.expect(resource, path, lambda v: v == expected or (absent_ok and v is ABSENT), f"= {json.dumps(expected)}{note}")

    def none_of(self, what: str, offenders: list[Resource]) -> None:
        """Nothing of a kind exists: a stack-level finding listing what was found, and one
        failing finding at each offending resource."""
        self.record(self.view.stack_urn, "", [r.urn for r in offenders], f"no {what}", not offenders)
        for r in offenders:
            self.record(r.urn, "", r.type, f"no {what}", False)

    def loosened(self, name: str) -> bool:
        """Is `name` declared in the stack's `loosenings` export? Recorded either way; an unknown
        or missing export declares nothing."""
        declared = self.view.output("loosenings")
        ok = isinstance(declared, (list, tuple)) and not contains_unknown(declared) and name in declared
        self.record(self.view.stack_urn, "/loosenings", declared, f"names {name!r} (perfloop:loosen)", ok)
        if ok:
            self.loosenings.add(name)
        return ok

    def not_applicable(self, reason: str) -> None:
        self.na_reason = reason

    def result(self, name: str) -> CheckResult:
        findings = list(self.findings)
        if not findings and self.na_reason is None:
            findings.append(Finding(self.view.stack_urn, "", ABSENT, "something to examine (a check that saw nothing proves nothing)", False))
        failed = any(not f.ok for f in findings)
        if failed:
            status = FAIL
        elif self.na_reason is not None and not findings:
            status = NOT_APPLICABLE
        else:
            status = PASS
        reason = (self.na_reason or "") if status == NOT_APPLICABLE else ""
        return CheckResult(name, status, tuple(findings), reason, tuple(sorted(self.loosenings)))


Check = Callable[[StackView, Recorder], None]
CHECKS: dict[str, Check] = {}


def check(fn: Check) -> Check:
    CHECKS[fn.__name__] = fn
    return fn


def run_check(name: str, view: StackView) -> CheckResult:
    recorder = Recorder(view)
    CHECKS[name](view, recorder)
    return recorder.result(name)


# --- shared readings ----------------------------------------------------------------------------

@lru_cache(maxsize=1)
def _catalogue() -> Catalogue:
    return load_catalogue()


def _sandbox_namespace() -> str:
    return next(w.namespace for w in _catalogue().workloads if w.kind == SANDBOX_KIND)


def _is_sandbox_namespace(namespace: str) -> bool:
    base = _sandbox_namespace()
    return namespace == base or namespace.startswith(base + "-")


def _sa_email(workload: str, project: str) -> str:
    return f"{_catalogue().by_name[workload].service_account_id}@{project}.iam.gserviceaccount.com"


def _known_str(value: Any) -> bool:
    return isinstance(value, str) and not is_unknown(value)


def _anchor(view: StackView, e: Recorder) -> tuple[Optional[str], Optional[str]]:
    """The stack's project and region: its exports, confirmed by every explicit GCP provider
    (which every resource must use; see `providers_pinned_to_project`)."""
    project = view.output("project")
    region = view.output("region")
    providers = view.of_type(GCP_PROVIDER)
    if not _known_str(project) and providers:
        project = providers[0].at("/project")
    if not _known_str(region) and providers:
        region = providers[0].at("/region")
    if not (_known_str(project) and _known_str(region)):
        e.record(view.stack_urn, "/project", view.output("project"), "the stack's project and region are known (exports or GCP provider)", False)
        return None, None
    for p in providers:
        e.equals(p, "/project", project)
        e.equals(p, "/region", region)
    return project, region


def _owned_by_cell(view: StackView, e: Recorder, subjects: list[Resource], what: str) -> bool:
    """A tenant stack creates one workspace's resources on a cell; the cell's infrastructure is
    proven by the cell stack's evidence. True (and the check not applicable) for a tenant stack
    that creates none of the check's `subjects`; a tenant that does create one is judged like
    any stack."""
    if view.output("shape") == "tenant" and not subjects:
        e.not_applicable(f"tenant stack on cell {thaw(view.output('cell'))!r}: the cell creates {what} and its evidence proves this")
        return True
    return False


@dataclass(frozen=True)
class Grant:
    """One IAM grant: role and members, at the resource paths they come from."""

    resource: Resource
    scope: str  # project | secret | service-account | the resource type for anything else
    role: Any
    role_path: str
    members: tuple[tuple[Any, str], ...]  # (member, path)
    members_path: str  # /member, /members, or the policy's /policyData
    condition: Any = field(default=ABSENT)

    @property
    def condition_path(self) -> str:
        return "/policyData" if self.members_path == "/policyData" else "/condition/expression"

    @property
    def members_value(self) -> Any:
        return self.resource.at(self.members_path)


_IAM_KIND = re.compile(r"(IAM|Iam)(Member|Binding|Policy)$")


def grants(view: StackView, e: Optional[Recorder] = None) -> list[Grant]:
    """Every IAM grant in the stack, at any scope. An IAM policy whose bindings cannot be read
    is a violation when a recorder is given (fail closed)."""
    out: list[Grant] = []
    for r in view.resources:
        if not r.type.startswith("gcp:"):
            continue
        kind = _IAM_KIND.search(r.type.rsplit(":", 1)[-1])
        if not kind:
            continue
        module = r.type.split(":")[1].split("/")[0]
        scope = {"projects": "project", "secretmanager": "secret", "serviceaccount": "service-account"}.get(module, r.type)
        if kind.group(2) == "Member":
            out.append(Grant(r, scope, r.at("/role"), "/role", ((r.at("/member"), "/member"),), "/member", r.at("/condition/expression")))
        elif kind.group(2) == "Binding":
            members = r.at("/members")
            listed = tuple((m, pointer("members", i)) for i, m in enumerate(members)) if isinstance(members, tuple) else ((members, "/members"),)
            out.append(Grant(r, scope, r.at("/role"), "/role", listed, "/members", r.at("/condition/expression")))
        else:
            try:
                bindings = json.loads(r.at("/policyData"))["bindings"]
                for b in bindings:
                    out.append(Grant(r, scope, b["role"], "/policyData", tuple((m, "/policyData") for m in b["members"]), "/policyData", b.get("condition", {}).get("expression", ABSENT)))
            except (TypeError, ValueError, KeyError):
                if e is not None:
                    e.record(r.urn, "/policyData", r.at("/policyData"), "a readable IAM policy (bindings with role and members)", False)
    return out


def _grant_role(e: Recorder, g: Grant, ok: Callable[[str], bool], required: str) -> None:
    """Record a grant's role. The recorded value is always what is at the path; for an IAM policy
    that is its whole `policyData` (a pointer cannot enter a JSON string), judged by the binding."""
    e.record(g.resource.urn, g.role_path, g.resource.at(g.role_path), required, _known_str(g.role) and ok(g.role))


def _tuple(value: Any) -> tuple:
    return value if isinstance(value, tuple) else ()


def _secret_iam_targets(view: StackView) -> dict[str, list[Grant]]:
    """Secret-scoped grants by the secret ID they name (an ID or a projects/*/secrets/ID name)."""
    by_secret: dict[str, list[Grant]] = {}
    for g in grants(view):
        if g.scope == "secret":
            target = g.resource.at("/secretId")
            key = target.rsplit("/secrets/", 1)[-1] if _known_str(target) else str(target)
            by_secret.setdefault(key, []).append(g)
    return by_secret


def _walk(value: Any, path: tuple = ()) -> Iterable[tuple[tuple, Any]]:
    yield path, value
    if isinstance(value, Mapping):
        for k, v in value.items():
            yield from _walk(v, path + (k,))
    elif isinstance(value, tuple):
        for i, v in enumerate(value):
            yield from _walk(v, path + (i,))


def _in_private_or_google(cidr: Any) -> bool:
    try:
        net = ipaddress.ip_network(cidr)
    except (TypeError, ValueError):
        return False
    return any(net.subnet_of(p) for p in _PRIVATE_RANGES + [ipaddress.ip_network(PRIVATE_GOOGLE_APIS_CIDR)])


def _pool(r: Resource) -> Any:
    return r.at(pointer("nodeConfig", "labels", POOL_LABEL))


# --- residency ----------------------------------------------------------------------------------

_ZONAL_KEYS = frozenset({"zone", "secondaryZone"})


@check
def regional_resources_in_region(view: StackView, e: Recorder) -> None:
    """Every location, region, zone and KMS key of every GCP resource is in the stack's region,
    and every secret is stored by user-managed replicas there (automatic replication is global)."""
    project, region = _anchor(view, e)
    if region is None:
        return
    in_region = lambda v: v == region
    in_zone = lambda v: _known_str(v) and v.startswith(region + "-") and len(v) == len(region) + 2
    for r in view.resources:
        if not r.type.startswith("gcp:"):
            continue
        for path, value in _walk(r.inputs):
            key = path[-1] if path else None
            if key in ("region", "location"):
                e.expect(r, pointer(*path), in_region, f"= {region!r} (the stack's region)")
            elif key in _ZONAL_KEYS:
                e.expect(r, pointer(*path), in_zone, f"a zone of {region!r}")
            elif key == "nodeLocations":
                e.expect(r, pointer(*path), lambda v: isinstance(v, tuple) and all(in_zone(z) for z in v), f"zones of {region!r}")
            elif isinstance(value, str) and _KMS_LOCATION.search(value):
                e.expect(r, pointer(*path), lambda v: _KMS_LOCATION.search(v).group(1) == region, f"a Cloud KMS key in {region!r}")
    for s in view.of_type(SECRET):
        e.expect(s, "/replication/auto", lambda v: v is ABSENT, "absent: automatic replication stores the secret in any region")
        e.expect(s, "/replication/userManaged/replicas", lambda v: isinstance(v, tuple) and len(v) > 0, "user-managed replicas (each checked above)")


@check
def resources_in_stack_project(view: StackView, e: Recorder) -> None:
    """Every GCP resource names the stack's project, directly (`project`) or through the
    resource it belongs to (a `projects/<project>/...` name)."""
    project, _ = _anchor(view, e)
    if project is None:
        return
    for r in view.resources:
        if not r.type.startswith("gcp:"):
            continue
        if r.at("/project") is not ABSENT:
            e.equals(r, "/project", project)
            continue
        anchors = [k for k, v in r.inputs.items() if isinstance(v, str) and v.startswith("projects/")]
        if not anchors:
            e.record(r.urn, "/project", ABSENT, f"= {project!r}, or a parent resource named projects/{project}/...", False)
        for k in anchors:
            e.expect(r, pointer(k), lambda v: v.startswith(f"projects/{project}/"), f"a resource of projects/{project}")


@check
def providers_pinned_to_project(view: StackView, e: Recorder) -> None:
    """Every GCP resource is created through a GCP provider pinned to the stack's project, so a
    resource that names no project still cannot land elsewhere."""
    project, _ = _anchor(view, e)
    if project is None:
        return
    providers = {p.urn: p for p in view.of_type(GCP_PROVIDER)}
    for r in view.resources:
        if r.type.startswith("gcp:"):
            provider = providers.get(r.provider)
            ok = provider is not None and provider.at("/project") == project
            e.record(r.urn, "", r.provider or ABSENT, f"created through a GCP provider pinned to {project!r}", ok)


# --- the sandbox --------------------------------------------------------------------------------

@check
def sandbox_pool_gvisor(view: StackView, e: Recorder) -> None:
    """Sandboxes run on a node pool of their own, under gVisor, on Container-Optimized OS, and
    nothing else is scheduled there (the pool's taint)."""
    if _owned_by_cell(view, e, view.of_type(NODE_POOL), "node pools"):
        return
    pools = [p for p in view.of_type(NODE_POOL) if _pool(p) == "sandbox"]
    if not pools:
        e.record(view.stack_urn, "", ABSENT, f"a node pool labelled {POOL_LABEL}=sandbox", False)
    taint = {"key": POOL_LABEL, "value": "sandbox", "effect": "NO_SCHEDULE"}
    for p in pools:
        e.expect(p, "/nodeConfig/sandboxConfig/type", lambda v: _known_str(v) and v.lower() == "gvisor", "= gvisor (GKE Sandbox)")
        e.equals(p, "/nodeConfig/imageType", "COS_CONTAINERD")
        e.expect(p, "/nodeConfig/taints", lambda v: isinstance(v, tuple) and taint in [dict(t) for t in v], f"includes {json.dumps(taint)}")


@check
def cluster_binary_authorization(view: StackView, e: Recorder) -> None:
    """Only images the project's Binary Authorization policy admits run; disabled only with the
    `binary-authorization-disabled` loosening."""
    if _owned_by_cell(view, e, view.of_type(CLUSTER), "the cluster"):
        return
    clusters = view.of_type(CLUSTER)
    for c in clusters:
        mode = c.at("/binaryAuthorization/evaluationMode")
        if mode == "DISABLED" and e.loosened(Loosening.BINARY_AUTHORIZATION_DISABLED.value):
            e.record(c.urn, "/binaryAuthorization/evaluationMode", mode, "DISABLED only with the binary-authorization-disabled loosening", True)
        else:
            e.equals(c, "/binaryAuthorization/evaluationMode", "PROJECT_SINGLETON_POLICY_ENFORCE")
    if not clusters:
        e.record(view.stack_urn, "", ABSENT, "a GKE cluster", False)


@check
def no_gcp_identity_for_sandbox(view: StackView, e: Recorder) -> None:
    """No Google identity can be used from a sandbox namespace: no IAM member anywhere names a
    Kubernetes service account there (Workload Identity) or the namespace itself."""
    marker = re.compile(r"svc\.id\.goog\[(?P<ns>[^/\]]+)/|/ns/(?P<ns2>[^/]+)")
    members = [(g, member, path) for g in grants(view, e) for member, path in g.members]
    for g, member, path in members:
        match = marker.search(member) if _known_str(member) else None
        namespace = (match.group("ns") or match.group("ns2")) if match else None
        e.record(g.resource.urn, path, g.resource.at(path), f"a member outside the sandbox namespaces ({_sandbox_namespace()}*)", _known_str(member) and not (namespace and _is_sandbox_namespace(namespace)))
    if not members:
        e.record(view.stack_urn, "", [], "no IAM member names a sandbox namespace (there are no IAM members)", True)


@check
def node_metadata_concealed(view: StackView, e: Recorder) -> None:
    """Pods never reach the node's credentials: Workload Identity is on and every node serves
    the GKE metadata server (GKE_METADATA), with the legacy metadata endpoints off."""
    if _owned_by_cell(view, e, view.of_type(CLUSTER, NODE_POOL), "the cluster and node pools"):
        return
    project, _ = _anchor(view, e)
    for c in view.of_type(CLUSTER):
        e.equals(c, "/workloadIdentityConfig/workloadPool", f"{project}.svc.id.goog")
        e.equals(c, "/nodeConfig/workloadMetadataConfig/mode", "GKE_METADATA")
    pools = view.of_type(NODE_POOL)
    for p in pools:
        e.equals(p, "/nodeConfig/workloadMetadataConfig/mode", "GKE_METADATA")
        e.equals(p, "/nodeConfig/metadata/disable-legacy-endpoints", "true")
    if not pools:
        e.record(view.stack_urn, "", ABSENT, "node pools", False)


@check
def vpc_no_default_internet_route(view: StackView, e: Recorder) -> None:
    """The VPC has no default route to the internet; the only route to the internet is tagged
    to the egress nodes (routes to Private Google Access and private ranges are not internet)."""
    if _owned_by_cell(view, e, view.of_type(NETWORK, ROUTE), "the VPC and routes"):
        return
    networks = view.of_type(NETWORK)
    for n in networks:
        e.equals(n, "/deleteDefaultRoutesOnCreate", True)
        e.equals(n, "/autoCreateSubnetworks", False)
    if not networks:
        e.record(view.stack_urn, "", ABSENT, "a VPC network", False)
    for r in view.of_type(ROUTE):
        if _in_private_or_google(r.at("/destRange")):
            e.expect(r, "/destRange", lambda v: True, "private or Private Google Access range (not the internet)")
        else:
            e.expect(r, "/tags", lambda v: v == (EGRESS_NODE_TAG,), f"= [{EGRESS_NODE_TAG!r}] (internet routes serve the egress nodes alone)")


@check
def nat_translates_egress_pods_only(view: StackView, e: Recorder) -> None:
    """Cloud NAT translates the egress pool's pod range and nothing else: no node, no other pod."""
    nats = view.of_type(NAT)
    for n in nats:
        e.equals(n, "/sourceSubnetworkIpRangesToNat", "LIST_OF_SUBNETWORKS")
        subnets = e.expect(n, "/subnetworks", lambda v: isinstance(v, tuple) and len(v) > 0, "lists the subnetworks it translates")
        for i, _ in enumerate(subnets if isinstance(subnets, tuple) else ()):
            e.equals(n, pointer("subnetworks", i, "sourceIpRangesToNats"), ("LIST_OF_SECONDARY_IP_RANGES",))
            e.equals(n, pointer("subnetworks", i, "secondaryIpRangeNames"), (EGRESS_PODS_RANGE,))
    if not nats:
        e.not_applicable("no Cloud NAT: no address is translated to the internet")


@check
def firewall_internet_egress_only_from_egress_nodes(view: StackView, e: Recorder) -> None:
    """Egress is denied by default (a rule denying everything to 0.0.0.0/0 for every instance);
    every rule allowing traffic beyond private ranges and Private Google Access targets the egress
    nodes alone."""
    if _owned_by_cell(view, e, view.of_type(FIREWALL), "firewall rules"):
        return
    # A rule without `direction` is INGRESS; an unknown direction is examined (and fails below).
    rules = [f for f in view.of_type(FIREWALL) if f.at("/direction") == "EGRESS" or contains_unknown(f.at("/direction"))]
    deny_all = {
        f.urn for f in rules
        if f.at("/direction") == "EGRESS" and {"protocol": "all"} in [dict(d) for d in _tuple(f.at("/denies"))]
        and "0.0.0.0/0" in _tuple(f.at("/destinationRanges")) and f.at("/targetTags") in (ABSENT, ())
        and f.at("/targetServiceAccounts") in (ABSENT, ()) and f.at("/disabled") in (ABSENT, False)
    }
    e.record(view.stack_urn, "", sorted(deny_all), "an enabled EGRESS rule denying all protocols to 0.0.0.0/0 for every instance", bool(deny_all))
    for f in rules:
        if f.urn in deny_all or f.at("/allows") in (ABSENT, ()):
            continue
        e.equals(f, "/direction", "EGRESS")
        destinations = e.expect(f, "/destinationRanges", lambda v: isinstance(v, tuple) and len(v) > 0, "explicit destination ranges")
        if isinstance(destinations, tuple) and all(_in_private_or_google(d) for d in destinations):
            continue
        e.equals(f, "/targetTags", (EGRESS_NODE_TAG,))
        e.expect(f, "/targetServiceAccounts", lambda v: v in (ABSENT, ()), "absent (targets the egress nodes by tag alone)")


@check
def egress_pods_range_only_on_egress_pool(view: StackView, e: Recorder) -> None:
    """Only the egress pool's pods take addresses from the NAT-translated range, and only the
    egress pool carries the egress node tag that the internet route and firewall allow."""
    if _owned_by_cell(view, e, view.of_type(CLUSTER, NODE_POOL), "the cluster and node pools"):
        return
    for c in view.of_type(CLUSTER):
        e.expect(c, "/ipAllocationPolicy/clusterSecondaryRangeName", lambda v: _known_str(v) and v != EGRESS_PODS_RANGE, f"not {EGRESS_PODS_RANGE!r}")
    for p in view.of_type(NODE_POOL):
        egress = _pool(p) == "egress"
        e.expect(p, pointer("nodeConfig", "labels", POOL_LABEL), _known_str, "a known pool label")
        if egress:
            e.equals(p, "/networkConfig/podRange", EGRESS_PODS_RANGE)
        else:
            e.expect(p, "/networkConfig/podRange", lambda v: v != EGRESS_PODS_RANGE and not is_unknown(v), f"not {EGRESS_PODS_RANGE!r}")
            e.expect(p, "/nodeConfig/tags", lambda v: EGRESS_NODE_TAG not in (v if isinstance(v, tuple) else ()), f"without {EGRESS_NODE_TAG!r}")


@check
def private_control_plane(view: StackView, e: Recorder) -> None:
    """The infrastructure is not reachable from outside: private nodes, a private-only control
    plane endpoint, no Google-wide or internet-wide authorised networks (each at most a /16),
    authorised networks enforced on the private endpoint too."""
    if _owned_by_cell(view, e, view.of_type(CLUSTER), "the cluster"):
        return
    clusters = view.of_type(CLUSTER)
    if not clusters:
        e.record(view.stack_urn, "", ABSENT, "a GKE cluster", False)
    for c in clusters:
        e.equals(c, "/privateClusterConfig/enablePrivateNodes", True)
        e.equals(c, "/privateClusterConfig/enablePrivateEndpoint", True)
        e.equals(c, "/privateClusterConfig/masterGlobalAccessConfig/enabled", False, absent_ok=True)
        e.equals(c, "/masterAuthorizedNetworksConfig/gcpPublicCidrsAccessEnabled", False)
        e.equals(c, "/masterAuthorizedNetworksConfig/privateEndpointEnforcementEnabled", True)
        blocks = c.at("/masterAuthorizedNetworksConfig/cidrBlocks")
        for i, _ in enumerate(blocks if isinstance(blocks, tuple) else ()):
            e.expect(c, pointer("masterAuthorizedNetworksConfig", "cidrBlocks", i, "cidrBlock"), _narrow, "a network of at most /16")


def _narrow(cidr: Any) -> bool:
    try:
        return ipaddress.ip_network(cidr).prefixlen >= 16
    except (TypeError, ValueError):
        return False


@check
def cluster_rbac_only(view: StackView, e: Recorder) -> None:
    """Kubernetes RBAC is the only authoriser and there is no static credential: legacy ABAC
    off, no client certificate, no basic authentication."""
    if _owned_by_cell(view, e, view.of_type(CLUSTER), "the cluster"):
        return
    clusters = view.of_type(CLUSTER)
    if not clusters:
        e.record(view.stack_urn, "", ABSENT, "a GKE cluster", False)
    for c in clusters:
        e.equals(c, "/enableLegacyAbac", False, absent_ok=True)
        e.equals(c, "/masterAuth/clientCertificateConfig/issueClientCertificate", False, absent_ok=True)
        for field_ in ("username", "password"):
            e.expect(c, pointer("masterAuth", field_), lambda v: v in (ABSENT, ""), "absent (no basic authentication)")


@check
def no_kubernetes_api_via_iam(view: StackView, e: Recorder) -> None:
    """No IAM grant reaches the Kubernetes API around RBAC (GKE honours roles/container.*, and the
    primitive roles, as API permissions)."""
    found = grants(view, e)
    for g in found:
        _grant_role(e, g, lambda role: not KUBERNETES_IAM_ROLE.match(role), "not a GKE or primitive role")
    if not found:
        e.record(view.stack_urn, "", [], "no IAM grant reaches the Kubernetes API (there are no IAM grants)", True)


# --- the database -------------------------------------------------------------------------------

@check
def database_private_tls_only(view: StackView, e: Recorder) -> None:
    """No public address, no authorised networks, no Private Service Connect or Google-services
    path in; reachable on the stack's VPC only; TLS with client certificates through the Cloud SQL
    connectors, or (loosening `database-tls-without-client-certificates`) TLS without them."""
    if _owned_by_cell(view, e, view.of_type(SQL_INSTANCE), "the database"):
        return
    project, _ = _anchor(view, e)
    instances = view.of_type(SQL_INSTANCE)
    if not instances:
        e.record(view.stack_urn, "", ABSENT, "a Cloud SQL instance", False)
    loose = Loosening.DATABASE_TLS_WITHOUT_CLIENT_CERTIFICATES.value
    for db in instances:
        ip = "/settings/ipConfiguration"
        e.equals(db, f"{ip}/ipv4Enabled", False)
        e.expect(db, f"{ip}/authorizedNetworks", lambda v: v in (ABSENT, ()), "empty (absent: none)")
        e.expect(db, f"{ip}/pscConfigs", lambda v: v in (ABSENT, ()), "absent (no Private Service Connect)")
        e.equals(db, f"{ip}/enablePrivatePathForGoogleCloudServices", False, absent_ok=True)
        e.expect(db, f"{ip}/privateNetwork", lambda v: _known_str(v) and v.startswith(f"projects/{project}/global/networks/"), "the stack's VPC")
        for path, strict, weaker in ((f"{ip}/sslMode", CLIENT_CERT_SSL_MODE, TLS_ONLY_SSL_MODE), ("/settings/connectorEnforcement", "REQUIRED", "NOT_REQUIRED")):
            if db.at(path) == weaker and e.loosened(loose):
                e.record(db.urn, path, weaker, f"{strict}, or {weaker} with the {loose} loosening (still TLS-only)", True)
            else:
                e.equals(db, path, strict)


@check
def database_protected(view: StackView, e: Recorder) -> None:
    """The database holding the audit rows cannot be deleted by accident: Pulumi `protect`, the
    provider's and the Cloud SQL API's deletion protection, and databases abandoned on destroy."""
    if _owned_by_cell(view, e, view.of_type(SQL_INSTANCE, SQL_DATABASE), "the database and its databases"):
        return
    instances = view.of_type(SQL_INSTANCE)
    if not instances:
        e.record(view.stack_urn, "", ABSENT, "a Cloud SQL instance", False)
    for db in instances:
        e.record(db.urn, "", db.protect, "protect: true (Pulumi refuses to delete it)", db.protect is True)
        e.equals(db, "/deletionProtection", True)
        e.equals(db, "/settings/deletionProtectionEnabled", True)
    for d in view.of_type(SQL_DATABASE):
        e.record(d.urn, "", d.protect, "protect: true", d.protect is True)
        e.equals(d, "/deletionPolicy", "ABANDON")


@check
def encryption_at_rest_recorded(view: StackView, e: Recorder) -> None:
    """Stored data is encrypted at rest with one key choice across the stack: Google-managed
    keys everywhere, or the same Cloud KMS key (CMEK) everywhere. Each resource's key is
    recorded; a key on some resources but not others is a violation."""
    places: list[tuple[Resource, str]] = [(db, "/encryptionKeyName") for db in view.of_type(SQL_INSTANCE)]
    places += [(p, "/nodeConfig/bootDiskKmsKey") for p in view.of_type(NODE_POOL)]
    for s in view.of_type(SECRET):
        replicas = s.at("/replication/userManaged/replicas")
        places += [(s, pointer("replication", "userManaged", "replicas", i, "customerManagedEncryption", "kmsKeyName")) for i, _ in enumerate(replicas if isinstance(replicas, tuple) else ())]
    for c in view.of_type(CLUSTER):
        state = e.expect(c, "/databaseEncryption/state", lambda v: v in ("ENCRYPTED", "DECRYPTED", ABSENT), "ENCRYPTED with a key, or DECRYPTED (Google-managed)")
        if state == "ENCRYPTED":
            places.append((c, "/databaseEncryption/keyName"))
    if not places and _owned_by_cell(view, e, [], "the stores of data at rest (database, disks, secrets)"):
        return
    keys = {json.dumps(thaw(r.at(path))) if r.at(path) is not ABSENT else None for r, path in places}
    choice = "one key choice across the stack" + (f" (found {len(keys)}: Google-managed counts as one)" if len(keys) > 1 else "")
    for r, path in places:
        e.expect(r, path, lambda v: len(keys) == 1 and (v is ABSENT or _known_str(v)), f"{choice}; absent = Google-managed key")


# --- secrets and identities ---------------------------------------------------------------------

@check
def secret_single_accessor(view: StackView, e: Recorder) -> None:
    """Every secret has exactly one IAM grant, of the accessor role, to exactly one of the stack's
    service accounts; no IAM grant names a secret the stack does not create."""
    project, _ = _anchor(view, e)
    secrets = {e.expect(s, "/secretId", _known_str, "a known secret ID"): s for s in view.of_type(SECRET)}
    accounts = {f"serviceAccount:{a.at('/accountId')}@{project}.iam.gserviceaccount.com" for a in view.of_type(SERVICE_ACCOUNT)}
    by_secret = _secret_iam_targets(view)
    for secret_id, s in secrets.items():
        granted = by_secret.get(secret_id, [])
        e.record(s.urn, "", [g.resource.urn for g in granted], "exactly one IAM grant on the secret", len(granted) == 1)
        for g in granted:
            _grant_role(e, g, lambda role: role == ACCESSOR_ROLE, f"= {ACCESSOR_ROLE}")
            e.record(g.resource.urn, g.members_path, g.members_value, "exactly one member, a service account of this stack", len(g.members) == 1 and g.members[0][0] in accounts)
    for secret_id, granted in by_secret.items():
        if secret_id not in secrets:
            for g in granted:
                e.record(g.resource.urn, "/secretId", g.resource.at("/secretId"), "a secret this stack creates", False)
    if not secrets and not _owned_by_cell(view, e, [], "the platform's secrets"):
        e.record(view.stack_urn, "", ABSENT, "the stack's secrets", False)


@check
def no_project_level_secret_access(view: StackView, e: Recorder) -> None:
    """No grant above a single secret (project, folder, organisation) can read secrets."""
    examined = 0
    for g in grants(view, e):
        if g.scope not in ("secret", "service-account"):
            examined += 1
            _grant_role(e, g, lambda role: not SECRET_READING_ROLE.match(role), "not a Secret Manager, Owner or Editor role")
    if not examined:
        e.record(view.stack_urn, "", [], "no project-level grant reads secrets (there are none)", True)


@check
def no_secret_material_in_state(view: StackView, e: Recorder) -> None:
    """No secret value passes through Pulumi: no secret versions, keys, certificates or
    password users are managed by the stack, and the cluster issues no client certificate."""
    e.none_of("resource holding key material, a secret payload or a password (" + ", ".join(SECRET_MATERIAL_TYPES) + ")", view.of_type(*SECRET_MATERIAL_TYPES))
    for u in view.of_type(SQL_USER):
        e.expect(u, "/type", lambda v: v in IAM_DATABASE_USER_TYPES, "an IAM database user (no password)")
        e.expect(u, "/password", lambda v: v is ABSENT, "absent")
    for c in view.of_type(CLUSTER):
        e.equals(c, "/masterAuth/clientCertificateConfig/issueClientCertificate", False, absent_ok=True)


@check
def no_service_account_keys(view: StackView, e: Recorder) -> None:
    """No service-account key exists, and nobody is granted a role that makes one."""
    e.none_of("gcp:serviceaccount/key:Key", view.of_type("gcp:serviceaccount/key:Key"))
    for g in grants(view, e):
        _grant_role(e, g, lambda role: not KEY_MAKING_ROLE.match(role), "not a role that creates service-account keys")


@check
def no_primitive_roles(view: StackView, e: Recorder) -> None:
    """No Owner, Editor or Viewer grant at any scope."""
    found = grants(view, e)
    for g in found:
        _grant_role(e, g, lambda role: role not in PRIMITIVE_ROLES, "not roles/owner, roles/editor or roles/viewer")
    if not found:
        e.record(view.stack_urn, "", [], "no IAM grant (so none is primitive)", True)


@check
def workload_identity_one_to_one(view: StackView, e: Recorder) -> None:
    """Each Google service account can be used by one Kubernetes service account of this
    project's pool and by nobody else: its only IAM grant is Workload Identity User with one
    member; no other role (token creator, service account user, ...) on any account."""
    project, _ = _anchor(view, e)
    for g in grants(view, e):
        if g.scope != "service-account":
            continue
        _grant_role(e, g, lambda role: role == WORKLOAD_IDENTITY_ROLE, f"= {WORKLOAD_IDENTITY_ROLE}")
        ok = len(g.members) == 1 and _known_str(g.members[0][0]) and (m := _WORKLOAD_MEMBER.match(g.members[0][0])) is not None and m.group("pool") == project
        e.record(g.resource.urn, g.members_path, g.members_value, f"exactly one member serviceAccount:{project}.svc.id.goog[<namespace>/<name>]", ok)
    per_account: dict[Any, int] = {}
    for g in grants(view):
        if g.scope == "service-account":
            per_account[g.resource.at("/serviceAccountId")] = per_account.get(g.resource.at("/serviceAccountId"), 0) + 1
    for account, count in sorted(per_account.items(), key=lambda kv: str(kv[0])):
        e.record(view.stack_urn, "", {"serviceAccountId": account, "grants": count}, "one IAM grant per service account", count == 1 and _known_str(account))


@check
def code_host_key_proxy_only(view: StackView, e: Recorder) -> None:
    """The code-host app key is readable by the egress proxy's service account alone, and that
    account can be used by the proxy's Kubernetes service account alone."""
    proxy = _catalogue().by_name[EGRESS_PROXY]
    keys = {SECRET_PREFIX + name: next((s for s in view.of_type(SECRET) if s.at("/secretId") == SECRET_PREFIX + name), None) for name in proxy.secrets}
    if _owned_by_cell(view, e, [s for s in keys.values() if s], "the code-host key"):
        return
    project, _ = _anchor(view, e)
    proxy_member = f"serviceAccount:{_sa_email(EGRESS_PROXY, project)}"
    for secret_id, secret in keys.items():
        if secret is None:
            e.record(view.stack_urn, "", ABSENT, f"the secret {secret_id!r}", False)
        granted = _secret_iam_targets(view).get(secret_id, [])
        members = sorted({str(m) for g in granted for m, _ in g.members})
        for g in granted:
            for member, path in g.members:
                e.record(g.resource.urn, path, g.resource.at(path), f"= {proxy_member!r}", member == proxy_member)
        e.record(secret.urn if secret else view.stack_urn, "", members, f"readers = [{proxy_member!r}]", members == [proxy_member])
    identity = f"serviceAccount:{project}.svc.id.goog[{proxy.namespace}/{proxy.name}]"
    account_name = f"projects/{project}/serviceAccounts/{_sa_email(EGRESS_PROXY, project)}"
    bindings = [g for g in grants(view) if g.scope == "service-account" and g.resource.at("/serviceAccountId") == account_name]
    e.record(view.stack_urn, "", [g.resource.urn for g in bindings], f"one Workload Identity grant on {account_name}", len(bindings) == 1)
    for g in bindings:
        e.record(g.resource.urn, g.members_path, g.members_value, f"= [{identity!r}]", [m for m, _ in g.members] == [identity])


@check
def vertex_ai_only_orchestrator(view: StackView, e: Recorder) -> None:
    """Only the agent orchestrator's service account holds a role that calls a model endpoint."""
    project, _ = _anchor(view, e)
    orchestrator = f"serviceAccount:{_sa_email('agent-orchestrator', project)}"
    examined = 0
    for g in grants(view, e):
        if not (_known_str(g.role) and not MODEL_ROLE.match(g.role)):
            for member, path in g.members:
                examined += 1
                e.record(g.resource.urn, path, g.resource.at(path), f"{g.role}: held by {orchestrator!r} alone", member == orchestrator)
    if not examined:
        e.record(view.stack_urn, "", [], "no model role is granted (so no workload calls Vertex AI)", True)


@check
def cleanup_identity_database_only(view: StackView, e: Recorder) -> None:
    """The audit-cleanup job's identity holds the Cloud SQL login roles on this stack's instance
    and nothing else: no other role, no secret."""
    if _owned_by_cell(view, e, view.of_type(SQL_INSTANCE), "the database"):
        return
    project, _ = _anchor(view, e)
    member = f"serviceAccount:{_sa_email('audit-cleanup', project)}"
    instance = next((db.at("/name") for db in view.of_type(SQL_INSTANCE)), ABSENT)
    condition = f'resource.name == "projects/{project}/instances/{instance}"'
    held = [(g, path) for g in grants(view, e) for m, path in g.members if m == member]
    e.record(view.stack_urn, "", sorted(str(g.role) for g, _ in held), f"exactly {sorted(DATABASE_ROLES)}", sorted(str(g.role) for g, _ in held) == sorted(DATABASE_ROLES))
    for g, path in held:
        e.record(g.resource.urn, g.role_path, g.resource.at(g.role_path), "a Cloud SQL login role", g.role in DATABASE_ROLES and g.scope == "project")
        e.record(g.resource.urn, g.condition_path, g.resource.at(g.condition_path), f"= {condition!r} (this instance only)", g.condition == condition)


# --- audit --------------------------------------------------------------------------------------

@check
def audit_bucket_locked_13_months(view: StackView, e: Recorder) -> None:
    """Audit logs are routed to a locked, protected log bucket that keeps them at least 13 months."""
    if _owned_by_cell(view, e, view.of_type(LOG_BUCKET, LOG_SINK), "the audit log bucket and the audit sink"):
        return
    project, region = _anchor(view, e)
    buckets = [b for b in view.of_type(LOG_BUCKET) if b.at("/bucketId") == AUDIT_BUCKET]
    if not buckets:
        e.record(view.stack_urn, "", ABSENT, f"the log bucket {AUDIT_BUCKET!r}", False)
    for b in buckets:
        e.expect(b, "/retentionDays", lambda v: isinstance(v, int) and v >= AUDIT_RETENTION_FLOOR_DAYS, f">= {AUDIT_RETENTION_FLOOR_DAYS} days (13 months)")
        e.equals(b, "/locked", True)
        e.record(b.urn, "", b.protect, "protect: true", b.protect is True)
    destination = f"logging.googleapis.com/projects/{project}/locations/{region}/buckets/{AUDIT_BUCKET}"
    sinks = [s for s in view.of_type(LOG_SINK) if s.at("/destination") == destination]
    e.record(view.stack_urn, "", [s.urn for s in sinks], f"a log sink to {destination}", bool(sinks))
    for s in sinks:
        e.equals(s, "/filter", AUDIT_LOG_FILTER)
        e.equals(s, "/disabled", False, absent_ok=True)
        e.expect(s, "/exclusions", lambda v: v in (ABSENT, ()), "absent (no audit log is excluded)")


@check
def data_access_audit_logs(view: StackView, e: Recorder) -> None:
    """Admin Read, Data Read and Data Write audit logs are on, with no exempted member, for every
    service that holds secrets or derived data (or for allServices)."""
    if _owned_by_cell(view, e, view.of_type(AUDIT_CONFIG), "audit configs"):
        return
    configs = view.of_type(AUDIT_CONFIG)
    for service in DATA_ACCESS_SERVICES:
        covering = [c for c in configs if c.at("/service") in (service, "allServices")]
        e.record(view.stack_urn, "", [c.urn for c in covering], f"an audit config for {service}", bool(covering))
        for c in covering:
            logs = c.at("/auditLogConfigs")
            types = [l.get("logType") for l in logs] if isinstance(logs, tuple) else []
            e.expect(c, "/auditLogConfigs", lambda v: all(t in types for t in DATA_ACCESS_LOG_TYPES), f"log types {list(DATA_ACCESS_LOG_TYPES)}")
            for i, _ in enumerate(logs if isinstance(logs, tuple) else ()):
                e.expect(c, pointer("auditLogConfigs", i, "exemptedMembers"), lambda v: v in (ABSENT, ()), "absent (nobody exempted)")
