"""The one view of a stack every check reads, whichever way the stack was captured.

Three sources, one shape:
- an offline plan (`infra.engine.plan_stack`, or its JSON), whose values are all known;
- a `pulumi stack export` (version 3), read from each resource's `inputs`, with the stack's exports
  taken from the `pulumi:pulumi:Stack` resource's `outputs`;
- the resources CrossGuard hands a StackValidationPolicy (`PolicyResource.props`), during preview
  or update.

Normalising makes the three comparable: every kind of unknown (the plan's marker, the engine's
unknown sentinels, pulumi-policy's typed sentinels) becomes `COMPUTED`, so a check can fail closed
on it; every secret becomes `REDACTED`, so no secret value can reach a report; integral numbers
become ints (protobuf hands CrossGuard doubles); the Terraform bridge's `__defaults` bookkeeping is
dropped. The result is frozen (mappings are read-only, lists are tuples): a check cannot alter what
the next check sees.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from types import MappingProxyType
from typing import Any, Iterable, Mapping

from pulumi_policy import Secret
from pulumi_policy import proxy as policy_proxy
from pulumi_policy import secret as policy_secret

from infra.engine import COMPUTED, REDACTED, Plan
from infra.errors import ConfigError

STACK_TYPE = "pulumi:pulumi:Stack"
STATE_VERSION = 3

# Pulumi's wire signature for special objects, and the one that marks a secret.
SIG_KEY = "4dabf18193072939515e22adb298388d"
SECRET_SIG = "1b47061264138c4ac30d75fd1eb44270"
# What the engine sends for a value not known until apply, and pulumi-policy's typed variants.
ENGINE_UNKNOWN = "04da6b54-80e4-46f7-96ec-b56ff0331ba9"
_UNKNOWNS = frozenset(
    {
        COMPUTED,
        ENGINE_UNKNOWN,
        policy_proxy.UNKNOWN_BOOLEAN_VALUE,
        policy_proxy.UNKNOWN_NUMBER_VALUE,
        policy_proxy.UNKNOWN_STRING_VALUE,
        policy_proxy.UNKNOWN_ARRAY_VALUE,
        policy_proxy.UNKNOWN_ASSET_VALUE,
        policy_proxy.UNKNOWN_ARCHIVE_VALUE,
        policy_proxy.UNKNOWN_OBJECT_VALUE,
    }
)
# Keys the Terraform bridge keeps in state to remember which inputs were defaulted; not settings.
_BOOKKEEPING = frozenset({"__defaults"})


class _Absent:
    """What a JSON pointer resolves to when the path does not exist (distinct from JSON null)."""

    _instance = None

    def __new__(cls):
        cls._instance = cls._instance or super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "ABSENT"


ABSENT: Any = _Absent()


# --- RFC 6901 JSON pointers ---------------------------------------------------------------------

def pointer(*parts: str | int) -> str:
    """The JSON pointer of a path: pointer("settings", "ipConfiguration", 0) == "/settings/ipConfiguration/0"."""
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in parts)


def split_pointer(ptr: str) -> list[str]:
    if ptr == "":
        return []
    if not ptr.startswith("/"):
        raise ValueError(f"{ptr!r} is not a JSON pointer (RFC 6901 pointers start with '/')")
    return [p.replace("~1", "/").replace("~0", "~") for p in ptr[1:].split("/")]


def resolve(document: Any, ptr: str) -> Any:
    """The value at `ptr`, or ABSENT. Array indices must be decimal without leading zeros."""
    value = document
    for part in split_pointer(ptr):
        if isinstance(value, Mapping):
            value = value.get(part, ABSENT)
        elif isinstance(value, (list, tuple)) and part.isdigit() and (part == "0" or not part.startswith("0")):
            value = value[int(part)] if int(part) < len(value) else ABSENT
        else:
            return ABSENT
        if value is ABSENT:
            return ABSENT
    return value


# --- normalisation ------------------------------------------------------------------------------

def is_unknown(value: Any) -> bool:
    return isinstance(value, str) and value in _UNKNOWNS


def contains_unknown(value: Any) -> bool:
    if isinstance(value, Mapping):
        return any(contains_unknown(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return any(contains_unknown(v) for v in value)
    return is_unknown(value)


def normalise(value: Any) -> Any:
    """Plain JSON with unknowns as COMPUTED and secrets as REDACTED (see the module docstring)."""
    if isinstance(value, Secret):
        return REDACTED
    if isinstance(value, (policy_proxy._DictProxy, policy_proxy._ListProxy, policy_secret._DictSecretsProxy, policy_secret._ListSecretsProxy)):
        return normalise(value["__target"])
    if isinstance(value, Mapping):
        if value.get(SIG_KEY) == SECRET_SIG:
            return REDACTED
        return {str(k): normalise(v) for k, v in value.items() if k not in _BOOKKEEPING}
    if isinstance(value, (list, tuple)):
        return [normalise(v) for v in value]
    if is_unknown(value):
        return COMPUTED
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    # Assets and archives: not settings any check reads; keep what they are, not what they hold.
    return f"({type(value).__name__})"


def freeze(value: Any) -> Any:
    if isinstance(value, Mapping):
        return MappingProxyType({k: freeze(v) for k, v in value.items()})
    if isinstance(value, (list, tuple)):
        return tuple(freeze(v) for v in value)
    return value


def thaw(value: Any) -> Any:
    """Frozen value → plain JSON (for reports)."""
    if isinstance(value, Mapping):
        return {k: thaw(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [thaw(v) for v in value]
    return value


# --- the view -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Resource:
    urn: str
    type: str
    parent: str
    provider: str  # the provider's URN; "" when the engine's default provider is used
    protect: bool
    inputs: Mapping[str, Any]

    def at(self, ptr: str) -> Any:
        return resolve(self.inputs, ptr)

    def to_json(self) -> dict[str, Any]:
        return {
            "urn": self.urn,
            "type": self.type,
            "parent": self.parent,
            "provider": self.provider,
            "protect": self.protect,
            "inputs": thaw(self.inputs),
        }


@dataclass(frozen=True)
class StackView:
    """The stack's resources by URN. The `pulumi:pulumi:Stack` resource has no inputs of its own;
    in the view its settings are the stack's exports (`outputs`), so that a finding about an
    export has a resource and a JSON pointer like any other."""

    source: str  # "plan" | "state" | "crossguard"
    resources: tuple[Resource, ...]

    @cached_property
    def by_urn(self) -> Mapping[str, Resource]:
        return MappingProxyType({r.urn: r for r in self.resources})

    @cached_property
    def stack_urn(self) -> str:
        return next((r.urn for r in self.resources if r.type == STACK_TYPE), "")

    @cached_property
    def outputs(self) -> Mapping[str, Any]:
        stack = self.by_urn.get(self.stack_urn)
        return stack.inputs if stack is not None else MappingProxyType({})

    def of_type(self, *types: str) -> list[Resource]:
        return [r for r in self.resources if r.type in types]

    def output(self, name: str) -> Any:
        return self.outputs.get(name, ABSENT)


def _resource(urn: str, type_: str, parent: str, provider: str, protect: bool, inputs: Any) -> Resource:
    return Resource(
        urn=urn,
        type=type_,
        parent=parent or "",
        provider=provider or "",
        protect=bool(protect),
        inputs=freeze(normalise(inputs or {})),
    )


def _view(source: str, resources: Iterable[Resource]) -> StackView:
    return StackView(source, tuple(sorted(resources, key=lambda r: r.urn)))


def from_plan(plan: Plan) -> StackView:
    return from_plan_json(plan.to_json())


def plan_view(stack: str) -> StackView:
    """The offline plan of a stack as a view; a tenant's view includes its cell's planned
    resources (but the tenant's own exports), since a tenant's promises are kept by the two
    together — its sandbox runs from the cell's template, behind the cell's proxy."""
    from infra.engine import find_project, plan_stack, read_stack_file, referenced_cell

    layout = find_project()
    cell = referenced_cell(read_stack_file(layout, stack))
    if cell is None:
        return from_plan(plan_stack(stack, layout))
    cell_plan = plan_stack(cell, layout)
    document = plan_stack(stack, layout, cell_outputs=cell_plan.outputs).to_json()
    own = {r["urn"] for r in document["resources"]}
    document["resources"] += [r for r in cell_plan.to_json()["resources"] if r["type"] != STACK_TYPE and r["urn"] not in own]
    return from_plan_json(document)


def from_plan_json(document: Mapping[str, Any]) -> StackView:
    resources = [
        _resource(
            r["urn"], r["type"], r.get("parent", ""), r.get("provider", ""), r.get("protect", False),
            document.get("outputs") if r["type"] == STACK_TYPE else r.get("inputs"),
        )
        for r in document["resources"]
    ]
    return _view("plan", resources)


def read_state(document: Any, source: str = "state export") -> StackView:
    """A view of a `pulumi stack export` (deployment version 3); anything else is a ConfigError
    naming what is wrong, never a traceback."""
    if not isinstance(document, dict):
        raise ConfigError(source, ["not a JSON object; expected the output of `pulumi stack export`"])
    problems = []
    if document.get("version") != STATE_VERSION:
        problems.append(f"version is {document.get('version')!r}; only deployment version {STATE_VERSION} (current Pulumi) is supported")
    deployment = document.get("deployment")
    if not isinstance(deployment, dict):
        problems.append("deployment: missing or not an object")
    elif not isinstance(deployment.get("resources", []), list):
        problems.append("deployment.resources: not a list")
    if problems:
        raise ConfigError(source, problems)
    records = deployment.get("resources") or []
    for i, r in enumerate(records):
        if not isinstance(r, dict) or not isinstance(r.get("urn"), str) or not isinstance(r.get("type"), str):
            problems.append(f"deployment.resources[{i}]: needs string `urn` and `type`")
        elif not isinstance(r.get("inputs", {}), dict) or not isinstance(r.get("outputs", {}), dict):
            problems.append(f"deployment.resources[{i}] ({r['urn']}): `inputs` and `outputs` must be objects")
    if not records:
        problems.append("deployment.resources: empty; the stack has never been deployed (nothing to prove)")
    if problems:
        raise ConfigError(source, problems)
    resources = [
        # A provider reference in state is "<urn>::<id>"; the view names the provider by URN.
        _resource(
            r["urn"], r["type"], r.get("parent", ""), (r.get("provider") or "").rsplit("::", 1)[0], r.get("protect", False),
            r.get("outputs") if r["type"] == STACK_TYPE else r.get("inputs"),
        )
        for r in records
    ]
    return _view("state", resources)


def from_policy_resources(resources: Iterable[Any]) -> StackView:
    """A view of CrossGuard's `StackValidationArgs.resources` (`PolicyResource` objects). Their
    `props` are the engine's view of each resource's outputs, which for these providers carry
    every input under the same name."""
    view_resources = [
        _resource(
            r.urn,
            r.resource_type,
            r.parent.urn if r.parent is not None else "",
            r.provider.urn if r.provider is not None else "",
            r.opts.protect,
            r.props,
        )
        for r in resources
    ]
    return _view("crossguard", view_resources)
