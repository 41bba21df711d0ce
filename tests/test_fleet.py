"""`fleet plan` (every tenant of a cell, offline, in parallel) and `fleet up`: its orchestration
driven through the offline runner, and the Automation API runner against a stand-in CLI."""

from __future__ import annotations

import argparse
import io
import json
import shutil
import sys
import threading
import time

import pytest

from infra.engine import Plan, plan_stack
from infra.errors import ConfigError
from infra.fleet import (
    SUMMARY_FILE,
    AutomationRunner,
    FleetPlan,
    OfflineRunner,
    Progress,
    Result,
    TenantRow,
    generated_tenants,
    plan_fleet,
    register,
    roll_out,
    slow_resources,
    tenant_stacks,
)
from tests.conftest import ROOT

CELL = "cell-example"


def fleet(*argv: str) -> int:
    """`perfloop-platform fleet …` through the parser register() builds."""
    parser = argparse.ArgumentParser(prog="perfloop-platform")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["fleet", *argv])
    return args.handler(args)


def summary(out) -> dict:
    return json.loads((out / SUMMARY_FILE).read_text())


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A copy of the project with the example cell and its two tenants, as the working directory."""
    root = tmp_path / "project"
    (root / "stacks").mkdir(parents=True)
    shutil.copy(ROOT / "Pulumi.yaml", root)
    for stack in (CELL, "tenant-acme", "tenant-globex"):
        shutil.copy(ROOT / "stacks" / f"Pulumi.{stack}.yaml", root / "stacks")
    monkeypatch.chdir(root)
    return root


@pytest.fixture(scope="session")
def cell_plan(layout) -> Plan:
    return plan_stack(CELL, layout)


@pytest.fixture(scope="session")
def cell_outputs(cell_plan):
    return cell_plan.outputs


# --- fleet plan ----------------------------------------------------------------------------------

def test_the_example_cells_tenants_are_the_stack_files_that_name_it(layout):
    tenants, unreadable = tenant_stacks(layout, CELL)
    assert {"tenant-acme", "tenant-globex"} <= tenants.keys() and not unreadable
    assert all(config["perfloop:cell"] == CELL for config in tenants.values())


def test_fleet_plan_of_the_example_cell_then_no_changes_then_a_changed_tenant(project, tmp_path, capsys):
    out = tmp_path / "plans"
    assert fleet("plan", "--cell", CELL, "--out", str(out), "--jobs", "2") == 0
    printed = capsys.readouterr().out
    tenants = {t["stack"]: t for t in summary(out)["tenants"]}
    assert tenants.keys() == {"tenant-acme", "tenant-globex"}
    for stack, tenant in tenants.items():
        assert 0 < tenant["resources"] <= 40
        assert tenant["slow_resources"] == []
        assert tenant["changes"]["previous"] is False
        assert json.loads((out / f"{stack}.json").read_text())["stack"] == stack
    assert printed.splitlines()[0].split() == ["STACK", "WORKSPACE", "RESOURCES", "SLOW", "CLAIMS", "CHANGES"]
    assert [line.split()[:2] + line.split()[3:] for line in printed.splitlines()[1:3]] == [
        ["tenant-acme", "acme", "0", "-", "new"],
        ["tenant-globex", "globex", "0", "-", "new"],
    ]

    assert fleet("plan", "--cell", CELL, "--out", str(out), "--jobs", "2") == 0
    assert [line.split()[-1] for line in capsys.readouterr().out.splitlines()[1:3]] == ["none", "none"]
    assert all(t["changes"] == {"previous": True, "added": 0, "removed": 0, "changed": 0} for t in summary(out)["tenants"])

    globex = project / "stacks" / "Pulumi.tenant-globex.yaml"
    globex.write_text(globex.read_text() + "    telemetry:\n      metrics: {provider: datadog, host: api.datadoghq.eu}\n")
    assert fleet("plan", "--cell", CELL, "--out", str(out), "--jobs", "2") == 0
    changes = {t["stack"]: t["changes"] for t in summary(out)["tenants"]}
    assert changes["tenant-acme"] == {"previous": True, "added": 0, "removed": 0, "changed": 0}
    assert changes["tenant-globex"]["previous"] and changes["tenant-globex"]["added"] > 0
    globex_row = capsys.readouterr().out.splitlines()[2].split()
    assert globex_row[0] == "tenant-globex" and globex_row[-3].startswith("+")


def test_every_problem_is_reported_and_the_healthy_tenants_still_plan(project, tmp_path, capsys):
    stacks = project / "stacks"
    (stacks / "Pulumi.tenant-broken.yaml").write_text(
        (stacks / "Pulumi.tenant-globex.yaml").read_text().replace("id: globex", "id: Not_An_Id")
    )
    (stacks / "Pulumi.tenant-garbled.yaml").write_text("config:\n  perfloop:cell: [unclosed\n")
    shutil.copy(stacks / "Pulumi.tenant-acme.yaml", stacks / "Pulumi.tenant-acme-copy.yaml")
    out = tmp_path / "plans"
    assert fleet("plan", "--cell", CELL, "--out", str(out)) == 2  # a tenant did not plan
    printed = capsys.readouterr().out
    failures = {f["stack"]: f["message"] for f in summary(out)["failures"]}
    assert failures.keys() == {"tenant-broken", "tenant-garbled"}
    assert "perfloop:workspace.id" in failures["tenant-broken"] and "Not_An_Id" in failures["tenant-broken"]
    assert "not valid YAML" in failures["tenant-garbled"]  # its cell cannot be read: fail closed
    assert {t["stack"] for t in summary(out)["tenants"]} == {"tenant-acme", "tenant-acme-copy", "tenant-globex"}
    assert summary(out)["duplicate_workspaces"] == {"acme": ["tenant-acme", "tenant-acme-copy"]}
    assert "FAILED tenant-broken: invalid stack config" in printed and "perfloop:workspace.id" in printed
    assert "DUPLICATE workspace id 'acme' is claimed by tenant-acme, tenant-acme-copy" in printed
    assert "Traceback" not in printed


def test_a_workspace_id_claimed_twice_alone_fails_the_fleet():
    row = lambda stack: TenantRow(stack, "acme", 20, (), None, None)  # noqa: E731
    assert FleetPlan(CELL, [row("tenant-a"), row("tenant-b")], [], 0.0).exit_code() == 1


def claims_of(plan: Plan) -> tuple[int, int]:
    """A stand-in policy hook: every secret has exactly one accessor binding."""
    secrets = plan.by_type("gcp:secretmanager/secret:Secret")
    bound = {r.inputs.get("secretId") for r in plan.by_type("gcp:secretmanager/secretIamBinding:SecretIamBinding")}
    return sum(1 for s in secrets if s.inputs["secretId"] in bound), len(secrets)


def test_generated_tenants_plan_with_the_claims_hook(layout):
    fleet_plan = plan_fleet(CELL, layout=layout, jobs=2, generated=20, evaluate=claims_of, progress=io.StringIO())
    generated = [r for r in fleet_plan.rows if r.stack.startswith("gen-")]
    assert len(generated) == 20 and not fleet_plan.failures and fleet_plan.exit_code() == 0
    assert {r.workspace for r in generated} == {f"g{i:05d}" for i in range(1, 21)}
    assert not any(r.slow for r in generated)
    assert len({r.resources for r in generated}) == 3  # code host only, +1 and +2 telemetry connections
    assert all(r.claims is not None and r.claims[0] == r.claims[1] for r in generated)
    assert "CLAIMS" in fleet_plan.render() and " 1/1 " in fleet_plan.render()


def test_slow_resources_are_the_cells_and_fail_a_fleet(cell_plan):
    cell = cell_plan
    slow = {urn.rsplit("::", 2)[-2].rsplit("$", 1)[-1] for urn in slow_resources(cell)}
    assert {"gcp:container/cluster:Cluster", "gcp:sql/databaseInstance:DatabaseInstance", "gcp:compute/network:Network"} <= slow
    row = TenantRow("tenant-x", "x", 20, tuple(slow_resources(cell)[:1]), None, None)
    fleet_plan = FleetPlan(CELL, [row], [], 0.0)
    assert fleet_plan.exit_code() == 1 and "SLOW tenant-x" in fleet_plan.render()


def test_bad_cell_names_stop_with_a_clear_error(monkeypatch):
    monkeypatch.chdir(ROOT)
    with pytest.raises(ConfigError, match="shape 'tenant'"):
        fleet("plan", "--cell", "tenant-acme")
    with pytest.raises(ConfigError, match="does not exist; known stacks"):
        fleet("plan", "--cell", "no-such-cell")


def test_progress_is_one_redrawn_line_on_a_terminal_and_tenths_elsewhere():
    log = io.StringIO()
    bar = Progress(25, log)
    for _ in range(25):
        bar.advance()
    lines = log.getvalue().splitlines()
    assert len(lines) == 9 and lines[-1].split("] ")[1].startswith("25/25")  # every 3rd, and the last

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    screen = Terminal()
    bar = Progress(25, screen)
    for _ in range(25):
        bar.advance()
    assert screen.getvalue().startswith("\r") and screen.getvalue().count("\n") == 1
    assert "25/25" in screen.getvalue().rsplit("\r", 1)[1] and "ETA" in screen.getvalue()


# --- fleet up: the orchestration, against the offline runner -------------------------------------

class Instrumented:
    """Wraps a runner and records what roll_out does with it: start order, overlap, finish."""

    def __init__(self, inner, pause):
        self.inner, self.pause = inner, pause
        self.lock = threading.Lock()
        self.in_flight = self.peak = 0
        self.started: list[str] = []

    def up(self, stack):
        with self.lock:
            self.started.append(stack)
            self.in_flight += 1
            self.peak = max(self.peak, self.in_flight)
        try:
            time.sleep(self.pause(stack))  # the cloud's waiting, so updates overlap as real ones do
            return self.inner.up(stack)
        finally:
            with self.lock:
                self.in_flight -= 1


def offline(count, cell_outputs, layout, flagged=()):
    tenants = generated_tenants(CELL, count)
    check = lambda plan: [f"{plan.stack} is on the deny list"] if plan.stack in flagged else []  # noqa: E731
    return sorted(tenants), OfflineRunner(tenants, cell_outputs, check, layout.name)


def test_rollout_never_exceeds_its_concurrency_bound(cell_outputs, layout):
    stacks, runner = offline(6, cell_outputs, layout)
    probe = Instrumented(runner, pause=lambda _: 0.2)
    rollout = roll_out(stacks, probe, jobs=3)
    assert probe.peak == 3  # the bound is reached, never passed
    assert probe.started == stacks  # started in stack order
    assert rollout.updated == stacks and rollout.not_started == [] and rollout.exit_code() == 0


def test_rollout_stops_starting_tenants_after_the_first_violation(cell_outputs, layout):
    stacks, runner = offline(6, cell_outputs, layout, flagged={"gen-00003"})
    rollout = roll_out(stacks, runner, jobs=1)
    assert rollout.updated == ["gen-00001", "gen-00002"]
    assert [(r.stack, r.status) for r in rollout.failed] == [("gen-00003", "violation")]
    assert rollout.not_started == ["gen-00004", "gen-00005", "gen-00006"]
    assert rollout.stopped_by.violations == ("gen-00003 is on the deny list",)
    report = rollout.render(CELL)
    assert report.startswith("fleet up of cell cell-example: 2 updated, 1 failed, 3 not started")
    assert "stopped: gen-00003 violated a mandatory policy" in report and rollout.exit_code() == 1


def test_running_tenants_finish_after_a_violation_and_nothing_new_starts(cell_outputs, layout):
    # The flagged tenant answers at once; the two started beside it are still running then.
    stacks, runner = offline(9, cell_outputs, layout, flagged={"gen-00001"})
    probe = Instrumented(runner, pause=lambda stack: 0 if stack == "gen-00001" else 0.6)
    rollout = roll_out(stacks, probe, jobs=3)
    assert probe.started == ["gen-00001", "gen-00002", "gen-00003"]
    assert rollout.updated == ["gen-00002", "gen-00003"]
    assert [r.stack for r in rollout.failed] == ["gen-00001"]
    assert rollout.not_started == stacks[3:]


def test_a_runner_that_raises_is_one_failed_tenant_not_a_crashed_rollout():
    class Flaky:
        def up(self, stack):
            if stack == "b":
                raise RuntimeError("backend unreachable")
            return Result(stack, ok=True)

    rollout = roll_out(["a", "b", "c"], Flaky(), jobs=2)
    assert rollout.updated == ["a", "c"] and rollout.not_started == []
    assert [(r.stack, r.status, r.message) for r in rollout.failed] == [("b", "failed", "RuntimeError: backend unreachable")]


FAKE_PULUMI = """#!{python}
# Stands in for the Pulumi CLI: answers what the Automation API asks, logs every command line,
# and for tenant-bad (events, as current CLIs send them) and tenant-old (text only, as older
# ones print it) fails the preview with a mandatory policy violation.
import json, os, sys
args = [a for a in sys.argv[1:] if a != "--non-interactive"]
with open(os.environ["FAKE_PULUMI_LOG"], "a") as log:
    log.write(" ".join(args) + "\\n")
def value(flag):
    return args[args.index(flag) + 1] if flag in args else None
def emit(*events):
    with open(value("--event-log"), "a") as f:
        f.writelines(json.dumps(e) + "\\n" for e in events)
stack = value("--stack")
if args[0] == "version":
    print("v3.200.0")
elif args[0] == "preview" and stack in ("tenant-bad", "tenant-old"):
    if stack == "tenant-bad":
        emit({{"policyEvent": {{"message": "a secret with two readers", "policyName": "one-reader", "policyPackName": "perfloop",
                               "enforcementLevel": "mandatory", "resourceUrn": "urn:pulumi:tenant-bad::p::gcp:secretmanager/secret:Secret::s"}}}})
    emit({{"cancelEvent": {{}}}})
    print("Policies:")
    print("    - [mandatory]  one-reader  (gcp:secretmanager/secret:Secret: s)")
    print("error: preview failed", file=sys.stderr)
    sys.exit(255)
elif args[0] in ("preview", "up"):
    emit({{"summaryEvent": {{"resourceChanges": {{}}}}}}, {{"cancelEvent": {{}}}})
    print(args[0], stack, "done")
elif args[:2] == ["stack", "output"]:
    print("{{}}")
elif args[:2] == ["stack", "history"]:
    print(json.dumps([{{"kind": "update", "startTime": "2026-01-01T00:00:00.000Z", "message": "", "environment": {{}}, "config": {{}}, "result": "succeeded"}}]))
elif args[:2] != ["stack", "select"]:
    sys.exit(f"unexpected: {{args}}")
"""


def test_automation_runner_previews_with_the_packs_then_updates_and_names_violations(tmp_path, monkeypatch):
    cli = tmp_path / "bin" / "pulumi"
    cli.parent.mkdir()
    cli.write_text(FAKE_PULUMI.format(python=sys.executable))
    cli.chmod(0o755)
    monkeypatch.setenv("PATH", str(cli.parent))
    monkeypatch.setenv("FAKE_PULUMI_LOG", str(tmp_path / "commands.log"))
    pack = ROOT / "policies" / "pack"
    output: list[str] = []
    runner = AutomationRunner(ROOT, [pack], output.append)

    assert runner.up("tenant-ok") == Result("tenant-ok", ok=True)
    bad = runner.up("tenant-bad")
    assert bad.status == "violation" and bad.message == "error: preview failed"
    assert bad.violations == ("perfloop/one-reader on urn:pulumi:tenant-bad::p::gcp:secretmanager/secret:Secret::s: a secret with two readers",)
    old = runner.up("tenant-old")
    assert old.status == "violation" and old.violations == ("- [mandatory]  one-reader  (gcp:secretmanager/secret:Secret: s)",)

    commands = (tmp_path / "commands.log").read_text().splitlines()
    ran = [(c.split()[0], c.split("--stack ")[1].split()[0]) for c in commands if c.split()[0] in ("preview", "up")]
    assert ran == [("preview", "tenant-ok"), ("up", "tenant-ok"), ("preview", "tenant-bad"), ("preview", "tenant-old")]
    assert all(f"--policy-pack {pack}" in c for c in commands if c.split()[0] in ("preview", "up"))
    assert "[tenant-ok] up tenant-ok done" in output


def test_fleet_up_without_the_pulumi_cli_says_so(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ConfigError, match="Pulumi CLI .* is not on PATH"):
        AutomationRunner(ROOT, [], print)


def test_fleet_up_rejects_a_policy_pack_that_is_not_one(project, tmp_path):
    with pytest.raises(ConfigError, match="not a policy pack directory"):
        fleet("up", "--cell", CELL, "--policy-pack", str(tmp_path))
