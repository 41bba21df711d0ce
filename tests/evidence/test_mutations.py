"""Every single-setting mutation of byoc-example is caught by the claim it names, and shows as
violated in that claim's evidence; the unmutated plan holds every implemented claim."""

from __future__ import annotations

import pytest

from infra.errors import ConfigError
from infra.evidence.claims import HOLDS, VIOLATED, evaluate, load_claims
from infra.evidence.mutations import Mutation, apply, load_mutations, run_suite, score
from infra.evidence.view import from_plan_json

from tests.evidence.conftest import run_cli


def test_suite_is_well_formed():
    mutations = load_mutations()
    assert len(mutations) >= 30
    claims = {c.id: c for c in load_claims()}
    # Mutations aim at claims that have checks, and every implemented claim is aimed at.
    assert all(claims[m.claim].checks for m in mutations)
    assert {c.id for c in claims.values() if c.checks} <= {m.claim for m in mutations}


def test_mutation_score_is_100_percent(plan_doc):
    results = run_suite(plan_doc)
    missed = [r.mutation.id for r in results if not r.caught]
    assert not missed, f"mutations not caught by their claim: {missed}"
    assert score(results) == 1.0
    for r in results:
        # The evidence names what broke: a failing finding with a URN and the value found.
        failing = [f for c in r.result.checks for f in c.findings if not f.ok]
        assert r.result.status == VIOLATED and failing and all(f.urn for f in failing)


def test_unmutated_plan_holds_every_implemented_claim(view):
    assert all(r.status == HOLDS for r in evaluate(view) if r.claim.checks)


def test_a_mutation_that_does_not_fit_the_plan_is_an_error(plan_doc):
    bad = Mutation(id="nowhere", claim="PF-DB-01", description="x", resource={"type": "gcp:sql/databaseInstance:DatabaseInstance", "name": "instance"}, op="set", path="/no/such/parent", value=1)
    with pytest.raises(ConfigError, match="does not fit"):
        apply(plan_doc, bad)


def test_an_added_resource_goes_through_the_stack_provider(plan_doc):
    mutation = next(m for m in load_mutations() if m.id == "service-account-key")
    added = from_plan_json(apply(plan_doc, mutation)).of_type("gcp:serviceaccount/key:Key")[0]
    assert added.provider.endswith("pulumi:providers:gcp::gcp")
    assert added.inputs["serviceAccountId"].startswith("projects/acme-perfloop-prod/")


def test_check_mutations_command(cli_plan, capsys):
    assert run_cli("check", "--stack", "byoc-example", "--mutations") == 0
    out = capsys.readouterr().out
    assert "MISSED" not in out and f"mutation score: {len(load_mutations())}/{len(load_mutations())} (100%)" in out
