"""Optional cross-check against a second Rego engine.

regopy (rego-cpp) is the engine the policy is tested with. When the
`opa-eval` package (regorus, Microsoft's Rust Rego engine) is installed, every
table case and attack is also evaluated there and the decisions must agree,
which catches rego-cpp-specific behaviour the policy might depend on.
Skipped when opa_eval is not importable.
"""

from __future__ import annotations

import json
import re

import pytest

from conftest import POLICY_DIR, build_request, load_yaml

opa_eval = pytest.importorskip("opa_eval")


def _combined_module(tmp_path):
    # opa_eval loads one file: concatenate the modules under one package line.
    parts = []
    for i, path in enumerate(sorted(POLICY_DIR.glob("*.rego"))):
        src = path.read_text()
        if i:
            src = re.sub(r"^package perfloop\.egress\s*$", "", src, flags=re.M)
            src = re.sub(r"^import rego\.v1\s*$", "", src, flags=re.M)
        parts.append(src)
    target = tmp_path / "combined.rego"
    target.write_text("\n".join(parts))
    return target


def test_regorus_agrees_with_regopy(tmp_path, decide, policy_data):
    engine = opa_eval.OpaEval(
        str(_combined_module(tmp_path)),
        data_json=json.dumps({"perfloop": policy_data}),
        query="data.perfloop.egress.decision",
    )
    requests = [(c["id"], build_request(c)) for c in load_yaml("cases.yaml")["cases"]]
    requests += [(a["id"], build_request(a)) for a in load_yaml("attack_corpus.yaml")["attacks"]]
    differences = []
    for case_id, request in requests:
        if "\\u0000" in json.dumps(request):
            continue  # NUL is refused by evaluate() before any engine runs
        ours = decide(request)
        try:
            theirs = engine.evaluate_parsed(json.dumps(request))
        except RuntimeError as exc:
            theirs = {"error": str(exc)[:200]}
        if not isinstance(theirs, dict) or (theirs.get("allow"), theirs.get("rule")) != (ours["allow"], ours["rule"]):
            differences.append((case_id, ours, theirs))
    assert differences == []
