"""The fleet: every tenant stack of one cell at once.

`fleet plan` plans each tenant of a cell offline, in parallel, and sums the fleet up: resources,
resources no tenant may hold, claims, changes since the last run, and workspace ids claimed twice.
`fleet up` runs a real `pulumi up` per tenant through the Automation API, a few at a time, and
stops starting tenants at the first mandatory policy violation. The orchestration takes its runner
as a parameter, so the same code is exercised against the offline engine (`OfflineRunner`).
"""

from __future__ import annotations

import argparse
import functools
import json
import multiprocessing
import os
import re
import sys
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, ThreadPoolExecutor, as_completed, wait
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Protocol, Sequence, TextIO, Union

from infra.engine import PLAN_FORMAT, Plan, ProjectLayout, find_project, plan_stack, read_stack_file, referenced_cell, run_program, wire_config
from infra.errors import ConfigError

SUMMARY_FORMAT = "perfloop-fleet-summary/v1"
SUMMARY_FILE = "fleet-summary.json"

# A tenant holds a workspace's identities, secrets and Kubernetes objects, all created in seconds.
# These types take minutes and belong to the cell: a tenant that plans one would build a second
# network, cluster or database, or reach into the shared one.
SLOW_TYPES = frozenset(
    {
        "gcp:sql/databaseInstance:DatabaseInstance",
        "gcp:container/cluster:Cluster",
        "gcp:container/nodePool:NodePool",
    }
)
SLOW_PREFIXES = ("gcp:compute/",)

# `fleet up` default: each `pulumi up` runs the program and both provider plugins (a few hundred
# MB) and spends its time waiting on GCP and the cluster, and every tenant writes into the same
# cell project and cluster, so a handful at a time keeps API quota and the control plane calm.
DEFAULT_UP_JOBS = 4

# The policy hook of `fleet plan`: a plan → (claims holding, claims checked).
Evaluate = Callable[[Plan], tuple[int, int]]
# The check of the offline runner: a plan → the mandatory violations it finds (empty: compliant).
Check = Callable[[Plan], Sequence[str]]


def slow_resources(plan: Plan) -> list[str]:
    return [r.urn for r in plan.resources if r.type in SLOW_TYPES or r.type.startswith(SLOW_PREFIXES)]


# --- which stacks ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Failure:
    stack: str
    message: str


def check_cell(layout: ProjectLayout, cell: str) -> None:
    """`cell` must be a stack file of this project whose shape is cell."""
    shape = read_stack_file(layout, cell).get("perfloop:shape")
    if shape != "cell":
        raise ConfigError(f"--cell {cell}", [f"stack {cell!r} has perfloop:shape {shape!r}; name a stack whose shape is 'cell'"])


def tenant_stacks(layout: ProjectLayout, cell: str) -> tuple[dict[str, dict[str, str]], list[Failure]]:
    """The stacks whose `perfloop:cell` names `cell`, with their config in wire form, and the stack
    files that could not be read. An unreadable file is a failure, not skipped: it may be one of
    this cell's tenants, and a fleet run that left it out would report on a fleet it did not see."""
    tenants: dict[str, dict[str, str]] = {}
    unreadable: list[Failure] = []
    for stack in layout.stacks():
        try:
            config = read_stack_file(layout, stack)
        except ConfigError as exc:
            unreadable.append(Failure(stack, str(exc)))
            continue
        if referenced_cell(config) == cell:
            tenants[stack] = config
    return tenants, unreadable


def generated_tenants(cell: str, count: int) -> dict[str, dict[str, str]]:
    """`count` synthetic tenants for scale runs (gen-00001 with workspace g00001, …): a third with
    the code host only, a third adding a Datadog metrics connection, a third metrics and traces."""
    tenants = {}
    for i in range(1, count + 1):
        workspace = f"g{i:05d}"
        datadog = {"provider": "datadog", "host": "api.datadoghq.eu"}
        telemetry = [{}, {"metrics": datadog}, {"metrics": datadog, "traces": datadog}][i % 3]
        tenants[f"gen-{i:05d}"] = wire_config(
            {
                "perfloop:shape": "tenant",
                "perfloop:cell": cell,
                "perfloop:labels": {"customer": workspace},
                "perfloop:workspace": {
                    "id": workspace,
                    "code_host": {"provider": "github", "repositories": [f"{workspace}/service"]},
                    **({"telemetry": telemetry} if telemetry else {}),
                },
            }
        )
    return tenants


# --- fleet plan: one tenant, in a worker -------------------------------------------------------

@dataclass(frozen=True)
class Changes:
    """A tenant's plan against the one the previous run wrote to --out, resource by URN."""

    previous: bool  # False: no previous plan (or not a plan this engine wrote) to compare with
    added: int = 0
    removed: int = 0
    changed: int = 0

    def __str__(self) -> str:
        if not self.previous:
            return "new"
        if not (self.added or self.removed or self.changed):
            return "none"
        return f"+{self.added} -{self.removed} ~{self.changed}"


@dataclass(frozen=True)
class TenantRow:
    stack: str
    workspace: str
    resources: int
    slow: tuple[str, ...]
    claims: Optional[tuple[int, int]]  # None: no evaluate hook
    changes: Optional[Changes]  # None: no --out, nothing to compare with


def _changes(previous_file: Path, document: dict[str, Any]) -> Changes:
    try:
        previous = json.loads(previous_file.read_text())
    except (OSError, ValueError):
        return Changes(previous=False)
    if not isinstance(previous, dict) or previous.get("format") != PLAN_FORMAT:
        return Changes(previous=False)
    before = {r["urn"]: r for r in previous.get("resources", [])}
    after = {r["urn"]: r for r in document["resources"]}
    return Changes(
        previous=True,
        added=len(after.keys() - before.keys()),
        removed=len(before.keys() - after.keys()),
        changed=sum(1 for urn in after.keys() & before.keys() if after[urn] != before[urn]),
    )


# What every worker process holds for its whole life, set once by _init_worker: the program, the
# cell's outputs (the cell is planned once, by the parent, not per tenant), where plans go, and
# the claims hook.
_worker: dict[str, Any] = {}


def _init_worker(project: str, cell_outputs: dict[str, Any], out_dir: Optional[Path], evaluate: Optional[Evaluate]) -> None:
    # A forked worker inherits the parent's imports, so this costs nothing there; a spawned one
    # (no fork on the platform) pays the program's imports here, once, not per tenant.
    from infra.program import main

    _worker.update(program=main, project=project, cell_outputs=cell_outputs, out_dir=out_dir, evaluate=evaluate)


def _plan_tenant(stack: str, config: dict[str, str]) -> Union[TenantRow, Failure]:
    try:
        plan = run_program(
            _worker["program"],
            project=_worker["project"],
            stack=stack,
            config=config,
            stack_references={config["perfloop:cell"]: _worker["cell_outputs"]},
        )
        evaluate = _worker["evaluate"]
        claims = evaluate(plan) if evaluate is not None else None
        changes = None
        if _worker["out_dir"] is not None:
            text = plan.dumps()
            path = _worker["out_dir"] / f"{stack}.json"
            changes = _changes(path, json.loads(text))  # compare JSON with JSON: tuples, numbers
            path.write_text(text)
    except ConfigError as exc:
        return Failure(stack, str(exc))
    except Exception as exc:  # noqa: BLE001 - one tenant's program (or hook) bug must not hide the others' results
        return Failure(stack, f"unexpected {type(exc).__name__}: {exc}")
    return TenantRow(stack, str(plan.outputs.get("workspace", "?")), len(plan.resources), tuple(slow_resources(plan)), claims, changes)


# --- fleet plan: the whole fleet ---------------------------------------------------------------

@dataclass
class FleetPlan:
    cell: str
    rows: list[TenantRow]  # by stack name
    failures: list[Failure]  # by stack name
    seconds: float  # wall time of the tenants' plans, the pool's start included, the cell's plan not

    def duplicates(self) -> dict[str, list[str]]:
        """Workspace ids claimed by more than one tenant: they would share namespaces, service
        accounts, secrets and database users."""
        stacks: dict[str, list[str]] = {}
        for row in self.rows:
            stacks.setdefault(row.workspace, []).append(row.stack)
        return {ws: names for ws, names in sorted(stacks.items()) if len(names) > 1}

    def exit_code(self) -> int:
        """2: a tenant did not plan (bad input). 1: the fleet planned but is wrong (a workspace id
        claimed twice, a slow resource in a tenant, a claim that does not hold). 0: all good."""
        if self.failures:
            return 2
        unproven = any(r.claims is not None and r.claims[0] < r.claims[1] for r in self.rows)
        return 1 if self.duplicates() or any(r.slow for r in self.rows) or unproven else 0

    def to_json(self) -> dict[str, Any]:
        return {
            "format": SUMMARY_FORMAT,
            "cell": self.cell,
            "tenants": [
                {
                    "stack": r.stack,
                    "workspace": r.workspace,
                    "resources": r.resources,
                    "slow_resources": list(r.slow),
                    "claims": None if r.claims is None else {"holding": r.claims[0], "total": r.claims[1]},
                    "changes": None if r.changes is None else asdict(r.changes),
                }
                for r in self.rows
            ],
            "failures": [asdict(f) for f in self.failures],
            "duplicate_workspaces": self.duplicates(),
        }

    def render(self) -> str:
        header = ("STACK", "WORKSPACE", "RESOURCES", "SLOW", "CLAIMS", "CHANGES")
        table = [header] + [
            (
                r.stack,
                r.workspace,
                str(r.resources),
                str(len(r.slow)),
                "-" if r.claims is None else f"{r.claims[0]}/{r.claims[1]}",
                "-" if r.changes is None else str(r.changes),
            )
            for r in self.rows
        ]
        widths = [max(len(line[i]) for line in table) for i in range(len(header))]
        lines = ["  ".join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip() for line in table]
        for failure in self.failures:
            lines.append(f"FAILED {failure.stack}: {failure.message}")
        for workspace, stacks in self.duplicates().items():
            lines.append(f"DUPLICATE workspace id {workspace!r} is claimed by {', '.join(stacks)}; each tenant needs its own")
        for row in self.rows:
            for urn in row.slow:
                lines.append(f"SLOW {row.stack}: {urn} belongs to the cell, never to a tenant")
        lines.append(f"{len(self.rows)} tenants of cell {self.cell} planned, {len(self.failures)} failed")
        return "\n".join(lines) + "\n"


class Progress:
    """Count/total, rate and ETA on stderr: one line redrawn in place on a terminal; on anything
    else (CI logs, files) a plain line every tenth of the way, so logs stay short and readable."""

    WIDTH = 24

    def __init__(self, total: int, stream: TextIO) -> None:
        self.total, self.stream = total, stream
        self.tty = stream.isatty()
        self.done = 0
        self.started = self.drawn = time.monotonic()
        self.step = max(1, -(-total // 10))
        self.shown = 0  # length of the line on screen, to blank a longer previous one

    def advance(self) -> None:
        self.done += 1
        now = time.monotonic()
        last = self.done == self.total
        if self.tty:
            if last or now - self.drawn >= 0.1:  # redraw ten times a second at most
                self.drawn = now
                line = self._line(now)
                self.stream.write("\r" + line.ljust(self.shown) + ("\n" if last else ""))
                self.shown = len(line)
                self.stream.flush()
        elif last or self.done % self.step == 0:
            self.stream.write(self._line(now) + "\n")
            self.stream.flush()

    def _line(self, now: float) -> str:
        elapsed = now - self.started
        rate = self.done / elapsed if elapsed > 0 else 0.0
        filled = self.WIDTH * self.done // self.total
        eta = _duration((self.total - self.done) / rate) if rate else "?"
        return f"planning tenants [{'#' * filled}{'.' * (self.WIDTH - filled)}] {self.done}/{self.total}  {rate:.1f}/s  ETA {eta}"


def _duration(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


# Workers are forked on Linux: they inherit the modules the parent imported to plan the cell, so
# none pays the 2–3 s of imports again. (The parent holds no threads then: the engine closes its
# event loop, and with it the loop's executor threads, after every plan.) Elsewhere fork is unsafe
# or missing, and spawned workers import once, in _init_worker.
_POOL_CONTEXT = multiprocessing.get_context("fork" if sys.platform == "linux" else "spawn")


def plan_fleet(
    cell: str,
    *,
    layout: Optional[ProjectLayout] = None,
    out_dir: Optional[Path] = None,
    jobs: int = 1,
    generated: int = 0,
    evaluate: Optional[Evaluate] = None,
    progress: Optional[TextIO] = None,
) -> FleetPlan:
    """Plan every tenant of `cell` offline in `jobs` worker processes (plus `generated` synthetic
    tenants). With `out_dir`, each tenant's plan goes to `<stack>.json` there, compared first with
    the one already there, and the summary to fleet-summary.json. Progress goes to `progress`
    (default stderr). `evaluate` must be picklable (a module-level function) where workers are
    spawned rather than forked."""
    layout = layout or find_project()
    check_cell(layout, cell)
    tenants, failures = tenant_stacks(layout, cell)
    synthetic = generated_tenants(cell, generated)
    clash = sorted(tenants.keys() & synthetic.keys())
    if clash:
        raise ConfigError("--generated", [f"generated stack names {clash} are real stack files; rename those stacks or generate fewer"])
    tenants.update(synthetic)
    if out_dir is not None:
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"--out {out_dir}", [f"cannot create the directory: {exc.strerror}"]) from None
    cell_outputs = plan_stack(cell, layout).outputs
    rows: list[TenantRow] = []
    bar = Progress(len(tenants), progress or sys.stderr)
    started = time.perf_counter()
    if tenants:
        with ProcessPoolExecutor(
            max_workers=min(jobs, len(tenants)),
            mp_context=_POOL_CONTEXT,
            initializer=_init_worker,
            initargs=(layout.name, cell_outputs, out_dir, evaluate),
        ) as pool:
            futures = [pool.submit(_plan_tenant, stack, config) for stack, config in sorted(tenants.items())]
            for future in as_completed(futures):
                result = future.result()
                (failures if isinstance(result, Failure) else rows).append(result)
                bar.advance()
    fleet = FleetPlan(
        cell,
        sorted(rows, key=lambda r: r.stack),
        sorted(failures, key=lambda f: f.stack),
        time.perf_counter() - started,
    )
    if out_dir is not None:
        (out_dir / SUMMARY_FILE).write_text(json.dumps(fleet.to_json(), indent=2, sort_keys=True) + "\n")
    return fleet


# --- fleet up ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Result:
    """One tenant's update. Failed with violations: a mandatory policy said no, which stops the
    rollout. Failed without: anything else (an API error, a quota, a bad stack), which does not."""

    stack: str
    ok: bool
    violations: tuple[str, ...] = ()
    message: str = ""

    @property
    def status(self) -> str:
        return "updated" if self.ok else "violation" if self.violations else "failed"


class Runner(Protocol):
    def up(self, stack: str) -> Result: ...


@dataclass
class Rollout:
    results: list[Result]  # in the order they finished
    not_started: list[str]  # in stack order

    @property
    def updated(self) -> list[str]:
        return sorted(r.stack for r in self.results if r.ok)

    @property
    def failed(self) -> list[Result]:
        return sorted((r for r in self.results if not r.ok), key=lambda r: r.stack)

    @property
    def stopped_by(self) -> Optional[Result]:
        """The first tenant whose update hit a mandatory policy violation."""
        return next((r for r in self.results if r.violations), None)

    def exit_code(self) -> int:
        return 0 if not (self.failed or self.not_started) else 1

    def render(self, cell: str) -> str:
        lines = [f"fleet up of cell {cell}: {len(self.updated)} updated, {len(self.failed)} failed, {len(self.not_started)} not started"]
        lines += [f"  updated      {stack}" for stack in self.updated]
        for result in self.failed:
            lines.append(f"  failed       {result.stack}: {result.message}")
            lines += [f"                 mandatory policy violation: {v}" for v in result.violations]
        lines += [f"  not started  {stack}" for stack in self.not_started]
        stop = self.stopped_by
        if stop is not None:
            lines.append(
                f"stopped: {stop.stack} violated a mandatory policy, so no further tenant was started. Fix the "
                "stack (or the policy) and run `fleet up` again: updated tenants come back with no changes."
            )
        return "\n".join(lines) + "\n"


def roll_out(stacks: Sequence[str], runner: Runner, jobs: int, log: Callable[[str], None] = lambda _: None) -> Rollout:
    """Update `stacks` in order, at most `jobs` at once. After the first mandatory policy
    violation no further stack is started; those already running finish and are reported."""
    pending = list(stacks)
    results: list[Result] = []
    running: set[Future[Result]] = set()

    def up(stack: str) -> Result:
        # A runner that raises is a failed tenant, not a crashed rollout: others are still running.
        try:
            return runner.up(stack)
        except Exception as exc:  # noqa: BLE001
            return Result(stack, ok=False, message=f"{type(exc).__name__}: {exc}")

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        while pending or running:
            # Start work only into free slots, never queue it: a queued stack would still start
            # after a violation is known.
            while pending and len(running) < jobs and not any(r.violations for r in results):
                stack = pending.pop(0)
                log(f"starting {stack}")
                running.add(pool.submit(up, stack))
            if not running:
                break
            done, running = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                result = future.result()
                log(f"{result.stack}: {result.status}")
                results.append(result)
    return Rollout(results, pending)


class OfflineRunner:
    """`up` without a cloud: plan the tenant offline against the cell's outputs and run `check`
    on the plan in place of the policy pack. It drives roll_out exactly as AutomationRunner does."""

    def __init__(self, tenants: Mapping[str, dict[str, str]], cell_outputs: dict[str, Any], check: Check, project: str) -> None:
        self.tenants, self.cell_outputs, self.check, self.project = tenants, cell_outputs, check, project
        # The Pulumi runtime's settings are process-wide, so plans run one at a time; roll_out's
        # concurrency (scheduling, the bound, the stop) is unchanged around them.
        self._lock = threading.Lock()

    def up(self, stack: str) -> Result:
        from infra.program import main

        config = self.tenants[stack]
        try:
            with self._lock:
                plan = run_program(main, project=self.project, stack=stack, config=config, stack_references={config["perfloop:cell"]: self.cell_outputs})
        except ConfigError as exc:
            return Result(stack, ok=False, message=str(exc))
        violations = tuple(self.check(plan))
        return Result(stack, ok=not violations, violations=violations, message="policy check failed" if violations else "")


# The CLI's rendering of a mandatory violation: "[mandatory]  policy (type: name)" in the
# Policies section (current CLIs), "mandatory: [policy] message" under Diagnostics (older ones).
_MANDATORY_TEXT = re.compile(r"\[mandatory\]|^\s*mandatory:")
# An `error: …` line of the CLI, also where CommandError's text glues it to " stderr: ".
_ERROR_LINE = re.compile(r"\berror: .*")


class AutomationRunner:
    """A real update of one tenant: `pulumi preview` then `pulumi up`, both with the policy packs,
    through the Automation API, in the project directory (stack files come from stackConfigDir).

    The preview comes first because `up` (which the Automation API runs with --skip-preview)
    checks stack policies only after the resources are changed; a preview checks them all before
    anything changes, so a violating tenant is stopped untouched."""

    def __init__(self, root: Path, policy_packs: Sequence[Path], log: Callable[[str], None]) -> None:
        from pulumi import automation as auto

        try:
            self._command = auto.PulumiCommand()  # finds `pulumi` on PATH and checks its version, once
        except FileNotFoundError:
            raise ConfigError("environment", ["the Pulumi CLI (`pulumi`) is not on PATH; install it (runbooks/fleet.md, Prerequisites)"]) from None
        except auto.InvalidVersionError as exc:
            raise ConfigError("environment", [f"the Pulumi CLI is too old for this SDK: {exc}"]) from None
        self._root, self._packs, self._log = root, [str(p) for p in policy_packs], log
        # `select_stack` runs `pulumi stack select`, which rewrites the workspace's selected-stack
        # file; one at a time, so concurrent selects cannot tear it. preview and up name their
        # stack explicitly and run concurrently.
        self._select = threading.Lock()

    def up(self, stack: str) -> Result:
        from pulumi import automation as auto

        violations: list[str] = []

        def on_event(event: Any) -> None:
            policy = event.policy_event
            if policy is not None and policy.enforcement_level == "mandatory":
                where = f" on {policy.resource_urn}" if policy.resource_urn else ""
                violations.append(f"{policy.policy_pack_name}/{policy.policy_name}{where}: {policy.message.strip()}")

        def on_output(line: str) -> None:
            self._log(f"[{stack}] {line.rstrip()}")

        options = dict(on_output=on_output, on_event=on_event, policy_packs=self._packs, color="never")
        try:
            with self._select:
                target = auto.select_stack(stack_name=stack, work_dir=str(self._root), opts=auto.LocalWorkspaceOptions(pulumi_command=self._command))
            target.preview(**options)
            if not violations:
                target.up(**options)
        except auto.CommandError as exc:
            text = str(exc)
            if not violations:  # no structured event (an older CLI): the output names the policy
                violations = [line.strip() for line in text.splitlines() if _MANDATORY_TEXT.search(line)]
            return Result(stack, ok=False, violations=tuple(violations), message=_error_summary(text))
        if violations:  # a mandatory violation in a preview that still exited 0
            return Result(stack, ok=False, violations=tuple(violations), message="preview found a mandatory policy violation; not updated")
        return Result(stack, ok=True)


def _error_summary(text: str) -> str:
    """The CLI's own `error:` lines from a failed command (its full output went to the log)."""
    errors = list(dict.fromkeys(m.group(0).strip() for m in _ERROR_LINE.finditer(text)))
    summary = "; ".join(errors) if errors else next((l.strip() for l in reversed(text.splitlines()) if l.strip()), "pulumi failed")
    return summary if len(summary) <= 400 else summary[:397] + "..."


# --- the command -------------------------------------------------------------------------------

def register(subparsers: argparse._SubParsersAction, evaluate: Optional[Evaluate] = None) -> None:
    """Add `fleet plan` and `fleet up` to the `perfloop-platform` parser's subcommands.
    `evaluate` fills the CLAIMS column of `fleet plan` (a plan → (holding, total))."""
    fleet = subparsers.add_parser(
        "fleet",
        help="plan or update every tenant stack of a cell",
        description="Work on all tenant stacks of one cell: the stacks/Pulumi.*.yaml whose perfloop:cell names it.",
    )
    commands = fleet.add_subparsers(dest="fleet_command", required=True)
    plan = commands.add_parser(
        "plan",
        help="plan every tenant of a cell offline, in parallel, and summarise the fleet",
        description="Plan the cell once, then every tenant offline in parallel. Prints per tenant: resources, "
        "slow (cell-only) resources, claims holding and changes since the plan in --out. Exit 2 if a tenant "
        "does not plan, 1 if two tenants claim one workspace id or a tenant holds a slow resource.",
    )
    plan.add_argument("--cell", required=True, help="the cell's stack name")
    plan.add_argument("--out", type=Path, help="write <stack>.json per tenant and fleet-summary.json here; changes are against what is there")
    plan.add_argument("--jobs", type=_count(1), default=os.cpu_count() or 1, help="worker processes (default: CPU count)")
    plan.add_argument("--generated", type=_count(0), default=0, metavar="N", help="add N synthetic tenants (gen-00001, …) for scale runs")
    plan.set_defaults(handler=functools.partial(_plan_command, evaluate=evaluate))
    up = commands.add_parser(
        "up",
        help="run `pulumi up` for every tenant of a cell (real cloud; see runbooks/fleet.md)",
        description="Preview and update every tenant of the cell through the Pulumi Automation API, at most --jobs "
        "at once, in stack-name order. After the first mandatory policy violation no further tenant is started. "
        "The cell itself is never updated here: `pulumi up -s <cell>` first.",
    )
    up.add_argument("--cell", required=True, help="the cell's stack name")
    up.add_argument("--jobs", type=_count(1), default=DEFAULT_UP_JOBS, help=f"tenants updated at once (default: {DEFAULT_UP_JOBS})")
    up.add_argument("--policy-pack", type=Path, action="append", default=[], help="a local policy pack directory (repeatable), e.g. policies/pack")
    up.set_defaults(handler=_up_command)


def _count(minimum: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{value} is below {minimum}")
        return value

    return parse


def _plan_command(args: argparse.Namespace, evaluate: Optional[Evaluate]) -> int:
    fleet = plan_fleet(args.cell, out_dir=args.out, jobs=args.jobs, generated=args.generated, evaluate=evaluate)
    sys.stdout.write(fleet.render())
    if args.out is not None:
        sys.stdout.write(f"plans and {SUMMARY_FILE} written to {args.out}\n")
    sys.stderr.write(f"{len(fleet.rows) + len(fleet.failures)} tenants in {fleet.seconds:.1f} s with {args.jobs} jobs\n")
    return fleet.exit_code()


def _up_command(args: argparse.Namespace) -> int:
    layout = find_project()
    check_cell(layout, args.cell)
    tenants, unreadable = tenant_stacks(layout, args.cell)
    if unreadable:  # before anything changes: an unreadable file may be one of this cell's tenants
        raise ConfigError("stack files", [f"{f.stack}: {f.message}" for f in unreadable])
    packs = [p.resolve() for p in args.policy_pack]
    missing = [str(p) for p in packs if not (p / "PulumiPolicy.yaml").is_file()]
    if missing:
        raise ConfigError("--policy-pack", [f"{p}: not a policy pack directory (no PulumiPolicy.yaml)" for p in missing])
    output = threading.Lock()

    def log(line: str) -> None:
        with output:
            sys.stderr.write(line + "\n")
            sys.stderr.flush()

    runner = AutomationRunner(layout.root, packs, log)
    rollout = roll_out(sorted(tenants), runner, args.jobs, log)
    sys.stdout.write(rollout.render(args.cell))
    return rollout.exit_code()
