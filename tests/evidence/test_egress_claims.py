"""The egress policy layer's claims, proven from what is deployed: the Rego modules, data and
proxy settings read back from the egress-policy and registration ConfigMaps, evaluated on the real
engine. Each claim holds on the example stacks, each egress mutation is caught, a policy that
denies everything fails the positive controls, and what does not apply says why."""

from __future__ import annotations

import copy
import json
from functools import lru_cache

import pytest

from infra.egress_policy import POLICY_DIR
from infra.engine import COMPUTED, find_project, plan_stack
from infra.evidence import egress_checks
from infra.evidence.claims import CLAIM_NOT_APPLICABLE, HOLDS, VIOLATED, evaluate, load_claims
from infra.evidence.mutations import load_mutations, run_suite
from infra.evidence.policies import run_check
from infra.evidence.view import from_plan_json

EGRESS_CLAIMS = ("PF-TEL-01", "PF-TEL-02", "PF-TEL-03", "PF-TEL-04", "PF-CODE-01", "PF-CODE-02", "PF-PRX-02", "PF-PRX-03", "PF-EGR-01", "PF-AI-02")
ENGINE_CLAIMS = tuple(c for c in EGRESS_CLAIMS if c != "PF-PRX-03")
STACKS = ("byoc-example", "cell-example", "tenant-acme", "tenant-globex")
POLICY_MAP = "configmap-perfloop-egress-egress-policy"
REGISTRATION = "configmap-perfloop-egress-workspace-acme"


# --- generated module mutations (policies/mutations.yaml embeds their output) ---------------------

def without_rules(source: str, *starts: str, replacement: str = "") -> str:
    """A Rego module with the rules whose first line starts with one of `starts` (each up to its
    closing "}" line and the blank line after it) removed, or replaced by `replacement`."""
    lines, out, i, found = source.split("\n"), [], 0, 0
    while i < len(lines):
        if not lines[i].startswith(starts):
            out.append(lines[i])
            i += 1
            continue
        found += 1
        while lines[i] != "}":
            i += 1
        i += 2 if i + 1 < len(lines) and lines[i + 1] == "" else 1
        if replacement:
            out += [replacement, ""]
    assert found, f"no rule starts with {starts}"
    return "\n".join(out)


def github_without_merge_deny(source: str) -> str:
    """github.rego without its REST merge denies."""
    return without_rules(source, 'deny contains ["40", "github.merge"')


def telemetry_strict_as_aggregate(source: str) -> str:
    """telemetry.rego reading a strict logs connection as an aggregate one: the strict deny gone,
    the strict guard never true, strict connections counted as aggregate."""
    text = without_rules(source, 'deny contains ["40", "telemetry.logs_strict"')
    text = without_rules(text, "logs_strict if {", replacement="logs_strict := false")
    old = 'has_tele(provider) if {\n\tsome e in telemetry_entries\n\te.provider == provider\n\te.mode == "aggregate"\n}'
    assert old in text
    return text.replace(old, old.replace('e.mode == "aggregate"', 'e.mode in {"aggregate", "strict"}'))


GENERATED = {
    "egress-policy-without-merge-deny": ("github.rego", github_without_merge_deny),
    "egress-policy-strict-logs-as-aggregate": ("telemetry.rego", telemetry_strict_as_aggregate),
}


def test_module_mutations_are_the_real_modules_mutated():
    """The module texts in policies/mutations.yaml are the current policy files with exactly the
    generated change; regenerate them (below) whenever a module changes."""
    mutations = {m.id: m for m in load_mutations()}
    for mid, (name, transform) in GENERATED.items():
        expected = transform((POLICY_DIR / name).read_text())
        assert mutations[mid].path == f"/data/{name}"
        assert mutations[mid].value == expected, f"{mid} is stale: regenerate with `python -m tests.evidence.test_egress_claims`"


# --- views ----------------------------------------------------------------------------------------

@lru_cache(maxsize=None)
def _plan(stack: str):
    layout = find_project()
    if stack.startswith("tenant-"):
        return plan_stack(stack, layout, cell_outputs=_plan("cell-example").outputs)
    return plan_stack(stack, layout)


def _view(stack: str):
    """As infra.evidence.view.plan_view builds it (a tenant with its cell), sharing the cell's plan."""
    document = _plan(stack).to_json()
    if stack.startswith("tenant-"):
        own = {r["urn"] for r in document["resources"]}
        document["resources"] += [r for r in _plan("cell-example").to_json()["resources"] if r["type"] != "pulumi:pulumi:Stack" and r["urn"] not in own]
    return from_plan_json(document)


def _claims(*ids: str):
    return tuple(c for c in load_claims() if c.id in ids)


def _edited(plan_doc, name: str, key: str, value):
    doc = copy.deepcopy(plan_doc)
    resource = next(r for r in doc["resources"] if r["name"] == name)
    if value is None:
        del resource["inputs"]["data"][key]
    else:
        resource["inputs"]["data"][key] = value
    return from_plan_json(doc)


@pytest.mark.parametrize("stack", STACKS)
def test_every_egress_claim_holds_on_the_examples(stack, byoc_plan):
    view = from_plan_json(byoc_plan.to_json()) if stack == "byoc-example" else _view(stack)
    results = {r.claim.id: r for r in evaluate(view, _claims(*EGRESS_CLAIMS))}
    assert {cid: r.status for cid, r in results.items() if r.status != HOLDS} == {}
    for r in results.values():
        assert all(f.ok for c in r.checks for f in c.findings)
        assert sum(len(c.findings) for c in r.checks) > 0
    # Positive controls were evaluated, and allowed, wherever the engine was asked.
    for cid in ENGINE_CLAIMS:
        findings = [f for c in results[cid].checks for f in c.findings]
        assert any("positive control" in f.required for f in findings), cid
    # No traces connection anywhere: the data check says so, the policy check still proves the rule.
    assert "trace_attribute_allowlist_approved_only not applicable" in results["PF-TEL-02"].reason


def test_probes_are_generated_from_the_deployed_workspace(view):
    result = run_check("code_writes_case_branches_only", view)
    probes = [f.actual for f in result.findings if isinstance(f.actual, dict) and "probe" in f.actual]
    deployed = [p for p in probes if p["data"] == "deployed data.perfloop"]
    assert deployed and all(p["request"]["session"]["workspace"] == "acme" for p in deployed)
    assert {p["request"]["session"]["repositories"][0] for p in deployed} == {"acme/checkout-service"}
    anchored = {f.urn.rsplit("::", 1)[-1] for f in result.findings if isinstance(f.actual, dict) and f.actual.get("data") == "deployed data.perfloop"}
    assert anchored == {REGISTRATION}


def test_a_tenant_view_without_its_cell_is_not_applicable_naming_the_cell():
    view = from_plan_json(_plan("tenant-acme").to_json())  # the tenant's own resources, as CrossGuard sees them
    results = {r.claim.id: r for r in evaluate(view, _claims(*EGRESS_CLAIMS))}
    assert {cid: r.status for cid, r in results.items()} == {cid: CLAIM_NOT_APPLICABLE for cid in EGRESS_CLAIMS}
    assert all("cell-example" in results[cid].reason for cid in EGRESS_CLAIMS if cid != "PF-TEL-02")
    assert "no traces connection" in results["PF-TEL-02"].reason


# --- mutations ------------------------------------------------------------------------------------

EGRESS_MUTATIONS = [m for m in load_mutations() if m.id.startswith("egress-")]


def test_there_are_egress_mutations_for_every_egress_claim():
    assert len(EGRESS_MUTATIONS) >= 10
    assert {m.claim for m in EGRESS_MUTATIONS} == set(EGRESS_CLAIMS)


@pytest.mark.parametrize("mutation", EGRESS_MUTATIONS, ids=lambda m: m.id)
def test_each_egress_mutation_is_caught_at_the_deployed_config_map(mutation, plan_doc):
    result = run_suite(plan_doc, [mutation])[0]
    assert result.caught, f"{mutation.id} not caught by {mutation.claim}: {result.result.status} {result.result.reason}"
    failing = [f for c in result.result.checks for f in c.findings if not f.ok]
    assert any(f.urn.rsplit("::", 1)[-1] in (POLICY_MAP, REGISTRATION) for f in failing), [(f.urn, f.path) for f in failing]


def test_an_extra_repository_in_a_registration_is_no_new_destination(plan_doc):
    doc = copy.deepcopy(plan_doc)
    registration = next(r for r in doc["resources"] if r["name"] == REGISTRATION)
    entry = json.loads(registration["inputs"]["data"]["workspace.json"])
    entry["policy"]["code_host"]["repositories"].append("acme/another-repository")
    registration["inputs"]["data"]["workspace.json"] = json.dumps(entry)
    result = evaluate(from_plan_json(doc), _claims("PF-EGR-01"))[0]
    assert result.status == HOLDS


@pytest.mark.parametrize(
    "key, value, required",
    [
        ("data.json", COMPUTED, "known text value"),
        ("data.json", "{not json", "known JSON"),
        ("data.json", json.dumps({"region": "europe-west4", "workspaces": {}}), "data.schema.json"),
        ("github.rego", None, "the egress policy module github.rego"),
        ("main.rego", "package perfloop.egress\nthis is not rego {", "compile"),
    ],
)
def test_an_unsound_deployment_fails_closed(plan_doc, key, value, required):
    view = _edited(plan_doc, POLICY_MAP, key, value)
    result = evaluate(view, _claims("PF-CODE-02"))[0]
    assert result.status == VIOLATED
    failing = [f for c in result.checks for f in c.findings if not f.ok]
    assert any(required in f.required for f in failing), [f.required for f in failing]


def test_a_deny_all_policy_fails_the_positive_controls(plan_doc):
    """Replacing every rule by a deny-everything decision must not pass as holding."""
    doc = copy.deepcopy(plan_doc)
    policy = next(r for r in doc["resources"] if r["name"] == POLICY_MAP)
    for name in [k for k in policy["inputs"]["data"] if k.endswith(".rego")]:
        policy["inputs"]["data"][name] = "package perfloop.egress\n\nimport rego.v1\n"
    policy["inputs"]["data"]["main.rego"] = (
        "package perfloop.egress\n\nimport rego.v1\n\n"
        'decision := {"allow": false, "reason": "denied", "rule": "deny.all"}\n\n'
        'deny contains ["10", "deny.all", "denied"] if true\n'
    )
    results = {r.claim.id: r for r in evaluate(from_plan_json(doc), _claims(*ENGINE_CLAIMS))}
    for cid, r in results.items():
        assert r.status == VIOLATED, cid
        probes = [f for c in r.checks for f in c.findings if isinstance(f.actual, dict) and "probe" in f.actual]
        controls = [f for f in probes if "positive control" in f.required]
        assert controls and not any(f.ok for f in controls), cid
        # What fails besides them is a deny for the wrong reason (a rule the probe names), never an allow.
        assert all(not f.actual["decision"]["allow"] for f in probes), cid
        assert all(f.ok or "positive control" in f.required or "(rule " in f.required for f in probes), cid


def test_the_deployed_modules_are_evaluated_not_the_repository_files(plan_doc, view):
    """Same repository, different deployed module: the verdict follows the ConfigMap."""
    source = (POLICY_DIR / "github.rego").read_text()
    mutated = _edited(plan_doc, POLICY_MAP, "github.rego", github_without_merge_deny(source))
    assert run_check("merge_approve_ready_denied", view).status == "pass"
    result = run_check("merge_approve_ready_denied", mutated)
    allowed = [f.actual for f in result.findings if not f.ok]
    assert allowed and all(a["decision"]["allow"] for a in allowed)
    assert {a["request"]["source"] for a in allowed} == {"egress-proxy"}  # a source the data lets reach api.github.com


# --- configured telemetry: traces allowlists and strict logs ------------------------------------

def _with_workspace_config(monkeypatch, stack_config):
    from infra.config import decode_pulumi_config, parse_stack_config
    from infra.engine import wire_config

    values = {k.split(":", 1)[1]: v for k, v in wire_config(stack_config).items()}
    parsed = parse_stack_config(decode_pulumi_config(values))
    monkeypatch.setattr(egress_checks, "_stack_configuration", lambda view: (parsed, "stacks/Pulumi.byoc-example.yaml (variant)"))


def test_a_traces_allowlist_equal_to_the_configuration_holds_and_a_different_one_does_not(plan_variant, monkeypatch, layout):
    import yaml

    config = yaml.safe_load(layout.stack_file("byoc-example").read_text())["config"]
    config["perfloop:workspace"]["telemetry"] = {"traces": {"provider": "datadog", "trace_attribute_allowlist": ["@http.route"]}}
    plan = plan_variant(lambda c: c.update({"perfloop:workspace": config["perfloop:workspace"]}))
    _with_workspace_config(monkeypatch, config)
    doc = plan.to_json()
    view = from_plan_json(doc)
    result = evaluate(view, _claims("PF-TEL-02"))[0]
    assert result.status == HOLDS and not result.reason
    data_check = result.checks[0]
    assert data_check.status == "pass" and len(data_check.findings) == 2  # the registration and the connector's configuration
    policy_probes = [f.actual["probe"] for f in result.checks[1].findings if isinstance(f.actual, dict) and "probe" in f.actual]
    assert "acme/traces/datadog/approved:http.route" in policy_probes and "acme/traces/datadog/unapproved:http.route" in policy_probes

    registration = next(r for r in doc["resources"] if r["name"] == REGISTRATION)
    entry = json.loads(registration["inputs"]["data"]["workspace.json"])
    entry["policy"]["telemetry"][0]["trace_attribute_allowlist"] = ["http.route", "user.email"]
    registration["inputs"]["data"]["workspace.json"] = json.dumps(entry)
    result = evaluate(from_plan_json(doc), _claims("PF-TEL-02"))[0]
    assert result.status == VIOLATED
    assert [f.urn.rsplit("::", 1)[-1] for c in result.checks for f in c.findings if not f.ok] == [REGISTRATION]


def _strict_logs_plan(plan_variant, layout, monkeypatch, provider: str):
    import yaml

    config = yaml.safe_load(layout.stack_file("byoc-example").read_text())["config"]
    logs = {"provider": provider, "mode": "strict"}
    config["perfloop:workspace"]["telemetry"] = {"logs": logs}
    _with_workspace_config(monkeypatch, config)
    return from_plan_json(plan_variant(lambda c: c.update({"perfloop:workspace": config["perfloop:workspace"]})).to_json())


def test_a_deployed_strict_logs_connection_is_denied_everything(plan_variant, layout, monkeypatch):
    view = _strict_logs_plan(plan_variant, layout, monkeypatch, "gcp")
    result = evaluate(view, _claims("PF-TEL-04"))[0]
    assert result.status == HOLDS
    findings = [f for c in result.checks for f in c.findings]
    deployed = [f.actual for f in findings if isinstance(f.actual, dict) and f.actual.get("probe", "").startswith("acme/logs/")]
    assert deployed and not any(a["decision"]["allow"] for a in deployed)
    assert any("permission: \"none\"" in f.required and f.ok for f in findings)
    assert any(f.required.startswith("no credential secret perfloop-acme-logs-credentials") and f.ok for f in findings)


def test_a_strict_datadog_logs_connection_holds_no_credential(plan_variant, layout, monkeypatch):
    view = _strict_logs_plan(plan_variant, layout, monkeypatch, "datadog")
    assert evaluate(view, _claims("PF-TEL-04"))[0].status == HOLDS


# --- regenerate the module mutations --------------------------------------------------------------

if __name__ == "__main__":
    for mid, (name, transform) in GENERATED.items():
        print(f"# {mid}: value of /data/{name}")
        print("    value: |")
        for line in transform((POLICY_DIR / name).read_text()).rstrip("\n").split("\n"):
            print(f"      {line}" if line else "")
