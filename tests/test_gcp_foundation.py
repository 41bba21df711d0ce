"""The GCP layer of byoc-example: each hardening setting, asserted on the offline plan.

Every row names one setting the security page depends on; flipping it in the code makes its row fail.
"""

from __future__ import annotations

import pytest

from infra.config import Loosening
from infra.gcp.network import EGRESS_NODE_TAG, EGRESS_PODS_RANGE, PRIVATE_GOOGLE_APIS_CIDR
from infra.plan_view import lookup
from tests.conftest import one

CLUSTER = "gcp:container/cluster:Cluster"
POOL = "gcp:container/nodePool:NodePool"
SQL = "gcp:sql/databaseInstance:DatabaseInstance"

HARDENING = [
    # Network
    ("gcp:compute/network:Network", "vpc", "autoCreateSubnetworks", False),
    ("gcp:compute/network:Network", "vpc", "deleteDefaultRoutesOnCreate", True),
    ("gcp:compute/subnetwork:Subnetwork", "subnet", "privateIpGoogleAccess", True),
    ("gcp:compute/subnetwork:Subnetwork", "subnet", "logConfig.metadata", "INCLUDE_ALL_METADATA"),
    ("gcp:compute/routerNat:RouterNat", "nat", "sourceSubnetworkIpRangesToNat", "LIST_OF_SUBNETWORKS"),
    ("gcp:compute/route:Route", "egress-internet", "tags", [EGRESS_NODE_TAG]),
    # Cluster
    (CLUSTER, "cluster", "privateClusterConfig.enablePrivateNodes", True),
    (CLUSTER, "cluster", "privateClusterConfig.enablePrivateEndpoint", True),
    (CLUSTER, "cluster", "controlPlaneEndpointsConfig.dnsEndpointConfig.allowExternalTraffic", True),
    (CLUSTER, "cluster", "masterAuthorizedNetworksConfig.gcpPublicCidrsAccessEnabled", False),
    (CLUSTER, "cluster", "masterAuthorizedNetworksConfig.privateEndpointEnforcementEnabled", True),
    (CLUSTER, "cluster", "workloadIdentityConfig.workloadPool", "acme-perfloop-prod.svc.id.goog"),
    (CLUSTER, "cluster", "datapathProvider", "ADVANCED_DATAPATH"),
    (CLUSTER, "cluster", "enableShieldedNodes", True),
    (CLUSTER, "cluster", "releaseChannel.channel", "REGULAR"),
    (CLUSTER, "cluster", "enableLegacyAbac", False),
    (CLUSTER, "cluster", "masterAuth.clientCertificateConfig.issueClientCertificate", False),
    (CLUSTER, "cluster", "removeDefaultNodePool", True),
    (CLUSTER, "cluster", "binaryAuthorization.evaluationMode", "PROJECT_SINGLETON_POLICY_ENFORCE"),
    (CLUSTER, "cluster", "databaseEncryption.state", "ENCRYPTED"),
    (CLUSTER, "cluster", "deletionProtection", True),
    (CLUSTER, "cluster", "nodeConfig.workloadMetadataConfig.mode", "GKE_METADATA"),
    # Node pools
    (POOL, "sandbox", "nodeConfig.sandboxConfig.type", "gvisor"),
    (POOL, "sandbox", "nodeConfig.imageType", "COS_CONTAINERD"),
    (POOL, "egress", "networkConfig.podRange", EGRESS_PODS_RANGE),
    (POOL, "egress", "nodeConfig.taints", [{"effect": "NO_SCHEDULE", "key": "perfloop.ai/pool", "value": "egress"}]),
    (POOL, "sandbox", "nodeConfig.taints", [{"effect": "NO_SCHEDULE", "key": "perfloop.ai/pool", "value": "sandbox"}]),
    # Cloud SQL
    (SQL, "instance", "settings.ipConfiguration.ipv4Enabled", False),
    (SQL, "instance", "settings.ipConfiguration.authorizedNetworks", []),
    (SQL, "instance", "settings.ipConfiguration.sslMode", "TRUSTED_CLIENT_CERTIFICATE_REQUIRED"),
    (SQL, "instance", "settings.connectorEnforcement", "REQUIRED"),
    (SQL, "instance", "settings.availabilityType", "REGIONAL"),
    (SQL, "instance", "settings.backupConfiguration.enabled", True),
    (SQL, "instance", "settings.backupConfiguration.pointInTimeRecoveryEnabled", True),
    (SQL, "instance", "settings.backupConfiguration.backupRetentionSettings.retainedBackups", 30),
    (SQL, "instance", "settings.maintenanceWindow.day", 7),
    (SQL, "instance", "settings.deletionProtectionEnabled", True),
    (SQL, "instance", "deletionProtection", True),
    (SQL, "instance", "settings.insightsConfig.queryInsightsEnabled", True),
    (SQL, "instance", "settings.insightsConfig.recordClientAddress", False),
    (SQL, "instance", "encryptionKeyName", "projects/acme-perfloop-prod/locations/europe-west4/keyRings/perfloop/cryptoKeys/data"),
    # Audit logging
    ("gcp:logging/projectBucketConfig:ProjectBucketConfig", "audit-bucket", "locked", True),
    ("gcp:logging/projectBucketConfig:ProjectBucketConfig", "audit-bucket", "retentionDays", 400),
]


@pytest.mark.parametrize("type_,name,path,expected", HARDENING, ids=[f"{n}:{p}" for _, n, p, _ in HARDENING])
def test_hardening_setting(byoc_plan, type_, name, path, expected):
    assert lookup(one(byoc_plan, type_, name).inputs, path) == expected


@pytest.mark.parametrize("pool", ["system", "egress", "sandbox"])
def test_every_pool_is_hardened(byoc_plan, pool):
    node = one(byoc_plan, POOL, pool).inputs
    assert lookup(node, "nodeConfig.workloadMetadataConfig.mode") == "GKE_METADATA"
    assert lookup(node, "nodeConfig.shieldedInstanceConfig") == {"enableIntegrityMonitoring": True, "enableSecureBoot": True}
    assert lookup(node, "management") == {"autoRepair": True, "autoUpgrade": True}
    assert lookup(node, "upgradeSettings") == {"maxSurge": 1, "maxUnavailable": 0, "strategy": "SURGE"}
    assert lookup(node, "nodeConfig.imageType") == "COS_CONTAINERD"
    node_sa = one(byoc_plan, "gcp:serviceaccount/account:Account", "node-sa").inputs["accountId"]
    assert lookup(node, "nodeConfig.serviceAccount").startswith(f"{node_sa}@")


def test_only_sandbox_pool_runs_gvisor_and_only_egress_pool_uses_egress_range(byoc_plan):
    pools = {r.name: r.inputs for r in byoc_plan.by_type(POOL)}
    assert {n for n, i in pools.items() if lookup(i, "nodeConfig.sandboxConfig.type")} == {"sandbox"}
    assert {n for n, i in pools.items() if lookup(i, "networkConfig.podRange")} == {"egress"}


def test_nat_translates_only_the_egress_pod_range(byoc_plan):
    (subnet,) = one(byoc_plan, "gcp:compute/routerNat:RouterNat", "nat").inputs["subnetworks"]
    assert subnet["sourceIpRangesToNats"] == ["LIST_OF_SECONDARY_IP_RANGES"]
    assert subnet["secondaryIpRangeNames"] == [EGRESS_PODS_RANGE]


def test_egress_firewall_denies_by_default_and_allows_internet_only_from_egress_nodes(byoc_plan):
    rules = {r.name: r.inputs for r in byoc_plan.by_type("gcp:compute/firewall:Firewall")}
    deny = rules["deny-all-egress"]
    assert deny["direction"] == "EGRESS" and deny["destinationRanges"] == ["0.0.0.0/0"]
    assert deny["denies"] == [{"protocol": "all"}]
    internet_allows = [
        (n, r) for n, r in rules.items() if "allows" in r and "0.0.0.0/0" in r.get("destinationRanges", [])
    ]
    assert [(n, r.get("targetTags")) for n, r in internet_allows] == [("allow-egress-internet-https", [EGRESS_NODE_TAG])]
    assert rules["allow-egress-google-apis"]["destinationRanges"] == [PRIVATE_GOOGLE_APIS_CIDR]
    assert all(r["priority"] < deny["priority"] for n, r in rules.items() if n != "deny-all-egress")


def test_the_only_internet_route_is_tagged_to_egress_nodes(byoc_plan):
    routes = [r.inputs for r in byoc_plan.by_type("gcp:compute/route:Route") if r.inputs["destRange"] == "0.0.0.0/0"]
    assert [r.get("tags") for r in routes] == [[EGRESS_NODE_TAG]]


def test_cloud_sql_waits_for_private_services_access(byoc_plan):
    sql = one(byoc_plan, SQL, "instance")
    connection = one(byoc_plan, "gcp:servicenetworking/connection:Connection")
    assert connection.urn in sql.dependencies
    assert lookup(sql.inputs, "settings.ipConfiguration.privateNetwork").endswith("/networks/perfloop-vpc")


def test_cloud_sql_iam_authentication_and_ddl_logging_flags(byoc_plan):
    flags = {f["name"]: f["value"] for f in lookup(one(byoc_plan, SQL).inputs, "settings.databaseFlags")}
    assert flags["cloudsql.iam_authentication"] == "on"
    assert flags["log_statement"] == "ddl"


def test_stateful_resources_are_protected(byoc_plan):
    protected = {r.type for r in byoc_plan.resources if r.protect}
    assert {SQL, "gcp:sql/database:Database", "gcp:logging/projectBucketConfig:ProjectBucketConfig"} <= protected
    assert one(byoc_plan, "gcp:sql/database:Database").inputs["deletionPolicy"] == "ABANDON"


def test_project_services_are_exactly_the_needed_apis(byoc_plan):
    apis = sorted(r.inputs["service"] for r in byoc_plan.by_type("gcp:projects/service:Service"))
    assert apis == sorted(
        [
            "aiplatform.googleapis.com", "binaryauthorization.googleapis.com", "cloudkms.googleapis.com",
            "cloudresourcemanager.googleapis.com", "compute.googleapis.com", "container.googleapis.com",
            "dns.googleapis.com", "iam.googleapis.com", "iamcredentials.googleapis.com", "logging.googleapis.com",
            "monitoring.googleapis.com", "secretmanager.googleapis.com", "servicenetworking.googleapis.com",
            "sqladmin.googleapis.com", "sts.googleapis.com",
        ]
    )
    assert all(r.inputs["disableOnDestroy"] is False for r in byoc_plan.by_type("gcp:projects/service:Service"))


def test_data_access_audit_logs_cover_services_holding_secrets_and_data(byoc_plan):
    configs = {r.inputs["service"]: r.inputs["auditLogConfigs"] for r in byoc_plan.by_type("gcp:projects/iAMAuditConfig:IAMAuditConfig")}
    for service in ("secretmanager.googleapis.com", "sqladmin.googleapis.com", "aiplatform.googleapis.com"):
        assert {c["logType"] for c in configs[service]} >= {"DATA_READ", "DATA_WRITE"}


def test_audit_sink_routes_audit_logs_to_the_locked_bucket(byoc_plan):
    sink = one(byoc_plan, "gcp:logging/projectSink:ProjectSink").inputs
    assert sink["destination"].endswith("/buckets/perfloop-audit")
    assert "cloudaudit.googleapis.com" in sink["filter"]


def test_no_cmek_means_google_managed_encryption(plan_variant):
    plan = plan_variant(lambda c: c.pop("perfloop:cmek_key"))
    assert lookup(one(plan, CLUSTER).inputs, "databaseEncryption.state") == "DECRYPTED"
    assert "encryptionKeyName" not in one(plan, SQL).inputs
    assert "cloudkms.googleapis.com" not in {r.inputs["service"] for r in plan.by_type("gcp:projects/service:Service")}


def test_loosening_database_tls_is_explicit_and_still_encrypted(plan_variant):
    plan = plan_variant(lambda c: c.__setitem__("perfloop:loosen", [Loosening.DATABASE_TLS_WITHOUT_CLIENT_CERTIFICATES.value]))
    ip = lookup(one(plan, SQL).inputs, "settings.ipConfiguration")
    assert ip["sslMode"] == "ENCRYPTED_ONLY"
    assert lookup(one(plan, SQL).inputs, "settings.connectorEnforcement") == "NOT_REQUIRED"
    assert plan.outputs["loosenings"] == ["database-tls-without-client-certificates"]


def test_loosening_binary_authorization_is_explicit(plan_variant, byoc_plan):
    assert byoc_plan.outputs["loosenings"] == []
    plan = plan_variant(lambda c: c.__setitem__("perfloop:loosen", ["binary-authorization-disabled"]))
    assert lookup(one(plan, CLUSTER).inputs, "binaryAuthorization.evaluationMode") == "DISABLED"
    assert plan.outputs["loosenings"] == ["binary-authorization-disabled"]


def test_master_authorized_networks_come_from_config(byoc_plan):
    blocks = lookup(one(byoc_plan, CLUSTER).inputs, "masterAuthorizedNetworksConfig.cidrBlocks")
    assert blocks == [{"cidrBlock": "203.0.113.0/29", "displayName": "acme-ops-vpn"}]
