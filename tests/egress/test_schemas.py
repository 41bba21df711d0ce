"""The JSON Schemas document the contract the policy is tested against."""

from __future__ import annotations

import json

import jsonschema

from conftest import POLICY_DIR, build_request, load_yaml

INPUT_SCHEMA = json.loads((POLICY_DIR / "input.schema.json").read_text())
DATA_SCHEMA = json.loads((POLICY_DIR / "data.schema.json").read_text())
CASES = load_yaml("cases.yaml")["cases"]


def test_schemas_are_valid():
    jsonschema.Draft202012Validator.check_schema(INPUT_SCHEMA)
    jsonschema.Draft202012Validator.check_schema(DATA_SCHEMA)


def test_example_data_matches_schema(policy_data):
    jsonschema.Draft202012Validator(DATA_SCHEMA).validate(policy_data)


def test_table_requests_match_input_schema():
    validator = jsonschema.Draft202012Validator(INPUT_SCHEMA)
    problems = {
        case["id"]: [e.message for e in validator.iter_errors(build_request(case))]
        for case in CASES
        if case.get("schema_valid", True) and not case.get("drop") and "method" in case["request"] and "path" in case["request"]
    }
    assert {k: v for k, v in problems.items() if v} == {}


def test_schema_rejects_off_contract_request():
    validator = jsonschema.Draft202012Validator(INPUT_SCHEMA)
    assert not validator.is_valid({"source": "attacker", "scheme": "https", "host": "x", "method": "GET", "path": "/"})
    assert not validator.is_valid({"source": "sandbox", "scheme": "https", "host": "x", "method": "GET", "path": "/", "extra": 1})
