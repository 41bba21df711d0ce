"""Checks for the claims the egress proxy's policy keeps, proven from what is deployed.

What the proxy runs is read back from the view, never from the repository:
- the ConfigMap `egress-policy` in the proxy's namespace holds every Rego module verbatim (keys
  `*.rego`), the cell's `data.perfloop` (`data.json`, with `workspaces: {}`) and the proxy's
  settings (`proxy.json`, DLP included);
- each workspace adds a registration ConfigMap `workspace-<id>` (same namespace, label
  `perfloop.ai/workspace-registration: "true"`) whose `workspace.json` holds its entry of
  `data.perfloop.workspaces`; the proxy assembles `data.perfloop` as the cell's data with
  `workspaces` = every registration's entry;
- each telemetry connector mounts its rendered configuration, `connector-<kind>-config`.

Anything missing, unknown (not known until apply), unparsable or not of the shape the proxy reads
(`policies/egress/data.schema.json`) is a violation at its URN and path, and nothing else is judged
on such a deployment (fail closed).

Each claim is then proven by evaluating probe requests on the real engine (regopy, through
`infra.egress_policy.evaluate`) with the deployed modules and data:
- probes generated from the deployed data: each workspace's repositories and connections;
- fixed adversarial probes: merge / approve / mark-ready / default-branch writes in REST and
  GraphQL form, smuggled through normalisation tricks; raw log reads; telemetry writes; model
  endpoints and never-destinations from every source; unknown hosts;
- positive controls (a write to the session's case branch, an aggregate read of a configured
  connection, ...), so that a policy that denies everything cannot pass as holding;
- where the deployed data has nothing to exercise (no logs connection, no traces connection, no
  platform source declaring a code host), the same deployed modules judge the deployed data plus
  synthetic probe workspaces and destinations (`SYNTHETIC_WORKSPACES`, `synthetic_destinations`),
  recorded as such: that proves what the deployed policy does for any such connection.

A probe's finding is anchored at the registration ConfigMap of the workspace it exercises (at the
`egress-policy` ConfigMap for synthetic and platform probes), path "", with the request and the
engine's decision as the actual value. A finding about data is anchored at the ConfigMap key that
holds it (`/data/data.json`, `/data/workspace.json`, ...): its actual value is the whole text there
(an RFC 6901 pointer cannot enter a JSON string), and the requirement names the pointer inside it.

The engine compiles once per (data, modules) document; decisions are cached by (data, modules,
request), and the reading of a view's deployment is cached per view.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import os
import re
import sys
import weakref
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Callable, Iterable, Mapping, Optional
from urllib.parse import quote

import yaml

from infra import egress_policy
from infra.catalogue import EGRESS_PROXY
from infra.evidence.policies import SECRET, Recorder, _catalogue, check, grants
from infra.evidence.view import ABSENT, Resource, StackView, contains_unknown, pointer, thaw
from infra.k8s.manifests import WORKSPACE_REGISTRATION_LABEL

CONFIG_MAP = "kubernetes:core/v1:ConfigMap"
DEPLOYMENT = "kubernetes:apps/v1:Deployment"
POLICY_CONFIG_MAP = "egress-policy"
REGISTRATION_PREFIX = "workspace-"
DATA_KEY, PROXY_KEY, REGISTRATION_KEY, CONNECTOR_KEY = "data.json", "proxy.json", "workspace.json", "connector.yaml"
KINDS = ("metrics", "traces", "logs", "profiles")

# --- the promises' own values ---------------------------------------------------------------------

# The declared subprocessors the platform's own workloads may reach, and who may reach each.
WORKOS_HOST = "api.workos.com"  # user authentication: control-plane-api only
AXIOM_HOST = "api.axiom.co"  # Perfloop's operational telemetry: platform workloads only
# Code hosts a workspace can connect (the stack configuration names a provider, not a host).
CODE_HOSTS = {
    "github": {"api_host": "api.github.com", "git_host": "github.com"},
    "gitlab": {"api_host": "gitlab.com", "git_host": "gitlab.com"},
    "bitbucket": {"api_host": "api.bitbucket.org", "git_host": "bitbucket.org"},
}
# DLP: outbound bodies are scanned; detected secrets are blocked or replaced by aliases.
DLP_ACTIONS = ("block", "alias", "alias_or_block")
DLP_KEYS = {"enabled", "scan", "on_detection"}
# Model endpoints: every vendor's API but Vertex AI in the stack's region.
MODEL_HOST_RE = re.compile(
    r"^(api\.openai\.com|api\.anthropic\.com|generativelanguage\.googleapis\.com|([a-z0-9-]+-)?aiplatform\.googleapis\.com"
    r"|api\.mistral\.ai|api\.cohere\.(ai|com)|api\.groq\.com|api\.together\.(xyz|ai)|api\.deepseek\.com|api\.x\.ai"
    r"|api\.fireworks\.ai|api\.perplexity\.ai|openrouter\.ai|api-inference\.huggingface\.co|router\.huggingface\.co"
    r"|.+\.openai\.azure\.com|.+\.cognitiveservices\.azure\.com|.+\.services\.ai\.azure\.com)$"
)
# Hosts no source ever reaches: metadata, cluster-internal, loopback, wildcard-IP DNS, IP literals
# (every source tries the first; the sandbox tries them all, and the cluster's API server).
NEVER_HOSTS = ("metadata.google.internal", "169.254.169.254", "metadata", "169.254.169.254.nip.io", "kubernetes.default.svc", "localhost", "[fd00::1]", "2852039166")
UNLISTED_HOSTS = ("exfil.perfloop-probe.example", "storage.googleapis.com", "pastebin.com")

# --- probe values -----------------------------------------------------------------------------------

CASE_PREFIX = "perfloop/evidence-probe/"
CASE_BRANCH = CASE_PREFIX + "fix"
OTHER_CASE_BRANCH = "perfloop/evidence-other/fix"
PROBE_PR, OTHER_PR = 7, 8
SHA_OLD, SHA_NEW, ZERO_SHA = "1" * 40, "2" * 40, "0" * 40
PROBE_PROJECT = "perfloop-probe-project"
UNLISTED_ATTRIBUTE = "perfloop.probe.unlisted"
CROSS = "cross"  # which data a probe is judged on: deployed (False), probe (True), or this
PROBE_SOURCE_UNKNOWN = "perfloop-probe-unknown-workload"


def _telemetry(kind: str, provider: str, host: str, *, mode: str = "aggregate", views: Iterable[str] = (), attributes: Iterable[str] = (), uids: Iterable[str] = ()) -> dict[str, Any]:
    return {
        "datasource_uids": sorted(uids), "host": host, "kind": kind, "log_views": sorted(views), "mode": mode,
        "port": 443, "provider": provider, "trace_attribute_allowlist": sorted(attributes),
    }


_GRAFANA = "grafana.perfloop-probe.example"
_LOG_VIEWS = {
    "datadog": ["perfloop-probe-index"],
    "gcp": [f"{PROBE_PROJECT}.global.probe._AllLogs"],
    "grafana": ['{app="perfloop-probe"}'],
    "axiom": ["perfloop-probe-logs"],
}
_LOG_HOSTS = {"datadog": "api.datadoghq.com", "gcp": "logging.googleapis.com", "grafana": _GRAFANA, "axiom": AXIOM_HOST}
_LOG_UIDS = {"grafana": ["loki-probe"]}

# Synthetic workspaces the deployed modules also judge (never deployed; ids a stack cannot use,
# since configured workspace ids have no "-"): every supported connection in aggregate mode, the
# same log connections in strict mode (with views, so strict alone explains a deny), traces with
# the default empty allowlist, and a GitLab code host.
SYNTHETIC_WORKSPACES: dict[str, dict[str, Any]] = {
    "perfloop-probe-all": {
        "code_host": {"api_host": "api.github.com", "git_host": "github.com", "provider": "github", "repositories": ["perfloop-probe/app"]},
        "telemetry": [
            _telemetry("metrics", "datadog", "api.datadoghq.com"),
            _telemetry("metrics", "gcp", "monitoring.googleapis.com"),
            _telemetry("metrics", "grafana", _GRAFANA, uids=["prom-probe"]),
            _telemetry("metrics", "axiom", AXIOM_HOST),
            _telemetry("traces", "datadog", "api.datadoghq.com", attributes=["http.route"]),
            _telemetry("traces", "gcp", "cloudtrace.googleapis.com"),
            _telemetry("traces", "axiom", AXIOM_HOST, attributes=["http.route"]),
            *(_telemetry("logs", p, _LOG_HOSTS[p], views=_LOG_VIEWS[p], uids=_LOG_UIDS.get(p, ())) for p in ("datadog", "gcp", "grafana", "axiom")),
            _telemetry("profiles", "grafana", _GRAFANA, uids=["pyroscope-probe"]),
        ],
    },
    "perfloop-probe-strict": {
        "code_host": None,
        "telemetry": [_telemetry("logs", p, _LOG_HOSTS[p], mode="strict", views=_LOG_VIEWS[p], uids=_LOG_UIDS.get(p, ())) for p in ("datadog", "gcp", "grafana", "axiom")],
    },
    "perfloop-probe-traces": {
        "code_host": None,
        "telemetry": [_telemetry("traces", "datadog", "api.datadoghq.com"), _telemetry("traces", "axiom", AXIOM_HOST)],
    },
    "perfloop-probe-gitlab": {
        "code_host": {"api_host": "gitlab.com", "git_host": "gitlab.com", "provider": "gitlab", "repositories": ["perfloop-probe/app"]},
        "telemetry": [],
    },
}


SYNTHETIC_SOURCES = (EGRESS_PROXY, "agent-orchestrator", "control-plane-api")


def synthetic_destinations(region: str) -> dict[str, list[str]]:
    """Platform destinations added for the probes: a code host declared for a platform source
    (merge, approve and mark-ready must still be denied), model endpoints declared for the
    orchestrator and the API (still denied) and Vertex AI in the region (the one allowed)."""
    return {
        EGRESS_PROXY: ["api.github.com", "github.com"],
        "agent-orchestrator": [f"{region}-aiplatform.googleapis.com", "api.openai.com", "api.anthropic.com"],
        "control-plane-api": ["generativelanguage.googleapis.com"],
    }


# --- the deployment, as the proxy reads it ----------------------------------------------------------

@dataclass(frozen=True)
class Registration:
    resource: Resource
    workspace: str
    entry: dict[str, Any]
    text: str


@dataclass(frozen=True)
class Connector:
    resource: Resource
    workspace: str
    kind: str
    config: Any  # parsed connector.yaml, or None when unreadable
    text: Any


@dataclass(frozen=True)
class Target:
    """A workspace the probes exercise: deployed (judged on the deployed data, findings at its
    registration) or synthetic (judged on the probe data, findings at the policy ConfigMap)."""

    name: str
    entry: Mapping[str, Any]
    synthetic: bool
    urn: str
    text: Any = ABSENT  # the registration's workspace.json, for data findings

    @property
    def code_host(self) -> Optional[Mapping[str, Any]]:
        ch = self.entry.get("code_host")
        return ch if isinstance(ch, Mapping) else None

    @property
    def telemetry(self) -> list[Mapping[str, Any]]:
        return [t for t in self.entry.get("telemetry") or [] if isinstance(t, Mapping)]


@dataclass
class Deployment:
    absent: Optional[str] = None  # why the view holds no proxy to judge (not applicable)
    policy: Optional[Resource] = None
    modules: dict[str, str] = field(default_factory=dict)
    data: Optional[dict[str, Any]] = None
    proxy: Any = ABSENT
    registrations: list[Registration] = field(default_factory=list)
    connectors: dict[tuple[str, str], Connector] = field(default_factory=dict)
    region: Optional[str] = None
    problems: list[tuple[str, str, Any, str]] = field(default_factory=list)
    registration_problems: list[tuple[str, str, Any, str]] = field(default_factory=list)
    _probe_data: Optional[dict[str, Any]] = None
    _cross_data: Optional[dict[str, Any]] = None
    _engine_problem: Any = ABSENT

    def problem(self, urn: str, path: str, actual: Any, required: str) -> None:
        self.problems.append((urn, path, actual, required))

    @property
    def probe_data(self) -> dict[str, Any]:
        """The cell's deployed data with the synthetic workspaces (instead of the registered ones:
        so its decisions do not change with a registration) and destinations added."""
        if self._probe_data is None:
            data = copy.deepcopy({**self.data, "workspaces": {}})
            data["workspaces"].update(copy.deepcopy(SYNTHETIC_WORKSPACES))
            for source, hosts in synthetic_destinations(data["region"]).items():
                data["platform_destinations"][source] = sorted(set(data["platform_destinations"].get(source, [])) | set(hosts))
            self._probe_data = data
        return self._probe_data

    @property
    def cross_data(self) -> dict[str, Any]:
        """The deployed data with the synthetic workspaces next to the registered ones."""
        if self._cross_data is None:
            data = copy.deepcopy(self.data)
            data["workspaces"].update(copy.deepcopy(SYNTHETIC_WORKSPACES))
            self._cross_data = data
        return self._cross_data

    def targets(self, *synthetic: str) -> list[Target]:
        """The deployed workspaces, then the named synthetic ones."""
        out = [Target(r.workspace, r.entry, False, r.resource.urn, r.text) for r in self.registrations]
        return out + [Target(ws, SYNTHETIC_WORKSPACES[ws], True, self.policy.urn) for ws in synthetic]

    def decide(self, data: Any, request: dict[str, Any]) -> dict[str, Any]:
        """The deployed modules' decision on the deployed data (False), the probe data (True) or
        the deployed data next to the synthetic workspaces ("cross")."""
        document = self.cross_data if data == CROSS else self.probe_data if data else self.data
        return _decide(document, self.modules, request)

    def engine_problem(self) -> Any:
        """None when the deployed modules compile with the deployed (and probe) data; else the
        decision that shows they do not."""
        if self._engine_problem is ABSENT:
            self._engine_problem = None
            with _engine_output_silenced():  # the engine prints compile errors on stdout
                for data in (False, True):
                    decision = self.decide(data, _req("sandbox", "GET", "perfloop-probe.example", "/"))
                    if decision["rule"].startswith("engine."):
                        self._engine_problem = decision
                        break
        return self._engine_problem


@contextlib.contextmanager
def _engine_output_silenced():
    """rego-cpp writes parse errors to the process's stdout; keep them out of reports (the
    evidence records the failed decision instead)."""
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 1)
            yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)


def _parse_json(text: Any) -> Any:
    try:
        return json.loads(text)
    except (TypeError, ValueError):
        return ABSENT


@lru_cache(maxsize=1)
def _module_names() -> frozenset[str]:
    """The policy's module names (names only: what the modules say is read from the deployment)."""
    return frozenset(egress_policy.policy_modules())


@lru_cache(maxsize=1)
def _data_validator():
    import jsonschema

    schema = json.loads((egress_policy.POLICY_DIR / "data.schema.json").read_text())
    return jsonschema.Draft202012Validator(schema)


def _namespaces() -> tuple[str, str]:
    catalogue = _catalogue()
    return catalogue.by_name[EGRESS_PROXY].namespace, catalogue.by_name["connector-metrics"].namespace


def _load(view: StackView) -> Deployment:
    d = Deployment()
    proxy_ns, connectors_ns = _namespaces()
    maps = view.of_type(CONFIG_MAP)
    in_proxy_ns = [r for r in maps if r.at("/metadata/namespace") == proxy_ns]
    policies = [r for r in in_proxy_ns if r.at("/metadata/name") == POLICY_CONFIG_MAP]
    registrations = [r for r in in_proxy_ns if r.at(pointer("metadata", "labels", WORKSPACE_REGISTRATION_LABEL)) == "true"]
    region = view.output("region")
    d.region = region if isinstance(region, str) and not contains_unknown(region) else None
    if d.region is None:
        d.problem(view.stack_urn, "/region", region, "the stack's region is known (stack export)")

    if not policies:
        if view.output("shape") == "tenant":
            d.absent = (
                f"tenant stack on cell {thaw(view.output('cell'))!r}: the cell deploys the egress proxy and its policy "
                f"(ConfigMap {proxy_ns}/{POLICY_CONFIG_MAP}), and the cell's evidence proves this"
            )
        else:
            d.problem(view.stack_urn, "", ABSENT, f"the egress proxy's policy ConfigMap {proxy_ns}/{POLICY_CONFIG_MAP}")
    elif len(policies) > 1:
        for p in policies:
            d.problem(p.urn, "", p.type, f"exactly one ConfigMap {proxy_ns}/{POLICY_CONFIG_MAP}")
    else:
        _load_policy(d, policies[0])

    # Registrations: the proxy's part of each workspace.
    seen: dict[str, Resource] = {}
    for r in registrations:
        text = r.at(pointer("data", REGISTRATION_KEY))
        path = pointer("data", REGISTRATION_KEY)
        document = _parse_json(text) if isinstance(text, str) and not contains_unknown(text) else ABSENT
        ok_shape = isinstance(document, dict) and set(document) == {"workspace", "policy"} and isinstance(document["workspace"], str)
        if not ok_shape:
            d.registration_problems.append((r.urn, path, text, 'known JSON {"workspace": <id>, "policy": <its entry of data.perfloop.workspaces>}'))
            continue
        ws = document["workspace"]
        if r.at("/metadata/name") != REGISTRATION_PREFIX + ws:
            d.registration_problems.append((r.urn, "/metadata/name", r.at("/metadata/name"), f"= {REGISTRATION_PREFIX + ws!r} (the workspace the registration names)"))
            continue
        if ws in seen or ws in SYNTHETIC_WORKSPACES:
            d.registration_problems.append((r.urn, path, text, f"one registration per workspace; {ws!r} is registered twice (or collides with a probe workspace)"))
            continue
        seen[ws] = r
        d.registrations.append(Registration(r, ws, document["policy"], text))
    d.registrations.sort(key=lambda reg: reg.workspace)
    own = view.output("workspace")
    if isinstance(own, str) and not contains_unknown(own) and own not in seen:
        d.registration_problems.append((view.stack_urn, "/workspace", own, f"the stack's workspace is registered with the proxy (ConfigMap {proxy_ns}/{REGISTRATION_PREFIX}{own})"))
    d.problems += d.registration_problems

    # Connector configurations: one per configured telemetry connection.
    for r in maps:
        name, ns = r.at("/metadata/name"), r.at("/metadata/namespace")
        m = re.fullmatch(r"connector-(metrics|traces|logs|profiles)-config", str(name))
        if m and isinstance(ns, str) and ns.startswith(connectors_ns + "-"):
            text = r.at(pointer("data", CONNECTOR_KEY))
            try:
                config = yaml.safe_load(text) if isinstance(text, str) and not contains_unknown(text) else None
            except yaml.YAMLError:
                config = None
            d.connectors[(ns.removeprefix(connectors_ns + "-"), m.group(1))] = Connector(r, ns.removeprefix(connectors_ns + "-"), m.group(1), config if isinstance(config, dict) else None, text)

    if d.policy is not None and d.data is not None:
        assembled = {**d.data, "workspaces": {reg.workspace: reg.entry for reg in d.registrations}}
        by_ws = {reg.workspace: reg for reg in d.registrations}
        for error in sorted(_data_validator().iter_errors(assembled), key=lambda err: list(map(str, err.absolute_path))):
            where = list(error.absolute_path)
            inner = pointer(*where)
            if len(where) >= 2 and where[0] == "workspaces" and where[1] in by_ws:
                reg = by_ws[where[1]]
                d.problem(reg.resource.urn, pointer("data", REGISTRATION_KEY), reg.text, f"the policy entry is valid data.perfloop (policies/egress/data.schema.json): {error.message} at /policy{pointer(*where[2:])}")
            else:
                d.problem(d.policy.urn, pointer("data", DATA_KEY), d.policy.at(pointer("data", DATA_KEY)), f"valid data.perfloop (policies/egress/data.schema.json): {error.message} at {inner or '/'}")
        d.data = assembled
        if d.region is not None and d.data.get("region") != d.region:
            d.problem(d.policy.urn, pointer("data", DATA_KEY), d.policy.at(pointer("data", DATA_KEY)), f"/region = {d.region!r} (the stack's region)")
    return d


def _load_policy(d: Deployment, policy: Resource) -> None:
    d.policy = policy
    data = policy.at("/data")
    if not isinstance(data, Mapping):
        d.problem(policy.urn, "/data", data, "the policy's modules, data.json and proxy.json")
        return
    names = _module_names()
    for key in sorted(data):
        value = data[key]
        path = pointer("data", key)
        if not isinstance(value, str) or contains_unknown(value):
            d.problem(policy.urn, path, value, "a known text value (fail closed: the proxy loads this key)")
        elif key.endswith(".rego"):
            if key in names:
                d.modules[key] = value
            else:
                d.problem(policy.urn, path, value, f"only the egress policy's modules ({', '.join(sorted(names))}); the proxy would load this one too")
        elif key not in (DATA_KEY, PROXY_KEY):
            d.problem(policy.urn, path, value, f"only the policy's modules, {DATA_KEY} and {PROXY_KEY}")
    for name in sorted(names - set(data)):
        d.problem(policy.urn, pointer("data", name), ABSENT, f"the egress policy module {name}")
    text = data.get(DATA_KEY, ABSENT)
    cell = _parse_json(text) if isinstance(text, str) and not contains_unknown(text) else ABSENT
    if not isinstance(cell, dict):
        d.problem(policy.urn, pointer("data", DATA_KEY), text, "known JSON: the cell's data.perfloop")
    elif cell.get("workspaces") != {}:
        d.problem(policy.urn, pointer("data", DATA_KEY), text, "/workspaces = {} (each workspace's entry arrives in its own registration ConfigMap)")
    else:
        d.data = cell
    proxy_text = data.get(PROXY_KEY, ABSENT)
    d.proxy = _parse_json(proxy_text) if isinstance(proxy_text, str) and not contains_unknown(proxy_text) else ABSENT


# A view is read once; the entry dies with the view.
_DEPLOYMENTS: dict[int, tuple[weakref.ref, Deployment]] = {}


def deployment(view: StackView) -> Deployment:
    cached = _DEPLOYMENTS.get(id(view))
    if cached is not None and cached[0]() is view:
        return cached[1]
    d = _load(view)
    _DEPLOYMENTS[id(view)] = (weakref.ref(view, lambda _, key=id(view): _DEPLOYMENTS.pop(key, None)), d)
    return d


# --- the engine ---------------------------------------------------------------------------------------

_DECISIONS: dict[tuple[str, str], dict[str, Any]] = {}
_KEYS: dict[int, tuple[Any, Any, str]] = {}


def _engine_key(data: dict[str, Any], modules: dict[str, str]) -> str:
    cached = _KEYS.get(id(data))
    if cached is not None and cached[0] is data and cached[1] is modules:
        return cached[2]
    digest = hashlib.sha256(json.dumps({"data": data, "modules": modules}, sort_keys=True).encode()).hexdigest()
    if len(_KEYS) > 256:
        _KEYS.clear()
    _KEYS[id(data)] = (data, modules, digest)
    return digest


def _decide(data: dict[str, Any], modules: dict[str, str], request: dict[str, Any]) -> dict[str, Any]:
    """The engine's decision with the given (deployed) modules and data; cached."""
    key = (_engine_key(data, modules), json.dumps(request, sort_keys=True))
    decision = _DECISIONS.get(key)
    if decision is None:
        decision = egress_policy.evaluate(data, request, modules=modules)
        if len(_DECISIONS) > 50_000:
            _DECISIONS.clear()
        _DECISIONS[key] = decision
    return decision


# --- probes ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Probe:
    id: str
    request: dict[str, Any]
    allow: bool
    why: str
    rule: Optional[str] = None  # a rule the decision must name, where the reason matters


def _req(source: Optional[str], method: str, host: str, path: str, session: Optional[dict[str, Any]] = None, *, query: str = "", headers: Optional[dict[str, Any]] = None, body: Any = None, port: Optional[int] = None, graphql: Optional[dict[str, Any]] = None, git: Optional[dict[str, Any]] = None) -> dict[str, Any]:
    request: dict[str, Any] = {"scheme": "https", "host": host, "method": method, "path": path, "query": query, "headers": headers or {}, "body": body}
    if source is not None:
        request["source"] = source
    if port not in (None, 443):
        request["port"] = port
    if session is not None:
        request["session"] = session
    if graphql is not None:
        request["graphql"] = graphql
    if git is not None:
        request["git"] = git
    return request


def _deny(pid: str, request: dict[str, Any], why: str, rule: Optional[str] = None) -> Probe:
    return Probe(pid, request, False, why, rule)


def _allow(pid: str, request: dict[str, Any], why: str) -> Probe:
    return Probe(pid, request, True, why)


def _sources() -> tuple[str, ...]:
    return egress_policy.SOURCES


def _every_source(d: "Deployment", t: "Target") -> tuple[str, ...]:
    """The sources a target's every-source probes come from: all of them for a deployed workspace
    (or a synthetic one where nothing is deployed); on a synthetic workspace next to deployed ones,
    only the sources whose destinations the probe data changes (the rest was already tried)."""
    if not t.synthetic or not d.registrations:
        return _sources()
    return tuple(s for s in _sources() if s in SYNTHETIC_SOURCES)


def _full(d: "Deployment", t: "Target", provider: str) -> bool:
    """Whether a target gets the full adversarial set for its code host provider: every deployed
    one, and a synthetic one only where no deployed workspace has that provider."""
    return not t.synthetic or not any((reg.entry.get("code_host") or {}).get("provider") == provider for reg in d.registrations if isinstance(reg.entry.get("code_host"), Mapping))


def _code_session(t: Target, *, pr: Optional[int] = PROBE_PR) -> dict[str, Any]:
    repos = list((t.code_host or {}).get("repositories") or [])
    node_ids: dict[str, Any] = {"repositories": {r: f"R_probe_{i}" for i, r in enumerate(repos)}}
    if pr is not None:
        node_ids["pull_request"] = "PR_probe"
    return {"workspace": t.name, "repositories": repos, "case_branch_prefix": CASE_PREFIX, "pull_request": pr, "github_node_ids": node_ids, "trace_attributes": []}


def _connector_session(t: Target, approved: Iterable[str] = ()) -> dict[str, Any]:
    return {"workspace": t.name, "trace_attributes": list(approved)}


def _session_for(source: str, t: Optional[Target]) -> Optional[dict[str, Any]]:
    if t is None:
        return None
    if source == "sandbox":
        return _code_session(t)
    if source.startswith("connector-"):
        return _connector_session(t)
    return None


_DATA_LABELS = {False: "deployed data.perfloop", True: "probe data (the cell's deployed data + synthetic workspaces and destinations)", CROSS: "deployed data.perfloop + synthetic workspaces"}


def _judge(e: Recorder, d: Deployment, urn: str, synthetic: Any, probes: Iterable[Probe]) -> int:
    """Evaluate each probe with the deployed modules; one finding per probe. Returns how many."""
    n = 0
    for p in probes:
        decision = d.decide(synthetic, p.request)
        # An engine error is a deny, but never proof of one: it fails whatever the probe expected.
        ok = decision["allow"] == p.allow and (p.rule is None or decision["rule"] == p.rule) and not decision["rule"].startswith("engine.")
        expected = ("allow (positive control: " + p.why + ")") if p.allow else ("deny: " + p.why)
        if p.rule:
            expected += f" (rule {p.rule})"
        actual = {"probe": p.id, "data": _DATA_LABELS[synthetic], "request": p.request, "decision": decision}
        e.record(urn, "", actual, expected + "; evaluated with the deployed Rego modules", ok)
        n += 1
    return n


def _begin(view: StackView, e: Recorder, *, engine: bool = True) -> Optional[Deployment]:
    """The view's deployment, or None (after recording why) when there is nothing sound to judge."""
    d = deployment(view)
    if d.absent is not None and not d.problems:
        e.not_applicable(d.absent)
        return None
    if d.absent is not None or d.problems:
        for urn, path, actual, required in d.problems:
            e.record(urn, path, actual, required, False)
        return None
    if engine:
        problem = d.engine_problem()
        digests = {name: hashlib.sha256(src.encode()).hexdigest() for name, src in sorted(d.modules.items())}
        e.record(d.policy.urn, "", {"modules (sha256)": digests, "engine": "regopy", "problem": problem}, "the deployed Rego modules compile with the deployed data and are what every probe is evaluated with", problem is None)
        if problem is not None:
            return None
    return d


def _synthetic_record(e: Recorder, d: Deployment, *workspaces: str) -> None:
    """What the probe data adds to the deployed data, for the probes on the synthetic workspaces."""
    added = {"workspaces": {ws: SYNTHETIC_WORKSPACES[ws] for ws in workspaces}, "platform_destinations": synthetic_destinations(d.data["region"])}
    e.record(d.policy.urn, "", {"probe data additions": added}, "probe data = the cell's deployed data.perfloop (data.json) plus only these synthetic additions, judged by the deployed modules", True)


# --- telemetry probe shapes -------------------------------------------------------------------------

def _conn_req(t: Target, conn: Mapping[str, Any], method: str, path: str, *, approved: Iterable[str] = (), **kw: Any) -> dict[str, Any]:
    return _req(f"connector-{conn['kind']}", method, conn["host"], path, _connector_session(t, approved), port=conn.get("port"), **kw)


def _uid(conn: Mapping[str, Any]) -> str:
    uids = conn.get("datasource_uids") or []
    return uids[0] if uids else "perfloop-probe-uid"


def _view_name(conn: Mapping[str, Any]) -> str:
    views = conn.get("log_views") or []
    return views[0] if views else "perfloop-probe-view"


def _read(t: Target, conn: Mapping[str, Any]) -> Optional[dict[str, Any]]:
    """An aggregate read of the connection: what the connector exists to do."""
    kind, provider = conn["kind"], conn["provider"]
    view = _view_name(conn)
    if provider == "datadog":
        if kind == "metrics":
            return _conn_req(t, conn, "GET", "/api/v1/query", query="from=1700000000&to=1700003600&query=avg%3Asystem.cpu.user%7B%2A%7D")
        if kind == "traces":
            return _conn_req(t, conn, "POST", "/api/v2/spans/analytics/aggregate", body={"data": {"type": "aggregate_request", "attributes": {"compute": [{"aggregation": "pc95", "metric": "@duration"}], "filter": {"query": "service:checkout"}, "group_by": [{"facet": "resource_name"}]}}})
        if kind == "logs":
            return _conn_req(t, conn, "POST", "/api/v2/logs/analytics/aggregate", body={"compute": [{"aggregation": "count"}], "filter": {"indexes": [view], "from": "now-1h", "to": "now"}, "group_by": [{"facet": "service"}]})
    if provider == "gcp":
        if kind == "metrics":
            return _conn_req(t, conn, "GET", f"/v3/projects/{PROBE_PROJECT}/timeSeries", query="filter=metric.type%3D%22run.googleapis.com%2Frequest_latencies%22&interval.startTime=2025-01-01T00%3A00%3A00Z&interval.endTime=2025-01-01T01%3A00%3A00Z&aggregation.alignmentPeriod=60s&aggregation.perSeriesAligner=ALIGN_PERCENTILE_99")
        if kind == "traces":
            return _conn_req(t, conn, "GET", f"/v1/projects/{PROBE_PROJECT}/traces", query="view=MINIMAL&pageSize=100")
        if kind == "logs":
            return _conn_req(t, conn, "POST", f"/v2/projects/{PROBE_PROJECT}/locations/global:queryData", body={"query": {"sqlQueryText": f"SELECT severity, COUNT(*) AS n FROM `{view}` GROUP BY severity"}})
    if provider == "grafana":
        if kind == "metrics":
            return _conn_req(t, conn, "POST", "/api/ds/query", body={"queries": [{"refId": "A", "datasource": {"uid": _uid(conn)}, "expr": "sum(rate(http_requests_total[5m]))"}]})
        if kind == "logs":
            return _conn_req(t, conn, "POST", "/api/ds/query", body={"queries": [{"refId": "A", "datasource": {"uid": _uid(conn)}, "expr": f"sum(count_over_time({view} [5m]))"}]})
        if kind == "profiles":
            return _conn_req(t, conn, "POST", "/api/ds/query", body={"queries": [{"refId": "A", "datasource": {"uid": _uid(conn)}, "queryType": "profile", "profileTypeId": "process_cpu:cpu:nanoseconds:cpu:nanoseconds", "labelSelector": '{service_name="perfloop-probe"}'}]})
    if provider == "axiom" and kind in ("metrics", "traces", "logs"):
        dataset = view if kind == "logs" else f"perfloop-probe-{kind}"
        return _conn_req(t, conn, "POST", "/v1/datasets/_apl", query="format=tabular", body={"apl": f"['{dataset}'] | summarize count() by bin(_time, 5m)"})
    return None


def _writes(t: Target, conn: Mapping[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """Writes a connector might try on its connection's host."""
    provider = conn["provider"]
    r = lambda method, path, body=None: _conn_req(t, conn, method, path, body=body)  # noqa: E731
    generic = [("patch", r("PATCH", "/api/v1/perfloop-probe", {"x": 1}))]
    specific = {
        "datadog": [("series", r("POST", "/api/v2/series", {"series": []})), ("events", r("POST", "/api/v1/events", {"title": "x", "text": "y"})), ("logs-intake", r("POST", "/api/v2/logs", {"message": "x"})), ("dashboard-delete", r("DELETE", "/api/v1/dashboard/abc-123"))],
        "gcp": [("timeseries-create", r("POST", f"/v3/projects/{PROBE_PROJECT}/timeSeries", {"timeSeries": []})), ("entries-write", r("POST", "/v2/entries:write", {"entries": []})), ("traces-patch", r("PATCH", f"/v1/projects/{PROBE_PROJECT}/traces", {"traces": []})), ("descriptor-delete", r("DELETE", f"/v3/projects/{PROBE_PROJECT}/metricDescriptors/custom.googleapis.com/probe"))],
        "grafana": [("dashboard-create", r("POST", "/api/dashboards/db", {"dashboard": {}})), ("datasource-delete", r("DELETE", f"/api/datasources/uid/{_uid(conn)}")), ("datasource-update", r("PUT", f"/api/datasources/uid/{_uid(conn)}", {"url": "https://exfil.perfloop-probe.example"}))],
        "axiom": [("ingest", r("POST", "/v1/datasets/perfloop-probe/ingest", {"x": 1})), ("dataset-delete", r("DELETE", "/v1/datasets/perfloop-probe")), ("dataset-update", r("PUT", "/v1/datasets/perfloop-probe", {"description": "x"}))],
    }
    return specific.get(provider, [])[:2] + generic


def _raw_log_reads(t: Target, conn: Mapping[str, Any]) -> list[tuple[str, dict[str, Any], Optional[str]]]:
    """Row reads (id, request, the rule that must name them on an aggregate connection)."""
    view = _view_name(conn)
    r = lambda method, path, body=None, query="": _conn_req(t, conn, method, path, body=body, query=query)  # noqa: E731
    provider = conn["provider"]
    if provider == "datadog":
        return [
            ("events-search", r("POST", "/api/v2/logs/events/search", {"filter": {"query": "*", "indexes": [view]}}), "telemetry.raw_logs"),
            ("events-list", r("GET", "/api/v2/logs/events", query="filter%5Bquery%5D=%2A"), "telemetry.raw_logs"),
            ("logs-queries-list", r("POST", "/api/v1/logs-queries/list", {"query": "*", "index": view}), "telemetry.raw_logs"),
            ("group-by-message", r("POST", "/api/v2/logs/analytics/aggregate", {"compute": [{"aggregation": "count"}], "filter": {"indexes": [view]}, "group_by": [{"facet": "@message"}]}), None),
            ("measure-message", r("POST", "/api/v2/logs/analytics/aggregate", {"compute": [{"aggregation": "max", "metric": "@message"}], "filter": {"indexes": [view]}}), None),
        ]
    if provider == "gcp":
        return [
            ("entries-list", r("POST", "/v2/entries:list", {"resourceNames": [f"projects/{PROBE_PROJECT}"]}), "telemetry.raw_logs"),
            ("entries-tail", r("POST", "/v2/entries:tail", {"resourceNames": [f"projects/{PROBE_PROJECT}"]}), "telemetry.raw_logs"),
            ("sql-payload", r("POST", f"/v2/projects/{PROBE_PROJECT}/locations/global:queryData", {"query": {"sqlQueryText": f"SELECT text_payload, COUNT(*) FROM `{view}` GROUP BY text_payload"}}), None),
            ("sql-star", r("POST", f"/v2/projects/{PROBE_PROJECT}/locations/global:queryData", {"query": {"sqlQueryText": f"SELECT * FROM `{view}`"}}), None),
            ("sql-rows", r("POST", f"/v2/projects/{PROBE_PROJECT}/locations/global:queryData", {"query": {"sqlQueryText": f"SELECT severity, json_payload FROM `{view}`"}}), None),
        ]
    if provider == "grafana":
        q = lambda expr: r("POST", "/api/ds/query", {"queries": [{"refId": "A", "datasource": {"uid": _uid(conn)}, "expr": expr}]})  # noqa: E731
        return [
            ("stream-query", q(view), None),
            ("json-stage", q(f"sum by (msg) (count_over_time({view} | json [5m]))"), None),
            ("line-format", q(f"sum(count_over_time({view} | line_format \"{{{{.msg}}}}\" [5m]))"), None),
            ("loki-proxy", r("GET", f"/api/datasources/proxy/uid/{_uid(conn)}/loki/api/v1/query_range", query="query=%7Bapp%3D%22x%22%7D"), None),
        ]
    if provider == "axiom":
        return [
            ("apl-take", r("POST", "/v1/datasets/_apl", {"apl": f"['{view}'] | take 100"}), None),
            ("apl-project", r("POST", "/v1/datasets/_apl", {"apl": f"['{view}'] | project message | summarize count()"}), None),
            ("apl-by-message", r("POST", "/v1/datasets/_apl", {"apl": f"['{view}'] | summarize count() by message"}), None),
            ("legacy-query", r("POST", f"/v1/datasets/{view if re.fullmatch(r'[A-Za-z0-9_.-]+', view) else 'perfloop-probe-logs'}/query", {"startTime": "now-1h"}), "telemetry.raw_events"),
        ]
    return []


def _off_view_reads(t: Target, conn: Mapping[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """Aggregate queries over something that is not one of the customer's views."""
    other = "perfloop-probe-not-a-view"
    r = lambda method, path, body: _conn_req(t, conn, method, path, body=body)  # noqa: E731
    provider = conn["provider"]
    if provider == "datadog":
        return [("other-index", r("POST", "/api/v2/logs/analytics/aggregate", {"compute": [{"aggregation": "count"}], "filter": {"indexes": [other]}})), ("no-index", r("POST", "/api/v2/logs/analytics/aggregate", {"compute": [{"aggregation": "count"}], "filter": {"query": "*"}}))]
    if provider == "gcp":
        return [("required-bucket", r("POST", f"/v2/projects/{PROBE_PROJECT}/locations/global:queryData", {"query": {"sqlQueryText": f"SELECT severity, COUNT(*) FROM `{PROBE_PROJECT}.global._Required._AllLogs` GROUP BY severity"}})), ("subquery", r("POST", f"/v2/projects/{PROBE_PROJECT}/locations/global:queryData", {"query": {"sqlQueryText": f"SELECT severity, COUNT(*) FROM (SELECT * FROM `{_view_name(conn)}`) GROUP BY severity"}}))]
    if provider == "grafana":
        return [("other-stream", r("POST", "/api/ds/query", {"queries": [{"refId": "A", "datasource": {"uid": _uid(conn)}, "expr": 'sum(count_over_time({app="perfloop-probe-other"} [5m]))'}]})), ("other-datasource", r("POST", "/api/ds/query", {"queries": [{"refId": "A", "datasource": {"uid": "perfloop-probe-other-uid"}, "expr": f"sum(count_over_time({_view_name(conn)} [5m]))"}]}))]
    if provider == "axiom":
        return [("other-dataset", r("POST", "/v1/datasets/_apl", {"apl": f"['{other}'] | summarize count()"}))]
    return []


def _trace_attribute_probes(t: Target, conn: Mapping[str, Any]) -> list[Probe]:
    provider = conn["provider"]
    allowlist = [str(a).lstrip("@") for a in conn.get("trace_attribute_allowlist") or []]
    where = f"{t.name}: traces via {provider} at {conn['host']} (allowlist {allowlist})"
    probes: list[Probe] = []
    if provider == "datadog":
        agg = lambda facet=None, query="service:checkout", approved=(): _conn_req(t, conn, "POST", "/api/v2/spans/analytics/aggregate", approved=approved, body={"data": {"type": "aggregate_request", "attributes": {"compute": [{"aggregation": "count"}], "filter": {"query": query}, "group_by": [{"facet": facet or "service"}]}}})  # noqa: E731
        probes.append(_allow(f"{t.name}/traces/{provider}/base-keys", agg(), f"span structure (service labels) needs no approval; {where}"))
        for key in allowlist[:5]:
            probes.append(_allow(f"{t.name}/traces/{provider}/approved:{key}", agg(f"@{key}", approved=[key]), f"{key!r} is allowlisted and approved for the case; {where}"))
            probes.append(_deny(f"{t.name}/traces/{provider}/unapproved:{key}", agg(f"@{key}"), f"{key!r} is allowlisted but not approved for this case; {where}"))
        probes.append(_deny(f"{t.name}/traces/{provider}/unlisted", agg(f"@{UNLISTED_ATTRIBUTE}", approved=[UNLISTED_ATTRIBUTE]), f"a key outside the allowlist, even approved for the case; {where}"))
        probes.append(_deny(f"{t.name}/traces/{provider}/unlisted-in-filter", agg(query=f"service:checkout @{UNLISTED_ATTRIBUTE}:1", approved=[UNLISTED_ATTRIBUTE]), f"a key outside the allowlist smuggled into the filter; {where}"))
        probes.append(_deny(f"{t.name}/traces/{provider}/raw-spans", _conn_req(t, conn, "GET", "/api/v2/spans/events"), f"raw spans carry every attribute; {where}"))
    elif provider == "axiom":
        apl = lambda key=None, approved=(): _conn_req(t, conn, "POST", "/v1/datasets/_apl", approved=approved, body={"apl": "['perfloop-probe-traces'] | summarize count() by " + (f"['attributes.{key}']" if key else "['service.name']")})  # noqa: E731
        probes.append(_allow(f"{t.name}/traces/{provider}/base-keys", apl(), f"span structure needs no approval; {where}"))
        for key in allowlist[:5]:
            probes.append(_allow(f"{t.name}/traces/{provider}/approved:{key}", apl(key, [key]), f"{key!r} is allowlisted and approved for the case; {where}"))
            probes.append(_deny(f"{t.name}/traces/{provider}/unapproved:{key}", apl(key), f"{key!r} is allowlisted but not approved for this case; {where}"))
        probes.append(_deny(f"{t.name}/traces/{provider}/unlisted", apl(UNLISTED_ATTRIBUTE, [UNLISTED_ATTRIBUTE]), f"a key outside the allowlist, even approved for the case; {where}"))
    elif provider == "gcp":
        base = f"/v1/projects/{PROBE_PROJECT}/traces"
        probes.append(_allow(f"{t.name}/traces/{provider}/minimal", _conn_req(t, conn, "GET", base, query="view=MINIMAL"), f"trace ids only, no attributes; {where}"))
        probes.append(_deny(f"{t.name}/traces/{provider}/complete", _conn_req(t, conn, "GET", base, query="view=COMPLETE"), f"COMPLETE returns every span attribute; {where}"))
        probes.append(_deny(f"{t.name}/traces/{provider}/rootspan", _conn_req(t, conn, "GET", base, query="view=ROOTSPAN"), f"ROOTSPAN returns span attributes; {where}"))
        probes.append(_deny(f"{t.name}/traces/{provider}/single", _conn_req(t, conn, "GET", f"{base}/0123456789abcdef"), f"a single trace returns its attributes; {where}"))
    return probes


# --- code host probe shapes -------------------------------------------------------------------------

def _gh(t: Target) -> tuple[str, str, str, str]:
    ch = t.code_host
    repo = ch["repositories"][0]
    return ch["api_host"], ch["git_host"], repo, f"/repos/{repo}"


def _gql(t: Target, source: str, session: Optional[dict[str, Any]], op: str, fields: list[dict[str, Any]], variables: Optional[dict[str, Any]] = None, **kw: Any) -> dict[str, Any]:
    return _req(source, kw.pop("method", "POST"), t.code_host["api_host"], kw.pop("path", "/graphql"), session, graphql={"operation_type": op, "root_fields": fields, "variables": variables or {}}, **kw)


def _field(name: str, arguments: dict[str, Any], alias: Optional[str] = None) -> dict[str, Any]:
    f: dict[str, Any] = {"name": name, "arguments": {"input": arguments}}
    if alias:
        f["alias"] = alias
    return f


def _push(t: Target, refs: list[str], paths: list[str], session: dict[str, Any], repo: Optional[str] = None) -> dict[str, Any]:
    _, git, first, _ = _gh(t)
    updates = [{"ref": ref, "old": SHA_OLD, "new": SHA_NEW} for ref in refs]
    return _req("sandbox", "POST", git, f"/{repo or first}.git/git-receive-pack", session, git={"ref_updates": updates, "changed_paths": paths})


def _case_branch_writes(t: Target) -> list[Probe]:
    """CODE-01 on a GitHub workspace: writes go to the case branch and the session's PR only."""
    api, git, repo, base = _gh(t)
    s, s_nopr = _code_session(t), _code_session(t, pr=None)
    w = lambda method, path, body=None, session=s: _req("sandbox", method, api, base + path, session, body=body)  # noqa: E731
    owner = repo.split("/")[0]
    ungranted = f"{owner}/perfloop-probe-ungranted"
    commit = lambda branch: _gql(t, "sandbox", s, "mutation", [_field("createCommitOnBranch", {"branch": {"repositoryNameWithOwner": repo, "branchName": branch}, "message": {"headline": "perf"}, "expectedHeadOid": SHA_OLD, "fileChanges": {"additions": [{"path": "src/perf.py", "contents": "eA=="}]}})])  # noqa: E731
    p = f"{t.name}/code"
    return [
        # positive controls: the writes the session is for
        _allow(f"{p}/ref-create", w("POST", "/git/refs", {"ref": f"refs/heads/{CASE_BRANCH}", "sha": SHA_NEW}), "create the case branch"),
        _allow(f"{p}/ref-update", w("PATCH", f"/git/refs/heads/{CASE_BRANCH}", {"sha": SHA_NEW}), "move the case branch"),
        _allow(f"{p}/contents", w("PUT", "/contents/src/perf.py", {"message": "perf", "content": "eA==", "branch": CASE_BRANCH}), "commit a file to the case branch"),
        _allow(f"{p}/push", _push(t, [f"refs/heads/{CASE_BRANCH}"], ["src/perf.py"], s), "push to the case branch"),
        _allow(f"{p}/graphql-commit", commit(CASE_BRANCH), "createCommitOnBranch on the case branch"),
        _allow(f"{p}/pr-create", w("POST", "/pulls", {"title": "perf", "head": CASE_BRANCH, "base": "main", "draft": True}, s_nopr), "open the session's draft pull request"),
        _allow(f"{p}/pr-update", w("PATCH", f"/pulls/{PROBE_PR}", {"title": "perf", "body": "details"}), "update the session's pull request"),
        _allow(f"{p}/pr-comment", w("POST", f"/issues/{PROBE_PR}/comments", {"body": "results"}), "comment on the session's pull request"),
        # the default branch
        _deny(f"{p}/default-ref-update", w("PATCH", "/git/refs/heads/main", {"sha": SHA_NEW, "force": True}), "move the default branch"),
        _deny(f"{p}/default-ref-delete", w("DELETE", "/git/refs/heads/main"), "delete the default branch"),
        _deny(f"{p}/default-ref-create", w("POST", "/git/refs", {"ref": "refs/heads/main", "sha": SHA_NEW}), "create/overwrite the default branch"),
        _deny(f"{p}/contents-no-branch", w("PUT", "/contents/src/perf.py", {"message": "perf", "content": "eA=="}), "a contents write without branch goes to the default branch"),
        _deny(f"{p}/contents-main", w("PUT", "/contents/src/perf.py", {"message": "perf", "content": "eA==", "branch": "main"}), "a contents write to the default branch"),
        _deny(f"{p}/contents-refs-main", w("PUT", "/contents/src/perf.py", {"message": "perf", "content": "eA==", "branch": "refs/heads/main"}), "a contents write to refs/heads/main"),
        _deny(f"{p}/contents-delete-no-branch", w("DELETE", "/contents/src/perf.py", {"message": "perf", "sha": SHA_OLD}), "a contents delete on the default branch"),
        _deny(f"{p}/push-main", _push(t, ["refs/heads/main"], ["src/perf.py"], s), "push to the default branch"),
        _deny(f"{p}/push-mixed", _push(t, [f"refs/heads/{CASE_BRANCH}", "refs/heads/main"], ["src/perf.py"], s), "a push that also moves the default branch"),
        _deny(f"{p}/push-head", _push(t, ["HEAD"], ["src/perf.py"], s), "push to HEAD"),
        _deny(f"{p}/graphql-commit-main", commit("main"), "createCommitOnBranch on the default branch"),
        _deny(f"{p}/graphql-create-ref-main", _gql(t, "sandbox", s, "mutation", [_field("createRef", {"repositoryId": "R_probe_0", "name": "refs/heads/main", "oid": SHA_NEW})]), "createRef of the default branch"),
        _deny(f"{p}/graphql-update-ref", _gql(t, "sandbox", s, "mutation", [_field("updateRef", {"refId": "REF_main", "oid": SHA_NEW, "force": True})]), "updateRef (any branch, by node id)"),
        _deny(f"{p}/graphql-update-refs", _gql(t, "sandbox", s, "mutation", [_field("updateRefs", {"repositoryId": "R_probe_0", "refUpdates": [{"name": "refs/heads/main", "afterOid": SHA_NEW, "force": True}]})]), "updateRefs on the default branch"),
        _deny(f"{p}/graphql-delete-ref", _gql(t, "sandbox", s, "mutation", [_field("deleteRef", {"refId": "REF_main"})]), "deleteRef"),
        # other branches, and the case prefix smuggled
        _deny(f"{p}/other-branch", w("PATCH", "/git/refs/heads/feature/x", {"sha": SHA_NEW}), "a branch outside the case prefix"),
        _deny(f"{p}/other-case", w("POST", "/git/refs", {"ref": f"refs/heads/{OTHER_CASE_BRANCH}", "sha": SHA_NEW}), "another case's branch"),
        _deny(f"{p}/push-other-case", _push(t, [f"refs/heads/{OTHER_CASE_BRANCH}"], ["src/perf.py"], s), "push to another case's branch"),
        _deny(f"{p}/push-tag", _push(t, ["refs/tags/v1.0.0"], ["src/perf.py"], s), "push a tag"),
        _deny(f"{p}/bare-prefix", w("PUT", "/contents/src/perf.py", {"message": "perf", "content": "eA==", "branch": CASE_PREFIX.rstrip("/")}), "the bare prefix is not a case branch"),
        _deny(f"{p}/dot-segments", w("PATCH", f"/git/refs/heads/{CASE_PREFIX}../../main", {"sha": SHA_NEW}), "dot segments out of the case prefix"),
        _deny(f"{p}/encoded-dots", w("PATCH", f"/git/refs/heads/{CASE_PREFIX}%2e%2e/%2e%2e/main", {"sha": SHA_NEW}), "encoded dot segments out of the case prefix"),
        _deny(f"{p}/encoded-slash", w("PATCH", "/git/refs/heads/" + CASE_PREFIX.replace("/", "%2F") + "..%2F..%2Fmain", {"sha": SHA_NEW}), "encoded slashes out of the case prefix"),
        _deny(f"{p}/ref-dot-segments", w("POST", "/git/refs", {"ref": f"refs/heads/{CASE_PREFIX}../../main", "sha": SHA_NEW}), "a ref name climbing out of the case prefix"),
        _deny(f"{p}/branch-dot-segments", w("PUT", "/contents/src/perf.py", {"message": "perf", "content": "eA==", "branch": f"{CASE_PREFIX}../../main"}), "a contents branch climbing out of the case prefix"),
        _deny(f"{p}/prefix-case", w("PATCH", "/git/refs/heads/" + CASE_BRANCH.capitalize(), {"sha": SHA_NEW}), "the case prefix in another case"),
        _deny(f"{p}/push-dot-segments", _push(t, [f"refs/heads/{CASE_PREFIX}../../main"], ["src/perf.py"], s), "push climbing out of the case prefix"),
        # pull requests other than the session's
        _deny(f"{p}/other-pr-update", w("PATCH", f"/pulls/{OTHER_PR}", {"title": "x"}), "update another pull request"),
        _deny(f"{p}/other-pr-comment", w("POST", f"/issues/{OTHER_PR}/comments", {"body": "x"}), "comment on another pull request"),
        _deny(f"{p}/other-pr-review", w("POST", f"/pulls/{OTHER_PR}/reviews", {"event": "COMMENT", "body": "x"}), "review another pull request"),
        _deny(f"{p}/second-pr", w("POST", "/pulls", {"title": "x", "head": CASE_BRANCH, "base": "main", "draft": True}), "a second pull request"),
        _deny(f"{p}/pr-not-draft", w("POST", "/pulls", {"title": "x", "head": CASE_BRANCH, "base": "main", "draft": False}, s_nopr), "a pull request that is not a draft"),
        _deny(f"{p}/pr-head-outside", w("POST", "/pulls", {"title": "x", "head": "feature/x", "base": "main", "draft": True}, s_nopr), "a pull request from a branch outside the case prefix"),
        _deny(f"{p}/pr-base-change", w("PATCH", f"/pulls/{PROBE_PR}", {"base": "release"}), "retarget the session's pull request"),
        _deny(f"{p}/graphql-other-pr", _gql(t, "sandbox", s, "mutation", [_field("updatePullRequest", {"pullRequestId": "PR_other", "title": "x"})]), "update another pull request (GraphQL)"),
        _deny(f"{p}/graphql-other-pr-comment", _gql(t, "sandbox", s, "mutation", [_field("addComment", {"subjectId": "PR_other", "body": "x"})]), "comment on another pull request (GraphQL)"),
        # repositories outside the grant, and repository administration
        _deny(f"{p}/ungranted-repo", _req("sandbox", "PUT", api, f"/repos/{ungranted}/contents/src/perf.py", s, body={"message": "perf", "content": "eA==", "branch": CASE_BRANCH}), "a repository outside the grant"),
        _deny(f"{p}/push-ungranted", _push(t, [f"refs/heads/{CASE_BRANCH}"], ["src/perf.py"], s, repo=ungranted), "push to a repository outside the grant"),
        _deny(f"{p}/default-branch-setting", w("PATCH", "", {"default_branch": CASE_BRANCH}), "make a case branch the default"),
        _deny(f"{p}/repo-delete", w("DELETE", ""), "delete the repository"),
        _deny(f"{p}/release", w("POST", "/releases", {"tag_name": "v9", "target_commitish": CASE_BRANCH}), "create a release"),
        _deny(f"{p}/workflow", w("PUT", "/contents/.github/workflows/ci.yml", {"message": "ci", "content": "eA==", "branch": CASE_BRANCH}), "write a workflow file"),
        _deny(f"{p}/push-workflow", _push(t, [f"refs/heads/{CASE_BRANCH}"], [".github/workflows/ci.yml"], s), "push a workflow file"),
    ]


def _other_code_host_writes(t: Target) -> list[Probe]:
    """CODE-01 on GitLab / Bitbucket: reads of granted repositories, no write at all."""
    ch = t.code_host
    repo = ch["repositories"][0]
    s = _code_session(t)
    p = f"{t.name}/code"
    if ch["provider"] == "gitlab":
        project = "/api/v4/projects/" + quote(repo, safe="")
        return [
            _allow(f"{p}/read", _req("sandbox", "GET", ch["api_host"], project, s), "read a granted project"),
            _deny(f"{p}/commit", _req("sandbox", "POST", ch["api_host"], project + "/repository/commits", s, body={"branch": "main", "actions": []}), "commit (writes are not supported for GitLab)"),
            _deny(f"{p}/merge", _req("sandbox", "PUT", ch["api_host"], project + "/merge_requests/1/merge", s), "merge a merge request"),
            _deny(f"{p}/push", _req("sandbox", "POST", ch["git_host"], f"/{repo}.git/git-receive-pack", s, git={"ref_updates": [{"ref": f"refs/heads/{CASE_BRANCH}", "old": SHA_OLD, "new": SHA_NEW}], "changed_paths": ["a"]}), "git push"),
        ]
    return [
        _allow(f"{p}/read", _req("sandbox", "GET", ch["api_host"], f"/2.0/repositories/{repo}", s), "read a granted repository"),
        _deny(f"{p}/commit", _req("sandbox", "POST", ch["api_host"], f"/2.0/repositories/{repo}/src", s, body={"message": "x"}), "commit (writes are not supported for Bitbucket)"),
        _deny(f"{p}/merge", _req("sandbox", "POST", ch["api_host"], f"/2.0/repositories/{repo}/pullrequests/1/merge", s), "merge a pull request"),
        _deny(f"{p}/push", _req("sandbox", "POST", ch["git_host"], f"/{repo}.git/git-receive-pack", s, git={"ref_updates": [{"ref": f"refs/heads/{CASE_BRANCH}", "old": SHA_OLD, "new": SHA_NEW}], "changed_paths": ["a"]}), "git push"),
    ]


def _tricks(request: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """A request smuggled through the normalisation tricks a lax proxy or upstream might honour."""
    path, method, host = request["path"], request["method"], request["host"]
    head, _, last = path.rpartition("/")
    variants: list[tuple[str, dict[str, Any]]] = [
        ("lower-method", {"method": method.lower()}),
        ("host-case-dot", {"host": host.upper() + "."}),
        ("host-port", {"host": f"{host}:443"}),
        ("double-slashes", {"path": "/" + path.replace("/", "//")}),
        ("trailing-slash", {"path": path + "/"}),
        ("encoded-letter", {"path": f"{head}/%{ord(last[0]):02X}{last[1:]}"}),
        ("dot-segment", {"path": f"{head}/comments/../{last}"}),
        ("encoded-dot-segment", {"path": f"{head}/comments/%2E%2e/{last}"}),
        ("encoded-slash", {"path": f"{head}%2F{last}"}),
        ("double-encoded-slash", {"path": f"{head}%252F{last}"}),
        ("upper-segment", {"path": f"{head}/{last.upper()}"}),
        ("override-header", {"method": "POST", "headers": {"X-HTTP-Method-Override": method}}),
        ("override-query", {"method": "GET", "query": f"_method={method}"}),
        ("override-query-encoded", {"method": "GET", "query": f"%5Fmethod={method}"}),
        ("rewrite-header", {"method": method, "headers": {"X-Original-URL": path.replace(last, "comments")}}),
        ("semicolon", {"path": f"{path};x=1"}),
        ("absolute-form", {"path": f"https://{host}{path}"}),
    ]
    out = []
    for name, change in variants:
        r = copy.deepcopy(request)
        r.update(change)
        out.append((name, r))
    return out


def _merge_approve_ready(d: Deployment, t: Target) -> list[Probe]:
    """CODE-02 on a GitHub workspace: merge, approve and mark-ready, every form, every source."""
    api, git, repo, base = _gh(t)
    s = _code_session(t)
    p = f"{t.name}/merge"
    probes: list[Probe] = [
        # positive controls: what the session may do on its pull request
        _allow(f"{p}/comment-review", _req("sandbox", "POST", api, f"{base}/pulls/{PROBE_PR}/reviews", s, body={"event": "COMMENT", "body": "results"}), "a COMMENT review on the session's pull request"),
        _allow(f"{p}/pr-title", _req("sandbox", "PATCH", api, f"{base}/pulls/{PROBE_PR}", s, body={"title": "perf"}), "edit the session's draft pull request"),
        _allow(f"{p}/graphql-comment-review", _gql(t, "sandbox", s, "mutation", [_field("addPullRequestReview", {"pullRequestId": "PR_probe", "event": "COMMENT", "body": "x"})]), "a COMMENT review (GraphQL)"),
    ]
    canonical = {
        "merge": lambda source, session: _req(source, "PUT", api, f"{base}/pulls/{PROBE_PR}/merge", session, body={"merge_method": "squash"}),
        "approve": lambda source, session: _req(source, "POST", api, f"{base}/pulls/{PROBE_PR}/reviews", session, body={"event": "APPROVE"}),
        "mark-ready": lambda source, session: _req(source, "PATCH", api, f"{base}/pulls/{PROBE_PR}", session, body={"draft": False}),
        "graphql-merge": lambda source, session: _gql(t, source, session, "mutation", [_field("mergePullRequest", {"pullRequestId": "PR_probe"})]),
        "graphql-approve": lambda source, session: _gql(t, source, session, "mutation", [_field("addPullRequestReview", {"pullRequestId": "PR_probe", "event": "APPROVE"})]),
        "graphql-mark-ready": lambda source, session: _gql(t, source, session, "mutation", [_field("markPullRequestReadyForReview", {"pullRequestId": "PR_probe"})]),
    }
    for source in _every_source(d, t):
        for op, build in canonical.items():
            if source != "sandbox" and (op in ("graphql-approve", "graphql-mark-ready") or (source.startswith("connector-") and op in ("approve", "mark-ready"))):
                continue  # every source merges in REST and GraphQL form; the sandbox and platform sources also approve and mark ready
            probes.append(_deny(f"{p}/{op}/{source}", build(source, _session_for(source, t)), f"{op} from {source}"))
    sandbox = lambda method, path, body=None, **kw: _req("sandbox", method, api, base + path, s, body=body, **kw)  # noqa: E731
    more = [
        ("merges-endpoint", sandbox("POST", "/merges", {"base": "main", "head": CASE_BRANCH})),
        ("merge-upstream", sandbox("POST", "/merge-upstream", {"branch": "main"})),
        ("update-branch", sandbox("PUT", f"/pulls/{PROBE_PR}/update-branch")),
        ("approve-pending", sandbox("POST", f"/pulls/{PROBE_PR}/reviews/555/events", {"event": "APPROVE"})),
        ("approve-mixed-case", sandbox("POST", f"/pulls/{PROBE_PR}/reviews", {"event": "Approve"})),
        ("approve-padded", sandbox("POST", f"/pulls/{PROBE_PR}/reviews", {"event": " APPROVE"})),
        ("approve-list", sandbox("POST", f"/pulls/{PROBE_PR}/reviews", {"event": ["APPROVE"]})),
        ("approve-batched", sandbox("POST", f"/pulls/{PROBE_PR}/reviews", [{"event": "APPROVE"}])),
        ("ready-string", sandbox("PATCH", f"/pulls/{PROBE_PR}", {"draft": "false"})),
        ("ready-zero", sandbox("PATCH", f"/pulls/{PROBE_PR}", {"draft": 0})),
        ("ready-null", sandbox("PATCH", f"/pulls/{PROBE_PR}", {"title": "x", "draft": None})),
        ("ready-issue", sandbox("PATCH", f"/issues/{PROBE_PR}", {"state": "open", "draft": False})),
        ("merge-leading-zeros", sandbox("PUT", f"/pulls/000{PROBE_PR}/merge")),
        ("graphql-auto-merge", _gql(t, "sandbox", s, "mutation", [_field("enablePullRequestAutoMerge", {"pullRequestId": "PR_probe", "mergeMethod": "SQUASH"})])),
        ("graphql-enqueue", _gql(t, "sandbox", s, "mutation", [_field("enqueuePullRequest", {"pullRequestId": "PR_probe"})])),
        ("graphql-merge-branch", _gql(t, "sandbox", s, "mutation", [_field("mergeBranch", {"repositoryId": "R_probe_0", "base": "main", "head": CASE_BRANCH})])),
        ("graphql-update-branch", _gql(t, "sandbox", s, "mutation", [_field("updatePullRequestBranch", {"pullRequestId": "PR_probe"})])),
        ("graphql-submit-approve", _gql(t, "sandbox", s, "mutation", [_field("submitPullRequestReview", {"pullRequestId": "PR_probe", "event": "APPROVE"})])),
        ("graphql-approve-variable", _gql(t, "sandbox", s, "mutation", [{"name": "addPullRequestReview", "arguments": {"input": {"pullRequestId": "PR_probe", "event": {"$variable": "e"}}}}], {"e": "approve"})),
        ("graphql-merge-aliased", _gql(t, "sandbox", s, "mutation", [_field("mergePullRequest", {"pullRequestId": "PR_probe"}, alias="addComment")])),
        ("graphql-merge-behind-comment", _gql(t, "sandbox", s, "mutation", [_field("addComment", {"subjectId": "PR_probe", "body": "ok"}), {"name": "mergePullRequest", "alias": "c2", "arguments": {"input": {"$variable": "m"}}}], {"m": {"pullRequestId": "PR_probe"}})),
        ("graphql-ready-aliased", _gql(t, "sandbox", s, "mutation", [_field("markPullRequestReadyForReview", {"pullRequestId": "PR_probe"}, alias="updatePullRequest")])),
        ("graphql-merge-as-query", _gql(t, "sandbox", s, "query", [_field("mergePullRequest", {"pullRequestId": "PR_probe"})])),
        ("graphql-merge-capitalised-type", _gql(t, "sandbox", s, "Mutation", [_field("mergePullRequest", {"pullRequestId": "PR_probe"})])),
        ("graphql-merge-unparsed", _req("sandbox", "POST", api, "/graphql", s, body={"query": 'mutation { mergePullRequest(input: {pullRequestId: "PR_probe"}) { clientMutationId } }'})),
        ("graphql-merge-get", _req("sandbox", "GET", api, "/graphql", s, query="query=mutation%20%7BmergePullRequest(input%3A%7BpullRequestId%3A%22PR_probe%22%7D)%7BclientMutationId%7D%7D")),
        ("graphql-merge-override", _gql(t, "sandbox", s, "mutation", [_field("addComment", {"subjectId": "PR_probe", "body": "x"})], path="//graphql", headers={"X-HTTP-Method-Override": "POST"})),
    ]
    if not _full(d, t, "github"):
        return probes
    probes += [_deny(f"{p}/{name}", request, name.replace("-", " ")) for name, request in more]
    for op in ("merge", "approve", "mark-ready"):
        for name, request in _tricks(canonical[op]("sandbox", s)):
            if op == "merge" or name in ("encoded-letter", "override-header"):
                probes.append(_deny(f"{p}/{op}/{name}", request, f"{op} smuggled ({name})"))
    return probes


# --- checks: telemetry ---------------------------------------------------------------------------

def _connector_of(d: Deployment, t: Target, kind: str) -> Optional[Connector]:
    return d.connectors.get((t.name, kind))


def _cfg(connector: Connector, *keys: str) -> Any:
    value: Any = connector.config
    for k in keys:
        value = value.get(k, ABSENT) if isinstance(value, dict) else ABSENT
    return value


def _record_config(e: Recorder, connector: Optional[Connector], t: Target, kind: str, requirement: str, ok: Callable[[Connector], bool]) -> None:
    if connector is None:
        e.record(t.urn, pointer("data", REGISTRATION_KEY), t.text, f"the {kind} connection of {t.name} has its rendered connector configuration (ConfigMap connector-{kind}-config)", False)
        return
    e.record(connector.resource.urn, pointer("data", CONNECTOR_KEY), connector.text, requirement, connector.config is not None and ok(connector))


@check
def telemetry_requests_read_only(view: StackView, e: Recorder) -> None:
    """Every telemetry connection gets reads (aggregate queries) and no write: per deployed and
    synthetic connection, an aggregate read is allowed and writes on its host are denied; writes
    to other hosts (the code host, Axiom ingest) are denied; no connector has platform
    destinations; every connector configuration says aggregate, no raw reads, no writes."""
    d = _begin(view, e)
    if d is None:
        return
    text = d.policy.at(pointer("data", DATA_KEY))
    connectors_declared = {s: h for s, h in d.data["platform_destinations"].items() if s.startswith("connector-")}
    e.record(d.policy.urn, pointer("data", DATA_KEY), text, "/platform_destinations names no connector (a connector reaches only its own workspace's connections, which are read-only)", not connectors_declared)
    _synthetic_record(e, d, "perfloop-probe-all")
    for t in d.targets("perfloop-probe-all"):
        probes: list[Probe] = []
        for conn in t.telemetry:
            where = f"{t.name}: {conn['kind']} via {conn['provider']} at {conn['host']}"
            read = _read(t, conn)
            if read is not None and conn.get("mode") == "aggregate":
                probes.append(_allow(f"{t.name}/{conn['kind']}/{conn['provider']}/read", read, f"an aggregate read; {where}"))
            for name, request in _writes(t, conn):
                probes.append(_deny(f"{t.name}/{conn['kind']}/{conn['provider']}/write:{name}", request, f"telemetry is read-only; {where}"))
            if not t.synthetic:
                connector = _connector_of(d, t, conn["kind"])
                _record_config(e, connector, t, conn["kind"], 'spec.access = {mode: "aggregate", raw_reads: false, writes: false}', lambda c: _cfg(c, "spec", "access") == {"mode": "aggregate", "raw_reads": False, "writes": False})
        for kind in KINDS:
            source = f"connector-{kind}"
            session = _connector_session(t)
            for host in d.data["platform_destinations"].get(source, []) if not t.synthetic else ():
                probes.append(_deny(f"{t.name}/{kind}/declared-host-write:{host}", _req(source, "PUT", host, "/api/v1/perfloop-probe", session, body={"x": 1}), f"a write to {host}, which the data declares for {source}"))
            probes.append(_deny(f"{t.name}/{kind}/axiom-ingest", _req(source, "POST", AXIOM_HOST, "/v1/datasets/perfloop-probe/ingest", session, body={"x": 1}), "a connector never writes to Axiom"))
            probes.append(_deny(f"{t.name}/{kind}/code-host-write", _req(source, "PUT", "api.github.com", "/repos/perfloop-probe/app/contents/x", session, body={"message": "x", "content": "eA==", "branch": CASE_BRANCH}), "a connector never writes to a code host"))
        _judge(e, d, t.urn, t.synthetic, probes)
    # Connector configurations of connections the data does not have are judged too.
    for (ws, kind), connector in sorted(d.connectors.items()):
        if not any(r.workspace == ws and any(c.get("kind") == kind for c in r.entry.get("telemetry") or []) for r in d.registrations):
            e.record(connector.resource.urn, pointer("data", CONNECTOR_KEY), connector.text, 'spec.access = {mode: "aggregate", raw_reads: false, writes: false}', connector.config is not None and _cfg(connector, "spec", "access") == {"mode": "aggregate", "raw_reads": False, "writes": False})


def _stack_configuration(view: StackView) -> tuple[Any, str]:
    """The stack configuration, where the customer's approvals are recorded, read from the stack
    file the view's stack URN names: (StackConfig, its path), or (None, why it cannot be read)."""
    from infra.engine import find_project
    from infra.errors import ConfigError

    m = re.fullmatch(r"urn:pulumi:([^:]+)::([^:]+)::.*", view.stack_urn)
    if not m:
        return None, f"the stack URN {view.stack_urn!r} names no stack"
    stack, project = m.groups()
    try:
        layout = find_project()
        if layout.name != project:
            return None, f"the project here is {layout.name!r}, not the view's {project!r}"
        path = layout.stack_file(stack)
        return _parsed_stack(layout, stack, path.stat().st_mtime_ns), str(path.relative_to(layout.root))
    except (ConfigError, OSError) as exc:
        return None, f"the stack configuration of {stack!r} cannot be read: {exc}"


@lru_cache(maxsize=16)
def _parsed_stack(layout: Any, stack: str, mtime: int) -> Any:
    from infra.config import NAMESPACE, decode_pulumi_config, parse_stack_config
    from infra.engine import read_stack_file

    values = {k.split(":", 1)[1]: v for k, v in read_stack_file(layout, stack).items() if k.startswith(NAMESPACE + ":")}
    return parse_stack_config(decode_pulumi_config(values), f"stack {stack}")


def _keys(values: Any) -> Any:
    """Attribute keys as the policy compares them (no leading @, each once, sorted)."""
    return sorted({str(v).lstrip("@") for v in values}) if isinstance(values, (list, tuple)) else values


@check
def trace_attribute_allowlist_approved_only(view: StackView, e: Recorder) -> None:
    """Per traces connection, the attribute allowlist in the deployed policy data (the workspace's
    registration) and in the traces connector's rendered configuration both equal the stack
    configuration's list, which records what the customer approved (empty by default). Reads the
    registrations and connectors only, so a tenant's own view is judged too."""
    d = deployment(view)
    if d.registration_problems:
        for urn, path, actual, required in d.registration_problems:
            e.record(urn, path, actual, required, False)
        return
    traces = [(reg, i, c) for reg in d.registrations for i, c in enumerate(reg.entry.get("telemetry") or []) if isinstance(c, Mapping) and c.get("kind") == "traces"]
    connectors = [c for (_, kind), c in sorted(d.connectors.items()) if kind == "traces"]
    config, source = _stack_configuration(view) if d.registrations or connectors else (None, "")
    configured: dict[str, Any] = {}
    if config is not None and config.workspace is not None and config.workspace.telemetry.traces is not None:
        configured[config.workspace.id] = _keys(config.workspace.telemetry.traces.trace_attribute_allowlist)
    if not traces and not connectors and not configured:
        if not d.registrations:
            e.not_applicable("this stack has no workspace registered with the egress proxy, so no traces connection")
        else:
            e.not_applicable("no traces connection is configured (" + ", ".join(f"workspace {reg.workspace}: none" for reg in d.registrations) + ")")
        return
    if config is None:
        e.record(view.stack_urn, "", source, "the stack configuration (where the customer's approved keys are recorded) is readable", False)
        return
    for reg, i, conn in traces:
        expected = configured.get(reg.workspace, ABSENT)
        shown = json.dumps(expected) if expected is not ABSENT else "no traces connection configured"
        found = _keys(conn.get("trace_attribute_allowlist"))
        e.record(reg.resource.urn, pointer("data", REGISTRATION_KEY), reg.text,
                 f"{pointer('policy', 'telemetry', i, 'trace_attribute_allowlist')} (= {json.dumps(found)}) equals the stack configuration's perfloop:workspace.telemetry.traces.trace_attribute_allowlist ({source}: {shown}; empty by default)",
                 expected is not ABSENT and found == expected)
        t = Target(reg.workspace, reg.entry, False, reg.resource.urn, reg.text)
        _record_config(e, d.connectors.get((reg.workspace, "traces")), t, "traces",
                       f"spec.traces.attribute_allowlist = {json.dumps(expected if expected is not ABSENT else [])} (the stack configuration's), per_case_approval_required: true, spec.endpoint.host = {conn.get('host')!r}",
                       lambda c: expected is not ABSENT and _keys(_cfg(c, "spec", "traces", "attribute_allowlist")) == expected and _cfg(c, "spec", "traces", "per_case_approval_required") is True and _cfg(c, "spec", "endpoint", "host") == conn.get("host"))
    for connector in connectors:
        if not any(reg.workspace == connector.workspace for reg, _, _ in traces):
            e.record(connector.resource.urn, pointer("data", CONNECTOR_KEY), connector.text, f"the traces connector of a traces connection in workspace {connector.workspace}'s registration", False)
    for ws_id, keys in configured.items():
        if not any(reg.workspace == ws_id for reg, _, _ in traces):
            e.record(view.stack_urn, "", {"workspace": ws_id, "configured trace_attribute_allowlist": keys, "configuration": source}, f"the configured traces connection of {ws_id} is in its registration", False)


@check
def trace_attributes_need_approval(view: StackView, e: Recorder) -> None:
    """The deployed policy reads span attributes only for keys that are both in the connection's
    allowlist and approved for the case: per deployed traces connection and per synthetic one
    (an allowlist with one key, and the default empty allowlist)."""
    d = _begin(view, e)
    if d is None:
        return
    _synthetic_record(e, d, "perfloop-probe-all", "perfloop-probe-traces")
    for t in d.targets("perfloop-probe-all", "perfloop-probe-traces"):
        _judge(e, d, t.urn, t.synthetic, [p for conn in t.telemetry if conn.get("kind") == "traces" for p in _trace_attribute_probes(t, conn)])


@check
def logs_aggregate_queries_only(view: StackView, e: Recorder) -> None:
    """Logs are read only as aggregate queries over the customer's views: per deployed and
    synthetic aggregate logs connection, an aggregate over a view is allowed; row reads (raw-event
    endpoints, non-aggregate queries, payload columns) and queries over anything but the views are
    denied. Each deployed logs connection names its views, and its connector configuration says
    the same views, aggregate permission, no raw columns and verbatim query audit."""
    d = _begin(view, e)
    if d is None:
        return
    _synthetic_record(e, d, "perfloop-probe-all", "perfloop-probe-strict")
    for t in d.targets("perfloop-probe-all", "perfloop-probe-strict"):
        probes: list[Probe] = []
        for i, conn in enumerate(t.telemetry):
            if conn.get("kind") != "logs":
                continue
            where = f"{t.name}: logs via {conn['provider']} at {conn['host']} ({conn.get('mode')}, views {conn.get('log_views')})"
            aggregate = conn.get("mode") == "aggregate"
            if not t.synthetic:
                inner = pointer("policy", "telemetry", i)
                e.record(t.urn, pointer("data", REGISTRATION_KEY), t.text, f"{inner}: mode strict, or aggregate over at least one customer-named view (log_views)", conn.get("mode") == "strict" or (aggregate and bool(conn.get("log_views"))))
                views = list(conn.get("log_views") or [])
                if aggregate:
                    _record_config(e, _connector_of(d, t, "logs"), t, "logs", f"spec.logs = aggregate over views {json.dumps(views)}, select_raw_columns: false; spec.audit records every query verbatim",
                                   lambda c: _cfg(c, "spec", "logs", "permission") == "aggregate" and sorted(_cfg(c, "spec", "logs", "views") or []) == sorted(views) and _cfg(c, "spec", "logs", "select_raw_columns") is False and _cfg(c, "spec", "audit", "record_queries") is True and _cfg(c, "spec", "audit", "verbatim") is True)
            read = _read(t, conn)
            if aggregate and read is not None:
                probes.append(_allow(f"{t.name}/logs/{conn['provider']}/aggregate", read, f"an aggregate over a customer view; {where}"))
            for name, request, rule in _raw_log_reads(t, conn):
                probes.append(_deny(f"{t.name}/logs/{conn['provider']}/row-read:{name}", request, f"a row read; {where}", rule if aggregate else None))
            for name, request in _off_view_reads(t, conn):
                probes.append(_deny(f"{t.name}/logs/{conn['provider']}/off-view:{name}", request, f"a query outside the customer's views; {where}"))
        _judge(e, d, t.urn, t.synthetic, probes)


def _strict_reads(t: Target, conn: Mapping[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    out = []
    read = _read(t, conn)
    if read is not None:
        out.append(("aggregate", read))
    if conn["provider"] == "gcp":
        out.append(("log-metric-definitions", _conn_req(t, conn, "GET", f"/v2/projects/{PROBE_PROJECT}/metrics")))
    return out


_LOG_ROLE = re.compile(r"^roles/logging\.")


@check
def strict_logs_mode_no_permission(view: StackView, e: Recorder) -> None:
    """Strict logs mode grants no log permission: the deployed policy, judging a synthetic strict
    connection of every provider (even one listing views), denies every log request (rule
    telemetry.logs_strict) that the same connection in aggregate mode is allowed; and for every
    deployed strict logs connection, no log endpoint is allowed, its connector configuration has
    permission none, and its connector has no credential secret and no logging role."""
    d = _begin(view, e)
    if d is None:
        return
    _synthetic_record(e, d, "perfloop-probe-all", "perfloop-probe-strict")
    twins = {c["provider"]: c for c in SYNTHETIC_WORKSPACES["perfloop-probe-all"]["telemetry"] if c["kind"] == "logs"}
    aggregate_t = Target("perfloop-probe-all", SYNTHETIC_WORKSPACES["perfloop-probe-all"], True, d.policy.urn)
    strict_t = Target("perfloop-probe-strict", SYNTHETIC_WORKSPACES["perfloop-probe-strict"], True, d.policy.urn)
    probes: list[Probe] = []
    for conn in strict_t.telemetry:
        twin = twins[conn["provider"]]
        probes.append(_allow(f"perfloop-probe-all/logs/{twin['provider']}/aggregate", _read(aggregate_t, twin), f"the same read in aggregate mode (so strict mode alone explains the denies below); logs via {twin['provider']}"))
        for name, request in _strict_reads(strict_t, conn):
            probes.append(_deny(f"perfloop-probe-strict/logs/{conn['provider']}/{name}", request, f"strict mode grants no log permission at all; logs via {conn['provider']}", "telemetry.logs_strict"))
        for name, request, _ in _raw_log_reads(strict_t, conn)[:2]:
            probes.append(_deny(f"perfloop-probe-strict/logs/{conn['provider']}/row-read:{name}", request, f"strict mode grants no log permission at all; logs via {conn['provider']}"))
    _judge(e, d, d.policy.urn, True, probes)
    project = view.output("project")
    for t in d.targets():
        for conn in t.telemetry:
            if conn.get("kind") != "logs" or conn.get("mode") != "strict":
                continue
            where = f"{t.name}: strict logs via {conn['provider']} at {conn['host']}"
            reads = _strict_reads(t, conn) + [(f"row-read:{name}", request) for name, request, _ in _raw_log_reads(t, conn)[:2]]
            _judge(e, d, t.urn, False, [_deny(f"{t.name}/logs/{conn['provider']}/{name}", request, f"strict mode grants no log permission at all; {where}") for name, request in reads])
            _record_config(e, _connector_of(d, t, "logs"), t, "logs", 'spec.logs = {permission: "none", views: [], enabled: false}', lambda c: _cfg(c, "spec", "logs") == {"permission": "none", "views": [], "enabled": False})
            secret_id = f"perfloop-{t.name}-logs-credentials"
            secrets = [s for s in view.of_type(SECRET) if s.at("/secretId") == secret_id]
            e.record(secrets[0].urn if secrets else view.stack_urn, "", [s.urn for s in secrets], f"no credential secret {secret_id} for a strict logs connection", not secrets)
            member = f"serviceAccount:pf-{t.name}-logs@{project}.iam.gserviceaccount.com"
            for g in grants(view):
                for m, path in g.members:
                    if m == member and isinstance(g.role, str) and _LOG_ROLE.match(g.role):
                        e.record(g.resource.urn, g.role_path, g.resource.at(g.role_path), f"no roles/logging.* for {member} (strict logs)", False)
            e.record(view.stack_urn, "", {"logs connector identity": member, "logging roles": sorted({str(g.role) for g in grants(view) for m, _ in g.members if m == member and isinstance(g.role, str) and _LOG_ROLE.match(g.role)})}, f"no roles/logging.* for the logs connector of {t.name} (strict logs)", not any(m == member and isinstance(g.role, str) and _LOG_ROLE.match(g.role) for g in grants(view) for m, _ in g.members))


# --- checks: code -----------------------------------------------------------------------------------

@check
def code_writes_case_branches_only(view: StackView, e: Recorder) -> None:
    """On each deployed code host (and a synthetic GitHub and GitLab workspace), the session may
    write to its case branch and its pull request (allowed, positive controls) and nothing else:
    the default branch, other branches, the case prefix smuggled, other pull requests, other
    repositories and repository administration are denied, in REST, GraphQL and git form."""
    d = _begin(view, e)
    if d is None:
        return
    _synthetic_record(e, d, "perfloop-probe-all", "perfloop-probe-gitlab")
    for t in d.targets("perfloop-probe-all", "perfloop-probe-gitlab"):
        ch = t.code_host
        if ch is None or not ch.get("repositories"):
            continue
        if not _full(d, t, ch.get("provider")):
            continue
        probes = _case_branch_writes(t) if ch.get("provider") == "github" else _other_code_host_writes(t)
        _judge(e, d, t.urn, t.synthetic, probes)


@check
def merge_approve_ready_denied(view: StackView, e: Recorder) -> None:
    """Merge, approve and mark-ready are denied for every source, in REST and GraphQL form and
    through normalisation tricks, on each deployed GitHub workspace and on a synthetic one whose
    data also declares the code host for a platform source (so the denies, not the lack of a
    destination, are what stops them); a COMMENT review and an edit of the session's draft pull
    request are allowed (positive controls)."""
    d = _begin(view, e)
    if d is None:
        return
    _synthetic_record(e, d, "perfloop-probe-all")
    for t in d.targets("perfloop-probe-all"):
        ch = t.code_host
        if ch is not None and ch.get("provider") == "github" and ch.get("repositories"):
            _judge(e, d, t.urn, t.synthetic, _merge_approve_ready(d, t))


# --- checks: the proxy ------------------------------------------------------------------------------

@check
def proxy_denies_by_default(view: StackView, e: Recorder) -> None:
    """A request no allow rule matches is denied: unknown hosts from every source, unknown paths on
    known hosts, an unknown or missing source; one probe reaches the default rule itself
    (default.deny). Reads the grant allows are allowed (positive controls)."""
    d = _begin(view, e)
    if d is None:
        return
    _synthetic_record(e, d, "perfloop-probe-all", "perfloop-probe-gitlab")
    for t in d.targets("perfloop-probe-all", "perfloop-probe-gitlab"):
        probes: list[Probe] = []
        for source in _every_source(d, t) if t.name != "perfloop-probe-gitlab" else ():
            session = _session_for(source, t)
            probes.append(_deny(f"{t.name}/unlisted-host/{source}", _req(source, "GET", "unlisted.perfloop-probe.example", "/", session), f"a host no rule allows, from {source}"))
        ch = t.code_host
        s = _code_session(t)
        if ch is not None and ch.get("repositories"):
            repo = ch["repositories"][0]
            if ch.get("provider") == "github":
                probes += [
                    _allow(f"{t.name}/granted-read", _req("sandbox", "GET", ch["api_host"], f"/repos/{repo}/pulls", s, query="state=open"), "a read of a granted repository"),
                    _deny(f"{t.name}/unknown-path", _req("sandbox", "GET", ch["api_host"], "/user/repos", s), "a path outside /repos of the grant"),
                    _deny(f"{t.name}/unknown-git-path", _req("sandbox", "GET", ch["git_host"], f"/{repo}.git/info/lfs/objects", s), "a git path no rule allows"),
                    _deny(f"{t.name}/repo-by-id", _req("sandbox", "GET", ch["api_host"], "/repositories/1/contents", s), "a repository by numeric id"),
                ]
            elif ch.get("provider") == "gitlab":
                probes += [
                    _allow(f"{t.name}/granted-read", _req("sandbox", "GET", ch["api_host"], "/api/v4/projects/" + quote(repo, safe=""), s), "a read of a granted project"),
                    _deny(f"{t.name}/default-rule", _req("sandbox", "GET", ch["api_host"], "/api/v4/users", s), "a path no rule names at all: the default", "default.deny"),
                ]
        for conn in t.telemetry[:1]:
            probes.append(_deny(f"{t.name}/connector-unknown-path", _conn_req(t, conn, "GET", "/api/perfloop-probe-unknown"), "a path no telemetry rule allows"))
        _judge(e, d, t.urn, t.synthetic, probes)
    platform = [
        _deny("unknown-source", _req(PROBE_SOURCE_UNKNOWN, "GET", WORKOS_HOST, "/"), "an unknown source"),
        _deny("no-source", _req(None, "GET", WORKOS_HOST, "/"), "a request without a source"),
    ]
    for source, hosts in sorted(d.data["platform_destinations"].items()):
        for host in hosts:
            if host == WORKOS_HOST:
                platform.append(_allow(f"declared/{source}/{host}", _req(source, "GET", host, "/user_management/users"), f"{host} is a declared destination of {source}"))
            elif host == AXIOM_HOST:
                platform.append(_allow(f"declared/{source}/{host}", _req(source, "POST", host, "/v1/datasets/perfloop-ops/ingest", body={"level": "info"}), f"Axiom ingest is declared for {source}"))
    _judge(e, d, d.policy.urn, False, platform)


@check
def egress_dlp_enabled(view: StackView, e: Recorder) -> None:
    """The proxy's deployed settings (proxy.json, mounted from the egress-policy ConfigMap) turn
    DLP on for request bodies, with block or alias on detection, with no per-destination
    exemption; nothing in the proxy's Deployment overrides them."""
    d = _begin(view, e, engine=False)
    if d is None:
        return
    text = d.policy.at(pointer("data", PROXY_KEY))
    dlp = d.proxy.get("dlp", ABSENT) if isinstance(d.proxy, dict) else ABSENT
    path = pointer("data", PROXY_KEY)
    e.record(d.policy.urn, path, text, "known JSON with a /dlp object", isinstance(dlp, dict))
    if isinstance(dlp, dict):
        scan = dlp.get("scan")
        e.record(d.policy.urn, path, text, "/dlp/enabled = true", dlp.get("enabled") is True)
        e.record(d.policy.urn, path, text, f"/dlp/scan includes \"request_body\" (outbound bodies are scanned); found {json.dumps(scan)}", isinstance(scan, list) and "request_body" in scan)
        e.record(d.policy.urn, path, text, f"/dlp/on_detection one of {list(DLP_ACTIONS)}; found {json.dumps(dlp.get('on_detection'))}", dlp.get("on_detection") in DLP_ACTIONS)
        e.record(d.policy.urn, path, text, f"/dlp has only {sorted(DLP_KEYS)}: no exemption of any destination (DLP applies on every permitted path); found {sorted(dlp)}", set(dlp) <= DLP_KEYS)
    proxy_ns, _ = _namespaces()
    deployments = [r for r in view.of_type(DEPLOYMENT) if r.at("/metadata/name") == EGRESS_PROXY and r.at("/metadata/namespace") == proxy_ns]
    e.record(view.stack_urn if not deployments else deployments[0].urn, "", [r.urn for r in deployments], f"one egress-proxy Deployment in {proxy_ns}", len(deployments) == 1)
    for dep in deployments:
        volumes = dep.at("/spec/template/spec/volumes")
        mounted = isinstance(volumes, tuple) and any(isinstance(v, Mapping) and (v.get("configMap") or {}).get("name") == POLICY_CONFIG_MAP for v in volumes)
        e.record(dep.urn, "/spec/template/spec/volumes", volumes, f"mounts the ConfigMap {POLICY_CONFIG_MAP} (the policy, its data and these settings)", mounted)
        containers = dep.at("/spec/template/spec/containers")
        for i, c in enumerate(containers if isinstance(containers, tuple) else ()):
            for key in ("args", "command", "env"):
                value = dep.at(pointer("spec", "template", "spec", "containers", i, key))
                overrides = value is not ABSENT and "dlp" in json.dumps(thaw(value)).lower()
                e.record(dep.urn, pointer("spec", "template", "spec", "containers", i, key), value, "no DLP override (absent, or nothing naming dlp)", not overrides and not contains_unknown(value))


# --- checks: destinations -----------------------------------------------------------------------

def _subprocessor_ok(source: str, host: str, region: str) -> bool:
    if host == WORKOS_HOST:
        return source == "control-plane-api"
    if host == f"{region}-aiplatform.googleapis.com":
        return source == "agent-orchestrator"
    if host == AXIOM_HOST:
        return source in egress_policy.PLATFORM_SOURCES
    return False


@check
def egress_destinations_declared(view: StackView, e: Recorder) -> None:
    """Every destination the deployed data allows is a declared subprocessor reached by the
    workload it serves (WorkOS: control-plane-api; Vertex AI in the stack's region:
    agent-orchestrator; Axiom: platform workloads) or a workspace's configured code host or
    telemetry host (a connection with its deployed connector); nothing else. Probes: no source
    reaches metadata, cluster-internal, IP-literal or unlisted hosts, or another workspace's hosts;
    subprocessors are not reachable from the wrong source; declared ones are (positive controls)."""
    d = _begin(view, e)
    if d is None:
        return
    region = d.data["region"]
    data_text = d.policy.at(pointer("data", DATA_KEY))
    for source, hosts in sorted(d.data["platform_destinations"].items()):
        for j, host in enumerate(hosts):
            e.record(d.policy.urn, pointer("data", DATA_KEY), data_text, f"{pointer('platform_destinations', source, j)} = {host!r}: a declared subprocessor reached by the workload it serves ({WORKOS_HOST}: control-plane-api; {region}-aiplatform.googleapis.com: agent-orchestrator; {AXIOM_HOST}: platform workloads)", _subprocessor_ok(source, host, region))
    e.record(d.policy.urn, pointer("data", DATA_KEY), data_text, "/ports is empty (non-443 ports only for configured telemetry connections, which arrive with registrations)", d.data.get("ports") == {})
    for reg in d.registrations:
        ch = reg.entry.get("code_host")
        if isinstance(ch, Mapping):
            expected = CODE_HOSTS.get(ch.get("provider"))
            e.record(reg.resource.urn, pointer("data", REGISTRATION_KEY), reg.text, f"/policy/code_host: the hosts of its provider {ch.get('provider')!r} ({json.dumps(expected)}); found {ch.get('api_host')!r}, {ch.get('git_host')!r}", expected is not None and ch.get("api_host") == expected["api_host"] and ch.get("git_host") == expected["git_host"])
        for i, conn in enumerate(reg.entry.get("telemetry") or []):
            connector = d.connectors.get((reg.workspace, conn.get("kind")))
            host = _cfg(connector, "spec", "endpoint", "host") if connector is not None else ABSENT
            ok = connector is not None and host == conn.get("host") and _cfg(connector, "spec", "provider") == conn.get("provider") and not MODEL_HOST_RE.match(str(conn.get("host")))
            e.record(reg.resource.urn, pointer("data", REGISTRATION_KEY), reg.text, f"{pointer('policy', 'telemetry', i, 'host')} = {conn.get('host')!r}: the host of a configured {conn.get('kind')} connection (its deployed connector-{conn.get('kind')}-config names it: {host if host is not ABSENT else 'none deployed'})", ok)
    _synthetic_record(e, d, "perfloop-probe-all")
    api_hosts = [h for h in d.data["api_server_hosts"]]
    for t in d.targets("perfloop-probe-all"):
        probes: list[Probe] = []
        for source in _every_source(d, t):
            session = _session_for(source, t)
            for host in (*NEVER_HOSTS, *api_hosts) if source == "sandbox" else NEVER_HOSTS[:1]:
                probes.append(_deny(f"{t.name}/never/{source}/{host}", _req(source, "GET", host, "/computeMetadata/v1/instance/service-accounts/default/token", session, headers={"Metadata-Flavor": "Google"}), f"{host} is never a destination (from {source})"))
            for host in UNLISTED_HOSTS if source == "sandbox" else UNLISTED_HOSTS[:1]:
                probes.append(_deny(f"{t.name}/unlisted/{source}/{host}", _req(source, "PUT", host, "/perfloop-probe/upload", session, body={"data": "x"}), f"{host} is no declared destination (from {source})"))
            if source != "control-plane-api":
                probes.append(_deny(f"{t.name}/workos/{source}", _req(source, "GET", WORKOS_HOST, "/user_management/users", session), f"WorkOS from {source}"))
            if source == "sandbox" or source.startswith("connector-"):
                probes.append(_deny(f"{t.name}/axiom-ingest/{source}", _req(source, "POST", AXIOM_HOST, "/v1/datasets/perfloop-ops/ingest", session, body={"x": 1}), f"Axiom ingest from {source}"))
        ch = t.code_host
        if ch is not None and ch.get("repositories"):
            read = _req("sandbox", "GET", ch["api_host"], f"/repos/{ch['repositories'][0]}" if ch.get("provider") == "github" else ("/api/v4/projects/" + quote(ch["repositories"][0], safe="") if ch.get("provider") == "gitlab" else f"/2.0/repositories/{ch['repositories'][0]}"), _code_session(t))
            probes.append(_allow(f"{t.name}/code-host", read, "the workspace's configured code host"))
        _judge(e, d, t.urn, t.synthetic, probes)
        if not t.synthetic:
            # Next to another (synthetic) workspace: its hosts and repositories are not this one's.
            other = SYNTHETIC_WORKSPACES["perfloop-probe-all"]
            own = {(c.get("kind"), c.get("host")) for c in t.telemetry}
            cross = [
                _deny(f"{t.name}/cross/{c['kind']}/{c['host']}", _req(f"connector-{c['kind']}", "GET", c["host"], "/api/v1/query", _connector_session(t), query="query=x"), f"another workspace's {c['kind']} host")
                for c in other["telemetry"] if (c["kind"], c["host"]) not in own
            ]
            if ch is None or ch.get("api_host") != other["code_host"]["api_host"]:
                cross.append(_deny(f"{t.name}/cross/code-host", _req("sandbox", "GET", other["code_host"]["api_host"], "/repos/perfloop-probe/app", _code_session(t)), "another workspace's code host"))
            cross.append(_deny(f"{t.name}/cross/repository", _req("sandbox", "GET", "api.github.com", "/repos/perfloop-probe/app", _code_session(t)), "another workspace's repository"))
            _judge(e, d, t.urn, CROSS, cross)
    platform = []
    for source, hosts in sorted(d.data["platform_destinations"].items()):
        for host in hosts:
            if host == WORKOS_HOST:
                platform.append(_allow(f"declared/{source}/{host}", _req(source, "GET", host, "/user_management/users"), f"a declared subprocessor of {source}"))
            elif host == AXIOM_HOST:
                platform.append(_allow(f"declared/{source}/{host}", _req(source, "POST", host, "/v1/datasets/perfloop-ops/ingest", body={"level": "info"}), f"Axiom ingest declared for {source}"))
                platform.append(_deny(f"declared/{source}/{host}/query", _req(source, "POST", host, "/v1/datasets/_apl", body={"apl": "['customer'] | take 1"}), f"Axiom is for ingest, never a query (from {source})"))
    _judge(e, d, d.policy.urn, False, platform)


def _other_region(region: str) -> str:
    return "us-central1" if region != "us-central1" else "europe-west4"


@check
def no_model_endpoint_but_vertex(view: StackView, e: Recorder) -> None:
    """No model endpoint but Vertex AI in the stack's region is reachable: the deployed data
    declares no other (and Vertex AI only for agent-orchestrator); every model vendor's API,
    global and other-region Vertex AI are denied from every source, on the deployed data and on
    probe data that declares them for the orchestrator and the API; Vertex AI inference in the
    region is allowed from agent-orchestrator alone (positive control on the probe data, and on
    the deployed data when it declares Vertex AI)."""
    d = _begin(view, e)
    if d is None:
        return
    region = d.data["region"]
    vertex = f"{region}-aiplatform.googleapis.com"
    data_text = d.policy.at(pointer("data", DATA_KEY))
    for source, hosts in sorted(d.data["platform_destinations"].items()):
        for j, host in enumerate(hosts):
            if MODEL_HOST_RE.match(host):
                e.record(d.policy.urn, pointer("data", DATA_KEY), data_text, f"{pointer('platform_destinations', source, j)} = {host!r}: the only model endpoint is {vertex}, for agent-orchestrator", host == vertex and source == "agent-orchestrator")
    e.record(d.policy.urn, pointer("data", DATA_KEY), data_text, f"model endpoints declared: only {vertex} for agent-orchestrator (found {sorted({h for hs in d.data['platform_destinations'].values() for h in hs if MODEL_HOST_RE.match(h)})})", all(not MODEL_HOST_RE.match(h) or (h == vertex and s == "agent-orchestrator") for s, hs in d.data["platform_destinations"].items() for h in hs))
    for reg in d.registrations:
        hosts = [c.get("host") for c in reg.entry.get("telemetry") or []] + ([reg.entry["code_host"].get("api_host"), reg.entry["code_host"].get("git_host")] if isinstance(reg.entry.get("code_host"), Mapping) else [])
        e.record(reg.resource.urn, pointer("data", REGISTRATION_KEY), reg.text, f"no connection host is a model endpoint (hosts {hosts})", not any(MODEL_HOST_RE.match(str(h)) for h in hosts))
    _synthetic_record(e, d, "perfloop-probe-all")
    models = ("api.openai.com", "api.anthropic.com", "generativelanguage.googleapis.com", f"{_other_region(region)}-aiplatform.googleapis.com")
    inference = f"/v1/projects/{PROBE_PROJECT}/locations/{region}/publishers/google/models/gemini-2.0-flash:generateContent"
    body = {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}
    for t in d.targets(*(() if d.registrations else ("perfloop-probe-all",))):
        probes = []
        for source in _every_source(d, t):
            session = _session_for(source, t)
            for host in models:
                probes.append(_deny(f"{t.name}/model/{source}/{host}", _req(source, "POST", host, "/v1/chat/completions", session, body=body), f"{host} is a model endpoint other than Vertex AI in {region} (from {source})"))
            if source != "agent-orchestrator":
                probes.append(_deny(f"{t.name}/vertex/{source}", _req(source, "POST", vertex, inference, session, body=body), f"Vertex AI is for agent-orchestrator alone, not {source}"))
        _judge(e, d, t.urn, t.synthetic, probes)
    platform: list[tuple[bool, Probe]] = []
    for synthetic in (False, True):
        label = "probe" if synthetic else "deployed"
        for host in ("API.OPENAI.COM.", "api.openai.com:443", "api.anthropic.com", f"{_other_region(region)}-aiplatform.googleapis.com", "aiplatform.googleapis.com"):
            platform.append((synthetic, _deny(f"{label}/orchestrator/{host}", _req("agent-orchestrator", "POST", host, "/v1/messages", body=body), f"{host} from agent-orchestrator, even where the data declares it")))
        platform.append((synthetic, _deny(f"{label}/orchestrator/vertex-other-location", _req("agent-orchestrator", "POST", vertex, inference.replace(f"/locations/{region}/", f"/locations/{_other_region(region)}/"), body=body), "Vertex AI in another location through the regional host")))
        platform.append((synthetic, _deny(f"{label}/orchestrator/vertex-not-inference", _req("agent-orchestrator", "GET", vertex, f"/v1/projects/{PROBE_PROJECT}/locations/{region}/datasets"), "Vertex AI for anything but inference")))
    vertex_declared = vertex in d.data["platform_destinations"].get("agent-orchestrator", [])
    platform.append((True, _allow("probe/orchestrator/vertex", _req("agent-orchestrator", "POST", vertex, inference, body=body), f"Vertex AI inference in {region} from agent-orchestrator, where the data declares it")))
    if vertex_declared:
        platform.append((False, _allow("deployed/orchestrator/vertex", _req("agent-orchestrator", "POST", vertex, inference, body=body), f"Vertex AI inference in {region} from agent-orchestrator (declared)")))
    else:
        e.record(d.policy.urn, pointer("data", DATA_KEY), data_text, f"Vertex AI is not a proxy destination here (agent-orchestrator reaches {vertex} over Private Google Access, under PF-AI-01's IAM): nothing to allow through the proxy", True)
    for synthetic in (False, True):
        _judge(e, d, d.policy.urn, synthetic, [p for s, p in platform if s == synthetic])


EGRESS_CHECKS: tuple[Callable[..., Any], ...] = (
    telemetry_requests_read_only,
    trace_attribute_allowlist_approved_only,
    trace_attributes_need_approval,
    logs_aggregate_queries_only,
    strict_logs_mode_no_permission,
    code_writes_case_branches_only,
    merge_approve_ready_denied,
    proxy_denies_by_default,
    egress_dlp_enabled,
    egress_destinations_declared,
    no_model_endpoint_but_vertex,
)
