"""The workload catalogue (`platform/catalogue.yaml`): the one declaration of privilege.

Everything that grants anything — service accounts, secret accessors, Cloud SQL IAM users, RBAC,
NetworkPolicies, proxy destinations, the evidence grants ledger — is derived from this model.
Validation rejects, with the entry named, what the security page rules out.
"""

from __future__ import annotations

import re
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Literal, Optional

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from infra.errors import ConfigError

CATALOGUE_PATH = Path(__file__).resolve().parent.parent / "platform" / "catalogue.yaml"

EGRESS_PROXY = "egress-proxy"
SANDBOX_KIND = "SandboxTemplate"
NODE_POOLS = ("system", "egress", "sandbox")
CONNECTION_KINDS = ("metrics", "traces", "logs", "profiles")
# ConfigMaps the platform renders, which a workload may mount read-only.
PLATFORM_CONFIG_MAPS = ("sandbox-pod-template", "db-migrations", "egress-policy", "connector-config")

# Roles that would grant far more than any one workload needs, or would bypass the per-secret grant.
_FORBIDDEN_ROLE = re.compile(r"^roles/(owner|editor|viewer|secretmanager\..*|iam\.serviceAccount(Admin|Key.*|TokenCreator|User)|resourcemanager\..*)$")
_IMAGE_DIGEST = re.compile(r"^[a-z0-9.-]+(:\d+)?/[a-z0-9._/-]+@sha256:[0-9a-f]{64}$")
_QUANTITY = re.compile(r"^\d+(\.\d+)?(m|Ki|Mi|Gi)?$")
# RBAC the platform never grants anyone: escalation paths and ways into other workloads.
_FORBIDDEN_VERBS = {"*", "escalate", "bind", "impersonate"}
_FORBIDDEN_RESOURCES = {"*", "secrets", "pods/exec", "pods/attach", "pods/portforward", "serviceaccounts/token"}


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Port(_Model):
    name: str = Field(pattern=r"^[a-z][a-z0-9-]{0,14}$")
    port: int = Field(ge=1024, le=65535)


class Call(_Model):
    workload: str
    port: int


class Resources(_Model):
    cpu: str = Field(pattern=_QUANTITY.pattern)
    memory: str = Field(pattern=_QUANTITY.pattern)
    cpu_limit: str = Field(pattern=_QUANTITY.pattern)
    memory_limit: str = Field(pattern=_QUANTITY.pattern)


class ApiPermission(_Model):
    api_group: str
    resource: str
    verbs: list[str] = Field(min_length=1)
    # None: cluster-scoped (ClusterRole); otherwise a Role in that namespace.
    namespace: Optional[str] = None

    @model_validator(mode="after")
    def _no_escalation(self) -> "ApiPermission":
        bad_verbs = _FORBIDDEN_VERBS & set(self.verbs)
        if bad_verbs or self.resource in _FORBIDDEN_RESOURCES or "*" in self.api_group:
            raise ValueError(
                f"{self.resource} {sorted(self.verbs)} is never granted: no wildcards, no escalate/bind/impersonate, "
                "no secrets, no pods/exec, pods/attach or pods/portforward"
            )
        return self


class Workload(_Model):
    name: str = Field(pattern=r"^[a-z][a-z0-9-]{2,26}$")
    description: str
    kind: Literal["Deployment", "CronJob", "Job", "SandboxTemplate"]
    # cell: one instance serves every workspace; workspace: one instance per workspace.
    scope: Literal["cell", "workspace"] = "cell"
    namespace: str
    node_pool: Literal["system", "egress", "sandbox"]
    image: str
    replicas: int = Field(default=1, ge=1, le=20)
    schedule: Optional[str] = None
    # Deployed only when the workspace has configured this telemetry connection.
    connection: Optional[Literal["metrics", "traces", "logs", "profiles"]] = None
    ports: list[Port] = []
    resources: Resources
    calls: list[Call] = []
    internet: bool = False
    dns: bool = False
    google_apis: bool = False
    secrets: list[str] = []
    gcp_roles: list[str] = []
    database_role: Optional[str] = None
    kubernetes_api: list[ApiPermission] = []
    # Internet hosts this workload's own traffic may reach through the proxy (subprocessors).
    egress_destinations: list[str] = []
    # A Google identity even without secrets or roles here: a connector's own identity is what the
    # customer grants read access to in their telemetry project.
    gcp_identity: bool = False
    # Platform-rendered ConfigMaps mounted read-only under /etc/perfloop/<name>.
    config_maps: list[Literal["sandbox-pod-template", "db-migrations", "egress-policy", "connector-config"]] = []

    @field_validator("image")
    @classmethod
    def _digest(cls, value: str) -> str:
        if not _IMAGE_DIGEST.match(value):
            raise ValueError(f"image {value!r} is not pinned by digest (registry/path@sha256:<64 hex>)")
        return value

    @field_validator("gcp_roles")
    @classmethod
    def _roles(cls, value: list[str]) -> list[str]:
        for role in value:
            if not role.startswith("roles/"):
                raise ValueError(f"{role!r} is not a predefined role (roles/...)")
            if _FORBIDDEN_ROLE.match(role):
                raise ValueError(
                    f"{role!r} is never granted to a workload: no primitive roles, no Secret Manager roles "
                    "(secrets are granted one by one through `secrets`), no IAM or project administration"
                )
        return value

    @model_validator(mode="after")
    def _shape(self) -> "Workload":
        if (self.kind == "CronJob") != (self.schedule is not None):
            raise ValueError("a schedule is required for a CronJob and only for a CronJob")
        if self.kind == "Deployment" and not self.ports:
            raise ValueError("a Deployment must declare the ports it serves")
        return self

    @property
    def has_gcp_identity(self) -> bool:
        return bool(self.gcp_identity or self.secrets or self.gcp_roles or self.database_role)

    @property
    def calls_kubernetes_api(self) -> bool:
        return bool(self.kubernetes_api)

    @property
    def service_account_id(self) -> str:
        """Google service account ID (6–30 characters)."""
        return f"pf-{self.name}"

    @property
    def port_numbers(self) -> set[int]:
        return {p.port for p in self.ports}


class Catalogue(_Model):
    namespaces: dict[str, str]
    secrets: dict[str, str]
    workloads: list[Workload]

    @model_validator(mode="after")
    def _consistent(self) -> "Catalogue":
        problems: list[str] = []
        seen: dict[str, Workload] = {}
        for w in self.workloads:
            if w.name in seen:
                problems.append(f"workload {w.name!r}: duplicate name")
            seen[w.name] = w
        readers: dict[str, list[str]] = {s: [] for s in self.secrets}
        connections: dict[str, str] = {}
        for w in self.workloads:
            where = f"workload {w.name!r}"
            if w.namespace not in self.namespaces:
                problems.append(f"{where}: namespace {w.namespace!r} is not declared under `namespaces`")
            for call in w.calls:
                callee = seen.get(call.workload)
                if callee is None:
                    problems.append(f"{where}: calls unknown workload {call.workload!r}")
                elif call.port not in callee.port_numbers:
                    problems.append(f"{where}: calls {call.workload!r} on port {call.port}, which it does not serve ({sorted(callee.port_numbers)})")
                elif callee.kind == SANDBOX_KIND:
                    problems.append(f"{where}: calls the sandbox; nothing may open a connection into a sandbox")
            if w.internet and w.name != EGRESS_PROXY:
                problems.append(f"{where}: asks for internet egress; only {EGRESS_PROXY!r} may reach the internet")
            if w.egress_destinations and w.name == EGRESS_PROXY:
                problems.append(f"{where}: the proxy has no destinations of its own; declare them on the workload that uses them")
            if (w.node_pool == "egress") != (w.name == EGRESS_PROXY):
                problems.append(f"{where}: node pool 'egress' is for {EGRESS_PROXY!r} alone")
            if (w.node_pool == "sandbox") != (w.kind == SANDBOX_KIND):
                problems.append(f"{where}: node pool 'sandbox' is for the sandbox template alone")
            if w.kind == SANDBOX_KIND:
                held = [f for f in ("gcp_identity", "secrets", "gcp_roles", "database_role", "kubernetes_api", "egress_destinations", "config_maps") if getattr(w, f)]
                if held:
                    problems.append(f"{where}: a sandbox holds no credentials, yet declares {', '.join(held)}")
                if w.dns or w.google_apis or w.internet:
                    problems.append(f"{where}: a sandbox's only path out is the egress proxy (no dns, google_apis or internet)")
                if [c.workload for c in w.calls] != [EGRESS_PROXY]:
                    problems.append(f"{where}: a sandbox may call {EGRESS_PROXY!r} and nothing else")
            for perm in w.kubernetes_api:
                if perm.namespace is not None and perm.namespace not in self.namespaces:
                    problems.append(f"{where}: kubernetes_api namespace {perm.namespace!r} is not declared")
            for secret in w.secrets:
                if secret not in readers:
                    problems.append(f"{where}: reads undeclared secret {secret!r}")
                else:
                    readers[secret].append(w.name)
            if (w.connection is not None or w.kind == SANDBOX_KIND) != (w.scope == "workspace"):
                problems.append(f"{where}: connectors and the sandbox, and only they, are per-workspace (scope: workspace)")
            if w.connection:
                if w.connection in connections:
                    problems.append(f"{where}: connection {w.connection!r} is already served by {connections[w.connection]!r}")
                connections[w.connection] = w.name
        for secret, names in readers.items():
            if len(names) != 1:
                problems.append(f"secret {secret!r}: must have exactly one reader, has {names or 'none'}")
        if problems:
            raise ValueError("\n".join(problems))
        return self

    @cached_property
    def by_name(self) -> dict[str, Workload]:
        return {w.name: w for w in self.workloads}

    def deployed(self, connections: set[str]) -> list[Workload]:
        """The workloads a workspace with these configured telemetry connections runs."""
        return [w for w in self.workloads if w.connection is None or w.connection in connections]

    def secret_reader(self, secret: str) -> Workload:
        return next(w for w in self.workloads if secret in w.secrets)


def load_catalogue(path: Path = CATALOGUE_PATH) -> Catalogue:
    """Load and validate the catalogue, or raise ConfigError naming each bad entry."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"workload catalogue {path.name}", [str(exc)]) from None
    return _parse_catalogue(path.name, text)


@lru_cache(maxsize=4)
def _parse_catalogue(name: str, text: str) -> Catalogue:
    """Parsed once per content: a fleet plans hundreds of stacks in one process. The model is
    frozen, so sharing it is safe."""
    source = f"workload catalogue {name}"
    try:
        raw = yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except yaml.YAMLError as exc:
        raise ConfigError(source, [str(exc)]) from None
    try:
        return Catalogue.model_validate(raw)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            loc = error["loc"]
            where = ""
            if len(loc) >= 2 and loc[0] == "workloads" and isinstance(loc[1], int):
                name = (raw.get("workloads") or [{}])[loc[1]].get("name", f"#{loc[1]}")
                where = f"workload {name!r}: " + ".".join(str(p) for p in loc[2:]) + (": " if loc[2:] else "")
            elif loc:
                where = ".".join(str(p) for p in loc) + ": "
            problems += [where + line for line in error["msg"].removeprefix("Value error, ").split("\n")]
        raise ConfigError(source, problems) from None
