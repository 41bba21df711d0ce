"""Table-driven tests: tests/egress/cases.yaml evaluated with regopy."""

from __future__ import annotations

import pytest

from conftest import build_request, load_yaml

CASES = load_yaml("cases.yaml")["cases"]


def test_table_is_large_and_ids_unique():
    ids = [c["id"] for c in CASES]
    assert len(ids) >= 100
    assert len(ids) == len(set(ids)), "duplicate case ids"
    assert sum(1 for c in CASES if c["allow"]) >= 30
    assert sum(1 for c in CASES if not c["allow"]) >= 60


@pytest.mark.parametrize("case", CASES, ids=[c["id"] for c in CASES])
def test_case(case, decide):
    decision = decide(build_request(case))
    assert set(decision) == {"allow", "reason", "rule"}
    assert decision["allow"] is case["allow"], decision
    assert isinstance(decision["reason"], str) and decision["reason"].strip(), decision
    if "rule" in case:
        assert decision["rule"] == case["rule"], decision
    if "reason" in case:
        assert case["reason"] in decision["reason"], decision
