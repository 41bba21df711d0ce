"""Shared fixtures: offline plans of the example stacks, and of variants of them."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Callable

import pytest
import yaml

from infra.engine import Plan, find_project, plan_stack, run_program, wire_config

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def layout():
    return find_project(ROOT)


@pytest.fixture(scope="session")
def byoc_plan(layout) -> Plan:
    return plan_stack("byoc-example", layout)


def stack_config(layout, stack: str = "byoc-example") -> dict[str, Any]:
    return yaml.safe_load(layout.stack_file(stack).read_text())["config"]


@pytest.fixture
def plan_variant(layout) -> Callable[..., Plan]:
    """Plan byoc-example with some config changed: plan_variant(lambda cfg: cfg[...] = ...)."""
    from infra.program import main

    def run(mutate: Callable[[dict[str, Any]], None], stack: str = "byoc-example") -> Plan:
        config = copy.deepcopy(stack_config(layout, stack))
        mutate(config)
        return run_program(main, project=layout.name, stack=stack, config=wire_config(config))

    return run


def one(plan: Plan, type_: str, name: str | None = None):
    matches = [r for r in plan.resources if r.type == type_ and (name is None or r.name == name)]
    assert len(matches) == 1, f"expected one {type_} {name or ''}, found {[m.name for m in matches]}"
    return matches[0]
