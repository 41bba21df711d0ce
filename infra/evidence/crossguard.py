"""The claims as a Pulumi CrossGuard policy pack: one MANDATORY stack policy per claim whose
checks exist, running the very functions `check` and `evidence` run offline.

Each policy sees every resource of the stack (`StackValidationPolicy`), so cross-resource claims
(a secret and its one accessor, a route and the tags of the pools) are judged whole. The
resources' properties are read through `view.from_policy_resources`, which unwraps
pulumi-policy's unknown-checking proxies: an unknown value during preview becomes a violation at
its path, where pulumi-policy itself would only raise `UnknownValueError` and downgrade the
policy to an advisory "can't run during preview" (fail open).
"""

from __future__ import annotations

import json
from typing import Optional

from pulumi_policy import EnforcementLevel, PolicyPack, ReportViolation, StackValidationArgs, StackValidationPolicy

from infra.evidence.claims import CLAIM_NOT_APPLICABLE, VIOLATED, Claim, evaluate, load_claims
from infra.evidence.view import ABSENT, from_policy_resources, thaw

PACK_NAME = "perfloop-claims"


def _validator(claim: Claim):
    def validate(args: StackValidationArgs, report_violation: ReportViolation) -> None:
        result = evaluate(from_policy_resources(args.resources), (claim,))[0]
        if result.status == VIOLATED:
            for check in result.checks:
                for f in check.findings:
                    if not f.ok:
                        actual = "absent" if f.actual is ABSENT else json.dumps(thaw(f.actual), sort_keys=True)
                        report_violation(f"{claim.id} {check.check}: {f.path or '(resource)'} = {actual}; required {f.required}", f.urn or None)
        elif result.status == CLAIM_NOT_APPLICABLE:
            args.not_applicable(result.reason)

    return validate


def policies(claims: Optional[tuple[Claim, ...]] = None) -> list[StackValidationPolicy]:
    """One policy per implemented claim, named by its ID; claims awaiting their checks have none."""
    return [
        StackValidationPolicy(
            name=claim.id,
            description=f"{claim.title}. \"{claim.quote}\"",
            validate=_validator(claim),
            enforcement_level=EnforcementLevel.MANDATORY,
            tags=list(claim.tsc),
        )
        for claim in (claims if claims is not None else load_claims())
        if claim.checks
    ]


def serve() -> None:
    """Start the pack (what `pulumi preview --policy-pack policies/pack` runs); serves until stopped."""
    PolicyPack(PACK_NAME, policies(), enforcement_level=EnforcementLevel.MANDATORY)
