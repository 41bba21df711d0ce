"""Connector configuration templates (platform/connectors/*.yaml.j2)."""

from __future__ import annotations

import jinja2
import pytest
import yaml

from conftest import REPO_ROOT


def render(policy, **conn):
    return yaml.safe_load(policy.render_connector_config({"workspace": "ws-acme", **conn}))


def test_no_python_package_under_platform():
    assert not list((REPO_ROOT / "platform").rglob("__init__.py"))


@pytest.mark.parametrize("kind,provider,extra", [
    ("metrics", "datadog", {}),
    ("metrics", "grafana", {"host": "g.example.com", "datasource_uids": ["prom"]}),
    ("traces", "datadog", {}),
    ("logs", "gcp", {"log_views": ["p.global.b.v"]}),
    ("profiles", "grafana", {"host": "g.example.com", "datasource_uids": ["pyro"]}),
])
def test_every_kind_is_aggregate_only_and_audited(policy, kind, provider, extra):
    cfg = render(policy, kind=kind, provider=provider, **extra)
    spec = cfg["spec"]
    assert cfg["metadata"]["workspace"] == "ws-acme"
    assert spec["source_workload"] == f"connector-{kind}"
    assert spec["access"] == {"mode": "aggregate", "raw_reads": False, "writes": False}
    assert spec["audit"] == {"record_queries": True, "verbatim": True, "sink": "customer-audit-log"}
    assert spec["endpoint"]["via"] == "egress-proxy"
    assert spec["endpoint"]["credentials_in_workload"] is False


def test_trace_allowlist_empty_by_default(policy):
    cfg = render(policy, kind="traces", provider="datadog")
    assert cfg["spec"]["traces"]["attribute_allowlist"] == []
    assert cfg["spec"]["traces"]["per_case_approval_required"] is True


def test_trace_allowlist_rendered(policy):
    cfg = render(policy, kind="traces", provider="datadog", trace_attribute_allowlist=["@http.route", "db.system"])
    assert cfg["spec"]["traces"]["attribute_allowlist"] == ["db.system", "http.route"]


def test_logs_views_named_by_customer(policy):
    cfg = render(policy, kind="logs", provider="datadog", log_views=["payments-prod", "checkout-prod"])
    assert cfg["spec"]["logs"]["permission"] == "aggregate"
    assert cfg["spec"]["logs"]["views"] == ["checkout-prod", "payments-prod"]
    assert cfg["spec"]["logs"]["select_raw_columns"] is False


def test_logs_strict_has_no_permission(policy):
    cfg = render(policy, kind="logs", provider="datadog", mode="strict")
    assert cfg["spec"]["logs"] == {"permission": "none", "views": [], "enabled": False}


def test_view_names_cannot_inject_yaml(policy):
    evil = 'x"], access: {mode: raw}, y: ["# {{ 7*7 }}'
    cfg = render(policy, kind="logs", provider="axiom", log_views=[evil])
    assert cfg["spec"]["logs"]["views"] == [evil]
    assert cfg["spec"]["access"]["mode"] == "aggregate"
    with pytest.raises(ValueError, match=r"^connection.log_views\[0\]:"):
        render(policy, kind="logs", provider="axiom", log_views=["a\n  access: raw"])


def test_connection_is_validated(policy):
    with pytest.raises(ValueError, match=r"^connection.mode:"):
        policy.render_connector_config({"workspace": "ws-acme", "kind": "logs", "provider": "datadog", "mode": "raw", "log_views": ["a"]})
    with pytest.raises(ValueError, match=r"^connection.workspace:"):
        policy.render_connector_config({"kind": "metrics", "provider": "datadog"})


def test_templates_use_strict_undefined(policy, tmp_path):
    (tmp_path / "metrics.yaml.j2").write_text("x: {{ connection.no_such_field }}\n")
    with pytest.raises(jinja2.UndefinedError):
        policy.render_connector_config({"workspace": "ws-acme", "kind": "metrics", "provider": "datadog"}, template_dir=tmp_path)
