"""The claims catalogue (`policies/claims.yaml`) and its evaluation against a stack view.

A claim holds iff every one of its checks passes (checks that do not apply are skipped, with
their reason); it is violated if any fails; not-applicable if none applies; not-assessed while
its checks await a layer still being built (never `holds` by default).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal, Optional

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from infra.config import Loosening
from infra.errors import ConfigError
from infra.evidence import kubernetes_checks  # noqa: F401  (registers the Kubernetes layer's checks)
from infra.evidence import egress_checks  # noqa: F401  (registers the egress policy layer's checks)
from infra.evidence.policies import CHECKS, FAIL, NOT_APPLICABLE, CheckResult, run_check
from infra.evidence.view import StackView, contains_unknown

CLAIMS_PATH = Path(__file__).resolve().parents[2] / "policies" / "claims.yaml"

# SOC 2 Trust Services Criteria identifiers: common criteria and the additional categories.
_TSC = re.compile(r"^(CC[1-9]\.\d|A1\.\d|C1\.\d|PI1\.\d|P[1-8]\.\d)$")

HOLDS, VIOLATED, CLAIM_NOT_APPLICABLE, NOT_ASSESSED = "holds", "violated", "not-applicable", "not-assessed"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Enforcement(_Model):
    kind: Literal["source-permission", "audited-policy"]
    mechanism: Literal["iam", "rbac", "network", "configuration", "database", "proxy-policy", "connector-policy"]
    how: str = Field(min_length=1)


class PendingCheck(_Model):
    name: str = Field(pattern=r"^[a-z][a-z0-9_]+$")
    needs: str = Field(min_length=1)


class Awaiting(_Model):
    layer: Literal["kubernetes", "egress-policy"]
    checks: list[PendingCheck] = Field(min_length=1)


class Claim(_Model):
    id: str = Field(pattern=r"^PF-[A-Z]+-\d{2}$")
    title: str = Field(min_length=1)
    quote: str = Field(min_length=1)
    enforcement: Enforcement
    tsc: list[str] = Field(min_length=1)
    weakened_by: list[Loosening] = []
    checks: list[str] = []
    awaiting: Optional[Awaiting] = None

    @model_validator(mode="after")
    def _proven_or_awaiting(self) -> "Claim":
        if bool(self.checks) == (self.awaiting is not None):
            raise ValueError("a claim has either `checks` (implemented) or `awaiting` (checks to come), exactly one")
        unknown = [c for c in self.checks if c not in CHECKS]
        if unknown:
            raise ValueError(f"checks {unknown} do not exist in infra/evidence/policies.py")
        bad = [t for t in self.tsc if not _TSC.match(t)]
        if bad:
            raise ValueError(f"{bad} are not SOC 2 Trust Services Criteria (e.g. CC6.1, C1.1)")
        return self


class ClaimsCatalogue(_Model):
    claims: list[Claim] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique(self) -> "ClaimsCatalogue":
        ids = [c.id for c in self.claims]
        duplicates = sorted({i for i in ids if ids.count(i) > 1})
        if duplicates:
            raise ValueError(f"duplicate claim IDs {duplicates}")
        return self


@lru_cache(maxsize=4)
def load_claims(path: Path = CLAIMS_PATH) -> tuple[Claim, ...]:
    source = f"claims catalogue {path.name}"
    try:
        return tuple(ClaimsCatalogue.model_validate(yaml.safe_load(path.read_text())).claims)
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(source, [str(exc)]) from None
    except ValidationError as exc:
        raise ConfigError(source, [f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()]) from None


@dataclass(frozen=True)
class ClaimResult:
    claim: Claim
    status: str
    reason: str
    checks: tuple[CheckResult, ...]
    loosenings: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        c = self.claim
        return {
            "id": c.id,
            "title": c.title,
            "quote": c.quote,
            "enforcement": c.enforcement.model_dump(),
            "tsc": list(c.tsc),
            "status": self.status,
            "reason": self.reason,
            "loosenings": list(self.loosenings),
            "resources": sorted({f.urn for r in self.checks for f in r.findings if f.urn}),
            "checks": [r.to_json() for r in self.checks],
            "awaiting": c.awaiting.model_dump() if c.awaiting else None,
        }


def _in_effect(view: StackView) -> set[str]:
    declared = view.output("loosenings")
    return set(declared) if isinstance(declared, tuple) and not contains_unknown(declared) else set()


def evaluate(view: StackView, claims: Optional[tuple[Claim, ...]] = None) -> list[ClaimResult]:
    """Every claim's status on `view`. Checks shared by claims run once."""
    claims = claims if claims is not None else load_claims()
    results: dict[str, CheckResult] = {}
    declared = _in_effect(view)
    out = []
    for claim in claims:
        if claim.awaiting:
            names = ", ".join(p.name for p in claim.awaiting.checks)
            out.append(ClaimResult(claim, NOT_ASSESSED, f"awaiting the {claim.awaiting.layer} layer: {names}", (), ()))
            continue
        checks = tuple(results.setdefault(name, run_check(name, view)) for name in claim.checks)
        loosenings = {l.value for l in claim.weakened_by} & declared | {l for r in checks for l in r.loosenings}
        failed = [r.check for r in checks if r.status == FAIL]
        applicable = [r for r in checks if r.status != NOT_APPLICABLE]
        if failed:
            status, reason = VIOLATED, "failed: " + ", ".join(failed)
        elif not applicable:
            status, reason = CLAIM_NOT_APPLICABLE, "; ".join(dict.fromkeys(r.reason for r in checks))
        else:
            status = HOLDS
            reason = "; ".join(f"{r.check} not applicable: {r.reason}" for r in checks if r.status == NOT_APPLICABLE)
        out.append(ClaimResult(claim, status, reason, checks, tuple(sorted(loosenings))))
    return out
