"""The offline engine: runs the unchanged Pulumi program in-process under Pulumi's mock runtime and
records what `pulumi up` would register, with no credentials and no network.

The program is driven exactly as the Python language host drives it — `run_in_stack(program)` on
an event loop — against a monitor that records every registration (type, name, parent, inputs,
dependencies, provider, protect) and answers with deterministic, clearly marked computed values.
"""

from __future__ import annotations

import asyncio
import json
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import yaml
from google.protobuf import json_format
from pulumi.runtime import mocks, settings
from pulumi.runtime.config import set_all_config
from pulumi.runtime.stack import run_in_stack

from infra.errors import ConfigError

PLAN_FORMAT = "perfloop-plan/v1"
# A value the cloud computes on creation; the plan shows this instead of inventing one.
COMPUTED = "(known after apply)"

# Pulumi's wire signatures for special values.
_SIG = "4dabf18193072939515e22adb298388d"
_SECRET_SIG = "1b47061264138c4ac30d75fd1eb44270"
_RESOURCE_SIG = "5cf8f73096256a8f31e491e813e4eb8e"
_OUTPUT_SIG = "d0e6a833031e9bbcd3f4e8bde6ca49a4"
_UNKNOWN = "04da6b54-80e4-46f7-96ec-b56ff0331ba9"
REDACTED = "[secret]"


@dataclass
class PlannedResource:
    urn: str
    type: str
    name: str
    parent: str
    custom: bool
    provider: str
    protect: bool
    dependencies: list[str]
    inputs: dict[str, Any]
    outputs: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "urn": self.urn,
            "type": self.type,
            "name": self.name,
            "parent": self.parent,
            "custom": self.custom,
            "provider": self.provider,
            "protect": self.protect,
            "dependencies": self.dependencies,
            "inputs": self.inputs,
        }


@dataclass
class Plan:
    project: str
    stack: str
    config: dict[str, Any]
    resources: list[PlannedResource]
    outputs: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {
            "format": PLAN_FORMAT,
            "project": self.project,
            "stack": self.stack,
            "config": self.config,
            "outputs": self.outputs,
            "resources": [r.to_json() for r in self.resources],
        }

    def dumps(self) -> str:
        return json.dumps(self.to_json(), indent=2, sort_keys=True) + "\n"

    def by_type(self, type_: str) -> list[PlannedResource]:
        return [r for r in self.resources if r.type == type_]


def _plain(value: Any) -> Any:
    """Wire value → JSON, with secrets redacted, unknowns marked, resource references as URNs."""
    if isinstance(value, dict):
        sig = value.get(_SIG)
        if sig == _SECRET_SIG:
            return REDACTED
        if sig == _RESOURCE_SIG:
            return value.get("urn")
        if sig == _OUTPUT_SIG:
            if value.get("secret"):
                return REDACTED
            return _plain(value["value"]) if "value" in value else COMPUTED
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if value == _UNKNOWN:
        return COMPUTED
    if isinstance(value, float) and value.is_integer():
        return int(value)  # protobuf Struct numbers are doubles
    return value


def _computed_outputs(type_: str, name: str, inputs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """Deterministic stand-ins for what the provider would return: derived from the inputs where
    the cloud derives them (e-mail of a service account, resource paths), marked otherwise."""
    project = inputs.get("project", COMPUTED)
    outputs = dict(inputs)
    rid = f"{name}-id"
    if type_ == "gcp:serviceaccount/account:Account":
        email = f"{inputs['accountId']}@{project}.iam.gserviceaccount.com"
        rid = f"projects/{project}/serviceAccounts/{email}"
        outputs.update(email=email, name=rid, uniqueId=COMPUTED, member=f"serviceAccount:{email}")
    elif type_ == "gcp:compute/network:Network":
        rid = f"projects/{project}/global/networks/{inputs['name']}"
    elif type_ == "gcp:compute/subnetwork:Subnetwork":
        rid = f"projects/{project}/regions/{inputs['region']}/subnetworks/{inputs['name']}"
    elif type_ == "gcp:container/cluster:Cluster":
        rid = f"projects/{project}/locations/{inputs['location']}/clusters/{inputs['name']}"
        endpoints = inputs.get("controlPlaneEndpointsConfig", {})
        outputs.update(
            endpoint=COMPUTED,
            masterAuth={**inputs.get("masterAuth", {}), "clusterCaCertificate": COMPUTED},
            controlPlaneEndpointsConfig={
                **endpoints,
                "dnsEndpointConfig": {**endpoints.get("dnsEndpointConfig", {}), "endpoint": COMPUTED},
            },
        )
    elif type_ == "gcp:sql/databaseInstance:DatabaseInstance":
        outputs.update(
            connectionName=f"{project}:{inputs['region']}:{inputs['name']}",
            privateIpAddress=COMPUTED,
            ipAddresses=[],
        )
    elif type_ == "gcp:secretmanager/secret:Secret":
        rid = f"projects/{project}/secrets/{inputs['secretId']}"
        outputs.update(name=rid)
    elif type_ == "gcp:logging/projectBucketConfig:ProjectBucketConfig":
        rid = f"projects/{project}/locations/{inputs['location']}/buckets/{inputs['bucketId']}"
        outputs.update(name=rid)
    elif type_ == "gcp:logging/projectSink:ProjectSink":
        outputs.update(writerIdentity=COMPUTED)
    return rid, outputs


class _Mocks(mocks.Mocks):
    def __init__(self, stack_references: dict[str, dict[str, Any]]):
        self.stack_references = stack_references

    def new_resource(self, args: mocks.MockResourceArgs):
        if args.typ == "pulumi:pulumi:StackReference":
            stack = args.inputs["name"]
            if stack not in self.stack_references:
                raise ConfigError("stack reference", [f"stack {stack!r} is not known to the offline engine; plan it first or name a stack in stacks/"])
            return stack, {"name": stack, "outputs": self.stack_references[stack], "secretOutputNames": []}
        return _computed_outputs(args.typ, args.name, args.inputs)

    def call(self, args: mocks.MockCallArgs):
        raise ConfigError("program", [f"{args.token}: the program must not call provider functions (data sources) offline or online; pass values through config"])


class _RecordingMonitor(mocks.MockMonitor):
    """The mock monitor, plus a record of everything the engine would need for a real deployment."""

    def __init__(self, project: str, stack: str, stack_references: dict[str, dict[str, Any]]) -> None:
        super().__init__(_Mocks(stack_references))
        self._project, self._stack = project, stack
        self.records: dict[str, PlannedResource] = {}
        self.stack_outputs: dict[str, Any] = {}
        self.duplicate_urns: list[str] = []
        self._lock = threading.Lock()

    def make_urn(self, parent: str, type_: str, name: str) -> str:
        # As the Pulumi engine does: the type chain is the parent's whole qualified type, and the
        # root stack is not part of it. (The stock mock keeps only the parent's last type, which
        # lets two different resources share a URN.)
        if parent and parent.split("::")[2] != "pulumi:pulumi:Stack":
            type_ = parent.split("::")[2] + "$" + type_
        return "urn:pulumi:" + "::".join([self._stack, self._project, type_, name])

    def RegisterResource(self, request):
        response = super().RegisterResource(request)
        if response.urn in self.records and request.type != "pulumi:pulumi:Stack":
            self.duplicate_urns.append(response.urn)
        inputs = _plain(json_format.MessageToDict(request.object))
        record = PlannedResource(
            urn=response.urn,
            type=request.type,
            name=request.name,
            parent=request.parent,
            custom=bool(request.custom),
            # A provider reference is "<urn>::<id>"; the plan names the provider by URN.
            provider=request.provider.rsplit("::", 1)[0] if request.provider else "",
            protect=bool(request.protect),
            dependencies=sorted(set(request.dependencies)),
            inputs=inputs,
        )
        with self._lock:
            self.records[response.urn] = record
        return response

    def RegisterResourceOutputs(self, request):
        if request.urn.split("::")[2] == "pulumi:pulumi:Stack":
            with self._lock:
                self.stack_outputs = _plain(json_format.MessageToDict(request.outputs))
        return super().RegisterResourceOutputs(request)


def run_program(
    program: Callable[[], None],
    *,
    project: str,
    stack: str,
    config: dict[str, str],
    stack_references: Optional[dict[str, dict[str, Any]]] = None,
) -> Plan:
    """Run `program` as the language host would, against the recording mock monitor.
    `stack_references` holds the outputs of the stacks the program reads, by stack name."""
    set_all_config(config)
    monitor = _RecordingMonitor(project, stack, stack_references or {})
    # The runtime binds its futures to the current event loop, so the loop comes first.
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        mocks.set_mocks(monitor.mocks, project=project, stack=stack, preview=False, monitor=monitor)
        # set_mocks registered a root stack of its own; the real host's run_in_stack creates the
        # one that parents the program's resources and carries its exports.
        settings.ROOT.set(None)
        loop.run_until_complete(run_in_stack(program))
    finally:
        # The mock monitor answers on the loop's default executor; join its threads before
        # closing, so no thread outlives the run with a loop of its own.
        loop.run_until_complete(loop.shutdown_default_executor())
        asyncio.set_event_loop(None)
        loop.close()
    if monitor.duplicate_urns:
        raise ConfigError("program", [f"two resources share the URN {u}; the engine would refuse the deployment" for u in monitor.duplicate_urns])
    resources = sorted(monitor.records.values(), key=lambda r: r.urn)
    decoded = {k: _decode_config_value(v) for k, v in sorted(config.items())}
    return Plan(project, stack, decoded, resources, monitor.stack_outputs)


def _decode_config_value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


# --- stack files -------------------------------------------------------------------------------

@dataclass(frozen=True)
class ProjectLayout:
    root: Path
    name: str
    stack_dir: Path

    def stack_file(self, stack: str) -> Path:
        return self.stack_dir / f"Pulumi.{stack}.yaml"

    def stacks(self) -> list[str]:
        return sorted(p.name[len("Pulumi.") : -len(".yaml")] for p in self.stack_dir.glob("Pulumi.*.yaml"))


def find_project(start: Optional[Path] = None) -> ProjectLayout:
    """The Pulumi project around `start` (default: the working directory, else this package's)."""
    candidates = [start or Path.cwd(), Path(__file__).resolve().parent.parent]
    for base in candidates:
        for directory in [base, *base.parents]:
            project_file = directory / "Pulumi.yaml"
            if project_file.is_file():
                meta = yaml.safe_load(project_file.read_text())
                return ProjectLayout(directory, meta["name"], directory / meta.get("stackConfigDir", "."))
    raise ConfigError("project", ["no Pulumi.yaml found in the working directory or its parents; run from the project"])


def wire_config(values: dict[str, Any]) -> dict[str, str]:
    """Config values as the Pulumi CLI hands them to a program: strings, objects as JSON."""
    def encode(value: Any) -> str:
        if isinstance(value, (dict, list)):
            return json.dumps(value, sort_keys=True)
        if isinstance(value, bool):
            return "true" if value else "false"
        return str(value)

    return {key: encode(value) for key, value in values.items()}


def read_stack_file(layout: ProjectLayout, stack: str) -> dict[str, str]:
    path = layout.stack_file(stack)
    if not path.is_file():
        known = ", ".join(layout.stacks()) or "none"
        raise ConfigError(f"stack {stack!r}", [f"{path} does not exist; known stacks: {known}"])
    try:
        document = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"stack file {path.name}", [f"not valid YAML: {exc}"]) from None
    if not isinstance(document, dict) or not isinstance(document.get("config", {}), dict):
        raise ConfigError(f"stack file {path.name}", ["config: must be a mapping of `namespace:key: value`"])
    config = document.get("config") or {}
    secure = [k for k, v in config.items() if isinstance(v, dict) and "secure" in v]
    if secure:
        raise ConfigError(
            f"stack file {path.name}",
            [f"{k}: holds an encrypted value; secret values never go in stack config (they live in Secret Manager)" for k in secure],
        )
    return wire_config(config)


def referenced_cell(config: dict[str, str]) -> Optional[str]:
    """The cell stack a tenant's config names, as a stack name in this project's stacks/."""
    cell = config.get("perfloop:cell")
    return cell.rsplit("/", 1)[-1] if cell else None


def plan_stack(
    stack: str, layout: Optional[ProjectLayout] = None, cell_outputs: Optional[dict[str, Any]] = None
) -> Plan:
    """Offline plan of a stack file with the real program. A tenant's cell is planned first (or
    its outputs passed in, as the fleet does) and answers the tenant's StackReference."""
    from infra.program import main

    layout = layout or find_project()
    config = read_stack_file(layout, stack)
    references = {}
    cell = referenced_cell(config)
    if cell is not None:
        outputs = cell_outputs if cell_outputs is not None else plan_stack(cell, layout).outputs
        references[config["perfloop:cell"]] = outputs
    return run_program(main, project=layout.name, stack=stack, config=config, stack_references=references)
