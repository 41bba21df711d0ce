"""What a stack deploys and who may do what, derived once from the catalogue and the stack config.

Every component takes its grants from here: GCP identities and their roles, secret accessors,
Cloud SQL IAM users, Kubernetes service accounts and (in the Kubernetes layer) RBAC and network
edges. Nothing else decides a privilege.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from infra.catalogue import Catalogue, Workload
from infra.config import StackConfig, TelemetryConnection

# Database users connect through the Cloud SQL connector with IAM authentication: they need to
# reach the instance (client) and to log in as their IAM user (instanceUser), nothing more.
DATABASE_ROLES = ("roles/cloudsql.client", "roles/cloudsql.instanceUser")
# The node service account: write logs and metrics, pull images. Never the Compute default account.
NODE_ROLES = ("roles/logging.logWriter", "roles/monitoring.metricWriter", "roles/artifactregistry.reader")
# Providers whose connection needs a credential; gcp connections use the connector's own identity.
CREDENTIAL_PROVIDERS = {"datadog", "grafana", "axiom"}
SECRET_PREFIX = "perfloop-"


@dataclass(frozen=True)
class Deployed:
    """One workload as this stack runs it."""

    workload: Workload
    namespace: str
    workspace: Optional[str]

    @property
    def name(self) -> str:
        return self.workload.name


@dataclass(frozen=True)
class Identity:
    """A Google service account and everything it is granted."""

    deployed: Deployed
    account_id: str
    project_roles: tuple[str, ...]
    secrets: tuple[str, ...]
    database_role: Optional[str]

    @property
    def kubernetes_service_account(self) -> tuple[str, str]:
        return self.deployed.namespace, self.deployed.name


@dataclass(frozen=True)
class SecretSpec:
    """A Secret Manager container and the one identity that may read it."""

    secret_id: str
    description: str
    reader: str  # Identity.account_id


@dataclass(frozen=True)
class Topology:
    config: StackConfig
    catalogue: Catalogue
    deployed: tuple[Deployed, ...]
    identities: tuple[Identity, ...]
    secrets: tuple[SecretSpec, ...]

    def identity_of(self, account_id: str) -> Identity:
        return next(i for i in self.identities if i.account_id == account_id)


def namespace_of(workload: Workload, workspace: Optional[str]) -> str:
    """Cell workloads share the catalogue's namespace; each workspace gets its own copies."""
    return workload.namespace if workload.scope == "cell" else f"{workload.namespace}-{workspace}"


def _account_id(workload: Workload, workspace: Optional[str]) -> str:
    if workload.scope == "cell":
        return workload.service_account_id
    return f"pf-{workspace}-{workload.name.removeprefix('connector-')}"


def connection_secret(workspace: str, kind: str) -> str:
    return f"{SECRET_PREFIX}{workspace}-{kind}-credentials"


def build_topology(config: StackConfig, catalogue: Catalogue) -> Topology:
    """The cell's workloads, plus the workspace's when the stack has one. A tenant's topology
    includes the cell's workloads too — its edges and grants lead into them — but the tenant
    stack creates only the workspace's part."""
    workspace = config.workspace
    connections: dict[str, TelemetryConnection] = workspace.telemetry.configured() if workspace else {}
    deployed = tuple(
        Deployed(w, namespace_of(w, workspace.id if workspace else None), workspace.id if w.scope == "workspace" else None)
        for w in catalogue.deployed(set(connections))
        if w.scope == "cell" or workspace is not None
    )
    identities: list[Identity] = []
    secrets: list[SecretSpec] = []
    for d in deployed:
        w = d.workload
        secret_ids = [SECRET_PREFIX + s for s in w.secrets]
        connection = connections.get(w.connection) if w.connection else None
        # Strict mode grants the connector nothing in its category, so it holds no credential.
        if connection is not None and connection.provider in CREDENTIAL_PROVIDERS and connection.mode != "strict":
            secret_ids.append(connection_secret(d.workspace, w.connection))
        if not (w.has_gcp_identity or secret_ids):
            continue
        account = _account_id(w, d.workspace)
        roles = tuple(sorted(set(w.gcp_roles) | (set(DATABASE_ROLES) if w.database_role else set())))
        identities.append(Identity(d, account, roles, tuple(secret_ids), w.database_role))
        for secret_id in secret_ids:
            name = secret_id.removeprefix(SECRET_PREFIX)
            description = catalogue.secrets.get(name) or f"Credentials of the {w.connection} connection of workspace {d.workspace}."
            secrets.append(SecretSpec(secret_id, description, account))
    return Topology(config, catalogue, deployed, tuple(identities), tuple(sorted(secrets, key=lambda s: s.secret_id)))
