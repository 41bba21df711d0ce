"""Fixtures for the evidence tests: the byoc-example plan as a document and a view, a synthesised
`pulumi stack export` of it, and the commands run as `perfloop-platform` runs them."""

from __future__ import annotations

import argparse
import copy
import sys
from typing import Any

import pytest

from infra.errors import ConfigError
from infra.evidence.cli import register
from infra.evidence.view import SECRET_SIG, SIG_KEY, STACK_TYPE, from_plan_json

PLAINTEXT_MARKER = "PLAINTEXT-do-not-leak-8f2c"
CIPHERTEXT_MARKER = "v1:CIPHERTEXT-do-not-leak-41ab"
SALT_MARKER = "v1:SALT-do-not-leak-77e0"


@pytest.fixture(scope="session")
def plan_doc(byoc_plan) -> dict[str, Any]:
    return byoc_plan.to_json()


@pytest.fixture(scope="session")
def view(plan_doc):
    return from_plan_json(plan_doc)


def _secret(plaintext: str | None = None) -> dict[str, Any]:
    if plaintext is not None:
        return {SIG_KEY: SECRET_SIG, "plaintext": f'"{plaintext}"'}
    return {SIG_KEY: SECRET_SIG, "ciphertext": CIPHERTEXT_MARKER}


def state_export(plan: dict[str, Any]) -> dict[str, Any]:
    """The plan as Pulumi's version-3 deployment, with secret envelopes (ciphertext and
    plaintext) in inputs and outputs, the way `pulumi stack export` writes them."""
    resources = []
    for r in plan["resources"]:
        inputs = copy.deepcopy(r["inputs"])
        outputs = copy.deepcopy(plan["outputs"]) if r["type"] == STACK_TYPE else copy.deepcopy(inputs)
        record = {
            "urn": r["urn"],
            "custom": r["custom"],
            "id": f"{r['name']}-id" if r["custom"] else "",
            "type": r["type"],
            "inputs": {} if r["type"] == STACK_TYPE else inputs,
            "outputs": outputs,
            "parent": r["parent"],
            "protect": r["protect"],
            "dependencies": r["dependencies"],
            "created": "2025-01-02T03:04:05.123456789Z",
        }
        if r["provider"]:
            record["provider"] = f"{r['provider']}::0f4e2f5c-provider-id"
        resources.append(record)
    by_name = {r["urn"].rsplit("::", 1)[-1]: r for r in resources}
    # A secret annotation (ciphertext) in inputs and outputs, a provider credential (plaintext)
    # and a secret stack output: all must disappear before anything is written.
    secret = by_name["perfloop-code-host-app-key"]
    secret["inputs"]["annotations"]["perfloop-description"] = _secret()
    secret["outputs"]["annotations"]["perfloop-description"] = _secret()
    provider = next(r for r in resources if r["type"] == "pulumi:providers:gcp")
    provider["inputs"]["credentials"] = _secret(PLAINTEXT_MARKER)
    provider["outputs"]["credentials"] = _secret(PLAINTEXT_MARKER)
    stack = next(r for r in resources if r["type"] == STACK_TYPE)
    stack["outputs"]["database_connection_name"] = _secret(PLAINTEXT_MARKER)
    return {
        "version": 3,
        "deployment": {
            "manifest": {"time": "2025-01-02T03:04:05.123456789+01:00", "magic": "0123abcd", "version": "v3.272.0"},
            "secrets_providers": {"type": "passphrase", "state": {"salt": SALT_MARKER}},
            "resources": resources,
        },
    }


def run_cli(*argv: str) -> int:
    """`perfloop-platform` with the evidence subcommands, handling errors as its main() does."""
    parser = argparse.ArgumentParser(prog="perfloop-platform")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(list(argv))
    try:
        return args.handler(args)
    except ConfigError as exc:
        sys.stderr.write(f"perfloop-platform: {exc}\n")
        return 2


@pytest.fixture
def cli_plan(monkeypatch, byoc_plan):
    """Commands that plan a stack get the session's byoc-example plan (planning takes seconds)."""
    import infra.engine

    monkeypatch.setattr(infra.engine, "plan_stack", lambda stack, layout=None: byoc_plan)
