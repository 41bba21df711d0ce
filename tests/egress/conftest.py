"""Shared fixtures for the egress policy tests.

The policy is compiled once per data document (infra.egress_policy caches the
regopy bundle), so the whole suite pays the compile cost once.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import os
import sys
from pathlib import Path

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
POLICY_DIR = REPO_ROOT / "policies" / "egress"


def _load_egress_policy():
    # Loaded from its file so this suite does not depend on (or import) an
    # infra/__init__.py that other parts of the project may add.
    name = "perfloop_infra_egress_policy"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, REPO_ROOT / "infra" / "egress_policy.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


egress_policy = _load_egress_policy()


def load_yaml(name: str):
    return yaml.safe_load((HERE / name).read_text(encoding="utf-8"))


SESSIONS = load_yaml("sessions.yaml")


def build_request(case: dict) -> dict:
    """Expand a table case into a full policy input."""
    req = copy.deepcopy(case["request"])
    req.setdefault("scheme", "https")
    req.setdefault("headers", {})
    req.setdefault("query", "")
    req.setdefault("body", None)
    if "session" in case:
        session = case["session"]
        req["session"] = copy.deepcopy(SESSIONS[session]) if isinstance(session, str) else session
    elif req.get("source") == "sandbox" or str(req.get("source", "")).startswith("connector-"):
        req["session"] = copy.deepcopy(SESSIONS["acme"])
    for key in case.get("drop", []):  # fields the case wants absent, not defaulted
        req.pop(key, None)
    return req


@pytest.fixture(scope="session")
def policy():
    return egress_policy


@pytest.fixture(scope="session")
def stack_example():
    return json.loads((POLICY_DIR / "stack.example.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="session")
def policy_data():
    return json.loads((POLICY_DIR / "data.example.json").read_text(encoding="utf-8"))


# mutation_check.py points this at a mutated copy of the policy.
POLICY_DIR_OVERRIDE = os.environ.get("PERFLOOP_EGRESS_POLICY_DIR")


@pytest.fixture(scope="session")
def decide(policy, policy_data):
    policy_dir = Path(POLICY_DIR_OVERRIDE) if POLICY_DIR_OVERRIDE else None

    def _decide(request: dict) -> dict:
        return policy.evaluate(policy_data, request, policy_dir=policy_dir)

    return _decide
