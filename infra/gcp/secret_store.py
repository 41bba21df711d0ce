"""Secret Manager: containers only, one reader each, replicas in the stack's region only.

A secret's value never passes through Pulumi: the stack creates the container and its single
accessor binding; the value is added out of band (runbooks/secrets.md) and fetched by the one
workload that uses it, at run time, through Workload Identity.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import pulumi
from pulumi_gcp import secretmanager

from infra.topology import SecretSpec

ACCESSOR_ROLE = "roles/secretmanager.secretAccessor"


@dataclass(frozen=True)
class SecretStoreArgs:
    project: str
    region: str
    secrets: tuple[SecretSpec, ...]
    # Service account e-mail of each reader, by account ID.
    readers: dict[str, pulumi.Input[str]]
    cmek_key: Optional[str]
    labels: dict[str, str]


class SecretStore(pulumi.ComponentResource):
    def __init__(self, name: str, args: SecretStoreArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("perfloop:gcp:SecretStore", name, None, opts)
        self.secrets: dict[str, secretmanager.Secret] = {}
        for spec in args.secrets:
            secret = secretmanager.Secret(
                spec.secret_id,
                project=args.project,
                secret_id=spec.secret_id,
                # Annotation keys allow letters, digits, "-", "_" and "." only (no "/").
                annotations={"perfloop-description": spec.description},
                labels={**args.labels, "perfloop-reader": spec.reader},
                # Residency: the payload is stored in the stack's region and nowhere else.
                replication=secretmanager.SecretReplicationArgs(
                    user_managed=secretmanager.SecretReplicationUserManagedArgs(
                        replicas=[
                            secretmanager.SecretReplicationUserManagedReplicaArgs(
                                location=args.region,
                                customer_managed_encryption=(
                                    secretmanager.SecretReplicationUserManagedReplicaCustomerManagedEncryptionArgs(
                                        kms_key_name=args.cmek_key
                                    )
                                    if args.cmek_key
                                    else None
                                ),
                            )
                        ]
                    )
                ),
                deletion_protection=True,
                opts=pulumi.ResourceOptions(parent=self),
            )
            # Authoritative for the accessor role on this secret: exactly one member, and any
            # accessor added outside this stack is removed on the next `pulumi up`.
            secretmanager.SecretIamBinding(
                f"{spec.secret_id}-accessor",
                project=args.project,
                secret_id=secret.secret_id,
                role=ACCESSOR_ROLE,
                members=[pulumi.Output.from_input(args.readers[spec.reader]).apply(lambda e: f"serviceAccount:{e}")],
                opts=pulumi.ResourceOptions(parent=self),
            )
            self.secrets[spec.secret_id] = secret
        self.register_outputs({"secrets": {k: s.id for k, s in self.secrets.items()}})
