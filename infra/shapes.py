"""Deployment shapes composed from the same components.

- `Cell`: shared infrastructure (network, cluster and pools, database, audit logging) and the
  identities and secrets of the cell's own workloads.
- `Workspace`: what one customer workspace adds on a cell: its connectors' identities, its
  connection secrets and its database users.
- BYOC is a Cell plus one Workspace, in the customer's project.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi

from infra.config import Loosening, StackConfig
from infra.gcp.audit_logging import AuditLogging, AuditLoggingArgs
from infra.gcp.cluster import Cluster, ClusterArgs
from infra.gcp.database import Database, DatabaseArgs, DatabaseUsers, DatabaseUsersArgs
from infra.gcp.identity import Identities, IdentitiesArgs
from infra.gcp.network import Network, NetworkArgs
from infra.gcp.node_pools import NodePools, NodePoolsArgs
from infra.gcp.secret_store import SecretStore, SecretStoreArgs
from infra.gcp.services import ProjectServices, ProjectServicesArgs
from infra.k8s.layer import KubernetesObjects, KubernetesObjectsArgs, cluster_provider
from infra.k8s.manifests import Manifest
from infra.topology import Identity, SecretSpec, Topology

# The cell's name; it also names its cluster and its Cloud SQL instance.
CELL_NAME = "perfloop"


def stack_labels(config: StackConfig) -> dict[str, str]:
    return {**config.labels, "managed-by": "perfloop-platform", "perfloop-shape": config.shape}


@dataclass(frozen=True)
class GrantsArgs:
    """Identities, their secrets and their database users for one scope (cell or workspace)."""

    project: str
    region: str
    identities: tuple[Identity, ...]
    secrets: tuple[SecretSpec, ...]
    database_instance: pulumi.Input[str]
    cmek_key: str | None
    labels: dict[str, str]


class Grants(pulumi.ComponentResource):
    """Everything a set of workloads is granted at the GCP layer, derived from the topology."""

    def __init__(self, name: str, args: GrantsArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("perfloop:platform:Grants", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        self.identities = Identities(
            f"{name}-identities",
            IdentitiesArgs(project=args.project, identities=args.identities, database_instance=args.database_instance),
            opts=child,
        )
        self.secret_store = SecretStore(
            f"{name}-secrets",
            SecretStoreArgs(
                project=args.project,
                region=args.region,
                secrets=args.secrets,
                readers={i.account_id: self.identities.email(i.account_id) for i in args.identities},
                cmek_key=args.cmek_key,
                labels=args.labels,
            ),
            opts=child,
        )
        self.database_users = DatabaseUsers(
            f"{name}-database-users",
            DatabaseUsersArgs(
                project=args.project,
                instance=args.database_instance,
                service_accounts={
                    i.account_id: self.identities.email(i.account_id) for i in args.identities if i.database_role
                },
            ),
            opts=child,
        )
        self.register_outputs({})


class Cell(pulumi.ComponentResource):
    def __init__(self, name: str, topology: Topology, manifests: list[Manifest], opts: pulumi.ResourceOptions | None = None):
        super().__init__("perfloop:platform:Cell", name, None, opts)
        config = topology.config
        child = pulumi.ResourceOptions(parent=self)
        labels = stack_labels(config)
        binary_authorization = not config.loosened(Loosening.BINARY_AUTHORIZATION_DISABLED)

        self.services = ProjectServices(
            "services",
            ProjectServicesArgs(project=config.project, cmek=config.cmek_key is not None, binary_authorization=binary_authorization),
            opts=child,
        )
        after_services = pulumi.ResourceOptions(parent=self, depends_on=[self.services])
        self.network = Network(
            name, NetworkArgs(project=config.project, region=config.region, cidrs=config.network), opts=after_services
        )
        self.cluster = Cluster(
            name,
            ClusterArgs(
                project=config.project,
                region=config.region,
                network=self.network.vpc.id,
                subnetwork=self.network.subnet.id,
                control_plane_cidr=config.network.control_plane_cidr,
                release_channel=config.cluster.release_channel,
                kubernetes_version=config.cluster.kubernetes_version,
                master_authorized_networks=config.cluster.master_authorized_networks,
                binary_authorization=binary_authorization,
                cmek_key=config.cmek_key,
                labels=labels,
            ),
            opts=after_services,
        )
        self.node_pools = NodePools(
            "node-pools",
            NodePoolsArgs(
                project=config.project,
                region=config.region,
                cluster=self.cluster.cluster.id,
                node_service_account=self.cluster.node_service_account.email,
                sizing=config.cluster.node_pools,
                cmek_key=config.cmek_key,
                labels=labels,
            ),
            opts=child,
        )
        self.database = Database(
            name,
            DatabaseArgs(
                project=config.project,
                region=config.region,
                network=self.network.vpc.id,
                # Taken from the peering connection so the instance waits for it.
                private_services_range=self.network.private_services_connection.reserved_peering_ranges[0],
                settings=config.database,
                require_client_certificates=not config.loosened(Loosening.DATABASE_TLS_WITHOUT_CLIENT_CERTIFICATES),
                cmek_key=config.cmek_key,
                labels=labels,
            ),
            opts=after_services,
        )
        self.audit_logging = AuditLogging(
            "audit-logging", AuditLoggingArgs(project=config.project, region=config.region), opts=after_services
        )
        self.grants = Grants(
            "cell",
            GrantsArgs(
                project=config.project,
                region=config.region,
                identities=tuple(i for i in topology.identities if i.deployed.workspace is None),
                secrets=_secrets_of(topology, workspace=None),
                database_instance=self.database.instance.name,
                cmek_key=config.cmek_key,
                labels=labels,
            ),
            # Workload Identity bindings need the cluster's identity pool to exist.
            opts=pulumi.ResourceOptions(parent=self, depends_on=[self.cluster]),
        )
        self.kubernetes = cluster_provider(
            "gke",
            self.cluster.cluster.control_plane_endpoints_config.apply(lambda c: c.dns_endpoint_config.endpoint),
            opts=child,
        )
        self.objects = KubernetesObjects(
            "kubernetes",
            KubernetesObjectsArgs(manifests=[m for m in manifests if m.scope is None]),
            opts=pulumi.ResourceOptions(
                parent=self, providers={"kubernetes": self.kubernetes}, depends_on=[self.node_pools, self.grants]
            ),
        )
        self.register_outputs(
            {
                "cluster": self.cluster.cluster.name,
                "database_connection_name": self.database.instance.connection_name,
                "network": self.network.vpc.id,
            }
        )


class Workspace(pulumi.ComponentResource):
    def __init__(
        self, name: str, topology: Topology, manifests: list[Manifest], cell: Cell, opts: pulumi.ResourceOptions | None = None
    ):
        super().__init__("perfloop:platform:Workspace", name, None, opts)
        config = topology.config
        self.grants = Grants(
            "workspace",
            GrantsArgs(
                project=config.project,
                region=config.region,
                identities=tuple(i for i in topology.identities if i.deployed.workspace == config.workspace.id),
                secrets=_secrets_of(topology, workspace=config.workspace.id),
                database_instance=cell.database.instance.name,
                cmek_key=config.cmek_key,
                labels={**stack_labels(config), "perfloop-workspace": config.workspace.id},
            ),
            opts=pulumi.ResourceOptions(parent=self, depends_on=[cell.cluster]),
        )
        self.objects = KubernetesObjects(
            f"{name}-kubernetes",
            KubernetesObjectsArgs(manifests=[m for m in manifests if m.scope == config.workspace.id]),
            opts=pulumi.ResourceOptions(
                parent=self, providers={"kubernetes": cell.kubernetes}, depends_on=[cell.objects, self.grants]
            ),
        )
        self.register_outputs({"workspace": config.workspace.id})


def _secrets_of(topology: Topology, workspace: str | None) -> tuple[SecretSpec, ...]:
    return tuple(s for s in topology.secrets if topology.identity_of(s.reader).deployed.workspace == workspace)
