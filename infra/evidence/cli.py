"""The `check` and `evidence` subcommands of `perfloop-platform`, added with `register(subparsers)`.

    check --stack NAME                 claims on the offline plan; exit 1 if any is violated
    check --stack NAME --mutations     the mutation suite; exit 1 below a 100% score
    evidence --stack NAME --out DIR    the evidence bundle of the offline plan
    evidence --state EXPORT --out DIR  ... of a `pulumi stack export` (version 3)
             [--signing-key PATH]      Ed25519 (PEM, or raw/hex seed); writes manifest.sig and the public key
    evidence diff A B                  compare two bundles; exit 1 on a regression
    evidence verify DIR [--public-key PATH]   check the manifest (and signature); exit 1 if not intact

Bad input raises ConfigError, which `perfloop-platform` reports in one message with exit code 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

DEFAULT_STACK = "byoc-example"


def _table(results) -> str:
    from infra.evidence.view import ABSENT, thaw

    lines = [f"{'claim':11} {'status':15} title"]
    for r in results:
        lines.append(f"{r.claim.id:11} {r.status:15} {r.claim.title}")
        if r.status != "holds" and r.reason:
            lines.append(f"{'':27} {r.reason}")
        for c in r.checks:
            for f in c.findings:
                if not f.ok:
                    actual = "(absent)" if f.actual is ABSENT else json.dumps(thaw(f.actual), sort_keys=True)
                    lines.append(f"{'':27} ✗ {f.urn} {f.path or '(resource)'} = {actual}; required {f.required}")
        if r.loosenings:
            lines.append(f"{'':27} loosened: {', '.join(r.loosenings)}")
    counts = {s: sum(r.status == s for r in results) for s in ("holds", "violated", "not-applicable", "not-assessed")}
    lines.append(", ".join(f"{n} {s}" for s, n in counts.items()))
    return "\n".join(lines) + "\n"


def _check(args: argparse.Namespace) -> int:
    if args.mutations:
        from infra.engine import plan_stack
        from infra.evidence.mutations import render, run_suite, score

        results = run_suite(plan_stack(args.stack).to_json())
        sys.stdout.write(render(results))
        return 0 if score(results) == 1.0 else 1
    from infra.evidence.claims import VIOLATED, evaluate
    from infra.evidence.view import plan_view

    results = evaluate(plan_view(args.stack))
    sys.stdout.write(_table(results))
    return 1 if any(r.status == VIOLATED for r in results) else 0


def claims_summary(plan) -> tuple[int, int]:
    """(claims holding, claims that apply) on one stack's plan alone — the fleet's CLAIMS column.
    A tenant's plan alone leaves the cell's part not applicable; `check --stack` judges a tenant
    with its cell."""
    from infra.evidence.claims import CLAIM_NOT_APPLICABLE, HOLDS, evaluate
    from infra.evidence.view import from_plan

    results = [r for r in evaluate(from_plan(plan)) if r.status != CLAIM_NOT_APPLICABLE]
    return sum(r.status == HOLDS for r in results), len(results)


def _evidence(args: argparse.Namespace) -> int:
    from infra.errors import ConfigError
    from infra.evidence.bundle import evidence_document, load_signing_key, plan_source, state_source, write_bundle

    if bool(args.stack) == bool(args.state) or not args.out:
        raise ConfigError("evidence command", ["give --out DIR and exactly one of --stack NAME or --state EXPORT.json (or use `evidence diff A B` / `evidence verify DIR`)"])
    key = load_signing_key(Path(args.signing_key)) if args.signing_key else None
    view, source = state_source(Path(args.state)) if args.state else plan_source(args.stack)
    evidence = evidence_document(view, source)
    written = write_bundle(evidence, Path(args.out), key)
    summary = ", ".join(f"{n} {s}" for s, n in evidence["summary"].items())
    sys.stdout.write(f"evidence of {source.kind} {source.project}/{source.stack}: {summary}\n")
    sys.stdout.writelines(f"  {p}\n" for p in written)
    return 0


def _diff(args: argparse.Namespace) -> int:
    from infra.evidence.bundle import diff, load_evidence, render_diff

    result = diff(load_evidence(Path(args.before)), load_evidence(Path(args.after)))
    sys.stdout.write(render_diff(result))
    return 1 if result["regressions"] else 0


def _verify(args: argparse.Namespace) -> int:
    from infra.evidence.bundle import load_public_key, verify_bundle

    problems = verify_bundle(Path(args.bundle), load_public_key(Path(args.public_key)) if args.public_key else None)
    sys.stdout.write("".join(f"{p}\n" for p in problems) or f"{args.bundle}: intact\n")
    return 1 if problems else 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `check` and `evidence` to the `perfloop-platform` command's subparsers."""
    check = subparsers.add_parser(
        "check",
        help="evaluate the security page's claims on the offline plan",
        description="Run the stack's program offline and evaluate every claim of policies/claims.yaml against it. "
        "Prints one line per claim and every failing setting (URN, JSON pointer, value, requirement). "
        "Exit 1 if any claim is violated.",
    )
    check.add_argument("--stack", "-s", default=DEFAULT_STACK, help=f"stack name (default: {DEFAULT_STACK})")
    check.add_argument("--mutations", action="store_true", help="run the mutation suite (policies/mutations.yaml) instead and report its score")
    check.set_defaults(handler=_check)

    evidence = subparsers.add_parser(
        "evidence",
        help="write, compare or verify an evidence bundle",
        description="Write the evidence bundle (evidence.json, OSCAL assessment results, reports, manifest) "
        "of the offline plan (--stack) or of a `pulumi stack export` (--state). Secret values are redacted "
        "before anything is written; the same input at the same commit gives byte-identical files.",
    )
    evidence.add_argument("--stack", "-s", help="evidence of this stack's offline plan")
    evidence.add_argument("--state", help="evidence of this `pulumi stack export` file (deployment version 3)")
    evidence.add_argument("--out", "-o", help="bundle directory")
    evidence.add_argument("--signing-key", help="Ed25519 private key (PEM, or raw/hex 32 bytes) to sign manifest.json with")
    evidence.set_defaults(handler=_evidence)
    actions = evidence.add_subparsers(dest="action")
    compare = actions.add_parser("diff", help="compare two bundles; exit 1 if a claim that held no longer does")
    compare.add_argument("before", help="bundle directory (or its evidence.json)")
    compare.add_argument("after", help="bundle directory (or its evidence.json)")
    compare.set_defaults(handler=_diff)
    verify = actions.add_parser("verify", help="check a bundle against its manifest and signature")
    verify.add_argument("bundle", help="bundle directory")
    verify.add_argument("--public-key", help="the signer's Ed25519 public key (PEM or raw); without it the bundled key proves integrity only")
    verify.set_defaults(handler=_verify)
