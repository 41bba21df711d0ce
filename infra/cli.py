"""`perfloop-platform`: the offline plan, the claims check, evidence bundles and fleet roll-outs."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Optional, Sequence

from infra.errors import ConfigError

DEFAULT_STACK = "byoc-example"


def _plan(args: argparse.Namespace) -> int:
    from infra.engine import plan_stack
    from infra.evidence.ledger import build_ledger, render_ledger
    from infra.evidence.view import from_plan
    from infra.k8s.analysis import reachability, render_reachability
    from infra.plan_view import render_tree

    started = time.perf_counter()
    plan = plan_stack(args.stack)
    elapsed = time.perf_counter() - started
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(plan.dumps())
    views = {
        "tree": lambda: render_tree(plan),
        "network": lambda: render_reachability(reachability(plan.resources)),
        "grants": lambda: render_ledger(build_ledger(from_plan(plan))),
    }
    sys.stdout.write(views[args.show]())
    if args.out:
        sys.stdout.write(f"plan written to {args.out}\n")
    if args.timing:
        sys.stderr.write(f"offline plan of {args.stack}: {elapsed:.2f} s\n")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="perfloop-platform",
        description="Build, check and prove the Perfloop platform on Google Cloud. "
        "Every command but `fleet up` runs offline: no credentials, no network.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    plan = sub.add_parser(
        "plan",
        help="run the Pulumi program offline and show what `pulumi up` would create",
        description="Run the unchanged Pulumi program in-process under a mock engine with the stack's "
        "config (stacks/Pulumi.<stack>.yaml). Prints the resource tree; --out writes the "
        "machine-readable plan (URN, type, name, parent, inputs, dependencies, protect of every resource).",
    )
    plan.add_argument("--stack", "-s", default=DEFAULT_STACK, help=f"stack name (default: {DEFAULT_STACK})")
    plan.add_argument("--out", "-o", help="write the plan JSON here")
    plan.add_argument(
        "--show",
        choices=("tree", "network", "grants"),
        default="tree",
        help="tree: resources and key settings; network: reachability derived from the NetworkPolicies "
        "(who may connect to whom, on which port, who reaches the internet); grants: per identity, every "
        "RBAC permission, GCP role, readable secret, database role and network edge",
    )
    plan.add_argument("--timing", action="store_true", help="report the plan's wall time on stderr")
    plan.set_defaults(handler=_plan)
    from infra.evidence.cli import claims_summary, register as register_evidence
    from infra.fleet import register as register_fleet

    register_evidence(sub)
    register_fleet(sub, evaluate=claims_summary)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except ConfigError as exc:
        sys.stderr.write(f"perfloop-platform: {exc}\n")
        return 2


if __name__ == "__main__":
    sys.exit(main())
