"""Attacker corpus (tests/egress/attack_corpus.yaml): every request denied."""

from __future__ import annotations

import pytest

from conftest import build_request, load_yaml

ATTACKS = load_yaml("attack_corpus.yaml")["attacks"]


def test_corpus_size_and_ids():
    ids = [a["id"] for a in ATTACKS]
    assert len(ids) == len(set(ids))
    assert len(ids) >= 80


@pytest.mark.parametrize("attack", ATTACKS, ids=[a["id"] for a in ATTACKS])
def test_attack_denied(attack, decide):
    decision = decide(build_request(attack))
    assert decision["allow"] is False, decision
    assert decision["reason"].strip(), decision
    # A deny caused by a crash would hide a gap: the policy must deny on its
    # own terms.
    assert decision["rule"] not in {"engine.error", "engine.inconsistent"}, decision
