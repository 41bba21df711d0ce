"""Tenants on a shared cell: small, fast, isolated from each other, unable to touch the cell."""

from __future__ import annotations

import copy
import dataclasses
import json

import pytest

from infra.config import parse_stack_config
from infra.engine import plan_stack
from infra.errors import ConfigError
from infra.evidence.ledger import build_ledger
from infra.evidence.view import from_plan_json
from infra.k8s.analysis import reachability
from infra.k8s.guarantees import GUARANTEES

SLOW_TYPES = ("gcp:sql/databaseInstance:", "gcp:container/cluster:", "gcp:container/nodePool:", "gcp:compute/")


@pytest.fixture(scope="module")
def cell(layout):
    return plan_stack("cell-example", layout)


@pytest.fixture(scope="module")
def tenants(layout, cell):
    return {name: plan_stack(name, layout, cell_outputs=cell.outputs) for name in ("tenant-acme", "tenant-globex")}


@pytest.fixture(scope="module")
def cluster(cell, tenants):
    """Everything the cell and both tenants put into one project and cluster."""
    return [*cell.resources, *tenants["tenant-acme"].resources, *tenants["tenant-globex"].resources]


def test_tenant_stacks_are_small_and_create_no_slow_resource(tenants):
    for plan in tenants.values():
        custom = [r for r in plan.resources if r.custom]
        assert len(plan.resources) <= 40
        assert not [r.type for r in custom if r.type.startswith(SLOW_TYPES)]


def test_tenant_creates_only_workspace_scoped_objects(tenants):
    for name, plan in tenants.items():
        ws = plan.outputs["workspace"]
        for r in plan.resources:
            if r.type.startswith("kubernetes:") and r.custom:
                meta = r.inputs["metadata"]
                namespace = meta.get("namespace") or meta["name"]
                own_namespace = namespace.endswith(f"-{ws}")
                # Into the cell's namespaces, a tenant adds only its own entries, named for it.
                assert own_namespace or meta["name"].endswith(f"-{ws}") or meta["name"] == f"workspace-{ws}", (name, r.urn)
            if r.type.startswith("gcp:") and "project" in r.inputs:
                assert r.inputs["project"] == "perfloop-cell-eu1"


def test_no_tenant_grant_on_a_cell_wide_resource(tenants):
    for plan in tenants.values():
        roles = [r for r in plan.resources if r.type in ("gcp:projects/iAMMember:IAMMember", "gcp:projects/iAMBinding:IAMBinding", "gcp:sql/user:User")]
        assert roles == []


def test_every_guarantee_holds_on_the_cell_with_its_tenants(cluster):
    for name, check in GUARANTEES.items():
        assert check(cluster) == [], name


def test_sandboxes_of_one_workspace_reach_nothing_of_another(cluster):
    edges = reachability(cluster)
    for ws, other in (("acme", "globex"), ("globex", "acme")):
        out = {(e.destination, e.destination_namespace, e.port) for e in edges if e.source_namespace == f"perfloop-sandbox-{ws}"}
        assert out == {("egress-proxy", "perfloop-egress", 3128)}
        assert not [e for e in edges if e.source_namespace.endswith(f"-{ws}") and (e.destination_namespace or "").endswith(f"-{other}")]


def test_isolation_check_fails_when_isolation_is_removed(cluster):
    """Open globex's sandbox egress to every pod and drop acme's default-deny: globex's sandbox
    now reaches acme's connector, and the check says so."""
    resources = copy.deepcopy(cluster)
    for r in resources:
        meta = r.inputs.get("metadata", {})
        if meta.get("name") == "sandbox-egress" and meta.get("namespace") == "perfloop-sandbox-globex":
            r.inputs["spec"]["egress"].append({"to": [{"namespaceSelector": {}}]})
    resources = [r for r in resources if not (r.inputs.get("metadata", {}).get("name") == "default-deny" and r.inputs["metadata"].get("namespace", "").endswith("-acme"))]
    assert GUARANTEES["sandbox_one_path_out"](resources)
    edges = reachability(resources)
    assert [e for e in edges if e.source_namespace == "perfloop-sandbox-globex" and (e.destination_namespace or "").endswith("-acme")]


def test_identities_of_one_workspace_cannot_read_anothers_secrets_or_data(cluster):
    document = {"outputs": {}, "resources": [{"urn": r.urn, "type": r.type, "inputs": r.inputs} for r in cluster if r.type != "pulumi:pulumi:Stack"]}
    principals = build_ledger(from_plan_json(document))
    acme = {s["secret"] for key, e in principals.items() if "acme" in key for s in e["secrets"]}
    assert acme == {"perfloop-acme-metrics-credentials"}
    assert not [s for key, e in principals.items() if "acme" not in key for s in e["secrets"] if "acme" in s["secret"]]
    # The connector's identities hold no role and no database login: no way to anyone's data.
    for key, e in principals.items():
        if "acme-metrics" in key or key.endswith("-acme:connector-metrics"):
            assert e["iam_roles"] == [] and e["database"] == [] and e["rbac"] == []


def test_a_tenant_config_cannot_name_cell_resources():
    base = {"shape": "tenant", "cell": "cell-example", "workspace": {"id": "acme"}}
    for key, value in (("project", "perfloop-cell-eu1"), ("network", {}), ("database", {}), ("loosen", ["binary-authorization-disabled"]), ("images", {})):
        with pytest.raises(ConfigError, match=f"perfloop:{key}: not allowed for shape 'tenant'; the cell owns it"):
            parse_stack_config({**base, key: value})


def test_offboarding_removes_only_the_workspace(cell, tenants):
    """`pulumi destroy` of a tenant deletes exactly its resources: none is protected (nothing
    blocks the teardown) and none belongs to the cell (nothing of the cell goes with it). Its
    registration ConfigMap goes too, which is what makes the reconciler drop its derived data
    (proven on PostgreSQL in tests/db) while audit rows stay."""
    cell_urns = {r.urn for r in cell.resources}
    for plan in tenants.values():
        assert not [r.urn for r in plan.resources if r.protect]
        assert not {r.urn for r in plan.resources if r.custom and not r.type.startswith("pulumi:")} & cell_urns
        ws = plan.outputs["workspace"]
        registration = next(r for r in plan.resources if r.type == "kubernetes:core/v1:ConfigMap" and r.inputs["metadata"]["name"] == f"workspace-{ws}")
        assert registration.inputs["metadata"]["labels"]["perfloop.ai/workspace-registration"] == "true"
        assert json.loads(registration.inputs["data"]["workspace.json"])["workspace"] == ws


def test_config_change_touches_only_the_tenant(layout, cell, tenants):
    from infra.engine import read_stack_file, run_program
    from infra.program import main

    config = read_stack_file(layout, "tenant-globex")
    workspace = json.loads(config["perfloop:workspace"])
    workspace["telemetry"] = {"traces": {"provider": "gcp"}}
    config["perfloop:workspace"] = json.dumps(workspace)
    changed = run_program(main, project=layout.name, stack="tenant-globex", config=config, stack_references={"cell-example": cell.outputs})
    before = {r.urn for r in tenants["tenant-globex"].resources}
    added = {r.urn for r in changed.resources} - before
    assert added and all("globex" in urn or "connectors" in urn for urn in added)
    assert not {r.urn for r in changed.resources} & {r.urn for r in cell.resources if r.custom and not r.type.startswith("pulumi:")}


def test_cell_exports_the_tenant_contract(cell):
    contract = cell.outputs["tenant_contract"]
    assert contract["project"] == "perfloop-cell-eu1" and contract["database_instance"] == "perfloop"
    assert set(contract["network"]) >= {"services_cidr", "private_services_cidr"}


def test_missing_contract_is_a_clear_error(layout):
    with pytest.raises(ConfigError, match="tenant_contract is missing or malformed"):
        plan_stack("tenant-globex", layout, cell_outputs={"shape": "cell"})
