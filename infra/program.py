"""The Pulumi program. The same function runs under `pulumi up` and under the offline engine."""

from __future__ import annotations

import pulumi
from pulumi_gcp import Provider

from infra.catalogue import load_catalogue
from infra.config import load_stack_config
from infra.k8s.manifests import render_manifests
from infra.shapes import CELL_NAME, Cell, Workspace, stack_labels
from infra.topology import build_topology


def main() -> None:
    # Everything is read and validated before the first resource is registered: bad input stops
    # here with a ConfigError, never half-way through a stack.
    config = load_stack_config()
    topology = build_topology(config, load_catalogue())
    manifests = render_manifests(topology, database_instance=CELL_NAME)

    # One explicit provider pinned to the customer's project and region: a resource that does not
    # name its project still cannot land anywhere else.
    provider = Provider(
        "gcp",
        project=config.project,
        region=config.region,
        default_labels=stack_labels(config),
    )
    providers = pulumi.ResourceOptions(providers={"gcp": provider})
    cell = Cell(CELL_NAME, topology, manifests, opts=providers)
    Workspace(f"workspace-{config.workspace.id}", topology, manifests, cell, opts=providers)

    pulumi.export("shape", config.shape)
    pulumi.export("project", config.project)
    pulumi.export("region", config.region)
    pulumi.export("workspace", config.workspace.id)
    pulumi.export("loosenings", [l.value for l in config.loosen])
    pulumi.export("cluster", cell.cluster.cluster.name)
    pulumi.export("database_connection_name", cell.database.instance.connection_name)
