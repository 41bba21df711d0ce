"""The Pulumi program. The same function runs under `pulumi up` and under the offline engine.

- byoc: a Cell and one Workspace in the customer's project.
- cell: a Cell alone; it exports `tenant_contract` for the tenant stacks placed on it.
- tenant: one Workspace on a cell, read through a StackReference; no cell resource is created.
"""

from __future__ import annotations

import pulumi
from pulumi_gcp import Provider

from infra.catalogue import load_catalogue
from infra.config import StackConfig, load_stack_config, parse_cell_contract
from infra.k8s.manifests import render_manifests
from infra.naming import CELL_NAME
from infra.topology import build_topology
from infra.workspace import Workspace, WorkspaceArgs, stack_labels


def main() -> None:
    # Everything is read and validated before the first resource is registered: bad input stops
    # here with a ConfigError, never half-way through a stack.
    config = load_stack_config()
    if config.shape == "tenant":
        # The cell's contract arrives asynchronously (a StackReference read): the rest of the
        # tenant program runs once it is known, as the language host awaits pulumi.run programs.
        pulumi.run(lambda: _tenant(config))
    else:
        _cell(config)


def _gcp_provider(config: StackConfig) -> pulumi.ResourceOptions:
    # One explicit provider pinned to the project and region: a resource that does not name its
    # project still cannot land anywhere else.
    provider = Provider("gcp", project=config.project, region=config.region, default_labels=stack_labels(config))
    return pulumi.ResourceOptions(providers={"gcp": provider})


def _cell(config: StackConfig) -> None:
    from infra.cell import Cell  # network, cluster and database code: cell and byoc stacks only

    topology = build_topology(config, load_catalogue())
    manifests = render_manifests(topology, database_instance=CELL_NAME)
    providers = _gcp_provider(config)
    cell = Cell(CELL_NAME, topology, manifests, opts=providers)
    if config.workspace is not None:
        Workspace(
            f"workspace-{config.workspace.id}",
            WorkspaceArgs(topology, manifests, cell.database.instance.name, cell.kubernetes, after=[cell.cluster, cell.objects]),
            opts=providers,
        )
        pulumi.export("workspace", config.workspace.id)
    pulumi.export("shape", config.shape)
    pulumi.export("project", config.project)
    pulumi.export("region", config.region)
    pulumi.export("loosenings", [l.value for l in config.loosen])
    pulumi.export("cluster", cell.cluster.cluster.name)
    pulumi.export("database_connection_name", cell.database.instance.connection_name)
    if config.shape == "cell":
        _export_contract(config, cell)


def _export_contract(config: StackConfig, cell) -> None:
    pulumi.export(
        "tenant_contract",
        {
            "project": config.project,
            "region": config.region,
            "network": config.network.model_dump(),
            "kubernetes_version": config.cluster.kubernetes_version,
            "database_instance": cell.database.instance.name,
            "cluster_endpoint": cell.dns_endpoint,
            "cmek_key": config.cmek_key,
            "loosen": [l.value for l in config.loosen],
        },
    )


async def _tenant(config: StackConfig) -> None:
    from infra.k8s.layer import cluster_provider

    reference = pulumi.StackReference("cell", stack_name=config.cell)
    details = await reference.get_output_details("tenant_contract")
    contract = parse_cell_contract(details.value, config.cell)
    effective = config.on_cell(contract)
    topology = build_topology(effective, load_catalogue())
    manifests = render_manifests(topology, database_instance=contract.database_instance)
    providers = _gcp_provider(effective)
    kubernetes = cluster_provider("gke", contract.cluster_endpoint, opts=pulumi.ResourceOptions())
    Workspace(
        f"workspace-{config.workspace.id}",
        WorkspaceArgs(topology, manifests, contract.database_instance, kubernetes, after=[]),
        opts=providers,
    )
    pulumi.export("shape", config.shape)
    pulumi.export("cell", config.cell)
    pulumi.export("workspace", config.workspace.id)
    pulumi.export("project", contract.project)
    pulumi.export("region", contract.region)
    pulumi.export("loosenings", [l.value for l in contract.loosen])
