"""Registers rendered manifests with pulumi-kubernetes through an explicit provider."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_kubernetes as k8s

from infra.k8s.manifests import Manifest

# Typed resource classes by (apiVersion, kind): every kind the platform renders, and no other.
KINDS = {
    ("v1", "Namespace"): k8s.core.v1.Namespace,
    ("v1", "ServiceAccount"): k8s.core.v1.ServiceAccount,
    ("v1", "ConfigMap"): k8s.core.v1.ConfigMap,
    ("v1", "Service"): k8s.core.v1.Service,
    ("v1", "ResourceQuota"): k8s.core.v1.ResourceQuota,
    ("v1", "LimitRange"): k8s.core.v1.LimitRange,
    ("apps/v1", "Deployment"): k8s.apps.v1.Deployment,
    ("batch/v1", "Job"): k8s.batch.v1.Job,
    ("batch/v1", "CronJob"): k8s.batch.v1.CronJob,
    ("policy/v1", "PodDisruptionBudget"): k8s.policy.v1.PodDisruptionBudget,
    ("networking.k8s.io/v1", "NetworkPolicy"): k8s.networking.v1.NetworkPolicy,
    ("rbac.authorization.k8s.io/v1", "Role"): k8s.rbac.v1.Role,
    ("rbac.authorization.k8s.io/v1", "RoleBinding"): k8s.rbac.v1.RoleBinding,
    ("rbac.authorization.k8s.io/v1", "ClusterRole"): k8s.rbac.v1.ClusterRole,
    ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding"): k8s.rbac.v1.ClusterRoleBinding,
}

KUBECONFIG = """apiVersion: v1
kind: Config
clusters:
- name: perfloop
  cluster:
    server: https://{endpoint}
contexts:
- name: perfloop
  context: {{cluster: perfloop, user: perfloop}}
current-context: perfloop
users:
- name: perfloop
  user:
    exec:
      apiVersion: client.authentication.k8s.io/v1beta1
      command: gke-gcloud-auth-plugin
      provideClusterInfo: true
      interactiveMode: Never
"""


def _snake(key: str) -> str:
    """Top-level manifest fields become keyword arguments (roleRef → role_ref); nested values
    keep Kubernetes' own camelCase, which pulumi-kubernetes accepts as is."""
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in key)


def cluster_provider(name: str, dns_endpoint: pulumi.Input[str], opts: pulumi.ResourceOptions) -> k8s.Provider:
    """A provider bound to this stack's cluster through its DNS-based control-plane endpoint,
    authenticated by the operator's Google identity (no client certificate, no static token)."""
    return k8s.Provider(
        name,
        kubeconfig=pulumi.Output.from_input(dns_endpoint).apply(lambda e: KUBECONFIG.format(endpoint=e)),
        enable_server_side_apply=True,
        delete_unreachable=False,
        opts=opts,
    )


@dataclass(frozen=True)
class KubernetesObjectsArgs:
    manifests: list[Manifest]


class KubernetesObjects(pulumi.ComponentResource):
    """One Pulumi resource per manifest; namespaced objects wait for their namespace."""

    def __init__(self, name: str, args: KubernetesObjectsArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("perfloop:k8s:KubernetesObjects", name, None, opts)
        namespaces: dict[str, pulumi.Resource] = {}
        for m in sorted(args.manifests, key=lambda m: m.kind != "Namespace"):
            cls = KINDS[(m.body["apiVersion"], m.kind)]
            depends = [namespaces[m.namespace]] if m.namespace in namespaces else []
            fields = {_snake(k): v for k, v in m.body.items() if k not in ("apiVersion", "kind")}
            resource = cls(m.resource_name, **fields, opts=pulumi.ResourceOptions(parent=self, depends_on=depends))
            if m.kind == "Namespace":
                namespaces[m.name] = resource
        self.register_outputs({"objects": len(args.manifests)})
