"""Stack configuration: the `perfloop:*` keys of `stacks/Pulumi.<stack>.yaml`, validated as a whole.

Secure by default: a key left out gets its strict value. The only way to weaken a setting is to name
it under `perfloop:loosen`; every loosening is carried into the plan and the evidence bundle.
Validation runs before any resource is registered and reports every problem at once, each naming
the key, the bad value and what is allowed.
"""

from __future__ import annotations

import ipaddress
import json
import re
from enum import Enum
from typing import Any, Literal, Optional

import pulumi
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from infra.errors import ConfigError

NAMESPACE = "perfloop"

# Regions where every service the stack uses (GKE, Cloud SQL, Secret Manager, Vertex AI) is offered.
GCP_REGIONS = frozenset(
    {
        "asia-east1", "asia-east2", "asia-northeast1", "asia-northeast2", "asia-northeast3",
        "asia-south1", "asia-southeast1", "asia-southeast2", "australia-southeast1",
        "europe-central2", "europe-north1", "europe-southwest1", "europe-west1", "europe-west2",
        "europe-west3", "europe-west4", "europe-west6", "europe-west8", "europe-west9",
        "me-central1", "me-west1", "northamerica-northeast1", "northamerica-northeast2",
        "southamerica-east1", "us-central1", "us-east1", "us-east4", "us-east5", "us-south1",
        "us-west1", "us-west2", "us-west3", "us-west4",
    }
)

_PRIVATE_NETS = [ipaddress.ip_network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16")]
_PROJECT_ID = re.compile(r"^[a-z][a-z0-9-]{4,28}[a-z0-9]$")
_KMS_KEY = re.compile(r"^projects/[a-z][a-z0-9-]{4,28}[a-z0-9]/locations/[a-z0-9-]+/keyRings/[\w-]+/cryptoKeys/[\w-]+$")
_TIER = re.compile(r"^db-(?:custom-(\d+)-(\d+)|perf-optimized-N-(\d+))$")
_PERF_OPTIMIZED_CPUS = {2, 4, 8, 16, 32, 48, 64, 80, 96, 128}
_IMAGE_DIGEST = re.compile(r"^[a-z0-9.-]+(:\d+)?/[a-z0-9._/-]+@sha256:[0-9a-f]{64}$")
_LABEL_KEY = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")
_LABEL_VALUE = re.compile(r"^[a-z0-9_-]{0,63}$")
_REPOSITORY = re.compile(r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$")
_WORKSPACE_ID = re.compile(r"^[a-z][a-z0-9]{1,15}$")
_HOSTNAME = re.compile(r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$")


class Loosening(str, Enum):
    """Every way a stack may be made less strict than the default. Each one is named, and shows
    up in the plan's stack outputs and in the evidence bundle."""

    # Cloud SQL accepts TLS without a client certificate (ssl_mode ENCRYPTED_ONLY) and direct
    # connections that bypass the Cloud SQL connectors. Still TLS-only.
    DATABASE_TLS_WITHOUT_CLIENT_CERTIFICATES = "database-tls-without-client-certificates"
    # The cluster admits images that no Binary Authorization policy has checked.
    BINARY_AUTHORIZATION_DISABLED = "binary-authorization-disabled"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _private_network(value: str) -> ipaddress.IPv4Network:
    try:
        net = ipaddress.ip_network(value, strict=True)
    except ValueError as exc:
        raise ValueError(f"{value!r} is not a CIDR range with its host bits zero ({exc}); e.g. 10.10.0.0/20") from None
    if not isinstance(net, ipaddress.IPv4Network) or not any(net.subnet_of(p) for p in _PRIVATE_NETS):
        raise ValueError(f"{value!r} is not inside an RFC 1918 range (10/8, 172.16/12, 192.168/16)")
    return net


class NetworkConfig(_Model):
    """Address plan. Every range must be RFC 1918 and no two may overlap."""

    nodes_cidr: str = Field(description="Primary range of the cluster subnet (node VMs).")
    pods_cidr: str = Field(description="Secondary range for pods of the system and sandbox pools.")
    egress_pods_cidr: str = Field(description="Secondary range used only by the egress pool's pods; the only range Cloud NAT translates.")
    services_cidr: str = Field(description="Secondary range for Kubernetes Services.")
    control_plane_cidr: str = Field(description="The GKE control plane's /28.")
    private_services_cidr: str = Field(description="Range reserved for private services access (Cloud SQL).")

    @field_validator("*")
    @classmethod
    def _is_private(cls, value: str) -> str:
        _private_network(value)
        return value

    @model_validator(mode="after")
    def _sizes_and_overlaps(self) -> "NetworkConfig":
        nets = {name: ipaddress.ip_network(getattr(self, name)) for name in type(self).model_fields}
        problems = []
        if nets["control_plane_cidr"].prefixlen != 28:
            problems.append(f"control_plane_cidr {self.control_plane_cidr!r} must be a /28 (GKE requires it)")
        if nets["private_services_cidr"].prefixlen > 24:
            problems.append(f"private_services_cidr {self.private_services_cidr!r} must be /24 or larger (Cloud SQL requires it)")
        for name in ("pods_cidr", "egress_pods_cidr"):
            if nets[name].prefixlen > 24:
                problems.append(f"{name} {getattr(self, name)!r} must be /24 or larger (GKE gives each node a /24 by default)")
        names = list(nets)
        for i, a in enumerate(names):
            for b in names[i + 1 :]:
                if nets[a].overlaps(nets[b]):
                    problems.append(f"{a} {getattr(self, a)!r} overlaps {b} {getattr(self, b)!r}; choose non-overlapping ranges")
        if problems:
            raise ValueError("; ".join(problems))
        return self


class AuthorizedNetwork(_Model):
    display_name: str = Field(min_length=1, max_length=64)
    cidr: str

    @field_validator("cidr")
    @classmethod
    def _cidr(cls, value: str) -> str:
        try:
            net = ipaddress.ip_network(value, strict=True)
        except ValueError:
            raise ValueError(f"{value!r} is not a CIDR range with its host bits zero; e.g. 203.0.113.0/29") from None
        if net.prefixlen < 16:
            raise ValueError(f"{value!r} is wider than /16; authorise operator networks, not the internet")
        return value


class NodePoolConfig(_Model):
    machine_type: str = Field(pattern=r"^[a-z0-9]+-[a-z0-9]+(-\d+)?$")
    min_nodes_per_zone: int = Field(ge=0, le=100)
    max_nodes_per_zone: int = Field(ge=1, le=100)
    disk_size_gb: int = Field(default=100, ge=20, le=2000)

    @model_validator(mode="after")
    def _bounds(self) -> "NodePoolConfig":
        if self.min_nodes_per_zone > self.max_nodes_per_zone:
            raise ValueError(
                f"min_nodes_per_zone ({self.min_nodes_per_zone}) exceeds max_nodes_per_zone ({self.max_nodes_per_zone})"
            )
        return self


class NodePoolsConfig(_Model):
    system: NodePoolConfig = NodePoolConfig(machine_type="e2-standard-4", min_nodes_per_zone=1, max_nodes_per_zone=3)
    egress: NodePoolConfig = NodePoolConfig(machine_type="e2-standard-2", min_nodes_per_zone=1, max_nodes_per_zone=2)
    sandbox: NodePoolConfig = NodePoolConfig(machine_type="n2-standard-8", min_nodes_per_zone=0, max_nodes_per_zone=10)


class ClusterConfig(_Model):
    release_channel: Literal["RAPID", "REGULAR", "STABLE"] = "REGULAR"
    # Minimum control-plane version; manifests are validated against this version's schemas.
    kubernetes_version: Literal["1.33", "1.34", "1.35"] = "1.34"
    # Networks allowed to reach the control plane's private endpoint (besides the VPC itself).
    master_authorized_networks: list[AuthorizedNetwork] = []
    node_pools: NodePoolsConfig = NodePoolsConfig()


class MaintenanceWindow(_Model):
    day: int = Field(default=7, ge=1, le=7, description="1 = Monday … 7 = Sunday")
    hour: int = Field(default=3, ge=0, le=23, description="Hour of day, UTC")


class DatabaseConfig(_Model):
    version: Literal["POSTGRES_14", "POSTGRES_15", "POSTGRES_16", "POSTGRES_17"] = "POSTGRES_15"
    edition: Literal["ENTERPRISE", "ENTERPRISE_PLUS"] = "ENTERPRISE"
    tier: str = "db-custom-2-7680"
    disk_size_gb: int = Field(default=50, ge=10, le=65536)
    backup_retention_count: int = Field(default=30, ge=7, le=365)
    point_in_time_recovery_days: int = Field(default=7, ge=1, le=35)
    maintenance_window: MaintenanceWindow = MaintenanceWindow()

    @field_validator("tier")
    @classmethod
    def _tier(cls, value: str) -> str:
        match = _TIER.match(value)
        if not match:
            raise ValueError(
                f"{value!r} is not a dedicated-core Cloud SQL tier; allowed: db-custom-<vCPUs>-<memory MiB> "
                "(e.g. db-custom-2-7680) or db-perf-optimized-N-<vCPUs> for ENTERPRISE_PLUS; "
                "shared-core tiers (db-f1-micro, db-g1-small) carry no SLA"
            )
        if match.group(3):
            if int(match.group(3)) not in _PERF_OPTIMIZED_CPUS:
                raise ValueError(f"{value!r}: vCPUs must be one of {sorted(_PERF_OPTIMIZED_CPUS)}")
        else:
            cpus, memory = int(match.group(1)), int(match.group(2))
            if cpus != 1 and (cpus % 2 or cpus > 96):
                raise ValueError(f"{value!r}: vCPUs must be 1 or an even number up to 96")
            if memory % 256 or not (921 * cpus <= memory <= 6656 * cpus):
                raise ValueError(f"{value!r}: memory must be a multiple of 256 MiB and 0.9–6.5 GiB per vCPU")
        return value

    @model_validator(mode="after")
    def _edition_fits(self) -> "DatabaseConfig":
        perf = self.tier.startswith("db-perf-optimized-")
        if perf != (self.edition == "ENTERPRISE_PLUS"):
            raise ValueError(f"tier {self.tier!r} does not fit edition {self.edition!r}; db-perf-optimized-* tiers are ENTERPRISE_PLUS only")
        if self.edition == "ENTERPRISE" and self.point_in_time_recovery_days > 7:
            raise ValueError("point_in_time_recovery_days above 7 needs edition ENTERPRISE_PLUS")
        return self


class CodeHostConnection(_Model):
    provider: Literal["github", "gitlab", "bitbucket"]
    repositories: list[str] = Field(min_length=1)

    @field_validator("repositories")
    @classmethod
    def _repos(cls, value: list[str]) -> list[str]:
        bad = [r for r in value if not _REPOSITORY.match(r)]
        if bad:
            raise ValueError(f"{bad} are not repositories of the form owner/name")
        return sorted(set(value))


class TelemetryConnection(_Model):
    provider: Literal["datadog", "grafana", "axiom", "gcp"]
    # The customer's own endpoint (Grafana stack, Datadog site); not needed for gcp or axiom.
    host: Optional[str] = None
    # strict grants the connector no permission at all for its category (logs: no log endpoint).
    mode: Literal["aggregate", "strict"] = "aggregate"
    # Logs: the views the customer authored; the connector queries only these.
    log_views: list[str] = []
    # Traces: span attribute keys the customer approved. Starts empty.
    trace_attribute_allowlist: list[str] = []
    # Grafana: the data sources (by UID) the connector may query; required for Grafana.
    datasource_uids: list[str] = []

    @model_validator(mode="after")
    def _grafana_sources(self) -> "TelemetryConnection":
        if self.provider == "grafana" and not self.datasource_uids:
            raise ValueError("a Grafana connection names the data sources it may query: datasource_uids")
        if self.provider != "grafana" and self.datasource_uids:
            raise ValueError("datasource_uids is for Grafana connections only")
        return self

    @field_validator("host")
    @classmethod
    def _host(cls, value: Optional[str]) -> Optional[str]:
        if value is not None and not _HOSTNAME.match(value):
            raise ValueError(f"{value!r} is not a DNS host name (no scheme, port or path)")
        return value


class TelemetryConnections(_Model):
    metrics: Optional[TelemetryConnection] = None
    traces: Optional[TelemetryConnection] = None
    logs: Optional[TelemetryConnection] = None
    profiles: Optional[TelemetryConnection] = None

    def configured(self) -> dict[str, TelemetryConnection]:
        return {kind: conn for kind in ("metrics", "traces", "logs", "profiles") if (conn := getattr(self, kind))}


class WorkspaceConfig(_Model):
    """One customer workspace. Nothing is connected by default: each connection is its own entry."""

    id: str
    code_host: Optional[CodeHostConnection] = None
    telemetry: TelemetryConnections = TelemetryConnections()

    @field_validator("id")
    @classmethod
    def _id(cls, value: str) -> str:
        if not _WORKSPACE_ID.match(value):
            raise ValueError(f"{value!r} must be 2–16 lower-case letters and digits, starting with a letter")
        return value


# Which keys each shape may set. A tenant names its cell and describes its workspace; everything
# else is the cell's, and a tenant stack cannot set (or weaken) it.
SHAPE_KEYS = {
    "byoc": {"required": {"shape", "project", "region", "network", "workspace"}, "forbidden": {"cell"}},
    "cell": {"required": {"shape", "project", "region", "network"}, "forbidden": {"cell", "workspace"}},
    "tenant": {
        "required": {"shape", "cell", "workspace"},
        "forbidden": {"project", "region", "network", "cluster", "database", "cmek_key", "images", "loosen"},
    },
}


class StackConfig(_Model):
    shape: Literal["byoc", "cell", "tenant"] = Field(description="byoc: cell + one workspace in the customer's project; cell: shared infrastructure; tenant: one workspace on a cell.")
    # Tenant only: the cell's stack ("org/project/stack" or, in one backend, the stack name).
    cell: Optional[str] = Field(default=None, pattern=r"^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+){0,2}$")
    project: Optional[str] = Field(default=None, description="GCP project every resource is created in.")
    region: Optional[str] = None
    network: Optional[NetworkConfig] = None
    cluster: ClusterConfig = ClusterConfig()
    database: DatabaseConfig = DatabaseConfig()
    # Customer-managed key for Cloud SQL, Secret Manager replicas and GKE application-layer
    # secrets encryption. Without it, Google-managed keys encrypt data at rest.
    cmek_key: Optional[str] = None
    workspace: Optional[WorkspaceConfig] = None
    labels: dict[str, str] = {}
    # Per-workload image override; must be pinned by digest like the catalogue's.
    images: dict[str, str] = {}
    loosen: list[Loosening] = []

    @field_validator("project")
    @classmethod
    def _project(cls, value: Optional[str]) -> Optional[str]:
        if value is not None and not _PROJECT_ID.match(value):
            raise ValueError(f"{value!r} is not a GCP project ID (6–30 lower-case letters, digits, hyphens; starts with a letter)")
        return value

    @field_validator("region")
    @classmethod
    def _region(cls, value: Optional[str]) -> Optional[str]:
        if value is not None and value not in GCP_REGIONS:
            raise ValueError(f"{value!r} is not a known GCP region; allowed: {', '.join(sorted(GCP_REGIONS))}")
        return value

    @field_validator("cmek_key")
    @classmethod
    def _cmek(cls, value: Optional[str]) -> Optional[str]:
        if value is not None and not _KMS_KEY.match(value):
            raise ValueError(f"{value!r} is not a Cloud KMS key name (projects/P/locations/L/keyRings/R/cryptoKeys/K)")
        return value

    @field_validator("labels")
    @classmethod
    def _labels(cls, value: dict[str, str]) -> dict[str, str]:
        bad = [f"{k}={v}" for k, v in value.items() if not (_LABEL_KEY.match(k) and _LABEL_VALUE.match(v))]
        if bad:
            raise ValueError(f"{bad} are not valid GCP labels (lower-case letters, digits, _ and -; keys start with a letter)")
        return value

    @field_validator("images")
    @classmethod
    def _images(cls, value: dict[str, str]) -> dict[str, str]:
        bad = [k for k, v in value.items() if not _IMAGE_DIGEST.match(v)]
        if bad:
            raise ValueError(f"images for {bad} are not pinned by digest (registry/path@sha256:<64 hex>)")
        return value

    @field_validator("loosen")
    @classmethod
    def _unique(cls, value: list[Loosening]) -> list[Loosening]:
        return sorted(set(value), key=lambda l: l.value)

    @model_validator(mode="after")
    def _cmek_in_region(self) -> "StackConfig":
        if self.cmek_key and f"/locations/{self.region}/" not in self.cmek_key:
            raise ValueError(f"cmek_key {self.cmek_key!r} must be in the stack's region {self.region!r} (residency)")
        return self

    def loosened(self, loosening: Loosening) -> bool:
        return loosening in self.loosen

    def on_cell(self, contract: "CellContract") -> "StackConfig":
        """A tenant's effective config: its workspace on the cell's project, region and network."""
        return self.model_copy(
            update={
                "project": contract.project,
                "region": contract.region,
                "network": contract.network,
                "cluster": self.cluster.model_copy(update={"kubernetes_version": contract.kubernetes_version}),
                "cmek_key": contract.cmek_key,
                "loosen": contract.loosen,
            }
        )


class CellContract(_Model):
    """What a cell exports for its tenants (stack output `tenant_contract`): enough to place a
    workspace on it, nothing that would let a tenant change it."""

    project: str
    region: str
    network: NetworkConfig
    kubernetes_version: str
    database_instance: str
    cluster_endpoint: str
    cmek_key: Optional[str] = None
    loosen: list[Loosening] = []


def parse_cell_contract(value: Any, cell: str) -> CellContract:
    try:
        return CellContract.model_validate(value)
    except ValidationError as exc:
        problems = [f"{NAMESPACE}:cell: stack {cell!r} output tenant_contract is missing or malformed ({len(exc.errors())} problems); deploy the cell with this package's version first"]
        raise ConfigError("cell reference", problems) from None


def _structured(field: Any) -> bool:
    """Keys whose YAML value is an object or a list arrive from Pulumi as JSON text."""
    annotation = str(field.annotation)
    return any(t in annotation for t in ("Config", "dict", "list"))


def parse_stack_config(raw: dict[str, Any], source: str = "stack config") -> StackConfig:
    """Validate `perfloop:*` values (already decoded) into a StackConfig or raise ConfigError."""
    known = set(StackConfig.model_fields)
    problems = [
        f"{NAMESPACE}:{key}: not a known key; known keys: {', '.join(sorted(known))}"
        for key in sorted(set(raw) - known)
    ]
    rules = SHAPE_KEYS.get(raw.get("shape"))
    if rules is not None:
        shape = raw["shape"]
        problems += [f"{NAMESPACE}:{k}: required key is missing for shape {shape!r}; set it in the stack file" for k in sorted(rules["required"] - set(raw))]
        problems += [
            f"{NAMESPACE}:{k}: not allowed for shape {shape!r}" + ("; the cell owns it" if shape == "tenant" else "")
            for k in sorted(rules["forbidden"] & set(raw))
        ]
    try:
        config = StackConfig.model_validate(raw)
    except ValidationError as exc:
        problems += [_describe(error) for error in exc.errors()]
        config = None
    if problems:
        raise ConfigError(source, problems)
    return config


def _describe(error: dict[str, Any]) -> str:
    loc = [str(p) for p in error["loc"]]
    key = f"{NAMESPACE}:{loc[0]}" + "".join(f"[{p}]" if p.isdigit() else f".{p}" for p in loc[1:]) if loc else NAMESPACE
    message = error["msg"].removeprefix("Value error, ")
    if error["type"] == "missing":
        return f"{key}: required key is missing; set it in the stack file (see stacks/Pulumi.byoc-example.yaml)"
    if error["type"] == "extra_forbidden":
        return f"{key}: not a known key; remove it or fix its spelling"
    if error["type"] in ("literal_error", "enum"):
        return f"{key}: {error.get('input')!r} is not allowed; {message}"
    shown = error.get("input")
    if isinstance(shown, (dict, list)) or error["type"].startswith(("value_error", "assertion")):
        return f"{key}: {message}"
    return f"{key}: {shown!r}: {message}"


def decode_pulumi_config(values: dict[str, str]) -> dict[str, Any]:
    """Turn Pulumi's wire form (every value a string; objects and lists as JSON) back into data."""
    decoded: dict[str, Any] = {}
    for key, text in values.items():
        field = StackConfig.model_fields.get(key)
        if field is not None and _structured(field):
            try:
                decoded[key] = json.loads(text)
            except json.JSONDecodeError:
                decoded[key] = text  # reported by validation as the wrong type
        else:
            decoded[key] = text
    return decoded


def load_stack_config() -> StackConfig:
    """Read and validate this stack's `perfloop:*` config from the Pulumi runtime."""
    from pulumi.runtime import config as runtime_config

    # The runtime holds every key it was given; unknown `perfloop:` keys (typos) are errors,
    # not silently ignored settings.
    present = set(runtime_config.CONFIG.get()) | set(runtime_config.get_config_env())
    config = pulumi.Config(NAMESPACE)
    keys = {k.split(":", 1)[1] for k in present if k.startswith(f"{NAMESPACE}:")}
    values = {key: text for key in sorted(keys) if (text := config.get(key)) is not None}
    return parse_stack_config(decode_pulumi_config(values), f"stack config of stack {pulumi.get_stack()!r}")
