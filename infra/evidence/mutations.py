"""The mutation suite (`policies/mutations.yaml`): single-setting edits of a plan, each of which
must turn the claim it names from `holds` to `violated`. A claim whose checks miss a mutation
proves less than it says; the mutation score is the share of mutations caught.

A mutation is one edit of one resource's inputs at an RFC 6901 pointer (`set`, `remove`,
`append` to an array), the removal of one resource's Pulumi `protect` flag (`unprotect`), or one
added resource. `${project}` and `${region}` in values stand for
the stack's own, so the suite runs against any BYOC stack's plan.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Optional

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from infra.errors import ConfigError
from infra.evidence.claims import VIOLATED, ClaimResult, evaluate, load_claims
from infra.evidence.view import STACK_TYPE, from_plan_json, split_pointer

MUTATIONS_PATH = Path(__file__).resolve().parents[2] / "policies" / "mutations.yaml"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Target(_Model):
    type: str
    name: str


class Added(_Model):
    type: str
    name: str
    inputs: dict[str, Any]
    protect: bool = False


class Mutation(_Model):
    id: str = Field(pattern=r"^[a-z0-9][a-z0-9-]+$")
    claim: str
    description: str
    resource: Optional[Target] = None
    op: Optional[Literal["set", "remove", "append", "unprotect"]] = None
    path: Optional[str] = None
    value: Any = None
    add: Optional[Added] = None

    @model_validator(mode="after")
    def _one_edit(self) -> "Mutation":
        edit = self.resource is not None and self.op is not None and (self.path is not None) == (self.op != "unprotect")
        if edit == (self.add is not None):
            raise ValueError("a mutation is either an edit (resource, op, path[, value]; no path for unprotect) or an added resource (add), exactly one")
        return self


class MutationSuite(_Model):
    mutations: list[Mutation] = Field(min_length=1)


def load_mutations(path: Path = MUTATIONS_PATH) -> list[Mutation]:
    source = f"mutation suite {path.name}"
    try:
        suite = MutationSuite.model_validate(yaml.safe_load(path.read_text()))
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(source, [str(exc)]) from None
    except ValidationError as exc:
        raise ConfigError(source, [f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()]) from None
    problems = []
    ids = [m.id for m in suite.mutations]
    problems += [f"duplicate mutation id {i!r}" for i in sorted({i for i in ids if ids.count(i) > 1})]
    known = {c.id for c in load_claims()}
    problems += [f"{m.id}: names unknown claim {m.claim!r}" for m in suite.mutations if m.claim not in known]
    if problems:
        raise ConfigError(source, problems)
    return suite.mutations


def _substitute(value: Any, names: dict[str, str]) -> Any:
    if isinstance(value, str):
        for key, text in names.items():
            value = value.replace("${" + key + "}", text)
        return value
    if isinstance(value, dict):
        return {k: _substitute(v, names) for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute(v, names) for v in value]
    return value


def _edit(inputs: dict[str, Any], op: str, ptr: str, value: Any) -> None:
    """Apply one edit in place; a pointer that does not fit the document is an error, so a
    mutation can never silently do nothing."""
    parts = split_pointer(ptr)
    parent: Any = inputs
    for part in parts[:-1]:
        parent = parent[int(part)] if isinstance(parent, list) else parent[part]
    last = parts[-1]
    if op == "append":
        target = parent[int(last)] if isinstance(parent, list) else parent[last]
        if not isinstance(target, list):
            raise ValueError(f"{ptr} is not an array")
        target.append(value)
    elif op == "remove":
        del parent[int(last) if isinstance(parent, list) else last]
    elif isinstance(parent, list):
        parent[int(last)] = value
    else:
        parent[last] = value


def apply(plan: dict[str, Any], mutation: Mutation) -> dict[str, Any]:
    """A mutated copy of a plan document (`Plan.to_json()`)."""
    mutated = copy.deepcopy(plan)
    names = {"project": str(plan["outputs"].get("project")), "region": str(plan["outputs"].get("region"))}
    if mutation.add is not None:
        add = mutation.add
        provider = next((r["urn"] for r in plan["resources"] if r["type"] == "pulumi:providers:gcp"), "")
        stack = next((r["urn"] for r in plan["resources"] if r["type"] == STACK_TYPE), "")
        mutated["resources"].append(
            {
                "urn": f"urn:pulumi:{plan['stack']}::{plan['project']}::{add.type}::{add.name}",
                "type": add.type,
                "name": add.name,
                "parent": stack,
                "custom": True,
                "provider": provider if add.type.startswith("gcp:") else "",
                "protect": add.protect,
                "dependencies": [],
                "inputs": _substitute(add.inputs, names),
            }
        )
        return mutated
    target = mutation.resource
    matches = [r for r in mutated["resources"] if r["type"] == target.type and r["name"] == target.name]
    if len(matches) != 1:
        raise ConfigError(f"mutation {mutation.id}", [f"expected one {target.type} named {target.name!r}, found {len(matches)}"])
    if mutation.op == "unprotect":
        matches[0]["protect"] = False
        return mutated
    try:
        _edit(matches[0]["inputs"], mutation.op, mutation.path, _substitute(mutation.value, names))
    except (KeyError, IndexError, ValueError, TypeError) as exc:
        raise ConfigError(f"mutation {mutation.id}", [f"{mutation.op} {mutation.path} does not fit {target.name!r}: {exc!r}"]) from None
    return mutated


@dataclass(frozen=True)
class MutationResult:
    mutation: Mutation
    result: ClaimResult

    @property
    def caught(self) -> bool:
        return self.result.status == VIOLATED


def run_suite(plan: dict[str, Any], mutations: Optional[list[Mutation]] = None) -> list[MutationResult]:
    """Each mutation applied alone to `plan`, and its claim evaluated on the result."""
    claims = {c.id: c for c in load_claims()}
    results = []
    for m in mutations if mutations is not None else load_mutations():
        view = from_plan_json(apply(plan, m))
        results.append(MutationResult(m, evaluate(view, (claims[m.claim],))[0]))
    return results


def score(results: list[MutationResult]) -> float:
    return sum(r.caught for r in results) / len(results) if results else 0.0


def render(results: list[MutationResult]) -> str:
    lines = [f"{'mutation':40} {'claim':11} {'result':8} evidence"]
    for r in results:
        # The resource setting that broke, rather than a stack-level summary, where there is one.
        failing = sorted((f for c in r.result.checks for f in c.findings if not f.ok), key=lambda f: f"::{STACK_TYPE}::" in f.urn)
        failing = failing[0] if failing else None
        where = f"{failing.urn.rsplit('::', 1)[-1]} {failing.path or '(resource)'}" if failing else r.result.status
        lines.append(f"{r.mutation.id:40} {r.mutation.claim:11} {'caught' if r.caught else 'MISSED':8} {where}")
    caught = sum(r.caught for r in results)
    lines.append(f"mutation score: {caught}/{len(results)} ({score(results):.0%})")
    return "\n".join(lines) + "\n"
