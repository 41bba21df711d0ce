"""Names and addresses shared by the GCP and Kubernetes layers, free of any provider import (so
that a tenant program, which creates no network, never loads the compute module)."""

from __future__ import annotations

# The cell's name; it also names its cluster and its Cloud SQL instance.
CELL_NAME = "perfloop"
# private.googleapis.com: Google APIs over Private Google Access, not reachable from the internet.
PRIVATE_GOOGLE_APIS_CIDR = "199.36.153.8/30"
# Node label (and taint key) that places pods on their pool.
POOL_LABEL = "perfloop.ai/pool"
# Kubernetes names the manifests write and the analyses read back.
NAME_LABEL = "app.kubernetes.io/name"
NAMESPACE_NAME_LABEL = "kubernetes.io/metadata.name"
WORKLOAD_IDENTITY_ANNOTATION = "iam.gke.io/gcp-service-account"
DATABASE_ROLE_ANNOTATION = "perfloop.ai/database-role"


def node_tag(pool: str) -> str:
    """Network tag of a pool's nodes; firewall rules and routes target it."""
    return f"perfloop-{pool}-node"


def iam_user_name(service_account_email: str) -> str:
    """Cloud SQL names a service account's IAM user by its e-mail without the domain suffix."""
    return service_account_email.removesuffix(".gserviceaccount.com")
