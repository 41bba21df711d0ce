"""Identities and secrets: derived from the catalogue, one reader per secret, nothing broader."""

from __future__ import annotations

import re

import pytest

from infra.catalogue import load_catalogue
from infra.plan_view import lookup
from tests.conftest import one

IAM_MEMBER = "gcp:projects/iAMMember:IAMMember"
PRIMITIVE = re.compile(r"^roles/(owner|editor|viewer)$")


def _members(plan, type_):
    return [r.inputs for r in plan.by_type(type_)]


def test_one_service_account_per_workload_with_a_gcp_identity(byoc_plan):
    accounts = {r.inputs["accountId"] for r in byoc_plan.by_type("gcp:serviceaccount/account:Account")}
    expected = {w.service_account_id for w in load_catalogue().workloads if w.has_gcp_identity and w.scope == "cell"}
    assert accounts == expected | {"perfloop-nodes"}
    assert "pf-sandbox" not in accounts


def test_no_service_account_keys_anywhere(byoc_plan):
    assert not [r for r in byoc_plan.resources if r.type == "gcp:serviceaccount/key:Key"]


def test_no_primitive_roles_anywhere(byoc_plan):
    roles = [lookup(r.inputs, "role") for r in byoc_plan.resources if lookup(r.inputs, "role")]
    assert roles and not [r for r in roles if PRIMITIVE.match(r)]


def test_project_roles_are_exactly_the_declared_ones(byoc_plan):
    granted = {(m["member"].split(":")[1].split("@")[0], m["role"]) for m in _members(byoc_plan, IAM_MEMBER)}
    assert granted == {
        ("perfloop-nodes", "roles/logging.logWriter"),
        ("perfloop-nodes", "roles/monitoring.metricWriter"),
        ("perfloop-nodes", "roles/artifactregistry.reader"),
        ("pf-agent-orchestrator", "roles/aiplatform.user"),
        *{(f"pf-{w}", r) for w in ("control-plane-api", "session-controller", "agent-orchestrator", "audit-cleanup", "db-migrate", "workspace-reconciler")
          for r in ("roles/cloudsql.client", "roles/cloudsql.instanceUser")},
    }


def test_only_the_orchestrator_may_use_vertex_ai(byoc_plan):
    holders = {m["member"] for m in _members(byoc_plan, IAM_MEMBER) if m["role"].startswith("roles/aiplatform.")}
    assert holders == {"serviceAccount:pf-agent-orchestrator@acme-perfloop-prod.iam.gserviceaccount.com"}


def test_database_roles_are_scoped_to_the_instance(byoc_plan):
    for m in _members(byoc_plan, IAM_MEMBER):
        if m["role"].startswith("roles/cloudsql."):
            assert m["condition"]["expression"] == 'resource.name == "projects/acme-perfloop-prod/instances/perfloop"'


def test_no_project_level_secret_access(byoc_plan):
    assert not [m for m in _members(byoc_plan, IAM_MEMBER) if m["role"].startswith("roles/secretmanager.")]


def test_every_secret_has_exactly_one_accessor_which_is_its_declared_reader(byoc_plan):
    catalogue = load_catalogue()
    bindings = {b["secretId"]: b for b in _members(byoc_plan, "gcp:secretmanager/secretIamBinding:SecretIamBinding")}
    secrets = {r.inputs["secretId"] for r in byoc_plan.by_type("gcp:secretmanager/secret:Secret")}
    assert secrets == set(bindings) == {f"perfloop-{s}" for s in catalogue.secrets}
    for secret_id, binding in bindings.items():
        reader = catalogue.secret_reader(secret_id.removeprefix("perfloop-"))
        assert binding["role"] == "roles/secretmanager.secretAccessor"
        assert binding["members"] == [f"serviceAccount:{reader.service_account_id}@acme-perfloop-prod.iam.gserviceaccount.com"]


def test_code_host_key_is_readable_by_the_proxy_alone(byoc_plan):
    binding = next(b for b in _members(byoc_plan, "gcp:secretmanager/secretIamBinding:SecretIamBinding") if b["secretId"] == "perfloop-code-host-app-key")
    assert binding["members"] == ["serviceAccount:pf-egress-proxy@acme-perfloop-prod.iam.gserviceaccount.com"]


def test_secrets_are_containers_replicated_in_the_region_only(byoc_plan):
    assert not byoc_plan.by_type("gcp:secretmanager/secretVersion:SecretVersion")
    for secret in byoc_plan.by_type("gcp:secretmanager/secret:Secret"):
        replicas = lookup(secret.inputs, "replication.userManaged.replicas")
        assert [r["location"] for r in replicas] == ["europe-west4"]
        assert "auto" not in secret.inputs["replication"]


def test_workload_identity_binds_exactly_the_workloads_kubernetes_service_account(byoc_plan):
    bindings = {b.name: b.inputs for b in byoc_plan.by_type("gcp:serviceaccount/iAMBinding:IAMBinding")}
    assert bindings["pf-egress-proxy-workload-identity"]["members"] == [
        "serviceAccount:acme-perfloop-prod.svc.id.goog[perfloop-egress/egress-proxy]"
    ]
    assert all(b["role"] == "roles/iam.workloadIdentityUser" and len(b["members"]) == 1 for b in bindings.values())


def test_database_users_are_iam_service_accounts(byoc_plan):
    users = {u.inputs["name"]: u.inputs["type"] for u in byoc_plan.by_type("gcp:sql/user:User")}
    assert users["pf-audit-cleanup@acme-perfloop-prod.iam"] == "CLOUD_IAM_SERVICE_ACCOUNT"
    assert set(users.values()) == {"CLOUD_IAM_SERVICE_ACCOUNT"}
    assert not [u for u in byoc_plan.by_type("gcp:sql/user:User") if "password" in u.inputs]


@pytest.mark.parametrize("provider,secret", [("datadog", True), ("gcp", False)])
def test_a_telemetry_connection_gets_its_own_identity_and_secret(plan_variant, provider, secret):
    def connect(config):
        config["perfloop:workspace"]["telemetry"] = {"metrics": {"provider": provider, "host": "api.datadoghq.eu" if provider == "datadog" else None}}
        if provider == "gcp":
            del config["perfloop:workspace"]["telemetry"]["metrics"]["host"]

    plan = plan_variant(connect)
    accounts = {r.inputs["accountId"] for r in plan.by_type("gcp:serviceaccount/account:Account")}
    assert "pf-acme-metrics" in accounts
    bindings = {b.inputs["secretId"]: b.inputs["members"] for b in plan.by_type("gcp:secretmanager/secretIamBinding:SecretIamBinding")}
    if secret:
        assert bindings["perfloop-acme-metrics-credentials"] == ["serviceAccount:pf-acme-metrics@acme-perfloop-prod.iam.gserviceaccount.com"]
    else:
        assert "perfloop-acme-metrics-credentials" not in bindings


def test_nothing_is_connected_by_default(byoc_plan):
    accounts = {r.inputs["accountId"] for r in byoc_plan.by_type("gcp:serviceaccount/account:Account")}
    assert not [a for a in accounts if a.startswith("pf-acme-")]
