"""The claims catalogue is well-formed, and every implemented claim holds on byoc-example,
fails closed on what it cannot know, and records the loosenings that weaken it."""

from __future__ import annotations

import copy
import re
from pathlib import Path

import pytest
import yaml

from infra.config import Loosening
from infra.engine import COMPUTED
from infra.evidence.claims import CLAIMS_PATH, HOLDS, NOT_ASSESSED, VIOLATED, evaluate, load_claims
from infra.evidence.mutations import _edit
from infra.evidence.policies import CHECKS, NOT_APPLICABLE, run_check
from infra.evidence.view import from_plan_json, resolve

SEED = Path(__file__).resolve().parents[3] / "shared" / "seed"

# Claim IDs are cited by auditors and reports: they may be added, never renamed or reused.
PUBLISHED_IDS = {
    "PF-TEL-01", "PF-TEL-02", "PF-TEL-03", "PF-TEL-04", "PF-CODE-01", "PF-CODE-02", "PF-CONN-01",
    "PF-RES-01", "PF-RES-02", "PF-SBX-01", "PF-SBX-02", "PF-SBX-03", "PF-SBX-04", "PF-SBX-05",
    "PF-SBX-06", "PF-SBX-07", "PF-SBX-08", "PF-PRX-01", "PF-PRX-02", "PF-PRX-03", "PF-EGR-01",
    "PF-AI-01", "PF-AI-02", "PF-DB-01", "PF-ENC-01", "PF-SEC-01", "PF-SEC-02", "PF-SEC-03",
    "PF-SEC-04", "PF-SEC-05", "PF-IAM-01", "PF-IAM-02", "PF-CTL-01", "PF-CTL-02", "PF-CTL-03",
    "PF-AUD-01", "PF-AUD-02", "PF-AUD-03", "PF-AUD-04", "PF-AUD-05",
}


def test_catalogue_is_well_formed():
    claims = load_claims()
    ids = [c.id for c in claims]
    assert len(ids) == len(set(ids))
    assert PUBLISHED_IDS <= set(ids), f"claim IDs removed or renamed: {sorted(PUBLISHED_IDS - set(ids))}"
    for c in claims:
        assert all(name in CHECKS for name in c.checks), c.id
        assert bool(c.checks) != bool(c.awaiting), c.id
    # Every check is used by a claim, and every loosening weakens a claim that records it.
    assert set(CHECKS) == {name for c in claims for name in c.checks}
    assert {l.value for l in Loosening} <= {l.value for c in claims for l in c.weakened_by}


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda claims: claims[7].update(checks=["no_such_check"]), "checks ['no_such_check'] do not exist"),
        (lambda claims: claims.append(copy.deepcopy(claims[0])), "duplicate claim IDs ['PF-TEL-01']"),
        (lambda claims: claims[7].update(tsc=["CC99"]), "not SOC 2 Trust Services Criteria"),
        (lambda claims: claims[0].pop("checks"), "exactly one"),
    ],
)
def test_catalogue_rejects_malformed_claims(tmp_path, edit, message):
    from infra.errors import ConfigError

    raw = yaml.safe_load(CLAIMS_PATH.read_text())
    edit(raw["claims"])
    path = tmp_path / "claims.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_claims(path)


def test_quotes_are_verbatim_from_the_security_page():
    pages = sorted(SEED.glob("*.txt")) if SEED.is_dir() else []
    if not pages:
        pytest.skip(f"security page not found under {SEED}")
    page = "\n".join(p.read_text() for p in pages)
    missing = [c.id for c in load_claims() if c.quote not in page]
    assert not missing, f"quotes not found verbatim on the security page: {missing}"


def test_every_implemented_claim_holds_on_byoc_example(view):
    results = evaluate(view)
    implemented = [r for r in results if r.claim.checks]
    assert len(implemented) >= 20
    assert {r.claim.id: r.status for r in implemented if r.status != HOLDS} == {}
    for r in implemented:
        assert r.checks and all(f.ok for c in r.checks for f in c.findings)
    waiting = [r for r in results if r.claim.awaiting]
    assert all(r.status == NOT_ASSESSED and r.reason.startswith("awaiting the ") for r in waiting)


def test_findings_point_at_real_paths(plan_doc, view):
    """Every finding's pointer resolves in the resource it names (or records the value absent)."""
    inputs = {r["urn"]: r["inputs"] for r in plan_doc["resources"]}
    stack = next(r["urn"] for r in plan_doc["resources"] if r["type"] == "pulumi:pulumi:Stack")
    inputs[stack] = plan_doc["outputs"]
    for result in evaluate(view):
        for check in result.checks:
            for f in check.findings:
                document = inputs[f.urn]
                found = resolve(document, f.path)
                if f.path and f.to_json().get("present") is not False:
                    assert found == f.to_json()["actual"], (check.check, f.urn, f.path)


def _edited(plan_doc, name, path, value):
    doc = copy.deepcopy(plan_doc)
    _edit(next(r for r in doc["resources"] if r["name"] == name)["inputs"], "set", path, value)
    return from_plan_json(doc)


@pytest.mark.parametrize(
    "name, path, claim",
    [
        ("instance", "/settings/ipConfiguration/sslMode", "PF-DB-01"),
        ("perfloop-code-host-app-key-accessor", "/members/0", "PF-PRX-01"),
        ("sandbox", "/nodeConfig/workloadMetadataConfig/mode", "PF-SBX-03"),
        ("perfloop-app-master-key", "/replication/userManaged/replicas/0/location", "PF-RES-01"),
    ],
)
def test_unknown_values_are_violations_at_their_path(plan_doc, name, path, claim):
    result = evaluate(_edited(plan_doc, name, path, COMPUTED), tuple(c for c in load_claims() if c.id == claim))[0]
    assert result.status == VIOLATED
    failing = [(f.urn.rsplit("::", 1)[-1], f.path) for c in result.checks for f in c.findings if not f.ok]
    assert (name, path) in failing


def test_a_missing_resource_is_a_violation_not_a_pass(plan_doc):
    doc = copy.deepcopy(plan_doc)
    doc["resources"] = [r for r in doc["resources"] if r["type"] != "gcp:sql/databaseInstance:DatabaseInstance"]
    result = run_check("database_private_tls_only", from_plan_json(doc))
    assert result.status == "fail" and any(f.required == "a Cloud SQL instance" for f in result.findings)


def test_not_applicable_checks_are_reported_with_their_reason(plan_doc):
    doc = copy.deepcopy(plan_doc)
    doc["resources"] = [r for r in doc["resources"] if r["type"] != "gcp:compute/routerNat:RouterNat"]
    view = from_plan_json(doc)
    check = run_check("nat_translates_egress_pods_only", view)
    assert check.status == NOT_APPLICABLE and "no Cloud NAT" in check.reason
    claim = evaluate(view, tuple(c for c in load_claims() if c.id == "PF-SBX-05"))[0]
    assert claim.status == HOLDS and "nat_translates_egress_pods_only not applicable: no Cloud NAT" in claim.reason


def test_loosenings_hold_their_claims_and_are_recorded(plan_variant):
    plan = plan_variant(lambda cfg: cfg.update({"perfloop:loosen": [l.value for l in Loosening]}))
    results = {r.claim.id: r for r in evaluate(from_plan_json(plan.to_json()))}
    database, sandbox = results["PF-DB-01"], results["PF-SBX-01"]
    # ENCRYPTED_ONLY is still TLS-only: the claim holds, and says what was loosened.
    assert database.status == HOLDS and database.loosenings == ("database-tls-without-client-certificates",)
    accepted = [f for c in database.checks for f in c.findings if f.path in ("/settings/ipConfiguration/sslMode", "/settings/connectorEnforcement")]
    assert {f.actual for f in accepted} == {"ENCRYPTED_ONLY", "NOT_REQUIRED"} and all(f.ok for f in accepted)
    assert sandbox.status == HOLDS and sandbox.loosenings == ("binary-authorization-disabled",)
    assert not [r.claim.id for r in results.values() if r.claim.checks and r.status != HOLDS]


def test_cell_claims_are_not_applicable_on_a_tenant_stack(layout):
    from infra.engine import plan_stack

    results = {r.claim.id: r for r in evaluate(from_plan_json(plan_stack("tenant-acme", layout).to_json()))}
    for claim in ("PF-DB-01", "PF-SBX-07", "PF-AUD-01", "PF-AUD-05"):
        assert results[claim].status == "not-applicable" and "the cell creates" in results[claim].reason
    # What a tenant does create is judged as in any stack.
    for claim in ("PF-RES-01", "PF-RES-02", "PF-SEC-01", "PF-IAM-01", "PF-IAM-02", "PF-SBX-03"):
        assert results[claim].status == HOLDS
