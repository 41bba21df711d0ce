"""render_policy_data: validation, normalisation, determinism."""

from __future__ import annotations

import copy
import json

import pytest

from conftest import POLICY_DIR


def minimal_stack(**overrides):
    stack = {
        "region": "europe-west4",
        "api_server_hosts": ["34.1.2.3"],
        "workspaces": [
            {
                "id": "ws-a",
                "code_host": {"provider": "github", "repositories": ["Org/Repo"]},
                "telemetry": [{"kind": "metrics", "provider": "datadog"}],
            }
        ],
        "platform_destinations": {"control-plane-api": ["API.WorkOS.com."]},
    }
    stack.update(overrides)
    return stack


def test_example_data_is_rendered_from_example_stack(policy, stack_example, policy_data):
    # data.example.json is generated; this keeps it in sync with the stack.
    assert policy.render_policy_data(stack_example) == policy_data


def test_minimal_render_normalises(policy):
    data = policy.render_policy_data(minimal_stack())
    assert data["workspaces"]["ws-a"]["code_host"] == {
        "api_host": "api.github.com",
        "git_host": "github.com",
        "provider": "github",
        "repositories": ["org/repo"],
    }
    tele = data["workspaces"]["ws-a"]["telemetry"][0]
    assert tele["host"] == "api.datadoghq.com" and tele["mode"] == "aggregate"
    assert tele["trace_attribute_allowlist"] == []
    assert data["platform_destinations"] == {"control-plane-api": ["api.workos.com"]}
    assert data["ports"] == {}


def test_render_is_deterministic(policy, stack_example):
    shuffled = copy.deepcopy(stack_example)
    shuffled["workspaces"].reverse()
    for ws in shuffled["workspaces"]:
        ws["telemetry"] = list(reversed(ws.get("telemetry") or []))
        if ws.get("code_host"):
            ws["code_host"]["repositories"] = list(reversed(ws["code_host"]["repositories"]))
    a = json.dumps(policy.render_policy_data(stack_example))
    b = json.dumps(policy.render_policy_data(shuffled))
    assert a == b


def test_ghe_cloud_hosts(policy):
    stack = minimal_stack()
    stack["workspaces"][0]["code_host"]["host"] = "octo.ghe.com"
    ch = policy.render_policy_data(stack)["workspaces"]["ws-a"]["code_host"]
    assert (ch["api_host"], ch["git_host"]) == ("api.octo.ghe.com", "octo.ghe.com")


def test_grafana_port_is_declared(policy):
    stack = minimal_stack()
    stack["workspaces"][0]["telemetry"] = [
        {"kind": "metrics", "provider": "grafana", "host": "g.example.com", "port": 3000, "datasource_uids": ["p"]}
    ]
    assert policy.render_policy_data(stack)["ports"] == {"g.example.com": [3000]}


def _mutate(path, value):
    stack = minimal_stack()
    target = stack
    for key in path[:-1]:
        target = target[key]
    if value is KeyError:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return stack


BAD = [
    ("unknown top-level key", lambda: minimal_stack(extra=1), "extra: unknown key"),
    ("missing region", lambda: _mutate(["region"], KeyError), "region: is required"),
    ("bad region", lambda: _mutate(["region"], "Europe West"), "region:"),
    ("empty api servers", lambda: _mutate(["api_server_hosts"], []), "api_server_hosts:"),
    ("workspaces not list", lambda: _mutate(["workspaces"], {}), "workspaces: must be a list"),
    ("bad workspace id", lambda: _mutate(["workspaces", 0, "id"], "WS A"), "workspaces[0].id:"),
    ("duplicate workspace", lambda: minimal_stack(workspaces=[{"id": "a"}, {"id": "a"}]), "workspaces[1].id: duplicate"),
    ("unknown provider", lambda: _mutate(["workspaces", 0, "code_host", "provider"], "svn"), "workspaces[0].code_host.provider:"),
    ("repo not owner/repo", lambda: _mutate(["workspaces", 0, "code_host", "repositories"], ["justrepo"]), "workspaces[0].code_host.repositories[0]:"),
    ("repo dot segment", lambda: _mutate(["workspaces", 0, "code_host", "repositories"], ["org/.."]), "workspaces[0].code_host.repositories[0]:"),
    ("no repositories", lambda: _mutate(["workspaces", 0, "code_host", "repositories"], []), "workspaces[0].code_host.repositories:"),
    ("github enterprise server", lambda: _mutate(["workspaces", 0, "code_host", "host"], "git.corp.example"), "workspaces[0].code_host.host:"),
    ("telemetry kind", lambda: _mutate(["workspaces", 0, "telemetry"], [{"kind": "events", "provider": "datadog"}]), "workspaces[0].telemetry[0].kind:"),
    ("telemetry unsupported pair", lambda: _mutate(["workspaces", 0, "telemetry"], [{"kind": "profiles", "provider": "gcp"}]), "workspaces[0].telemetry[0].provider:"),
    ("datadog host", lambda: _mutate(["workspaces", 0, "telemetry"], [{"kind": "metrics", "provider": "datadog", "host": "evil.example.com"}]), "workspaces[0].telemetry[0].host:"),
    ("metadata host", lambda: _mutate(["workspaces", 0, "telemetry"], [{"kind": "metrics", "provider": "grafana", "host": "metadata.google.internal", "datasource_uids": ["x"]}]), "workspaces[0].telemetry[0].host:"),
    ("ip host", lambda: _mutate(["workspaces", 0, "telemetry"], [{"kind": "metrics", "provider": "grafana", "host": "10.0.0.1", "datasource_uids": ["x"]}]), "workspaces[0].telemetry[0].host:"),
    ("grafana no host", lambda: _mutate(["workspaces", 0, "telemetry"], [{"kind": "metrics", "provider": "grafana", "datasource_uids": ["x"]}]), "workspaces[0].telemetry[0].host:"),
    ("grafana no uids", lambda: _mutate(["workspaces", 0, "telemetry"], [{"kind": "metrics", "provider": "grafana", "host": "g.example.com"}]), "workspaces[0].telemetry[0].datasource_uids:"),
    ("raw mode", lambda: _mutate(["workspaces", 0, "telemetry"], [{"kind": "logs", "provider": "datadog", "mode": "raw", "log_views": ["a"]}]), "workspaces[0].telemetry[0].mode:"),
    ("strict metrics", lambda: _mutate(["workspaces", 0, "telemetry"], [{"kind": "metrics", "provider": "datadog", "mode": "strict"}]), "workspaces[0].telemetry[0].mode:"),
    ("strict with views", lambda: _mutate(["workspaces", 0, "telemetry"], [{"kind": "logs", "provider": "datadog", "mode": "strict", "log_views": ["a"]}]), "workspaces[0].telemetry[0].log_views:"),
    ("aggregate logs without views", lambda: _mutate(["workspaces", 0, "telemetry"], [{"kind": "logs", "provider": "datadog"}]), "workspaces[0].telemetry[0].log_views:"),
    ("trace allowlist on metrics", lambda: _mutate(["workspaces", 0, "telemetry"], [{"kind": "metrics", "provider": "datadog", "trace_attribute_allowlist": ["a"]}]), "workspaces[0].telemetry[0].trace_attribute_allowlist:"),
    ("bad port", lambda: _mutate(["workspaces", 0, "telemetry"], [{"kind": "metrics", "provider": "datadog", "port": 8443}]), "workspaces[0].telemetry[0].port:"),
    ("duplicate connection", lambda: _mutate(["workspaces", 0, "telemetry"], [{"kind": "metrics", "provider": "datadog"}, {"kind": "metrics", "provider": "datadog"}]), "workspaces[0].telemetry[1]: duplicate"),
    ("unknown telemetry key", lambda: _mutate(["workspaces", 0, "telemetry"], [{"kind": "metrics", "provider": "datadog", "raw": True}]), "workspaces[0].telemetry[0].raw: unknown key"),
    ("sandbox platform destinations", lambda: minimal_stack(platform_destinations={"sandbox": ["pypi.org"]}), "platform_destinations.sandbox:"),
    ("unknown workload", lambda: minimal_stack(platform_destinations={"batch": ["x.example.com"]}), "platform_destinations.batch:"),
    ("workos elsewhere", lambda: minimal_stack(platform_destinations={"db-migrate": ["api.workos.com"]}), "platform_destinations.db-migrate[0]:"),
    ("vertex elsewhere", lambda: minimal_stack(platform_destinations={"control-plane-api": ["europe-west4-aiplatform.googleapis.com"]}), "platform_destinations.control-plane-api[0]:"),
    ("vertex other region", lambda: minimal_stack(platform_destinations={"agent-orchestrator": ["us-central1-aiplatform.googleapis.com"]}), "platform_destinations.agent-orchestrator[0]:"),
    ("openai", lambda: minimal_stack(platform_destinations={"agent-orchestrator": ["api.openai.com"]}), "platform_destinations.agent-orchestrator[0]:"),
    ("axiom from connector", lambda: minimal_stack(platform_destinations={"connector-logs": ["api.axiom.co"]}), "platform_destinations.connector-logs[0]:"),
    ("cluster-internal destination", lambda: minimal_stack(platform_destinations={"db-migrate": ["postgres.db.svc.cluster.local"]}), "platform_destinations.db-migrate[0]:"),
]


@pytest.mark.parametrize("name,build,message", BAD, ids=[b[0] for b in BAD])
def test_validation_errors_name_the_key(policy, name, build, message):
    with pytest.raises(ValueError) as exc:
        policy.render_policy_data(build())
    assert str(exc.value).startswith(message), str(exc.value)


def test_not_a_dict(policy):
    with pytest.raises(ValueError, match="must be an object"):
        policy.render_policy_data(["nope"])


def test_evaluate_fails_closed_on_bad_data(policy):
    decision = policy.evaluate({"egress": {}}, {"source": "sandbox"})
    assert decision["allow"] is False and decision["rule"] == "engine.error"


def test_evaluate_rejects_nul(policy, policy_data):
    decision = policy.evaluate(policy_data, {"source": "sandbox", "host": "api.github.com", "method": "GET", "scheme": "https", "path": "/repos/acme/checkout\x00/../infra"})
    assert decision == {"allow": False, "reason": "request contains a NUL character", "rule": "input.nul_byte"}


def test_evaluate_rejects_non_object(policy, policy_data):
    assert policy.evaluate(policy_data, ["GET", "/"])["allow"] is False


def test_policy_files_present():
    names = sorted(p.name for p in POLICY_DIR.glob("*.rego"))
    assert "main.rego" in names and "normalize.rego" in names
