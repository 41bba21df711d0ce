"""The CrossGuard pack, driven through the real pulumi-policy API: its policies, given the
resources as the policy analyzer builds them (protobuf round trip, unknown-checking proxies),
reach the offline verdicts, and fail closed on a value unknown during preview."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from google.protobuf import json_format, struct_pb2
from pulumi_policy import (
    EnforcementLevel, PolicyCustomTimeouts, PolicyProviderResource, PolicyResource, PolicyResourceOptions,
    StackValidationArgs, StackValidationPolicy,
)
from pulumi_policy.deserialize import deserialize_properties
from pulumi_policy.policy import _NotApplicableError
from pulumi_policy.proxy import UNKNOWN_STRING_VALUE, UnknownValueError, unknown_checking_proxy

from infra.evidence.claims import CLAIM_NOT_APPLICABLE, HOLDS, VIOLATED, evaluate, load_claims
from infra.evidence.crossguard import policies
from infra.evidence.mutations import apply, load_mutations
from infra.evidence.view import STACK_TYPE, from_plan_json


def _props(values: dict[str, Any]):
    # As the analyzer receives them: a protobuf Struct (numbers become doubles), deserialised and
    # wrapped in pulumi-policy's unknown-checking proxy.
    message = json_format.ParseDict(values, struct_pb2.Struct())
    return unknown_checking_proxy(deserialize_properties(json_format.MessageToDict(message)))


def policy_resources(plan: dict[str, Any]) -> list[PolicyResource]:
    """The plan's resources as `AnalyzeStack` hands them to a StackValidationPolicy."""
    records = {r["urn"]: r for r in plan["resources"]}
    resources: dict[str, PolicyResource] = {}
    for r in plan["resources"]:
        values = plan["outputs"] if r["type"] == STACK_TYPE else r["inputs"]
        provider = None
        if r["provider"]:
            p = records[r["provider"]]
            provider = PolicyProviderResource(p["type"], _props(p["inputs"]), p["urn"], p["name"])
        opts = PolicyResourceOptions(r["protect"], [], None, [], PolicyCustomTimeouts(0, 0, 0), [], r["parent"] or None)
        resources[r["urn"]] = PolicyResource(r["type"], _props(values), r["urn"], r["name"], opts, provider, None, [], {})
    for r in plan["resources"]:
        resources[r["urn"]].parent = resources.get(r["parent"])
        resources[r["urn"]].dependencies = [resources[d] for d in r["dependencies"] if d in resources]
    return list(resources.values())


def verdict(policy: StackValidationPolicy, resources: list[PolicyResource]) -> tuple[str, list[tuple[str, str | None]]]:
    reported: list[tuple[str, str | None]] = []
    try:
        policy.validate(StackValidationArgs(resources), lambda message, urn=None: reported.append((message, urn)))
    except _NotApplicableError:
        return CLAIM_NOT_APPLICABLE, reported
    return (VIOLATED if reported else HOLDS), reported


@pytest.fixture(scope="module")
def pack():
    return {p.name: p for p in policies()}


def test_one_mandatory_stack_policy_per_implemented_claim(pack):
    implemented = [c.id for c in load_claims() if c.checks]
    assert sorted(pack) == sorted(implemented)
    assert all(isinstance(p, StackValidationPolicy) and p.enforcement_level == EnforcementLevel.MANDATORY for p in pack.values())


def test_same_verdicts_as_the_offline_check(pack, plan_doc, view):
    resources = policy_resources(plan_doc)
    offline = {r.claim.id: r.status for r in evaluate(view) if r.claim.checks}
    assert {name: verdict(policy, resources)[0] for name, policy in pack.items()} == offline


def test_same_verdicts_on_every_mutation(pack, plan_doc):
    claims = {c.id: c for c in load_claims()}
    for mutation in load_mutations():
        mutated = apply(plan_doc, mutation)
        offline = evaluate(from_plan_json(mutated), (claims[mutation.claim],))[0]
        status, reported = verdict(pack[mutation.claim], policy_resources(mutated))
        assert offline.status == VIOLATED and status == VIOLATED, mutation.id
        failing = {(f.urn or None) for c in offline.checks for f in c.findings if not f.ok}
        assert {urn for _, urn in reported} == failing, mutation.id


def test_unknown_value_during_preview_is_a_violation(pack, plan_doc):
    preview = copy.deepcopy(plan_doc)
    instance = next(r for r in preview["resources"] if r["type"] == "gcp:sql/databaseInstance:DatabaseInstance")
    instance["inputs"]["settings"]["ipConfiguration"]["sslMode"] = UNKNOWN_STRING_VALUE
    resources = policy_resources(preview)
    proxied = next(r for r in resources if r.urn == instance["urn"])
    # pulumi-policy's own way of reading it raises, which the analyzer turns into an advisory.
    with pytest.raises(UnknownValueError):
        proxied.props["settings"]["ipConfiguration"]["sslMode"]
    status, reported = verdict(pack["PF-DB-01"], resources)
    assert status == VIOLATED
    assert any(urn == instance["urn"] and "/settings/ipConfiguration/sslMode = \"(known after apply)\"" in message for message, urn in reported)
