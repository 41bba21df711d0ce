"""The three node pools: system (control plane), egress (the proxy alone), sandbox (gVisor).

Common to all: the dedicated node account, GKE_METADATA (pods never see the node's credentials),
shielded VMs with secure boot and integrity monitoring, COS with containerd, auto-upgrade and
auto-repair, and surge upgrades that never take capacity away first.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import pulumi
from pulumi_gcp import container

from infra.config import NodePoolConfig, NodePoolsConfig
from infra.gcp.network import EGRESS_PODS_RANGE
from infra.naming import POOL_LABEL, node_tag


@dataclass(frozen=True)
class NodePoolsArgs:
    project: str
    region: str
    cluster: pulumi.Input[str]
    node_service_account: pulumi.Input[str]
    sizing: NodePoolsConfig
    # Boot disks encrypted with this key when given.
    cmek_key: Optional[str]
    labels: dict[str, str]


def _taint(pool: str) -> container.NodePoolNodeConfigTaintArgs:
    # Only pods that tolerate the pool's taint (declared per workload in the catalogue) land here.
    return container.NodePoolNodeConfigTaintArgs(key=POOL_LABEL, value=pool, effect="NO_SCHEDULE")


class NodePools(pulumi.ComponentResource):
    def __init__(self, name: str, args: NodePoolsArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("perfloop:gcp:NodePools", name, None, opts)
        self.system = self._pool("system", args, args.sizing.system)
        self.egress = self._pool(
            "egress",
            args,
            args.sizing.egress,
            taints=[_taint("egress")],
            # The egress pool's pods take addresses from their own range: the one range Cloud NAT
            # translates, so that at the VPC layer only the proxy reaches the internet.
            network_config=container.NodePoolNetworkConfigArgs(pod_range=EGRESS_PODS_RANGE, create_pod_range=False),
        )
        self.sandbox = self._pool(
            "sandbox",
            args,
            args.sizing.sandbox,
            taints=[_taint("sandbox")],
            sandbox_config=container.NodePoolNodeConfigSandboxConfigArgs(type="gvisor"),
        )
        self.register_outputs({"pools": [self.system.name, self.egress.name, self.sandbox.name]})

    def _pool(
        self,
        pool: str,
        args: NodePoolsArgs,
        size: NodePoolConfig,
        *,
        taints=None,
        network_config=None,
        sandbox_config=None,
    ) -> container.NodePool:
        return container.NodePool(
            pool,
            project=args.project,
            name=pool,
            location=args.region,
            cluster=args.cluster,
            autoscaling=container.NodePoolAutoscalingArgs(
                min_node_count=size.min_nodes_per_zone, max_node_count=size.max_nodes_per_zone
            ),
            management=container.NodePoolManagementArgs(auto_repair=True, auto_upgrade=True),
            upgrade_settings=container.NodePoolUpgradeSettingsArgs(strategy="SURGE", max_surge=1, max_unavailable=0),
            network_config=network_config,
            node_config=container.NodePoolNodeConfigArgs(
                machine_type=size.machine_type,
                disk_size_gb=size.disk_size_gb,
                disk_type="pd-balanced",
                boot_disk_kms_key=args.cmek_key,
                image_type="COS_CONTAINERD",
                service_account=args.node_service_account,
                oauth_scopes=["https://www.googleapis.com/auth/cloud-platform"],
                workload_metadata_config=container.NodePoolNodeConfigWorkloadMetadataConfigArgs(mode="GKE_METADATA"),
                shielded_instance_config=container.NodePoolNodeConfigShieldedInstanceConfigArgs(
                    enable_secure_boot=True, enable_integrity_monitoring=True
                ),
                sandbox_config=sandbox_config,
                labels={POOL_LABEL: pool},
                resource_labels=args.labels,
                tags=[node_tag(pool)],
                taints=taints,
                metadata={"disable-legacy-endpoints": "true"},
            ),
            opts=pulumi.ResourceOptions(parent=self),
        )
