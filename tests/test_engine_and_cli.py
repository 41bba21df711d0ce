"""The offline engine and the `perfloop-platform plan` command."""

from __future__ import annotations

import json
import subprocess
import sys

import pulumi
import pytest

from infra.cli import main as cli_main
from infra.engine import PLAN_FORMAT, read_stack_file
from tests.conftest import ROOT


def test_plan_json_is_deterministic(tmp_path):
    outs = []
    for i in range(2):
        out = tmp_path / f"plan{i}.json"
        assert cli_main(["plan", "--stack", "byoc-example", "--out", str(out)]) == 0
        outs.append(out.read_bytes())
    assert outs[0] == outs[1]


def test_plan_json_holds_every_resource_with_its_record(byoc_plan):
    document = json.loads(byoc_plan.dumps())
    assert document["format"] == PLAN_FORMAT
    urns = {r["urn"] for r in document["resources"]}
    for r in document["resources"]:
        assert set(r) == {"urn", "type", "name", "parent", "custom", "provider", "protect", "dependencies", "inputs"}
        assert r["parent"] in urns or r["type"] == "pulumi:pulumi:Stack"
        assert set(r["dependencies"]) <= urns
        if r["custom"] and not r["type"].startswith("pulumi:providers:"):
            # Every resource goes through an explicit provider: gcp pinned to the project, or
            # kubernetes bound to the stack's cluster.
            package = r["type"].split(":")[0]
            assert r["provider"].endswith({"gcp": "::gcp", "kubernetes": "::gke"}[package]), r["urn"]


def test_plan_holds_every_component(byoc_plan):
    components = {r.type for r in byoc_plan.resources if not r.custom}
    assert components >= {
        "perfloop:gcp:ProjectServices", "perfloop:gcp:Network", "perfloop:gcp:Cluster", "perfloop:gcp:NodePools",
        "perfloop:gcp:Database", "perfloop:gcp:SecretStore", "perfloop:gcp:Identities", "perfloop:gcp:AuditLogging",
        "perfloop:platform:Cell", "perfloop:platform:Workspace",
    }


def test_every_resource_stays_in_the_customer_project(byoc_plan):
    projects = {r.inputs["project"] for r in byoc_plan.resources if "project" in r.inputs}
    assert projects == {"acme-perfloop-prod"}
    provider = next(r for r in byoc_plan.resources if r.type == "pulumi:providers:gcp")
    assert provider.inputs["project"] == "acme-perfloop-prod" and provider.inputs["region"] == "europe-west4"


def test_cli_prints_tree_and_writes_plan(tmp_path, capsys):
    out = tmp_path / "plan.json"
    assert cli_main(["plan", "--stack", "byoc-example", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "sslMode=TRUSTED_CLIENT_CERTIFICATE_REQUIRED" in printed and "type=gvisor" in printed
    assert json.loads(out.read_text())["stack"] == "byoc-example"


def _run_cli(args, cwd):
    return subprocess.run([sys.executable, "-m", "infra.cli", *args], cwd=cwd, capture_output=True, text=True, timeout=120)


@pytest.mark.slow
def test_malformed_stack_file_exits_non_zero_with_a_short_error(tmp_path):
    (tmp_path / "Pulumi.yaml").write_text((ROOT / "Pulumi.yaml").read_text().replace("stackConfigDir: stacks", "stackConfigDir: ."))
    (tmp_path / "Pulumi.broken.yaml").write_text(
        (ROOT / "stacks" / "Pulumi.byoc-example.yaml").read_text().replace("tier: db-custom-4-16384", "tier: db-huge")
    )
    result = _run_cli(["plan", "--stack", "broken"], tmp_path)
    assert result.returncode == 2
    assert "perfloop:database.tier" in result.stderr and "db-huge" in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.splitlines()) <= 4


def test_unknown_stack_lists_known_ones(capsys):
    assert cli_main(["plan", "--stack", "nope"]) == 2
    assert "byoc-example" in capsys.readouterr().err


def test_secure_values_in_stack_config_are_refused(tmp_path, layout):
    (tmp_path / "Pulumi.s.yaml").write_text("config:\n  perfloop:project:\n    secure: v1:abc\n")
    from dataclasses import replace

    from infra.errors import ConfigError

    with pytest.raises(ConfigError, match="secret values never go in stack config"):
        read_stack_file(replace(layout, stack_dir=tmp_path), "s")


class _StockMocks(pulumi.runtime.Mocks):
    """Any other harness: Pulumi's stock mock monitor, nothing of the offline engine."""

    def new_resource(self, args):
        outputs = dict(args.inputs)
        if args.typ == "gcp:serviceaccount/account:Account":
            outputs["email"] = f"{args.inputs['accountId']}@x.iam.gserviceaccount.com"
        return [f"{args.name}-id", outputs]

    def call(self, args):
        return {}


@pytest.mark.slow
def test_program_registers_the_same_resources_under_the_stock_mock_harness(byoc_plan, tmp_path):
    """Run the program in a fresh interpreter with Pulumi's own set_mocks and the stack file's
    config, as any team's test harness would; it must register exactly what the plan shows."""
    script = tmp_path / "harness.py"
    script.write_text(
        f"""
import asyncio, json, sys, yaml
sys.path.insert(0, {str(ROOT)!r})
import pulumi
from pulumi.runtime import settings
from pulumi.runtime.stack import run_in_stack
from tests.test_engine_and_cli import _StockMocks

config = yaml.safe_load(open({str(ROOT / 'stacks' / 'Pulumi.byoc-example.yaml')!r}))["config"]
pulumi.runtime.set_all_config({{k: json.dumps(v) if isinstance(v, (dict, list)) else str(v) for k, v in config.items()}})
loop = asyncio.new_event_loop(); asyncio.set_event_loop(loop)
monitor = pulumi.runtime.mocks.MockMonitor(_StockMocks())
seen = []
original = monitor.RegisterResource
def record(request):
    seen.append((request.type, request.name))
    return original(request)
monitor.RegisterResource = record
pulumi.runtime.set_mocks(monitor.mocks, project="perfloop-platform", stack="byoc-example", monitor=monitor)
settings.ROOT.set(None)
import runpy
loop.run_until_complete(run_in_stack(lambda: runpy.run_path({str(ROOT / 'infra' / '__main__.py')!r})))
print(json.dumps(sorted(set(seen))))
"""
    )
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    seen = {tuple(x) for x in json.loads(result.stdout.strip().splitlines()[-1])}
    assert seen == {(r.type, r.name) for r in byoc_plan.resources}
