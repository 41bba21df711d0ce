"""What one customer workspace adds: its identities, secrets and database users (Grants) and its
Kubernetes objects. Used by tenant stacks on a cell and, inside the customer's project, by BYOC.

This module imports no network, cluster or Cloud SQL instance code: a tenant stack cannot create
them, and its plan does not pay for loading them.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_kubernetes as k8s

from infra.config import StackConfig
from infra.gcp.database import DatabaseUsers, DatabaseUsersArgs
from infra.gcp.identity import Identities, IdentitiesArgs
from infra.gcp.secret_store import SecretStore, SecretStoreArgs
from infra.k8s.layer import KubernetesObjects, KubernetesObjectsArgs
from infra.k8s.manifests import Manifest
from infra.topology import Identity, SecretSpec, Topology


def stack_labels(config: StackConfig) -> dict[str, str]:
    labels = {**config.labels, "managed-by": "perfloop-platform", "perfloop-shape": config.shape}
    if config.workspace is not None and config.shape == "tenant":
        labels["perfloop-workspace"] = config.workspace.id
    return labels


def secrets_of(topology: Topology, workspace: str | None) -> tuple[SecretSpec, ...]:
    return tuple(s for s in topology.secrets if topology.identity_of(s.reader).deployed.workspace == workspace)


def identities_of(topology: Topology, workspace: str | None) -> tuple[Identity, ...]:
    return tuple(i for i in topology.identities if i.deployed.workspace == workspace)


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
        database_users = {i.account_id: self.identities.email(i.account_id) for i in args.identities if i.database_role}
        if database_users:
            DatabaseUsers(
                f"{name}-database-users",
                DatabaseUsersArgs(project=args.project, instance=args.database_instance, service_accounts=database_users),
                opts=child,
            )
        self.register_outputs({})


@dataclass(frozen=True)
class WorkspaceArgs:
    topology: Topology
    manifests: list[Manifest]
    database_instance: pulumi.Input[str]
    kubernetes: k8s.Provider
    # What must exist first: the cluster and the cell's objects when composed with a cell.
    after: list[pulumi.Resource]


class Workspace(pulumi.ComponentResource):
    def __init__(self, name: str, args: WorkspaceArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("perfloop:platform:Workspace", name, None, opts)
        config = args.topology.config
        workspace = config.workspace.id
        self.grants = Grants(
            "workspace",
            GrantsArgs(
                project=config.project,
                region=config.region,
                identities=identities_of(args.topology, workspace),
                secrets=secrets_of(args.topology, workspace),
                database_instance=args.database_instance,
                cmek_key=config.cmek_key,
                labels={**stack_labels(config), "perfloop-workspace": workspace},
            ),
            opts=pulumi.ResourceOptions(parent=self, depends_on=args.after),
        )
        self.objects = KubernetesObjects(
            f"{name}-kubernetes",
            KubernetesObjectsArgs(manifests=[m for m in args.manifests if m.scope == workspace]),
            opts=pulumi.ResourceOptions(
                parent=self, providers={"kubernetes": args.kubernetes}, depends_on=[*args.after, self.grants]
            ),
        )
        self.register_outputs({"workspace": workspace})
