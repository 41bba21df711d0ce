"""Workload identities: one Google service account per workload that needs one, bound to exactly
its Kubernetes service account, holding exactly the roles the catalogue declares.

No service-account keys are ever created: pods obtain short-lived tokens through Workload Identity.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
from pulumi_gcp import projects, serviceaccount

from infra.topology import Identity

WORKLOAD_IDENTITY_ROLE = "roles/iam.workloadIdentityUser"


@dataclass(frozen=True)
class IdentitiesArgs:
    project: str
    identities: tuple[Identity, ...]
    # Cloud SQL instance the database roles are scoped to (IAM condition on the binding).
    database_instance: pulumi.Input[str]


def _role_slug(role: str) -> str:
    return role.split("/")[1].replace(".", "-")


class Identities(pulumi.ComponentResource):
    def __init__(self, name: str, args: IdentitiesArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("perfloop:gcp:Identities", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        self.accounts: dict[str, serviceaccount.Account] = {}
        for identity in args.identities:
            d = identity.deployed
            account = serviceaccount.Account(
                identity.account_id,
                project=args.project,
                account_id=identity.account_id,
                display_name=f"perfloop {d.name}" + (f" ({d.workspace})" if d.workspace else ""),
                description=d.workload.description,
                opts=child,
            )
            member = account.email.apply(lambda e: f"serviceAccount:{e}")
            namespace, ksa = identity.kubernetes_service_account
            # Authoritative for this role on this account: only the workload's own Kubernetes
            # service account can act as it.
            serviceaccount.IAMBinding(
                f"{identity.account_id}-workload-identity",
                service_account_id=account.name,
                role=WORKLOAD_IDENTITY_ROLE,
                members=[f"serviceAccount:{args.project}.svc.id.goog[{namespace}/{ksa}]"],
                opts=child,
            )
            for role in identity.project_roles:
                condition = None
                if role.startswith("roles/cloudsql."):
                    # Database roles reach this stack's instance and no other.
                    condition = projects.IAMMemberConditionArgs(
                        title="perfloop-database-only",
                        description="Only the platform's Cloud SQL instance.",
                        expression=pulumi.Output.from_input(args.database_instance).apply(
                            lambda instance: f'resource.name == "projects/{args.project}/instances/{instance}"'
                        ),
                    )
                projects.IAMMember(
                    f"{identity.account_id}-{_role_slug(role)}",
                    project=args.project,
                    role=role,
                    member=member,
                    condition=condition,
                    opts=child,
                )
            self.accounts[identity.account_id] = account
        self.register_outputs({"accounts": {k: a.email for k, a in self.accounts.items()}})

    def email(self, account_id: str) -> pulumi.Output[str]:
        return self.accounts[account_id].email
