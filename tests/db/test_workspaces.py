"""Per-workspace storage: one schema and one role per workspace, isolated from each other and from the
audit log; offboarding drops the workspace's data and keeps its audit rows.

Workspace roles are cluster-wide while schemas are per database, so every test uses workspace ids of
its own.
"""

from __future__ import annotations

import psycopg
import pytest

pytestmark = pytest.mark.db

DENIED = psycopg.errors.InsufficientPrivilege.sqlstate
INVALID = psycopg.errors.InvalidParameterValue.sqlstate


def create_workspaces(db, *workspace_ids: str) -> None:
    for workspace_id in workspace_ids:
        db.conn("migrator").execute("SELECT perfloop_admin.create_workspace(%s)", (workspace_id,))


def isolation_outcomes(db, own: str, other: str) -> dict[str, str | None]:
    """What workspace ``own``'s role may do, to its own data, another workspace's, and the audit log."""
    as_own = f"SET LOCAL ROLE ws_{own}_rw; "
    attempts = {
        "write own snapshots": f"INSERT INTO ws_{own}.snapshots (kind, summary) VALUES ('flame', '{{}}')",
        "read own snapshots": f"SELECT * FROM ws_{own}.snapshots",
        "read other snapshots": f"SELECT * FROM ws_{other}.snapshots",
        "look up other schema's objects": f"SELECT NULL::ws_{other}.snapshots",  # needs only USAGE
        "write other snapshots": f"INSERT INTO ws_{other}.snapshots (kind, summary) VALUES ('flame', '{{}}')",
        "create a table in own schema": f"CREATE TABLE ws_{own}.extra (x int)",
        "read the audit log": "SELECT * FROM audit.events",
    }
    return {label: db.attempt("superuser", as_own + statement) for label, statement in attempts.items()}


EXPECTED_ISOLATION = {
    "write own snapshots": None,
    "read own snapshots": None,
    "read other snapshots": DENIED,
    "look up other schema's objects": DENIED,
    "write other snapshots": DENIED,
    "create a table in own schema": DENIED,
    "read the audit log": DENIED,
}


def test_a_workspace_role_cannot_reach_another_workspace(db) -> None:
    create_workspaces(db, "acme", "globex")
    assert isolation_outcomes(db, "acme", "globex") == EXPECTED_ISOLATION
    assert isolation_outcomes(db, "globex", "acme") == EXPECTED_ISOLATION


def test_isolation_check_notices_a_schema_open_to_everyone(make_db) -> None:
    weakened = make_db(mutations=[
        ("005_workspaces.sql", "'GRANT USAGE ON SCHEMA %I TO %I', names.schema_name, names.role_name",
         "'GRANT USAGE ON SCHEMA %I TO PUBLIC', names.schema_name"),
        ("005_workspaces.sql", "'GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA %I TO %I',\n"
         "                   names.schema_name, names.role_name",
         "'GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA %I TO PUBLIC', names.schema_name"),
    ])
    create_workspaces(weakened, "initech", "umbrella")
    assert isolation_outcomes(weakened, "initech", "umbrella")["read other snapshots"] is None


def workspace_objects(db, workspace_id: str) -> dict[str, object]:
    return dict(zip(
        ("schema", "role", "snapshots"),
        db.conn("superuser").execute(
            "SELECT to_regnamespace(%s)::text, to_regrole(%s)::text, to_regclass(%s)::text",
            (f"ws_{workspace_id}", f"ws_{workspace_id}_rw", f"ws_{workspace_id}.snapshots"),
        ).fetchone(),
    ))


def test_creating_a_workspace_is_idempotent(db) -> None:
    create_workspaces(db, "hooli")
    grants = (
        "SELECT nspacl::text, (SELECT relacl::text FROM pg_class WHERE oid = 'ws_hooli.snapshots'::regclass) "
        "FROM pg_namespace WHERE nspname = 'ws_hooli'"
    )
    before = db.conn("superuser").execute(grants).fetchone()
    create_workspaces(db, "hooli")
    assert db.conn("superuser").execute(grants).fetchone() == before
    assert workspace_objects(db, "hooli") == {"schema": "ws_hooli", "role": "ws_hooli_rw", "snapshots": "ws_hooli.snapshots"}
    owner = db.conn("superuser").execute(
        "SELECT pg_get_userbyid(relowner) FROM pg_class WHERE oid = 'ws_hooli.snapshots'::regclass"
    ).fetchone()
    assert owner == ("perfloop_owner",)


def test_offboarding_drops_workspace_data_and_keeps_its_audit_rows(db) -> None:
    create_workspaces(db, "wayne")
    db.conn("superuser").execute("INSERT INTO ws_wayne.snapshots (kind, summary) VALUES ('flame', '{}')")
    db.conn("connector").execute(
        "INSERT INTO audit.events (actor, action, workspace_id, query_text) "
        "VALUES ('connector', 'query', 'wayne', 'SELECT 1')"
    )
    audit_rows = "SELECT count(*) FROM audit.events WHERE workspace_id = 'wayne'"
    assert db.conn("superuser").execute(audit_rows).fetchone() == (1,)

    db.conn("migrator").execute("SELECT perfloop_admin.drop_workspace('wayne')")
    assert workspace_objects(db, "wayne") == {"schema": None, "role": None, "snapshots": None}
    assert db.conn("superuser").execute(audit_rows).fetchone() == (1,)
    db.conn("migrator").execute("SELECT perfloop_admin.drop_workspace('wayne')")  # idempotent


@pytest.mark.parametrize(
    "workspace_id",
    ["Acme", "1acme", "ac-me", "", None, "a" * 42, "acme\n", "acme; DROP TABLE audit.events; --",
     'acme"; DROP TABLE audit.events; --', "acme' OR 'x'='x", "acmé"],
)
def test_invalid_workspace_ids_are_refused_before_any_sql_is_built(db, workspace_id: str | None) -> None:
    roles_and_schemas = "SELECT (SELECT count(*) FROM pg_roles), (SELECT count(*) FROM pg_namespace)"
    before = db.conn("superuser").execute(roles_and_schemas).fetchone()
    for function in ("create_workspace", "drop_workspace"):
        outcome = db.attempt("migrator", f"SELECT perfloop_admin.{function}(%s)", (workspace_id,))
        assert outcome == INVALID, (function, workspace_id)
    assert db.conn("superuser").execute(roles_and_schemas).fetchone() == before
    assert db.conn("superuser").execute("SELECT to_regclass('audit.events')::text").fetchone() == ("audit.events",)


def test_longest_valid_workspace_id_fits_postgres_names(db) -> None:
    workspace_id = "z" * 41
    create_workspaces(db, workspace_id)
    assert workspace_objects(db, workspace_id)["role"] == f"ws_{workspace_id}_rw"


@pytest.mark.parametrize("role", ["control_plane", "session_controller", "agent_orchestrator", "connector", "audit_cleanup"])
def test_only_the_migrator_manages_workspaces(db, role: str) -> None:
    assert db.attempt(role, "SELECT perfloop_admin.create_workspace('stark')") == DENIED
    assert db.attempt(role, "SELECT perfloop_admin.drop_workspace('acme')") == DENIED
