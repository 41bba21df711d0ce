"""Human-readable views of a plan: the resource tree with the settings that matter."""

from __future__ import annotations

from typing import Any

from infra.engine import Plan, PlannedResource

# Per resource type, the input paths a reviewer looks at first.
KEY_SETTINGS: dict[str, tuple[str, ...]] = {
    "gcp:compute/network:Network": ("autoCreateSubnetworks", "deleteDefaultRoutesOnCreate"),
    "gcp:compute/subnetwork:Subnetwork": ("ipCidrRange", "privateIpGoogleAccess", "secondaryIpRanges", "logConfig.flowSampling"),
    "gcp:compute/route:Route": ("destRange", "tags"),
    "gcp:compute/routerNat:RouterNat": ("sourceSubnetworkIpRangesToNat", "subnetworks"),
    "gcp:compute/firewall:Firewall": ("direction", "priority", "destinationRanges", "allows", "denies", "targetTags"),
    "gcp:container/cluster:Cluster": (
        "privateClusterConfig.enablePrivateNodes",
        "privateClusterConfig.enablePrivateEndpoint",
        "datapathProvider",
        "workloadIdentityConfig.workloadPool",
        "enableLegacyAbac",
        "masterAuth.clientCertificateConfig.issueClientCertificate",
        "binaryAuthorization.evaluationMode",
        "databaseEncryption.state",
        "releaseChannel.channel",
    ),
    "gcp:container/nodePool:NodePool": (
        "nodeConfig.sandboxConfig.type",
        "nodeConfig.imageType",
        "nodeConfig.workloadMetadataConfig.mode",
        "nodeConfig.shieldedInstanceConfig",
        "nodeConfig.taints",
        "networkConfig.podRange",
        "autoscaling",
    ),
    "gcp:sql/databaseInstance:DatabaseInstance": (
        "databaseVersion",
        "settings.tier",
        "settings.availabilityType",
        "settings.ipConfiguration.ipv4Enabled",
        "settings.ipConfiguration.sslMode",
        "settings.connectorEnforcement",
        "settings.deletionProtectionEnabled",
        "encryptionKeyName",
    ),
    "gcp:secretmanager/secret:Secret": ("replication.userManaged.replicas",),
    "gcp:secretmanager/secretIamBinding:SecretIamBinding": ("role", "members"),
    "gcp:serviceaccount/account:Account": ("accountId",),
    "gcp:serviceaccount/iAMBinding:IAMBinding": ("role", "members"),
    "gcp:projects/iAMMember:IAMMember": ("role", "member", "condition.expression"),
    "gcp:projects/iAMAuditConfig:IAMAuditConfig": ("service",),
    "gcp:logging/projectBucketConfig:ProjectBucketConfig": ("retentionDays", "locked", "location"),
    "gcp:sql/user:User": ("name", "type"),
}


def lookup(inputs: dict[str, Any], path: str) -> Any:
    value: Any = inputs
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def _short_type(type_: str) -> str:
    return type_.split(":")[-1] if type_.startswith(("gcp:", "kubernetes:")) else type_


def _settings(resource: PlannedResource) -> str:
    shown = []
    for path in KEY_SETTINGS.get(resource.type, ()):
        value = lookup(resource.inputs, path)
        if value is not None:
            shown.append(f"{path.split('.')[-1]}={_compact(value)}")
    return "  " + " ".join(shown) if shown else ""


def _compact(value: Any) -> str:
    if isinstance(value, dict):
        return "{" + ",".join(f"{k}:{_compact(v)}" for k, v in sorted(value.items())) + "}"
    if isinstance(value, list):
        return "[" + ",".join(_compact(v) for v in value) + "]"
    return str(value).lower() if isinstance(value, bool) else str(value)


def render_tree(plan: Plan) -> str:
    children: dict[str, list[PlannedResource]] = {}
    for r in plan.resources:
        children.setdefault(r.parent, []).append(r)
    lines = [f"{plan.project}/{plan.stack}: {len(plan.resources)} resources (offline plan)"]

    def walk(parent: str, depth: int) -> None:
        for r in sorted(children.get(parent, []), key=lambda r: (r.custom, r.type, r.name)):
            marker = " [protected]" if r.protect else ""
            lines.append(f"{'  ' * depth}{_short_type(r.type)} {r.name}{marker}{_settings(r)}")
            walk(r.urn, depth + 1)

    walk("", 0)
    loosenings = plan.outputs.get("loosenings") or []
    lines.append("loosenings: " + (", ".join(loosenings) if loosenings else "none (every setting at its strict default)"))
    return "\n".join(lines) + "\n"
