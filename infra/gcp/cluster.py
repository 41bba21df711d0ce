"""GKE Standard cluster, hardened after terraform-google-kubernetes-engine's safer-cluster.

Every knob below is set on purpose; the comment says which promise it serves.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import pulumi
from pulumi_gcp import container, projects, serviceaccount

from infra.config import AuthorizedNetwork
from infra.gcp.network import PODS_RANGE, SERVICES_RANGE
from infra.topology import NODE_ROLES

LOGGED_COMPONENTS = ["SYSTEM_COMPONENTS", "APISERVER", "CONTROLLER_MANAGER", "SCHEDULER", "WORKLOADS"]


@dataclass(frozen=True)
class ClusterArgs:
    project: str
    region: str
    network: pulumi.Input[str]
    subnetwork: pulumi.Input[str]
    control_plane_cidr: str
    release_channel: str
    kubernetes_version: str
    master_authorized_networks: list[AuthorizedNetwork]
    binary_authorization: bool
    # Application-layer secrets encryption key; None keeps Google-managed encryption.
    cmek_key: Optional[str]
    labels: dict[str, str]


class Cluster(pulumi.ComponentResource):
    def __init__(self, name: str, args: ClusterArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("perfloop:gcp:Cluster", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)

        # Nodes run as a dedicated account that can only write logs and metrics and pull images;
        # never the Compute Engine default account (Editor on the project).
        self.node_service_account = serviceaccount.Account(
            "node-sa",
            project=args.project,
            account_id=f"{name}-nodes",
            display_name="GKE nodes (logs, metrics, image pulls only)",
            opts=child,
        )
        self.node_roles = [
            projects.IAMMember(
                f"node-sa-{role.split('/')[1].replace('.', '-')}",
                project=args.project,
                role=role,
                member=self.node_service_account.email.apply(lambda e: f"serviceAccount:{e}"),
                opts=child,
            )
            for role in NODE_ROLES
        ]

        self.cluster = container.Cluster(
            "cluster",
            project=args.project,
            name=name,
            location=args.region,
            network=args.network,
            subnetwork=args.subnetwork,
            networking_mode="VPC_NATIVE",
            ip_allocation_policy=container.ClusterIpAllocationPolicyArgs(
                cluster_secondary_range_name=PODS_RANGE, services_secondary_range_name=SERVICES_RANGE
            ),
            # Node pools are managed separately; the default pool is created bare and removed.
            remove_default_node_pool=True,
            initial_node_count=1,
            node_config=container.ClusterNodeConfigArgs(
                service_account=self.node_service_account.email,
                oauth_scopes=["https://www.googleapis.com/auth/cloud-platform"],
                workload_metadata_config=container.ClusterNodeConfigWorkloadMetadataConfigArgs(mode="GKE_METADATA"),
                shielded_instance_config=container.ClusterNodeConfigShieldedInstanceConfigArgs(
                    enable_secure_boot=True, enable_integrity_monitoring=True
                ),
            ),
            # Nodes and the control plane have private addresses only.
            private_cluster_config=container.ClusterPrivateClusterConfigArgs(
                enable_private_nodes=True,
                enable_private_endpoint=True,
                master_ipv4_cidr_block=args.control_plane_cidr,
                master_global_access_config=container.ClusterPrivateClusterConfigMasterGlobalAccessConfigArgs(enabled=False),
            ),
            # Operators reach the API through the DNS-based endpoint, authorised by IAM; the IP
            # endpoint is private and limited to the authorised networks.
            control_plane_endpoints_config=container.ClusterControlPlaneEndpointsConfigArgs(
                dns_endpoint_config=container.ClusterControlPlaneEndpointsConfigDnsEndpointConfigArgs(
                    allow_external_traffic=True
                ),
            ),
            master_authorized_networks_config=container.ClusterMasterAuthorizedNetworksConfigArgs(
                cidr_blocks=[
                    container.ClusterMasterAuthorizedNetworksConfigCidrBlockArgs(
                        display_name=n.display_name, cidr_block=n.cidr
                    )
                    for n in args.master_authorized_networks
                ],
                gcp_public_cidrs_access_enabled=False,
                private_endpoint_enforcement_enabled=True,
            ),
            # Pods get Google identities only through Workload Identity; the node's own
            # credentials are never exposed to them.
            workload_identity_config=container.ClusterWorkloadIdentityConfigArgs(
                workload_pool=f"{args.project}.svc.id.goog"
            ),
            # Dataplane V2 enforces NetworkPolicy (and logs policy decisions).
            datapath_provider="ADVANCED_DATAPATH",
            enable_shielded_nodes=True,
            release_channel=container.ClusterReleaseChannelArgs(channel=args.release_channel),
            min_master_version=args.kubernetes_version,
            enable_legacy_abac=False,
            master_auth=container.ClusterMasterAuthArgs(
                client_certificate_config=container.ClusterMasterAuthClientCertificateConfigArgs(
                    issue_client_certificate=False
                )
            ),
            logging_config=container.ClusterLoggingConfigArgs(enable_components=LOGGED_COMPONENTS),
            binary_authorization=container.ClusterBinaryAuthorizationArgs(
                evaluation_mode="PROJECT_SINGLETON_POLICY_ENFORCE" if args.binary_authorization else "DISABLED"
            ),
            database_encryption=container.ClusterDatabaseEncryptionArgs(
                state="ENCRYPTED" if args.cmek_key else "DECRYPTED", key_name=args.cmek_key
            ),
            resource_labels=args.labels,
            deletion_protection=True,
            opts=pulumi.ResourceOptions(parent=self, depends_on=self.node_roles),
        )
        self.register_outputs(
            {
                "name": self.cluster.name,
                "endpoint": self.cluster.endpoint,
                "node_service_account": self.node_service_account.email,
            }
        )
