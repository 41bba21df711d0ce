"""The cell: shared infrastructure — network, cluster and pools, database, audit logging — with
the grants and Kubernetes objects of the cell's own workloads. A `cell` stack is this alone; a
BYOC stack is this plus one Workspace, in the customer's project.
"""

from __future__ import annotations

import pulumi

from infra.config import Loosening
from infra.gcp.audit_logging import AuditLogging, AuditLoggingArgs
from infra.gcp.cluster import Cluster, ClusterArgs
from infra.gcp.database import Database, DatabaseArgs
from infra.gcp.network import Network, NetworkArgs
from infra.gcp.node_pools import NodePools, NodePoolsArgs
from infra.gcp.services import ProjectServices, ProjectServicesArgs
from infra.k8s.layer import KubernetesObjects, KubernetesObjectsArgs, cluster_provider
from infra.k8s.manifests import Manifest
from infra.topology import Topology
from infra.workspace import Grants, GrantsArgs, identities_of, secrets_of, stack_labels

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
                identities=identities_of(topology, None),
                secrets=secrets_of(topology, None),
                database_instance=self.database.instance.name,
                cmek_key=config.cmek_key,
                labels=labels,
            ),
            # Workload Identity bindings need the cluster's identity pool to exist.
            opts=pulumi.ResourceOptions(parent=self, depends_on=[self.cluster]),
        )
        # Operators and the kubernetes provider reach the API through the DNS-based endpoint.
        self.dns_endpoint = self.cluster.cluster.control_plane_endpoints_config.apply(
            lambda c: c.dns_endpoint_config.endpoint
        )
        self.kubernetes = cluster_provider("gke", self.dns_endpoint, opts=child)
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
