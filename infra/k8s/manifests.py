"""Every Kubernetes object of the platform, rendered as plain manifests from the topology.

Pure data in, pure data out: the same manifests are registered with pulumi-kubernetes, validated
against the cluster version's schemas, analysed for reachability, and shown as evidence.
Nothing here grants anything the catalogue does not declare.
"""

from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass
from typing import Any, Optional

import yaml

from infra.catalogue import EGRESS_PROXY, SANDBOX_KIND, ApiPermission, Workload
from infra.egress_policy import policy_modules, render_connector_config, render_policy_data
from infra.errors import ConfigError
from infra.naming import (
    DATABASE_ROLE_ANNOTATION,
    NAME_LABEL,
    NAMESPACE_NAME_LABEL,
    POOL_LABEL,
    PRIVATE_GOOGLE_APIS_CIDR,
    WORKLOAD_IDENTITY_ANNOTATION,
    iam_user_name,
)
from infra.sql_migrations import migrations_checksum, render_migrations
from infra.topology import Deployed, Topology

WORKSPACE_LABEL = "perfloop.ai/workspace"

# The GKE metadata server as Workload Identity pods see it (169.254.169.252:988 under Dataplane V2).
METADATA_SERVER = (("169.254.169.254/32", 80), ("169.254.169.252/32", 988))
# Never reachable from the internet egress rule: private, link-local (metadata) and CGNAT ranges.
NON_INTERNET = ["10.0.0.0/8", "100.64.0.0/10", "169.254.0.0/16", "172.16.0.0/12", "192.168.0.0/16"]
CLOUD_SQL_PROXY_PORT = 3307  # the Cloud SQL connector's server-side port
LOCAL_DATABASE_PORT = 5432
DATABASE_NAME = "perfloop"
# The purge is called with the floor itself; audit.purge_events() refuses anything shorter.
AUDIT_RETENTION_MONTHS = 13
# How the proxy applies the policy (policies/egress/README.md, "what the proxy must do"). DLP is a
# secondary scrub on permitted paths: detected secrets in outbound bodies and headers are replaced
# with non-reversible aliases, or the request is blocked when they cannot be.
PROXY_SETTINGS = {
    "dlp": {"enabled": True, "scan": ["request_body", "request_headers", "request_query"], "on_detection": "alias_or_block"},
    "forward": "normalized",
    "follow_redirects": False,
    "decision_log": "all",
}
# Each workspace's registration, in the proxy's namespace: its egress policy data, and the record
# the workspace reconciler creates and drops the workspace's storage by.
WORKSPACE_REGISTRATION_LABEL = "perfloop.ai/workspace-registration"
RECONCILER_MAX_DROPS = 1
# A session lives at most this long; the sandbox pod is then killed and never restarted.
SESSION_DEADLINE_SECONDS = 4 * 3600
CLOUD_SQL_PROXY_IMAGE = (
    "gcr.io/cloud-sql-connectors/cloud-sql-proxy@sha256:"
    "4e6f2b8a1d3c5e7f9a0b2c4d6e8f1a3b5c7d9e0f2a4b6c8d1e3f5a7b9c0d2e4f"
)

RUNTIME_DEFAULT = {"type": "RuntimeDefault"}
POD_SECURITY = {
    "runAsNonRoot": True,
    "runAsUser": 65532,
    "runAsGroup": 65532,
    "fsGroup": 65532,
    "seccompProfile": RUNTIME_DEFAULT,
}
CONTAINER_SECURITY = {
    "runAsNonRoot": True,
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "privileged": False,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": RUNTIME_DEFAULT,
}


@dataclass(frozen=True)
class Manifest:
    """One object, and the scope whose stack owns it: None for the cell, else a workspace ID."""

    scope: Optional[str]
    body: dict[str, Any]

    @property
    def kind(self) -> str:
        return self.body["kind"]

    @property
    def name(self) -> str:
        return self.body["metadata"]["name"]

    @property
    def namespace(self) -> Optional[str]:
        return self.body["metadata"].get("namespace")

    @property
    def resource_name(self) -> str:
        """The Pulumi resource name: unique within a stack."""
        return "-".join(p for p in (self.kind.lower(), self.namespace, self.name) if p)


def _meta(name: str, namespace: Optional[str], labels: dict[str, str], annotations: Optional[dict[str, str]] = None):
    meta: dict[str, Any] = {"name": name, "labels": labels}
    if namespace:
        meta["namespace"] = namespace
    if annotations:
        meta["annotations"] = annotations
    return meta


def _labels(d: Deployed) -> dict[str, str]:
    labels = {
        NAME_LABEL: d.name,
        "app.kubernetes.io/component": d.workload.kind.lower(),
        "app.kubernetes.io/part-of": "perfloop",
        "app.kubernetes.io/managed-by": "perfloop-platform",
    }
    if d.workspace:
        labels[WORKSPACE_LABEL] = d.workspace
    return labels


def _platform_labels(workspace: Optional[str] = None) -> dict[str, str]:
    labels = {"app.kubernetes.io/part-of": "perfloop", "app.kubernetes.io/managed-by": "perfloop-platform"}
    if workspace:
        labels[WORKSPACE_LABEL] = workspace
    return labels


def _peer(workload: str, namespace: str) -> dict[str, Any]:
    # Pod and namespace selector together: exactly that workload in exactly that namespace.
    return {
        "podSelector": {"matchLabels": {NAME_LABEL: workload}},
        "namespaceSelector": {"matchLabels": {NAMESPACE_NAME_LABEL: namespace}},
    }


def _ip_rule(cidr: str, port: int, except_: Optional[list[str]] = None) -> dict[str, Any]:
    block: dict[str, Any] = {"cidr": cidr}
    if except_:
        block["except"] = except_
    return {"to": [{"ipBlock": block}], "ports": [{"protocol": "TCP", "port": port}]}


def proxy_service_ip(topology: Topology) -> str:
    """A fixed ClusterIP for the proxy, so sandboxes reach it without DNS (they have none)."""
    return str(ipaddress.ip_network(topology.config.network.services_cidr)[10])


def database_connection_name(topology: Topology, instance: str) -> str:
    return f"{topology.config.project}:{topology.config.region}:{instance}"


class _Renderer:
    def __init__(self, topology: Topology, database_instance: str):
        self.t = topology
        self.config = topology.config
        self.instance = database_instance
        self.deployed = {d.name: d for d in topology.deployed}
        self.identity = {i.deployed.name: i for i in topology.identities}
        self.workspace_namespaces = {w.namespace for w in topology.catalogue.workloads if w.scope == "workspace"}
        self.out: list[Manifest] = []

    def add(self, scope: Optional[str], body: dict[str, Any]) -> None:
        self.out.append(Manifest(scope, body))

    # --- namespaces ------------------------------------------------------------------------
    def namespaces(self) -> None:
        seen: dict[str, Optional[str]] = {}
        for d in self.t.deployed:
            seen.setdefault(d.namespace, d.workspace)
        for name, scope in seen.items():
            labels = {**_platform_labels(scope), NAMESPACE_NAME_LABEL: name}
            for mode in ("enforce", "audit", "warn"):
                labels[f"pod-security.kubernetes.io/{mode}"] = "restricted"
                labels[f"pod-security.kubernetes.io/{mode}-version"] = "latest"
            self.add(scope, {"apiVersion": "v1", "kind": "Namespace", "metadata": _meta(name, None, labels)})
            # Deny everything in both directions; each allowed path below is one declared edge.
            self.add(
                scope,
                {
                    "apiVersion": "networking.k8s.io/v1",
                    "kind": "NetworkPolicy",
                    "metadata": _meta("default-deny", name, _platform_labels(scope)),
                    "spec": {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]},
                },
            )

    def sandbox_limits(self, d: Deployed) -> None:
        """Sandboxes: bounded CPU, memory, storage and count; no volumes claims, no services."""
        r = d.workload.resources
        self.add(
            d.workspace,
            {
                "apiVersion": "v1",
                "kind": "ResourceQuota",
                "metadata": _meta("sandbox-quota", d.namespace, _platform_labels(d.workspace)),
                "spec": {
                    "hard": {
                        "pods": "20",
                        "requests.cpu": "40",
                        "requests.memory": "80Gi",
                        "limits.cpu": "40",
                        "limits.memory": "80Gi",
                        "requests.ephemeral-storage": "200Gi",
                        "limits.ephemeral-storage": "200Gi",
                        "persistentvolumeclaims": "0",
                        "services": "0",
                        "secrets": "0",
                    }
                },
            },
        )
        self.add(
            d.workspace,
            {
                "apiVersion": "v1",
                "kind": "LimitRange",
                "metadata": _meta("sandbox-limits", d.namespace, _platform_labels(d.workspace)),
                "spec": {
                    "limits": [
                        {
                            "type": "Container",
                            "default": {"cpu": r.cpu_limit, "memory": r.memory_limit, "ephemeral-storage": "10Gi"},
                            "defaultRequest": {"cpu": r.cpu, "memory": r.memory, "ephemeral-storage": "1Gi"},
                            "max": {"cpu": "4", "memory": "8Gi", "ephemeral-storage": "10Gi"},
                        }
                    ]
                },
            },
        )

    # --- identities ------------------------------------------------------------------------
    def service_account(self, d: Deployed) -> None:
        w = d.workload
        identity = self.identity.get(d.name)
        annotations = {}
        if identity is not None:
            # Workload Identity: only workloads with a Google identity carry the annotation.
            annotations[WORKLOAD_IDENTITY_ANNOTATION] = self.email(identity.account_id)
            if identity.database_role:
                annotations[DATABASE_ROLE_ANNOTATION] = identity.database_role
        self.add(
            d.workspace,
            {
                "apiVersion": "v1",
                "kind": "ServiceAccount",
                "metadata": _meta(d.name, d.namespace, _labels(d), annotations or None),
                # No API token unless the workload calls the API.
                "automountServiceAccountToken": w.calls_kubernetes_api,
            },
        )

    def email(self, account_id: str) -> str:
        return f"{account_id}@{self.config.project}.iam.gserviceaccount.com"

    def rbac(self, d: Deployed) -> None:
        by_namespace: dict[Optional[str], list[ApiPermission]] = {}
        for perm in d.workload.kubernetes_api:
            by_namespace.setdefault(perm.namespace, []).append(perm)
        for catalogue_ns, perms in sorted(by_namespace.items(), key=lambda kv: kv[0] or ""):
            rules = [{"apiGroups": [p.api_group], "resources": [p.resource], "verbs": sorted(p.verbs)} for p in perms]
            subject = [{"kind": "ServiceAccount", "name": d.name, "namespace": d.namespace}]
            if catalogue_ns is None:
                name = f"perfloop:{d.name}"
                self.add(d.workspace, {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": _meta(name, None, _labels(d)), "rules": rules})
                self.add(
                    d.workspace,
                    {
                        "apiVersion": "rbac.authorization.k8s.io/v1",
                        "kind": "ClusterRoleBinding",
                        "metadata": _meta(name, None, _labels(d)),
                        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
                        "subjects": subject,
                    },
                )
                continue
            # A permission in a per-workspace namespace is granted in each workspace's copy, by
            # that workspace's stack (none in a cell without a workspace).
            workspace = None
            if catalogue_ns in self.workspace_namespaces:
                if self.config.workspace is None:
                    continue
                workspace = self.config.workspace.id
            namespace = f"{catalogue_ns}-{workspace}" if workspace else catalogue_ns
            for kind, extra in (("Role", {"rules": rules}), ("RoleBinding", {"roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": d.name}, "subjects": subject})):
                self.add(workspace or d.workspace, {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": kind, "metadata": _meta(d.name, namespace, _labels(d)), **extra})

    # --- network ---------------------------------------------------------------------------
    def egress_policy(self, d: Deployed) -> None:
        w = d.workload
        net = self.config.network
        rules: list[dict[str, Any]] = []
        for call in w.calls:
            callee = self.deployed.get(call.workload)
            if callee is not None:
                rules.append({"to": [_peer(callee.name, callee.namespace)], "ports": [{"protocol": "TCP", "port": call.port}]})
        if w.dns:
            rules.append(
                {
                    "to": [{"namespaceSelector": {"matchLabels": {NAMESPACE_NAME_LABEL: "kube-system"}}, "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}],
                    "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}],
                }
            )
        if w.google_apis:
            rules.append(_ip_rule(PRIVATE_GOOGLE_APIS_CIDR, 443))
        if d.name in self.identity:
            rules += [_ip_rule(cidr, port) for cidr, port in METADATA_SERVER]
        if w.database_role:
            rules.append(_ip_rule(net.private_services_cidr, CLOUD_SQL_PROXY_PORT))
        if w.calls_kubernetes_api:
            rules.append(_ip_rule(net.control_plane_cidr, 443))
        if w.internet:
            rules.append(_ip_rule("0.0.0.0/0", 443, NON_INTERNET))
        self.add(
            d.workspace,
            {
                "apiVersion": "networking.k8s.io/v1",
                "kind": "NetworkPolicy",
                "metadata": _meta(f"{d.name}-egress", d.namespace, _labels(d)),
                "spec": {"podSelector": {"matchLabels": {NAME_LABEL: d.name}}, "policyTypes": ["Egress"], "egress": rules},
            },
        )

    def ingress_policies(self) -> None:
        """Into each workload, one policy per owning scope, with one rule per declared call: the
        cell's stack owns the paths between cell workloads, and each workspace's stack owns the
        paths from its workloads into the cell (so it adds and removes only its own)."""
        rules: dict[tuple[str, Optional[str]], list[dict[str, Any]]] = {}
        for d in self.t.deployed:
            for call in d.workload.calls:
                callee = self.deployed.get(call.workload)
                if callee is not None:
                    rule = {"from": [_peer(d.name, d.namespace)], "ports": [{"protocol": "TCP", "port": call.port}]}
                    rules.setdefault((callee.name, d.workspace or callee.workspace), []).append(rule)
        for (name, scope), ingress in rules.items():
            callee = self.deployed[name]
            policy = f"{name}-ingress" + (f"-{scope}" if scope and not callee.workspace else "")
            self.add(
                scope,
                {
                    "apiVersion": "networking.k8s.io/v1",
                    "kind": "NetworkPolicy",
                    "metadata": _meta(policy, callee.namespace, _labels(callee)),
                    "spec": {"podSelector": {"matchLabels": {NAME_LABEL: name}}, "policyTypes": ["Ingress"], "ingress": ingress},
                },
            )

    # --- workloads -------------------------------------------------------------------------
    def image(self, w: Workload) -> str:
        return self.config.images.get(w.name, w.image)

    def config_map_name(self, d: Deployed, logical: str) -> str:
        return {"db-migrations": self.migrations_name, "connector-config": f"{d.name}-config"}.get(logical, logical)

    def pod_spec(self, d: Deployed, command: Optional[list[str]] = None) -> dict[str, Any]:
        w = d.workload
        identity = self.identity.get(d.name)
        env = [
            {"name": f"PERFLOOP_SECRET_{s.removeprefix('perfloop-').upper().replace('-', '_')}", "value": f"projects/{self.config.project}/secrets/{s}/versions/latest"}
            for s in (identity.secrets if identity else ())
        ]
        volumes = [{"name": "tmp", "emptyDir": {"sizeLimit": "1Gi"}}]
        mounts = [{"name": "tmp", "mountPath": "/tmp"}]
        for logical in w.config_maps:
            volumes.append({"name": logical, "configMap": {"name": self.config_map_name(d, logical)}})
            mounts.append({"name": logical, "mountPath": f"/etc/perfloop/{logical}", "readOnly": True})
        init_containers = []
        if identity is not None and identity.database_role:
            env += [
                {"name": "PGHOST", "value": "127.0.0.1"},
                {"name": "PGPORT", "value": str(LOCAL_DATABASE_PORT)},
                {"name": "PGDATABASE", "value": DATABASE_NAME},
                {"name": "PGUSER", "value": iam_user_name(self.email(identity.account_id))},
            ]
            # Native sidecar: the Cloud SQL Auth Proxy, private IP only, IAM database login.
            init_containers.append(
                {
                    "name": "cloud-sql-proxy",
                    "image": CLOUD_SQL_PROXY_IMAGE,
                    "restartPolicy": "Always",
                    "args": ["--private-ip", "--auto-iam-authn", "--structured-logs", f"--port={LOCAL_DATABASE_PORT}", database_connection_name(self.t, self.instance)],
                    "securityContext": CONTAINER_SECURITY,
                    "resources": {"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"cpu": "500m", "memory": "256Mi"}},
                }
            )
        r = w.resources
        container: dict[str, Any] = {
            "name": w.name,
            "image": self.image(w),
            "securityContext": CONTAINER_SECURITY,
            "resources": {"requests": {"cpu": r.cpu, "memory": r.memory}, "limits": {"cpu": r.cpu_limit, "memory": r.memory_limit}},
            "volumeMounts": mounts,
        }
        if command:
            container["command"] = command
        if env:
            container["env"] = env
        if w.ports:
            container["ports"] = [{"name": p.name, "containerPort": p.port, "protocol": "TCP"} for p in w.ports]
            probe = {"httpGet": {"path": "/healthz", "port": w.ports[0].name}, "periodSeconds": 10}
            container["readinessProbe"] = probe
            container["livenessProbe"] = {**probe, "initialDelaySeconds": 10}
        spec: dict[str, Any] = {
            "serviceAccountName": d.name,
            "automountServiceAccountToken": w.calls_kubernetes_api,
            "enableServiceLinks": False,
            "nodeSelector": {POOL_LABEL: w.node_pool},
            "securityContext": POD_SECURITY,
            "containers": [container],
            "volumes": volumes,
        }
        if init_containers:
            spec["initContainers"] = init_containers
        if w.node_pool != "system":
            spec["tolerations"] = [{"key": POOL_LABEL, "operator": "Equal", "value": w.node_pool, "effect": "NoSchedule"}]
        return spec

    def deployment(self, d: Deployed) -> None:
        w = d.workload
        labels = _labels(d)
        selector = {NAME_LABEL: d.name}
        spec = self.pod_spec(d)
        if w.replicas > 1:
            # Spread replicas over zones and keep one up through voluntary disruptions.
            spec["topologySpreadConstraints"] = [
                {"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone", "whenUnsatisfiable": "ScheduleAnyway", "labelSelector": {"matchLabels": selector}}
            ]
            self.add(
                d.workspace,
                {
                    "apiVersion": "policy/v1",
                    "kind": "PodDisruptionBudget",
                    "metadata": _meta(d.name, d.namespace, labels),
                    "spec": {"minAvailable": 1, "selector": {"matchLabels": selector}},
                },
            )
        self.add(
            d.workspace,
            {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": _meta(d.name, d.namespace, labels),
                "spec": {"replicas": w.replicas, "selector": {"matchLabels": selector}, "template": {"metadata": {"labels": labels}, "spec": spec}},
            },
        )
        service_spec: dict[str, Any] = {
            "selector": selector,
            "ports": [{"name": p.name, "port": p.port, "targetPort": p.name, "protocol": "TCP"} for p in w.ports],
        }
        if d.name == EGRESS_PROXY:
            service_spec["clusterIP"] = proxy_service_ip(self.t)
        self.add(d.workspace, {"apiVersion": "v1", "kind": "Service", "metadata": _meta(d.name, d.namespace, labels), "spec": service_spec})

    def cron_job(self, d: Deployed) -> None:
        commands = {
            # Calls the purge function and nothing else; the function refuses less than the floor.
            "audit-cleanup": ["psql", "--no-psqlrc", "--set=ON_ERROR_STOP=1", f"--command=SELECT audit.purge_events({AUDIT_RETENTION_MONTHS})"],
            "workspace-reconciler": [
                "perfloop-db", "reconcile-workspaces",
                f"--namespace={self.deployed[EGRESS_PROXY].namespace}",
                f"--selector={WORKSPACE_REGISTRATION_LABEL}=true",
                f"--max-drops={RECONCILER_MAX_DROPS}",
            ],
        }
        spec = self.pod_spec(d, command=commands[d.name])
        spec["restartPolicy"] = "OnFailure"
        self.add(
            d.workspace,
            {
                "apiVersion": "batch/v1",
                "kind": "CronJob",
                "metadata": _meta(d.name, d.namespace, _labels(d)),
                "spec": {
                    "schedule": d.workload.schedule,
                    "timeZone": "Etc/UTC",
                    "concurrencyPolicy": "Forbid",
                    "jobTemplate": {"spec": {"backoffLimit": 3, "activeDeadlineSeconds": 1800, "template": {"metadata": {"labels": _labels(d)}, "spec": spec}}},
                },
            },
        )

    def migration_job(self, d: Deployed) -> None:
        """The migrations run in-cluster (the database has no public address), through the Cloud
        SQL Auth Proxy as the migrator's IAM user. The Job's name carries the migrations'
        checksum: Jobs are immutable, so new SQL means a new Job."""
        spec = self.pod_spec(d, command=["perfloop-db", "migrate", "--dir", "/etc/perfloop/db-migrations"])
        spec["restartPolicy"] = "Never"
        self.add(
            d.workspace,
            {
                "apiVersion": "batch/v1",
                "kind": "Job",
                "metadata": _meta(f"{d.name}-{self.migrations_sum}", d.namespace, _labels(d)),
                "spec": {"backoffLimit": 2, "activeDeadlineSeconds": 900, "template": {"metadata": {"labels": _labels(d)}, "spec": spec}},
            },
        )

    def migrations_config_map(self) -> None:
        groups: dict[str, list[str]] = {}
        for identity in self.t.identities:
            if identity.database_role:
                groups.setdefault(identity.database_role, []).append(iam_user_name(self.email(identity.account_id)))
        migrations = render_migrations({role: sorted(users) for role, users in sorted(groups.items())})
        self.migrations_sum = migrations_checksum(migrations)[:10]
        self.migrations_name = f"db-migrations-{self.migrations_sum}"
        self.migrations_data = dict(migrations)

    def sandbox_template(self, controller: Deployed) -> None:
        """The pod every session runs in, the same for every workspace: a cell object, mounted
        into the session controller, which fills in the workspace's namespace and the session's
        short-lived proxy token (which grants nothing by itself)."""
        w = next(x for x in self.t.catalogue.workloads if x.kind == SANDBOX_KIND)
        r = w.resources
        proxy = f"http://{EGRESS_PROXY}:{self.deployed[EGRESS_PROXY].workload.ports[0].port}"
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"generateName": "session-", "labels": {NAME_LABEL: w.name, "app.kubernetes.io/part-of": "perfloop", "app.kubernetes.io/component": "sandbox"}},
            "spec": {
                "runtimeClassName": "gvisor",
                "serviceAccountName": w.name,
                "automountServiceAccountToken": False,
                "enableServiceLinks": False,
                "restartPolicy": "Never",
                "activeDeadlineSeconds": SESSION_DEADLINE_SECONDS,
                "nodeSelector": {POOL_LABEL: w.node_pool},
                "tolerations": [
                    {"key": POOL_LABEL, "operator": "Equal", "value": w.node_pool, "effect": "NoSchedule"},
                    {"key": "sandbox.gke.io/runtime", "operator": "Equal", "value": "gvisor", "effect": "NoSchedule"},
                ],
                # No DNS: the only name the sandbox knows is the proxy's, pinned to its fixed IP;
                # the proxy resolves every destination. The loopback nameserver answers nothing.
                "dnsPolicy": "None",
                "dnsConfig": {"nameservers": ["127.0.0.1"]},
                "hostAliases": [{"ip": proxy_service_ip(self.t), "hostnames": [EGRESS_PROXY]}],
                "securityContext": POD_SECURITY,
                "containers": [
                    {
                        "name": "agent",
                        "image": self.image(w),
                        "env": [
                            {"name": name, "value": proxy}
                            for name in ("HTTPS_PROXY", "HTTP_PROXY", "https_proxy", "http_proxy")
                        ]
                        + [{"name": "NO_PROXY", "value": ""}],
                        "securityContext": CONTAINER_SECURITY,
                        "resources": {"requests": {"cpu": r.cpu, "memory": r.memory, "ephemeral-storage": "1Gi"}, "limits": {"cpu": r.cpu_limit, "memory": r.memory_limit, "ephemeral-storage": "10Gi"}},
                        "volumeMounts": [{"name": "workspace", "mountPath": "/workspace"}, {"name": "tmp", "mountPath": "/tmp"}],
                    }
                ],
                "volumes": [
                    {"name": "workspace", "emptyDir": {"sizeLimit": "8Gi"}},
                    {"name": "tmp", "emptyDir": {"sizeLimit": "1Gi"}},
                ],
            },
        }
        self.add(
            None,
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": _meta("sandbox-pod-template", controller.namespace, _platform_labels()),
                "data": {"pod.yaml": yaml.safe_dump(pod, sort_keys=True)},
            },
        )

    def policy_data(self, workspaces: list[dict[str, Any]]) -> dict[str, Any]:
        """The egress policy's data (`data.perfloop`), from the stack config and the catalogue."""
        net = self.config.network
        try:
            return render_policy_data(
                {
                    "region": self.config.region,
                    # The API server's private endpoint; the policy never lets a request reach it.
                    "api_server_hosts": [str(ipaddress.ip_network(net.control_plane_cidr)[2])],
                    "workspaces": workspaces,
                    "platform_destinations": {w.name: w.egress_destinations for w in self.t.catalogue.workloads if w.egress_destinations},
                }
            )
        except ValueError as exc:
            raise ConfigError("egress policy data", [f"perfloop:{exc}"]) from None

    def egress_policy_config_map(self) -> None:
        """The proxy's policy (the Rego modules, verbatim) and the cell's part of its data; each
        workspace's part arrives in its registration ConfigMap."""
        proxy = self.deployed[EGRESS_PROXY]
        data = {name: source for name, source in policy_modules().items()}
        data["data.json"] = json.dumps(self.policy_data([]), sort_keys=True, indent=2)
        data["proxy.json"] = json.dumps(PROXY_SETTINGS, sort_keys=True, indent=2)
        self.add(None, {"apiVersion": "v1", "kind": "ConfigMap", "metadata": _meta("egress-policy", proxy.namespace, _labels(proxy)), "data": data})

    def workspace_entry(self) -> dict[str, Any]:
        workspace = self.config.workspace
        return {
            "id": workspace.id,
            "code_host": workspace.code_host.model_dump() if workspace.code_host else None,
            "telemetry": [
                {"kind": kind, **{k: v for k, v in c.model_dump().items() if v is not None and v != []}}
                for kind, c in workspace.telemetry.configured().items()
            ],
        }

    def connector_config(self, d: Deployed) -> None:
        entry = next(t for t in self.workspace_entry()["telemetry"] if t["kind"] == d.workload.connection)
        try:
            rendered = render_connector_config({**entry, "workspace": d.workspace})
        except ValueError as exc:
            raise ConfigError("connector configuration", [f"perfloop:workspace.telemetry.{d.workload.connection}: {exc}"]) from None
        self.add(d.workspace, {"apiVersion": "v1", "kind": "ConfigMap", "metadata": _meta(f"{d.name}-config", d.namespace, _labels(d)), "data": {"connector.yaml": rendered}})

    def workspace_registration(self) -> None:
        """The workspace's entry on the cell, owned by the workspace's stack: its part of the
        egress policy data, read by the proxy, and the record the reconciler creates and drops
        the workspace's storage by. Destroying the stack removes it."""
        workspace = self.config.workspace
        proxy = self.deployed[EGRESS_PROXY]
        registration = {"workspace": workspace.id, "policy": self.policy_data([self.workspace_entry()])["workspaces"][workspace.id]}
        self.add(
            workspace.id,
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": _meta(f"workspace-{workspace.id}", proxy.namespace, {**_platform_labels(workspace.id), WORKSPACE_REGISTRATION_LABEL: "true"}),
                "data": {"workspace.json": json.dumps(registration, sort_keys=True, indent=2)},
            },
        )

    def render(self) -> list[Manifest]:
        self.migrations_config_map()
        self.namespaces()
        if self.config.workspace is not None:
            self.workspace_registration()
        self.ingress_policies()
        for d in self.t.deployed:
            w = d.workload
            self.service_account(d)
            self.rbac(d)
            self.egress_policy(d)
            if w.kind == "Deployment":
                self.deployment(d)
            elif w.kind == "CronJob":
                self.cron_job(d)
            elif w.kind == "Job":
                self.migration_job(d)
                self.add(
                    d.workspace,
                    {"apiVersion": "v1", "kind": "ConfigMap", "metadata": _meta(self.migrations_name, d.namespace, _labels(d)), "data": self.migrations_data},
                )
            elif w.kind == SANDBOX_KIND:
                self.sandbox_limits(d)
            if "sandbox-pod-template" in w.config_maps:
                self.sandbox_template(d)
            if "egress-policy" in w.config_maps:
                self.egress_policy_config_map()
            if "connector-config" in w.config_maps:
                self.connector_config(d)
        return self.out


def render_manifests(topology: Topology, database_instance: str) -> list[Manifest]:
    return _Renderer(topology, database_instance).render()

