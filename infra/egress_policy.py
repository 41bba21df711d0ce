"""Egress policy data, evaluation and connector configuration.

Pure Python: imports only the standard library, jinja2 and (lazily, inside
:func:`evaluate`) regopy. No Pulumi import, so it can run in the proxy, in CI
and in Pulumi programs alike.

Three entry points:

``render_policy_data(stack) -> dict``
    Validates the plain per-stack inputs and builds the ``data.perfloop``
    document the Rego policy in ``policies/egress/`` reads. Input shape::

        {
          "region": "europe-west4",                 # GCP region (Vertex AI pinned here)
          "api_server_hosts": ["34.0.0.1", ...],    # cluster API server endpoint(s)
          "workspaces": [
            {
              "id": "ws-acme",
              "code_host": {                        # or None
                "provider": "github" | "gitlab" | "bitbucket",
                "host": "github.com",               # optional
                "repositories": ["owner/repo", ...],
              },
              "telemetry": [
                {
                  "kind": "metrics" | "traces" | "logs" | "profiles",
                  "provider": "datadog" | "grafana" | "axiom" | "gcp",
                  "host": "api.datadoghq.eu",       # optional except grafana
                  "port": 443,                      # optional
                  "mode": "aggregate" | "strict",   # optional, default aggregate;
                                                    # strict only for logs
                  "log_views": [...],               # logs only; required unless strict
                  "trace_attribute_allowlist": [],  # traces only; default empty
                  "datasource_uids": [...],         # grafana only; required
                },
              ],
            },
          ],
          "platform_destinations": {"control-plane-api": ["api.workos.com"], ...},
        }

    Output is deterministic (sorted keys and lists). Any problem raises
    ``ValueError`` whose message starts with the path of the offending key,
    e.g. ``workspaces[0].telemetry[1].host: ...``.

``evaluate(data, request, policy_dir=None, modules=None) -> dict``
    Evaluates one request (see ``policies/egress/input.schema.json``) against
    the policy with regopy and returns ``{"allow", "reason", "rule"}``. The
    policy is ``policies/egress`` (or ``policy_dir``), or the Rego sources
    given as ``modules`` ({name: source}, e.g. as deployed). Fails closed: any
    engine error or malformed result is a deny.

``render_connector_config(connection) -> str``
    Renders the YAML configuration of one telemetry connector connection
    from the jinja2 templates in ``platform/connectors/``.
"""

from __future__ import annotations

import json
import re
import threading
from pathlib import Path
from typing import Any

import jinja2

REPO_ROOT = Path(__file__).resolve().parent.parent
POLICY_DIR = REPO_ROOT / "policies" / "egress"
CONNECTOR_TEMPLATE_DIR = REPO_ROOT / "platform" / "connectors"

SOURCES = (
    "sandbox",
    "egress-proxy",
    "control-plane-api",
    "session-controller",
    "agent-orchestrator",
    "connector-metrics",
    "connector-traces",
    "connector-logs",
    "connector-profiles",
    "audit-cleanup",
    "db-migrate",
)
CONNECTOR_SOURCES = ("connector-metrics", "connector-traces", "connector-logs", "connector-profiles")
PLATFORM_SOURCES = tuple(s for s in SOURCES if s != "sandbox" and s not in CONNECTOR_SOURCES)

KINDS = ("metrics", "traces", "logs", "profiles")
PROVIDERS = ("datadog", "grafana", "axiom", "gcp")
CODE_HOST_PROVIDERS = ("github", "gitlab", "bitbucket")

# (kind, provider) pairs for which the policy models aggregate-only reads.
SUPPORTED_TELEMETRY = {
    ("metrics", "datadog"), ("traces", "datadog"), ("logs", "datadog"),
    ("metrics", "gcp"), ("traces", "gcp"), ("logs", "gcp"),
    ("metrics", "grafana"), ("logs", "grafana"), ("profiles", "grafana"),
    ("metrics", "axiom"), ("traces", "axiom"), ("logs", "axiom"),
}

DATADOG_HOSTS = (
    "api.datadoghq.com",
    "api.us3.datadoghq.com",
    "api.us5.datadoghq.com",
    "api.datadoghq.eu",
    "api.ap1.datadoghq.com",
    "api.ap2.datadoghq.com",
    "api.ddog-gov.com",
)
GCP_HOSTS = {
    "metrics": "monitoring.googleapis.com",
    "traces": "cloudtrace.googleapis.com",
    "logs": "logging.googleapis.com",
}
AXIOM_HOST = "api.axiom.co"
WORKOS_HOST = "api.workos.com"

# Hosts no data may ever name (mirrors destinations.rego; the policy enforces
# them regardless, this only makes a bad stack fail at deploy time).
NEVER_HOSTS = {
    "localhost", "metadata", "metadata.google.internal", "metadata.goog", "instance-data",
    "kubernetes", "kubernetes.default", "kubernetes.default.svc",
    "kubernetes.default.svc.cluster.local", "localtest.me", "lvh.me",
}
NEVER_SUFFIXES = (
    ".localhost", ".internal", ".svc", ".cluster.local", ".local", ".localdomain",
    ".arpa", ".nip.io", ".sslip.io", ".xip.io", ".localtest.me", ".lvh.me",
)
MODEL_HOSTS = {
    "api.openai.com", "api.anthropic.com", "generativelanguage.googleapis.com",
    "aiplatform.googleapis.com", "api.mistral.ai", "api.cohere.ai", "api.cohere.com",
    "api.groq.com", "api.together.xyz", "api.together.ai", "api.deepseek.com", "api.x.ai",
    "api.fireworks.ai", "api.perplexity.ai", "openrouter.ai",
    "api-inference.huggingface.co", "router.huggingface.co",
}

_HOSTNAME_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)+$")
_IPV4ISH_RE = re.compile(r"^(0x[0-9a-f]*|[0-9]+)$")
_REGION_RE = re.compile(r"^[a-z]+-[a-z]+[0-9]+$")
_WORKSPACE_ID_RE = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
_REPO_PART_RE = re.compile(r"^[A-Za-z0-9._-]+$")
_VIEW_RE = re.compile(r"^[^\x00-\x1f\x7f]{1,256}$")
_ATTR_RE = re.compile(r"^@?[A-Za-z0-9_.-]{1,128}$")
_UID_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


# --------------------------------------------------------------------- helpers


def _fail(where: str, message: str) -> None:
    raise ValueError(f"{where}: {message}")


def _expect_keys(obj: Any, where: str, required: tuple, optional: tuple = ()) -> None:
    if not isinstance(obj, dict):
        _fail(where, f"must be an object, got {type(obj).__name__}")
    for key in required:
        if key not in obj:
            _fail(f"{where}.{key}" if where else key, "is required")
    for key in obj:
        if key not in required and key not in optional:
            _fail(f"{where}.{key}" if where else str(key), "unknown key")


def _str_list(value: Any, where: str) -> list:
    if value is None:
        return []
    if not isinstance(value, (list, tuple)):
        _fail(where, f"must be a list of strings, got {type(value).__name__}")
    for i, item in enumerate(value):
        if not isinstance(item, str):
            _fail(f"{where}[{i}]", f"must be a string, got {type(item).__name__}")
    return list(value)


def _is_ip_literal(host: str) -> bool:
    if ":" in host or "[" in host:
        return True
    last = host.rstrip(".").split(".")[-1]
    return bool(_IPV4ISH_RE.match(last))


def _is_never_host(host: str) -> bool:
    return host in NEVER_HOSTS or any(host.endswith(sfx) for sfx in NEVER_SUFFIXES)


def _hostname(value: Any, where: str, allow_ip: bool = False) -> str:
    if not isinstance(value, str) or not value:
        _fail(where, "must be a non-empty host name")
    host = value.strip().lower()
    if host.endswith("."):
        host = host[:-1]
    if _is_ip_literal(host):
        if allow_ip:
            return host
        _fail(where, f"{value!r} is an IP literal; use a DNS name")
    if not _HOSTNAME_RE.match(host):
        _fail(where, f"{value!r} is not a valid fully-qualified host name")
    if _is_never_host(host):
        _fail(where, f"{value!r} is a cloud-metadata/cluster-internal/loopback name and can never be a destination")
    return host


def _port(value: Any, where: str) -> int:
    if value is None:
        return 443
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        _fail(where, f"must be an integer TCP port, got {value!r}")
    return value


# --------------------------------------------------------------------- code host


def _normalise_code_host(ch: Any, where: str) -> dict | None:
    if ch is None:
        return None
    _expect_keys(ch, where, ("provider", "repositories"), ("host",))
    provider = ch["provider"]
    if provider not in CODE_HOST_PROVIDERS:
        _fail(f"{where}.provider", f"must be one of {', '.join(CODE_HOST_PROVIDERS)}, got {provider!r}")
    host = ch.get("host")
    if provider == "github":
        host = _hostname(host, f"{where}.host") if host is not None else "github.com"
        if host == "github.com":
            api_host, git_host = "api.github.com", "github.com"
        elif host.endswith(".ghe.com") and host.count(".") == 2:
            api_host, git_host = f"api.{host}", host
        else:
            _fail(f"{where}.host", f"GitHub host {host!r} is not supported (github.com or <sub>.ghe.com)")
    elif provider == "gitlab":
        host = _hostname(host, f"{where}.host") if host is not None else "gitlab.com"
        api_host = git_host = host
    else:
        if host is not None and _hostname(host, f"{where}.host") != "bitbucket.org":
            _fail(f"{where}.host", "only Bitbucket Cloud (bitbucket.org) is supported")
        api_host, git_host = "api.bitbucket.org", "bitbucket.org"

    repos = _str_list(ch["repositories"], f"{where}.repositories")
    if not repos:
        _fail(f"{where}.repositories", "must name at least one repository")
    normalised = set()
    for i, repo in enumerate(repos):
        parts = repo.strip().split("/")
        max_parts = 20 if provider == "gitlab" else 2
        if not 2 <= len(parts) <= max_parts or not all(_REPO_PART_RE.match(p) for p in parts):
            _fail(f"{where}.repositories[{i}]", f"{repo!r} is not an owner/repo name")
        if any(p in (".", "..") for p in parts):
            _fail(f"{where}.repositories[{i}]", f"{repo!r} contains a dot segment")
        normalised.add("/".join(parts).lower())
    return {
        "api_host": api_host,
        "git_host": git_host,
        "provider": provider,
        "repositories": sorted(normalised),
    }


# --------------------------------------------------------------------- telemetry


def _normalise_telemetry(entry: Any, where: str) -> dict:
    _expect_keys(
        entry, where, ("kind", "provider"),
        ("host", "port", "mode", "log_views", "trace_attribute_allowlist", "datasource_uids"),
    )
    kind, provider = entry["kind"], entry["provider"]
    if kind not in KINDS:
        _fail(f"{where}.kind", f"must be one of {', '.join(KINDS)}, got {kind!r}")
    if provider not in PROVIDERS:
        _fail(f"{where}.provider", f"must be one of {', '.join(PROVIDERS)}, got {provider!r}")
    if (kind, provider) not in SUPPORTED_TELEMETRY:
        _fail(f"{where}.provider", f"{kind} via {provider} is not supported: no aggregate-only endpoint is modelled")

    host = entry.get("host")
    if provider == "datadog":
        host = _hostname(host, f"{where}.host") if host is not None else "api.datadoghq.com"
        if host not in DATADOG_HOSTS:
            _fail(f"{where}.host", f"{host!r} is not a Datadog API site ({', '.join(DATADOG_HOSTS)})")
    elif provider == "gcp":
        expected = GCP_HOSTS[kind]
        if host is not None and _hostname(host, f"{where}.host") != expected:
            _fail(f"{where}.host", f"{kind} via gcp always uses {expected}")
        host = expected
    elif provider == "axiom":
        if host is not None and _hostname(host, f"{where}.host") != AXIOM_HOST:
            _fail(f"{where}.host", f"axiom always uses {AXIOM_HOST}")
        host = AXIOM_HOST
    else:
        if host is None:
            _fail(f"{where}.host", "is required for grafana (the customer's Grafana host)")
        host = _hostname(host, f"{where}.host")
        if host in MODEL_HOSTS or host == WORKOS_HOST:
            _fail(f"{where}.host", f"{host!r} is not a Grafana host")

    port = _port(entry.get("port"), f"{where}.port")
    if port != 443 and provider != "grafana":
        _fail(f"{where}.port", f"{provider} is reached on 443 only")

    mode = entry.get("mode", "aggregate")
    if mode not in ("aggregate", "strict"):
        _fail(f"{where}.mode", f"must be 'aggregate' or 'strict', got {mode!r} (there is no raw mode)")
    if mode == "strict" and kind != "logs":
        _fail(f"{where}.mode", "'strict' exists for logs only")

    log_views = _str_list(entry.get("log_views"), f"{where}.log_views")
    for i, view in enumerate(log_views):
        if not _VIEW_RE.match(view):
            _fail(f"{where}.log_views[{i}]", f"{view!r} is not a valid view name")
    if kind != "logs" and log_views:
        _fail(f"{where}.log_views", f"log views apply to logs connections only, not {kind}")
    if kind == "logs" and mode == "strict" and log_views:
        _fail(f"{where}.log_views", "must be empty in strict mode (no log permission at all)")
    if kind == "logs" and mode == "aggregate" and not log_views:
        _fail(f"{where}.log_views", "a logs connection in aggregate mode must name the customer's log views")

    attrs = _str_list(entry.get("trace_attribute_allowlist"), f"{where}.trace_attribute_allowlist")
    for i, attr in enumerate(attrs):
        if not _ATTR_RE.match(attr):
            _fail(f"{where}.trace_attribute_allowlist[{i}]", f"{attr!r} is not an attribute key")
    if attrs and kind != "traces":
        _fail(f"{where}.trace_attribute_allowlist", f"applies to traces connections only, not {kind}")

    uids = _str_list(entry.get("datasource_uids"), f"{where}.datasource_uids")
    for i, uid in enumerate(uids):
        if not _UID_RE.match(uid):
            _fail(f"{where}.datasource_uids[{i}]", f"{uid!r} is not a Grafana datasource uid")
    if provider == "grafana" and not uids:
        _fail(f"{where}.datasource_uids", "grafana connections must declare their datasource uids")
    if provider != "grafana" and uids:
        _fail(f"{where}.datasource_uids", "applies to grafana connections only")

    return {
        "datasource_uids": sorted(set(uids)),
        "host": host,
        "kind": kind,
        "log_views": sorted(set(log_views)),
        "mode": mode,
        "port": port,
        "provider": provider,
        "trace_attribute_allowlist": sorted({a.lstrip("@") for a in attrs}),
    }


# --------------------------------------------------------------------- platform


def _normalise_platform(dest: Any, region: str, where: str) -> dict:
    if dest is None:
        return {}
    if not isinstance(dest, dict):
        _fail(where, "must be an object {workload: [host, ...]}")
    vertex = f"{region}-aiplatform.googleapis.com"
    out = {}
    for workload in sorted(dest):
        w = f"{where}.{workload}"
        if workload == "sandbox":
            _fail(w, "the sandbox never has platform destinations (code host only, via its grant)")
        if workload not in SOURCES:
            _fail(w, f"unknown workload; expected one of {', '.join(s for s in SOURCES if s != 'sandbox')}")
        hosts = set()
        for i, raw in enumerate(_str_list(dest[workload], w)):
            host = _hostname(raw, f"{w}[{i}]")
            if host in MODEL_HOSTS or (host.endswith("-aiplatform.googleapis.com") and host != vertex):
                _fail(f"{w}[{i}]", f"{host!r} is a model endpoint; the only one is {vertex}")
            if host == vertex and workload != "agent-orchestrator":
                _fail(f"{w}[{i}]", "Vertex AI is reachable only from agent-orchestrator")
            if (host == WORKOS_HOST or host.endswith(".workos.com")) and workload != "control-plane-api":
                _fail(f"{w}[{i}]", "WorkOS is reachable only from control-plane-api")
            if host == AXIOM_HOST and workload in CONNECTOR_SOURCES:
                _fail(f"{w}[{i}]", "connectors read customer telemetry only; Axiom ingest is for platform workloads")
            hosts.add(host)
        out[workload] = sorted(hosts)
    return out


# --------------------------------------------------------------------- render


def render_policy_data(stack: dict) -> dict:
    """Validate plain stack inputs and build the ``data.perfloop`` document.

    See the module docstring for the input shape and
    ``policies/egress/data.schema.json`` for the output. Raises ``ValueError``
    naming the offending key.
    """
    _expect_keys(stack, "", ("region", "api_server_hosts", "workspaces"), ("platform_destinations",))
    region = stack["region"]
    if not isinstance(region, str) or not _REGION_RE.match(region):
        _fail("region", f"must be a GCP region like 'europe-west4', got {region!r}")

    api_hosts = _str_list(stack["api_server_hosts"], "api_server_hosts")
    if not api_hosts:
        _fail("api_server_hosts", "must name the cluster API server endpoint(s)")
    api_server_hosts = set()
    for i, raw in enumerate(api_hosts):
        h = raw.strip().lower().rstrip(".")
        if not h or not (_HOSTNAME_RE.match(h) or re.match(r"^[0-9a-f.:\[\]]+$", h)):
            _fail(f"api_server_hosts[{i}]", f"{raw!r} is not a host name or IP address")
        api_server_hosts.add(h)

    workspaces_in = stack["workspaces"]
    if not isinstance(workspaces_in, list):
        _fail("workspaces", "must be a list")
    workspaces: dict = {}
    ports: dict = {}
    for i, ws in enumerate(workspaces_in):
        w = f"workspaces[{i}]"
        _expect_keys(ws, w, ("id",), ("code_host", "telemetry"))
        ws_id = ws["id"]
        if not isinstance(ws_id, str) or not _WORKSPACE_ID_RE.match(ws_id):
            _fail(f"{w}.id", f"must match {_WORKSPACE_ID_RE.pattern}, got {ws_id!r}")
        if ws_id in workspaces:
            _fail(f"{w}.id", f"duplicate workspace id {ws_id!r}")
        code_host = _normalise_code_host(ws.get("code_host"), f"{w}.code_host")
        telemetry_in = ws.get("telemetry") or []
        if not isinstance(telemetry_in, list):
            _fail(f"{w}.telemetry", "must be a list")
        telemetry = []
        seen = set()
        for j, entry in enumerate(telemetry_in):
            t = _normalise_telemetry(entry, f"{w}.telemetry[{j}]")
            key = (t["kind"], t["host"])
            if key in seen:
                _fail(f"{w}.telemetry[{j}]", f"duplicate {t['kind']} connection to {t['host']}")
            seen.add(key)
            if t["port"] != 443:
                ports.setdefault(t["host"], set()).add(t["port"])
            telemetry.append(t)
        telemetry.sort(key=lambda t: (t["kind"], t["provider"], t["host"]))
        workspaces[ws_id] = {"code_host": code_host, "telemetry": telemetry}

    platform = _normalise_platform(stack.get("platform_destinations"), region, "platform_destinations")
    return {
        "api_server_hosts": sorted(api_server_hosts),
        "platform_destinations": platform,
        "ports": {h: sorted(p) for h, p in sorted(ports.items())},
        "region": region,
        "workspaces": {k: workspaces[k] for k in sorted(workspaces)},
    }


# --------------------------------------------------------------------- evaluate

_ENGINE_LOCK = threading.Lock()
_ENGINE_CACHE: dict = {}
_QUERY = "x := [data.perfloop.egress.decision, count(data.perfloop.egress.deny)]"


def _deny(rule: str, reason: str) -> dict:
    return {"allow": False, "reason": reason, "rule": rule}


def _has_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_has_nul(k) or _has_nul(v) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return any(_has_nul(v) for v in value)
    return False


def policy_modules(policy_dir: Path | None = None) -> dict:
    """The Rego modules of the egress policy, {file name: source}."""
    directory = Path(policy_dir) if policy_dir else POLICY_DIR
    modules = {p.name: p.read_text(encoding="utf-8") for p in sorted(directory.glob("*.rego"))}
    if not modules:
        raise FileNotFoundError(f"no .rego files in {directory}")
    return modules


def _modules(policy_dir: Path | None, modules: dict | None) -> dict:
    """The Rego sources to evaluate: ``modules`` as given ({name: source},
    e.g. the modules a proxy was deployed with), else those in ``policy_dir``."""
    if modules is None:
        return policy_modules(policy_dir)
    if policy_dir is not None:
        raise ValueError("give either policy_dir or modules, not both")
    if not isinstance(modules, dict) or not modules:
        raise ValueError("modules: must be a non-empty {name: Rego source} mapping")
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in modules.items()):
        raise ValueError("modules: names and sources must be strings")
    return modules


def _engine(data: dict, policy_dir: Path | None, modules: dict | None = None):
    """An (interpreter, compiled bundle) pair per data document and policy
    source, built once and reused: compiling is ~10x the cost of a query."""
    from regopy import Interpreter  # imported lazily: render_* need no engine

    modules = _modules(policy_dir, modules)
    key = (json.dumps(data, sort_keys=True), tuple(sorted(modules.items())))
    engine = _ENGINE_CACHE.get(key)
    if engine is None:
        if not isinstance(data, dict):
            raise ValueError("data: must be the data.perfloop object")
        if "egress" in data:
            raise ValueError("data: key 'egress' collides with the policy package perfloop.egress")
        interp = Interpreter()
        for name, source in modules.items():
            interp.add_module(name, source)
        interp.add_data({"perfloop": data})
        bundle = interp.build(_QUERY, ["perfloop/egress/decision"])
        if not bundle.ok():
            raise RuntimeError("policy bundle failed to build")
        if len(_ENGINE_CACHE) > 16:
            _ENGINE_CACHE.clear()
        engine = (interp, bundle)
        _ENGINE_CACHE[key] = engine
    return engine


def _raw_query(engine, request: dict) -> Any:
    from regopy.interpreter import rego_bundle_query
    from regopy.rego_shared import rego_free_output, rego_output_ok, rego_output_string

    interp, bundle = engine
    # Input goes in as JSON text, not as Python values: regopy keeps strings
    # given as values unescaped but literals and data JSON-escaped, so a
    # string containing '"' from input would never equal the same string
    # from data (and a NUL would truncate it). As JSON text (ASCII-escaped,
    # like add_data) both sides share one representation.
    interp.set_input_term(json.dumps(request, ensure_ascii=True))
    impl = rego_bundle_query(interp._impl, bundle._impl)
    try:
        if not rego_output_ok(impl):
            raise RuntimeError(rego_output_string(impl))
        text = rego_output_string(impl)
    finally:
        rego_free_output(impl)
    return json.loads(text)  # an engine error message is not JSON -> raises


def evaluate(data: dict, request: dict, policy_dir: Path | None = None, modules: dict | None = None) -> dict:
    """Evaluate one request against the egress policy; fail closed.

    ``data`` is the ``data.perfloop`` document (``render_policy_data``
    output); ``request`` follows ``policies/egress/input.schema.json``.
    The policy is the ``*.rego`` files of ``policy_dir`` (default
    ``policies/egress``) or, when given, ``modules`` ({name: source}: the
    sources as deployed, e.g. read back from the proxy's ConfigMap).
    Returns ``{"allow": bool, "reason": str, "rule": str}``.
    """
    if not isinstance(request, dict):
        return _deny("input.invalid", "request must be a JSON object")
    try:
        request = json.loads(json.dumps(request, allow_nan=False))
    except (TypeError, ValueError) as exc:
        return _deny("input.invalid", f"request is not JSON-serialisable: {exc}")
    # regopy passes strings to the engine as C strings: a NUL would silently
    # truncate them ("/repos/a/b\0/../x" -> "/repos/a/b"). Refuse up front.
    if _has_nul(request):
        return _deny("input.nul_byte", "request contains a NUL character")
    with _ENGINE_LOCK:
        try:
            result = _raw_query(_engine(data, policy_dir, modules), request)
        except Exception as exc:  # noqa: BLE001 - any engine problem is a deny
            return _deny("engine.error", f"policy evaluation failed: {str(exc)[:300]}")
    try:
        decision, deny_count = result["bindings"]["x"]
    except (KeyError, TypeError, ValueError):
        return _deny("engine.error", "policy returned no decision")
    if not (
        isinstance(decision, dict)
        and isinstance(decision.get("allow"), bool)
        and isinstance(decision.get("reason"), str)
        and isinstance(decision.get("rule"), str)
    ):
        return _deny("engine.error", "policy returned a malformed decision")
    if decision["allow"] and deny_count != 0:
        return _deny("engine.inconsistent", "policy allowed a request that also matched a deny rule")
    if not decision["allow"] and not decision["reason"]:
        return _deny(decision["rule"] or "engine.error", "denied (policy gave no reason)")
    return {"allow": decision["allow"], "reason": decision["reason"], "rule": decision["rule"]}


def query(data: dict, request: dict, expression: str, policy_dir: Path | None = None, modules: dict | None = None) -> Any:
    """Debug helper (slow: compiles per call): evaluate an arbitrary
    expression such as ``data.perfloop.egress.normalized`` or
    ``data.perfloop.egress.all_denies``. Returns None when undefined."""
    from regopy import Interpreter
    from regopy.interpreter import rego_query
    from regopy.rego_shared import rego_free_output, rego_output_string

    interp = Interpreter()
    for name, source in _modules(policy_dir, modules).items():
        interp.add_module(name, source)
    interp.add_data({"perfloop": data})
    interp.set_input_term(json.dumps(request, ensure_ascii=True))
    impl = rego_query(interp._impl, f"x := {expression}")
    try:
        text = rego_output_string(impl)
    finally:
        rego_free_output(impl)
    if text == "undefined":
        return None
    return json.loads(text)["bindings"]["x"]


# --------------------------------------------------------------------- connectors


def _yaml_scalar(value: Any) -> str:
    """JSON is valid YAML: quoting every scalar this way prevents injection."""
    return json.dumps(value)


def _template_env(template_dir: Path | None = None) -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(template_dir or CONNECTOR_TEMPLATE_DIR)),
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["q"] = _yaml_scalar
    return env


def render_connector_config(connection: dict, template_dir: Path | None = None) -> str:
    """Render the YAML configuration of one telemetry connection.

    ``connection`` is a telemetry entry (as in ``render_policy_data`` input)
    plus ``"workspace": "<workspace id>"``. It is validated the same way.
    Aggregate-only is the only access mode; logs in ``strict`` mode render
    with no log permission; every query is audited verbatim.
    """
    if not isinstance(connection, dict):
        _fail("connection", "must be an object")
    conn = dict(connection)
    workspace = conn.pop("workspace", None)
    if not isinstance(workspace, str) or not _WORKSPACE_ID_RE.match(workspace):
        _fail("connection.workspace", f"must be a workspace id, got {workspace!r}")
    entry = _normalise_telemetry(conn, "connection")
    env = _template_env(template_dir)
    template = env.get_template(f"{entry['kind']}.yaml.j2")
    return template.render(
        workspace=workspace,
        connection=entry,
        connection_id=f"{workspace}.{entry['kind']}.{entry['provider']}.{entry['host']}",
        source=f"connector-{entry['kind']}",
    )
