"""Rendering and validation of the migrations (infra/sql_migrations.py); no server needed."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import jinja2
import pytest

from infra import sql_migrations
from infra.sql_migrations import SQL_DIR, apply_migrations, migrations_checksum, render_migrations

pytestmark = pytest.mark.db

REPO = Path(__file__).resolve().parents[2]
IAM_USERS = {
    "control_plane": ["pf-control-plane@acme-prod.iam"],
    "connector": ["pf-connector@acme-prod.iam", "pf-connector-eu@acme-prod.iam"],
    "audit_cleanup": ["pf-audit-cleanup@acme-prod.iam"],
}


def test_migrations_are_rendered_in_order_with_templates_renamed() -> None:
    names = [name for name, _ in render_migrations(IAM_USERS)]
    assert names == ["001_roles.sql", "002_admin.sql", "003_iam_users.sql", "004_audit.sql", "005_workspaces.sql",
                     "006_workspace_lifecycle.sql"]


def test_iam_users_become_one_grant_each_as_quoted_literals() -> None:
    text = dict(render_migrations(IAM_USERS))["003_iam_users.sql"]
    grants = [line for line in text.splitlines() if line.startswith("SELECT")]
    assert grants == [
        "SELECT perfloop_admin.grant_workload_role('audit_cleanup', 'pf-audit-cleanup@acme-prod.iam');",
        "SELECT perfloop_admin.grant_workload_role('connector', 'pf-connector-eu@acme-prod.iam');",
        "SELECT perfloop_admin.grant_workload_role('connector', 'pf-connector@acme-prod.iam');",
        "SELECT perfloop_admin.grant_workload_role('control_plane', 'pf-control-plane@acme-prod.iam');",
    ]
    assert "{{" not in text and "{%" not in text


@pytest.mark.parametrize(
    ("iam_users", "message"),
    [
        ({"auditor": ["pf-auditor@acme-prod.iam"]}, "'auditor' is not a workload role"),
        ({"perfloop_owner": ["pf-owner@acme-prod.iam"]}, "'perfloop_owner' is not a workload role"),
        ({"connector": "pf-connector@acme-prod.iam"}, r"iam_users\['connector'\] must be a list"),
        ({"connector": ["pf-connector@acme-prod.iam.gserviceaccount.com"]}, r"iam_users\['connector'\] has"),
        ({"connector": ["PF-Connector@acme-prod.iam"]}, r"iam_users\['connector'\] has"),
        ({"connector": ["pf-connector@acme-prod.iam\n"]}, r"iam_users\['connector'\] has"),
        ({"connector": ["pf-x@acme-prod.iam"]}, r"iam_users\['connector'\] has"),  # account id < 6 characters
        ({"connector": ["pf-c'; DROP ROLE x; --@acme-prod.iam"]}, r"iam_users\['connector'\] has"),
        ({"connector": [42]}, r"iam_users\['connector'\] has 42"),
        ({"connector": ["a" * 30 + "@" + "b" * 30 + ".iam"]}, "longer than PostgreSQL's 63-byte role names"),
        (
            {"connector": ["pf-shared@acme-prod.iam"], "audit_cleanup": ["pf-shared@acme-prod.iam"]},
            r"iam_users\['audit_cleanup'\] has 'pf-shared@acme-prod.iam', already listed under 'connector'",
        ),
        ([("connector", ["pf-connector@acme-prod.iam"])], "iam_users must be a mapping"),
    ],
)
def test_invalid_iam_users_are_refused_naming_the_key(iam_users: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        render_migrations(iam_users)


def test_header_carries_the_source_checksum_independent_of_stack_values() -> None:
    one = render_migrations(IAM_USERS)
    other = render_migrations({"connector": ["pf-connector@globex-prod.iam"]})
    for (name, text), (_, other_text) in zip(one, other):
        source = SQL_DIR / name if (SQL_DIR / name).exists() else SQL_DIR / f"{name}.j2"
        expected = hashlib.sha256(source.read_bytes()).hexdigest()
        assert text.splitlines()[0] == f"-- perfloop-migration source-sha256={expected}"
        assert other_text.splitlines()[0] == text.splitlines()[0]
    # ... while the content checksum (e.g. for naming the migration Job) follows the stack values.
    assert migrations_checksum(one) == migrations_checksum(render_migrations(IAM_USERS))
    assert migrations_checksum(one) != migrations_checksum(other)


def test_only_rendered_migrations_can_be_applied() -> None:
    # Refused before the connection is touched: without the header there is no source checksum.
    with pytest.raises(ValueError, match="001_roles.sql has no source checksum header"):
        apply_migrations(None, [("001_roles.sql", (SQL_DIR / "001_roles.sql").read_text())])


def test_templates_are_strict_and_literals_quoted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sql_migrations, "SQL_DIR", tmp_path)
    (tmp_path / "001_quote.sql.j2").write_text("SELECT {{ \"it's <raw>\" | sql_literal }};\n")
    assert render_migrations({})[0][1].endswith("SELECT 'it''s <raw>';\n")
    (tmp_path / "002_typo.sql.j2").write_text("SELECT {{ membership }};\n")
    with pytest.raises(jinja2.UndefinedError, match="membership"):
        render_migrations({})


@pytest.mark.parametrize("files", [["1_short.sql"], ["001_Upper.sql"], ["001_a.sql", "001_b.sql.j2"]])
def test_misnamed_or_duplicate_migrations_are_refused(
    files: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sql_migrations, "SQL_DIR", tmp_path)
    for name in files:
        (tmp_path / name).write_text("SELECT 1;\n")
    with pytest.raises(ValueError, match="migration"):
        render_migrations({})


def test_importing_the_module_needs_only_jinja2() -> None:
    # The migration Job and the Pulumi program import it; psycopg is the caller's business.
    subprocess.run(
        [sys.executable, "-c", "import sys; sys.modules['psycopg'] = None; import infra.sql_migrations"],
        cwd=REPO, check=True,
    )


def test_platform_is_data_not_a_python_package() -> None:
    # A platform/__init__.py would shadow the standard library's platform module.
    assert not list((REPO / "platform").rglob("__init__.py"))

