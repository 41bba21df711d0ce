"""Workspace lifecycle: perfloop_admin.reconcile_workspaces() makes the database's workspaces match the
registered ones. Onboarding creates a workspace's schema and role, and re-running changes nothing.
Offboarding drops the workspace's data and role and keeps its audit rows. The function refuses a
NULL list, invalid ids, and more drops than max_drops, and then changes nothing. Reconcilers run one
at a time and never overlap a migration run. Only the migrator may call it.

Reconciling acts on every workspace of a database, so each test starts with none in this module's
database (the ``no_workspaces`` fixture). Workspace roles are cluster-wide, so each test uses ids of
its own (the ``ws`` fixture).
"""

from __future__ import annotations

import hashlib
import itertools
import shutil
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import psycopg
import pytest

from infra import sql_migrations
from infra.sql_migrations import MigrationChecksumError, render_migrations
from tests.db.test_migrations import snapshot
from tests.db.test_workspaces import workspace_objects

pytestmark = pytest.mark.db

MIGRATION = "006_workspace_lifecycle.sql"
RECONCILE = "SELECT action, workspace_id FROM perfloop_admin.reconcile_workspaces(%s::text[], %s)"
# Without parameters, so that it can follow SET ROLE in one execute().
RECONCILE_NOTHING = "SELECT action, workspace_id FROM perfloop_admin.reconcile_workspaces('{}'::text[], 5)"
FUNCTION = "perfloop_admin.reconcile_workspaces(text[], integer)"
REFUSED = "PF003"
INVALID = psycopg.errors.InvalidParameterValue.sqlstate
DENIED = psycopg.errors.InsufficientPrivilege.sqlstate
WORKLOAD_ROLES_BUT_MIGRATOR = ("control_plane", "session_controller", "agent_orchestrator", "connector", "audit_cleanup")

_test_numbers = itertools.count()


@pytest.fixture
def ws():
    """Workspace ids unique to the test: ``ws("acme")`` is ``lcNN_acme``, NN being the test's number,
    so the ids of one test sort like their short names."""
    prefix = f"lc{next(_test_numbers):02d}_"
    return lambda name: prefix + name


def workspace_schemas(db) -> list[str]:
    return [row[0] for row in db.conn("superuser").execute(
        "SELECT nspname FROM pg_namespace WHERE nspname LIKE 'ws\\_%' ORDER BY nspname COLLATE \"C\"")]


@pytest.fixture(autouse=True)
def no_workspaces(request):
    """Tests on the module's database start with no workspace in it."""
    if "db" in request.fixturenames:
        db = request.getfixturevalue("db")
        for schema in workspace_schemas(db):
            db.conn("migrator").execute("SELECT perfloop_admin.drop_workspace(%s)", (schema.removeprefix("ws_"),))


def reconcile(db, registered: list[str | None] | None, max_drops: int | None = 1) -> list[tuple[str, str]]:
    return db.conn("migrator").execute(RECONCILE, (registered, max_drops)).fetchall()


def refusal(db, registered, max_drops=1) -> psycopg.Error:
    """The error reconciling raises. Not in a rolled-back transaction, so that the test can also
    show that the refusal itself left nothing changed."""
    with pytest.raises(psycopg.Error) as raised:
        reconcile(db, registered, max_drops)
    return raised.value


def present(workspace_id: str) -> dict[str, str]:
    return {"schema": f"ws_{workspace_id}", "role": f"ws_{workspace_id}_rw", "snapshots": f"ws_{workspace_id}.snapshots"}


ABSENT = {"schema": None, "role": None, "snapshots": None}


def workspace_state(db) -> list[tuple]:
    """Every workspace schema of the database with its owner, its grants and its tables' grants, and
    every workspace role with its attributes: what reconciling may change."""
    conn = db.conn("superuser")
    schemas = conn.execute("""
        SELECT n.nspname, pg_get_userbyid(n.nspowner), n.nspacl::text,
               array(SELECT c.relname || ' ' || coalesce(c.relacl::text, '') FROM pg_class c
                     WHERE c.relnamespace = n.oid ORDER BY 1)
        FROM pg_namespace n WHERE n.nspname LIKE 'ws\\_%' ORDER BY 1""").fetchall()
    roles = conn.execute(
        "SELECT rolname, rolcanlogin, rolcreaterole FROM pg_roles WHERE rolname LIKE 'ws\\_%' ORDER BY 1"
    ).fetchall()
    return schemas + roles


def audit_digest(db) -> tuple:
    return db.conn("superuser").execute(
        "SELECT count(*), md5(string_agg(e::text, ',' ORDER BY e.id)) FROM audit.events e"
    ).fetchone()


# --- onboarding and re-running ---------------------------------------------------------------------


def test_onboarding_creates_each_registered_workspace(db, ws) -> None:
    acme, globex = ws("acme"), ws("globex")
    assert reconcile(db, [globex, acme]) == [("created", acme), ("created", globex)]
    for workspace_id in (acme, globex):
        assert workspace_objects(db, workspace_id) == present(workspace_id)
    owners = db.conn("superuser").execute(
        "SELECT DISTINCT pg_get_userbyid(nspowner) FROM pg_namespace WHERE nspname = ANY(%s)",
        ([f"ws_{acme}", f"ws_{globex}"],),
    ).fetchall()
    assert owners == [("perfloop_owner",)]
    # The workspace role can use its storage, as after create_workspace.
    assert db.attempt("superuser", f"SET LOCAL ROLE ws_{acme}_rw; "
                      f"INSERT INTO ws_{acme}.snapshots (kind, summary) VALUES ('flame', '{{}}')") is None


def test_rerunning_keeps_every_workspace_and_touches_none(db, ws) -> None:
    acme, globex = ws("acme"), ws("globex")
    reconcile(db, [acme, globex])
    before = workspace_state(db)
    migrator = db.conn("migrator")
    with migrator.transaction():
        assert reconcile(db, [globex, acme, acme, globex]) == [("kept", acme), ("kept", globex)]
        # A kept workspace gets no DDL: its tables are not even locked, so workloads never wait on
        # the CronJob.
        locks = migrator.execute("""
            SELECT c.relname, l.mode FROM pg_locks l JOIN pg_class c ON c.oid = l.relation
            JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE l.pid = pg_backend_pid() AND n.nspname = ANY(%s)""", ([f"ws_{acme}", f"ws_{globex}"],)).fetchall()
        assert locks == []
    assert workspace_state(db) == before


def test_a_registered_workspace_missing_its_role_is_created_again(db, ws) -> None:
    acme = ws("acme")
    reconcile(db, [acme])
    db.conn("superuser").execute(f"DROP OWNED BY ws_{acme}_rw; DROP ROLE ws_{acme}_rw")
    assert reconcile(db, [acme]) == [("created", acme)]
    assert workspace_objects(db, acme) == present(acme)
    assert db.conn("superuser").execute(
        "SELECT has_schema_privilege(%s, %s, 'USAGE')", (f"ws_{acme}_rw", f"ws_{acme}")
    ).fetchone() == (True,)


def test_rows_come_in_id_order_whatever_the_list_order(db, ws) -> None:
    # "C" order: '_' sorts before letters, so a_z comes before ab.
    reconcile(db, [ws("b"), ws("d")])
    rows = reconcile(db, [ws("e"), ws("ab"), ws("b"), ws("e"), ws("a_z")])
    assert rows == [("created", ws("a_z")), ("created", ws("ab")), ("kept", ws("b")), ("dropped", ws("d")),
                    ("created", ws("e"))]
    assert reconcile(db, [ws("e"), ws("b"), ws("ab"), ws("a_z")]) == [
        ("kept", ws("a_z")), ("kept", ws("ab")), ("kept", ws("b")), ("kept", ws("e"))]


# --- offboarding --------------------------------------------------------------------------------


def test_offboarding_drops_data_and_role_and_keeps_audit_rows(db, ws) -> None:
    acme, globex = ws("acme"), ws("globex")
    reconcile(db, [acme, globex])
    db.conn("superuser").execute(f"INSERT INTO ws_{acme}.snapshots (kind, summary) VALUES ('flame', '{{}}')")
    for writer in ("connector", "control_plane", "session_controller"):
        for workspace_id in (acme, globex):
            db.conn(writer).execute(
                "INSERT INTO audit.events (actor, action, workspace_id, query_text) VALUES (%s, 'query', %s, 'SELECT 1')",
                (writer, workspace_id),
            )
    audit_before = audit_digest(db)
    assert audit_before[0] >= 6

    assert reconcile(db, [globex]) == [("dropped", acme), ("kept", globex)]
    assert workspace_objects(db, acme) == ABSENT
    assert workspace_objects(db, globex) == present(globex)
    assert audit_digest(db) == audit_before
    assert db.conn("superuser").execute(
        "SELECT count(*) FROM audit.events WHERE workspace_id = %s", (acme,)
    ).fetchone() == (3,)
    assert reconcile(db, [globex]) == [("kept", globex)]  # an offboarded workspace is gone for good


def test_only_workspace_schemas_are_ever_dropped(db, ws) -> None:
    # A ws_ schema that create_workspace cannot have made: another owner, or a name that is not
    # ws_<valid id>. Neither is listed, let alone dropped.
    foreign, odd = f"ws_{ws('foreign')}", f"ws_{ws('Odd')}"
    superuser = db.conn("superuser")
    superuser.execute(f'CREATE SCHEMA {foreign} AUTHORIZATION control_plane; '
                      f'CREATE SCHEMA "{odd}" AUTHORIZATION perfloop_owner')
    try:
        assert reconcile(db, [], max_drops=5) == []
        assert set(workspace_schemas(db)) == {foreign, odd}
        assert superuser.execute("SELECT to_regclass('audit.events')::text").fetchone() == ("audit.events",)
    finally:
        superuser.execute(f'DROP SCHEMA {foreign}; DROP SCHEMA "{odd}"')


# --- refusals -------------------------------------------------------------------------------------


def test_more_drops_than_max_drops_is_refused_and_nothing_changes(db, ws) -> None:
    acme, globex, hooli, newco = ws("acme"), ws("globex"), ws("hooli"), ws("newco")
    reconcile(db, [acme, globex, hooli])
    before = workspace_state(db)

    error = refusal(db, [acme], max_drops=1)  # a truncated list
    assert error.sqlstate == REFUSED
    assert error.diag.message_primary == "reconcile_workspaces refused: it would drop 2 workspaces, more than max_drops = 1"
    assert error.diag.message_detail == f"Not registered: {globex}, {hooli}. Nothing was changed."
    assert refusal(db, [], max_drops=2).sqlstate == REFUSED  # an empty list
    assert refusal(db, [acme, newco], max_drops=1).sqlstate == REFUSED  # nor are registered ones created
    assert refusal(db, [acme, globex], max_drops=0).sqlstate == REFUSED
    assert workspace_state(db) == before
    assert workspace_objects(db, newco) == ABSENT

    # An operator offboards both deliberately.
    assert reconcile(db, [acme], max_drops=2) == [("kept", acme), ("dropped", globex), ("dropped", hooli)]
    assert [workspace_objects(db, w) for w in (globex, hooli)] == [ABSENT, ABSENT]


def test_max_drops_defaults_to_one(db, ws) -> None:
    acme, globex = ws("acme"), ws("globex")
    reconcile(db, [acme, globex])
    conn = db.conn("migrator")
    default_call = "SELECT action, workspace_id FROM perfloop_admin.reconcile_workspaces(%s::text[])"
    with pytest.raises(psycopg.Error) as raised:
        conn.execute(default_call, ([],))
    assert raised.value.sqlstate == REFUSED
    assert conn.execute(default_call, ([acme],)).fetchall() == [("kept", acme), ("dropped", globex)]


def test_null_list_is_refused_and_nothing_changes(db, ws) -> None:
    # One workspace and max_drops = 1: only the NULL check stands between it and being dropped.
    acme = ws("acme")
    reconcile(db, [acme])
    error = refusal(db, None, max_drops=1)
    assert error.sqlstate == REFUSED
    assert "NULL" in error.diag.message_primary
    assert workspace_objects(db, acme) == present(acme)


@pytest.mark.parametrize(("registered", "max_drops"), [("ok", None), ("ok", -1), ("two dimensions", 1)])
def test_invalid_arguments_are_refused(db, ws, registered: str, max_drops: int | None) -> None:
    acme = ws("acme")
    reconcile(db, [acme])
    listed = [acme] if registered == "ok" else [[acme], [ws("other")]]
    assert refusal(db, listed, max_drops).sqlstate == INVALID
    assert workspace_objects(db, acme) == present(acme)


@pytest.mark.parametrize(
    "bad_id",
    ["Acme", "1acme", "ac-me", "", None, "a" * 42, "acme\n", "acme; DROP TABLE audit.events; --",
     'acme"; DROP TABLE audit.events; --', "acme' OR 'x'='x", "acmé", "ws_acme_rw\"; DROP ROLE migrator; --"],
)
def test_an_invalid_id_is_refused_before_anything_else(db, ws, bad_id: str | None) -> None:
    # Two workspaces would be dropped with max_drops = 1, yet the invalid id is what is reported:
    # every id is checked first, and a list with a bad entry changes nothing.
    kept, unlisted, other_unlisted, newco = ws("kept"), ws("unlisted"), ws("unlisted2"), ws("newco")
    reconcile(db, [kept, unlisted, other_unlisted], max_drops=3)
    before = workspace_state(db)
    error = refusal(db, [kept, bad_id, newco], max_drops=1)
    assert error.sqlstate == INVALID, error
    assert "invalid workspace id" in error.diag.message_primary
    assert workspace_state(db) == before
    assert db.conn("superuser").execute("SELECT to_regclass('audit.events')::text").fetchone() == ("audit.events",)


def test_a_snapshot_isolated_transaction_is_refused(db, ws) -> None:
    acme = ws("acme")
    with db.server.connect(db.login("migrator"), db.name, autocommit=False) as conn:
        for level in (psycopg.IsolationLevel.REPEATABLE_READ, psycopg.IsolationLevel.SERIALIZABLE):
            conn.isolation_level = level
            with pytest.raises(psycopg.errors.InvalidTransactionState, match="READ COMMITTED"):
                conn.execute(RECONCILE, ([acme], 1))
            conn.rollback()
    assert workspace_objects(db, acme) == ABSENT


# --- who may reconcile ---------------------------------------------------------------------------


@pytest.mark.parametrize("role", [*WORKLOAD_ROLES_BUT_MIGRATOR, "outsider", "workspace role"])
def test_no_other_role_may_reconcile(db, server, ws, role: str) -> None:
    acme = ws("acme")
    reconcile(db, [acme])
    names = {"outsider": server.outsider, "workspace role": f"ws_{acme}_rw"}
    if role in names:  # NOLOGIN roles: become them
        outcome = db.attempt("superuser", f'SET LOCAL ROLE "{names[role]}"; {RECONCILE_NOTHING}')
    else:  # log in as the workload's IAM user
        outcome = db.attempt(role, RECONCILE_NOTHING)
    assert outcome == DENIED
    assert db.conn("superuser").execute(
        "SELECT has_function_privilege(%s, %s, 'EXECUTE')", (names.get(role, role), FUNCTION)
    ).fetchone() == (False,)
    assert workspace_objects(db, acme) == present(acme)


def test_only_the_owner_and_its_members_may_execute(db, server) -> None:
    executors = db.conn("superuser").execute(
        "SELECT rolname FROM pg_roles WHERE NOT rolsuper AND has_function_privilege(oid, %s, 'EXECUTE') ORDER BY 1",
        (FUNCTION,),
    ).fetchall()
    assert executors == sorted([("migrator",), ("perfloop_owner",), (server.runner,)])
    function = db.conn("superuser").execute(
        "SELECT pg_get_userbyid(proowner), prosecdef, proconfig FROM pg_proc WHERE oid = %s::regprocedure", (FUNCTION,)
    ).fetchone()
    assert function == ("perfloop_owner", False, ["search_path=pg_catalog, pg_temp", "lock_timeout=10s"])


# --- concurrency ----------------------------------------------------------------------------------


def wait_until_waiting_on_advisory_lock(db, pid: int, call: Future) -> None:
    """Return once backend ``pid``, running ``call`` in another thread, waits on an advisory lock."""
    deadline = time.monotonic() + 8  # under the function's lock_timeout of 10 s
    while True:
        wait = db.conn("superuser").execute(
            "SELECT wait_event_type, wait_event FROM pg_stat_activity WHERE pid = %s", (pid,)
        ).fetchone()
        if wait == ("Lock", "advisory"):
            return
        assert not call.done(), f"backend {pid} never waited on an advisory lock: {call.exception() or call.result()}"
        assert time.monotonic() < deadline, f"backend {pid} is not waiting on an advisory lock: {wait}"
        time.sleep(0.01)


def test_concurrent_reconcilers_run_one_after_the_other(db, ws) -> None:
    # The second reconciler plans from what the first committed: the workspace both register is
    # kept, not created twice, and max_drops counts against the real state.
    acme, globex = ws("acme"), ws("globex")
    login = db.login("migrator")
    with db.server.connect(login, db.name, autocommit=False) as first, \
            db.server.connect(login, db.name) as second, ThreadPoolExecutor(1) as pool:
        assert first.execute(RECONCILE, ([acme, globex], 1)).fetchall() == [("created", acme), ("created", globex)]
        later = pool.submit(lambda: second.execute(RECONCILE, ([acme], 1)).fetchall())
        wait_until_waiting_on_advisory_lock(db, second.info.backend_pid, later)
        first.commit()
        assert later.result(timeout=10) == [("kept", acme), ("dropped", globex)]
    assert workspace_objects(db, globex) == ABSENT


def test_reconciling_waits_for_a_migration_run(db, ws) -> None:
    acme = ws("acme")
    with db.server.connect(db.server.runner, db.name, autocommit=False) as migration, \
            db.server.connect(db.login("migrator"), db.name) as reconciler, ThreadPoolExecutor(1) as pool:
        # What apply_migrations takes first.
        migration.execute("SELECT pg_advisory_xact_lock(%s)", (sql_migrations._ADVISORY_LOCK_KEY,))
        later = pool.submit(lambda: reconciler.execute(RECONCILE, ([acme], 1)).fetchall())
        wait_until_waiting_on_advisory_lock(db, reconciler.info.backend_pid, later)
        migration.rollback()
        assert later.result(timeout=10) == [("created", acme)]


# --- the migration itself --------------------------------------------------------------------------


def test_ledger_records_the_migration_with_its_source_checksum(db) -> None:
    assert MIGRATION in db.initially_applied
    expected = hashlib.sha256((sql_migrations.SQL_DIR / MIGRATION).read_bytes()).hexdigest()
    assert db.conn("superuser").execute(
        "SELECT checksum FROM perfloop_admin.schema_migrations WHERE filename = %s", (MIGRATION,)
    ).fetchall() == [(expected,)]


def test_reapplying_migrations_leaves_workspaces_and_catalogue_unchanged(db, server, ws) -> None:
    acme, globex = ws("acme"), ws("globex")
    reconcile(db, [acme, globex])
    before = snapshot(db)
    assert db.migrate(render_migrations(server.iam_users)) == []
    assert snapshot(db) == before
    assert reconcile(db, [acme, globex]) == [("kept", acme), ("kept", globex)]


def test_editing_or_removing_the_applied_migration_is_refused(
    db, server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    without = [(name, text) for name, text in render_migrations(server.iam_users) if name != MIGRATION]
    with pytest.raises(MigrationChecksumError, match=rf"changed \[\] or missing \['{MIGRATION}'\]"):
        db.migrate(without)
    edited = tmp_path / "sql"
    shutil.copytree(sql_migrations.SQL_DIR, edited)
    with open(edited / MIGRATION, "a") as migration:
        migration.write("GRANT EXECUTE ON FUNCTION perfloop_admin.reconcile_workspaces(text[], integer) TO PUBLIC;\n")
    monkeypatch.setattr(sql_migrations, "SQL_DIR", edited)
    with pytest.raises(MigrationChecksumError, match=rf"changed \['{MIGRATION}'\] or missing \[\]"):
        db.migrate(render_migrations(server.iam_users))
    assert db.conn("superuser").execute(
        "SELECT has_function_privilege('control_plane', %s, 'EXECUTE')", (FUNCTION,)
    ).fetchone() == (False,)
