"""Audit logs: retained at least 13 months by a floor no caller can lower; audit_cleanup can only run
the purge; writers can only append; and nobody, the owner and superusers included, removes or alters
rows any other way.

Each guarantee is a check function returning what happened per attempt (an SQLSTATE, or None for
success). The tests assert the check on the real migrations, and the mutation tests assert that the
same check notices when the migrations are deliberately weakened.
"""

from __future__ import annotations

import datetime

import psycopg
import pytest

from infra.sql_migrations import APPEND_ONLY_SQLSTATE, RETENTION_FLOOR_SQLSTATE

pytestmark = pytest.mark.db

DENIED = psycopg.errors.InsufficientPrivilege.sqlstate
APP_ROLES = ("control_plane", "session_controller", "agent_orchestrator", "connector")
INSERT_EVENT = (
    "INSERT INTO audit.events (actor, action, workspace_id, query_text) "
    "VALUES ('connector', 'query', 'acme', 'SELECT count(*) FROM logs')"
)

# Ages relative to one instant, computed in UTC as audit.purge_events() does. A day either side of
# the 13-month boundary leaves room for the purge running a moment after the rows were inserted.
AGES = {
    "14 months": "14 months",
    "13 months and a day": "13 months 1 day",
    "a day short of 13 months": "13 months -1 day",
    "12 months": "12 months",
    "a day": "1 day",
}


def insert_aged_rows(db, ages: dict[str, str], at: datetime.datetime | None = None) -> None:
    """One row per age before ``at`` (default now()), actor = its label. As the superuser, since
    writers cannot set occurred_at."""
    conn = db.conn("superuser")
    with conn.transaction():
        conn.execute("SET LOCAL TimeZone = 'UTC'")
        for label, age in ages.items():
            conn.execute(
                "INSERT INTO audit.events (occurred_at, actor, action) "
                "VALUES (coalesce(%s::timestamptz, now()) - %s::interval, %s, 'aged')",
                (at, age, label),
            )


def remaining(db) -> set[str]:
    return {row[0] for row in db.conn("superuser").execute("SELECT actor FROM audit.events WHERE action = 'aged'")}


# --- the retention floor ----------------------------------------------------------------------------


def test_purge_below_the_floor_raises_and_deletes_nothing(make_db) -> None:
    db = make_db()
    insert_aged_rows(db, AGES)
    outcomes = {
        months: db.attempt("audit_cleanup", "SELECT audit.purge_events(%s)", (months,)) for months in (12, 0, -1, None)
    }
    assert outcomes == {12: RETENTION_FLOOR_SQLSTATE, 0: RETENTION_FLOOR_SQLSTATE, -1: RETENTION_FLOOR_SQLSTATE,
                        None: RETENTION_FLOOR_SQLSTATE}
    assert remaining(db) == set(AGES)


def test_purge_of_13_months_deletes_exactly_the_older_rows(make_db) -> None:
    db = make_db()
    insert_aged_rows(db, AGES)
    purge = "SELECT audit.purge_events(13)"
    assert db.conn("audit_cleanup").execute(purge).fetchone() == (2,)
    assert remaining(db) == {"a day short of 13 months", "12 months", "a day"}
    assert db.conn("audit_cleanup").execute(purge).fetchone() == (0,)


def test_purge_boundary_is_exactly_13_calendar_months_in_utc(make_db) -> None:
    db = make_db()
    cleanup = db.conn("audit_cleanup")
    with cleanup.transaction():
        # now() stays fixed for this transaction. The rows, committed by another session before the
        # purge statement starts, are visible to it. The caller's time zone must not move the
        # boundary: the function pins month arithmetic to UTC.
        cleanup.execute("SET LOCAL TimeZone = 'Pacific/Kiritimati'")
        now = cleanup.execute("SELECT now()").fetchone()[0]
        insert_aged_rows(db, {"exactly 13 months": "13 months", "13 months and 1 µs": "13 months 1 microsecond"}, now)
        assert cleanup.execute("SELECT audit.purge_events(13)").fetchone() == (1,)
    assert remaining(db) == {"exactly 13 months"}


# Settings a caller might hope the purge consults; none may let it go below 13 months.
CALLER_TRICKS = (
    "SET LOCAL perfloop.audit_retention_floor_months = 12; "
    "SET LOCAL perfloop.retention_floor_months = 12; "
    "SET LOCAL perfloop.audit_purge = 'on'; "
    "SET LOCAL search_path = public, pg_temp, audit; "
    "SET LOCAL TimeZone = 'Etc/GMT-14'; "
)


def purge_12_months_after_caller_tricks(db) -> str | None:
    return db.attempt("audit_cleanup", CALLER_TRICKS + "SELECT audit.purge_events(12)")


def test_caller_cannot_lower_the_floor(db) -> None:
    assert purge_12_months_after_caller_tricks(db) == RETENTION_FLOOR_SQLSTATE
    # The floor is a constant in an owner-owned function, not a setting or a row. No table holds it,
    # the privilege inventory (test_migrations) shows that no workload role but migrator may write
    # any table beyond inserting audit events, and only perfloop_owner may replace the function.
    floor = db.conn("superuser").execute(
        "SELECT audit.retention_floor_months(), provolatile, pg_get_userbyid(proowner) "
        "FROM pg_proc WHERE oid = 'audit.retention_floor_months()'::regprocedure"
    ).fetchone()
    assert floor == (13, "i", "perfloop_owner")


def purge_definition(db) -> tuple:
    return db.conn("superuser").execute(
        "SELECT prosecdef, pg_get_userbyid(proowner), proconfig "
        "FROM pg_proc WHERE oid = 'audit.purge_events(integer)'::regprocedure"
    ).fetchone()


def test_purge_runs_as_the_owner_with_pinned_settings(db) -> None:
    # SECURITY DEFINER so that audit_cleanup needs no privilege on the table; search_path pinned so
    # that nothing the caller puts on its path is resolved; TimeZone pinned so that the caller cannot
    # shift the month arithmetic.
    assert purge_definition(db) == (True, "perfloop_owner", ["search_path=pg_catalog, pg_temp", "TimeZone=UTC"])


# --- audit_cleanup: the purge and nothing else -----------------------------------------------------

CLEANUP_REFUSALS = {
    "read rows": "SELECT * FROM audit.events",
    "insert rows": INSERT_EVENT,
    "update rows": "UPDATE audit.events SET actor = 'nobody'",
    "delete rows": "DELETE FROM audit.events",
    "truncate": "TRUNCATE audit.events",
    "create a table in public": "CREATE TABLE public.t (x int)",
    "create a table in audit": "CREATE TABLE audit.t (x int)",
    "create a function in public": "CREATE FUNCTION public.f() RETURNS int LANGUAGE sql RETURN 1",
    "create a function in audit": "CREATE FUNCTION audit.f() RETURNS int LANGUAGE sql RETURN 1",
    "create a temporary table": "CREATE TEMPORARY TABLE t (x int)",
    "create a temporary function": "CREATE FUNCTION pg_temp.f() RETURNS int LANGUAGE sql RETURN 1",
    "create a schema": "CREATE SCHEMA cleanup_owned",
    "replace the purge": (
        "CREATE OR REPLACE FUNCTION audit.purge_events(retain_months integer) RETURNS bigint LANGUAGE sql RETURN 0"
    ),
    "replace the floor": (
        "CREATE OR REPLACE FUNCTION audit.retention_floor_months() RETURNS integer LANGUAGE sql IMMUTABLE RETURN 1"
    ),
    "make the purge SECURITY INVOKER": "ALTER FUNCTION audit.purge_events(integer) SECURITY INVOKER",
    "reset the purge's settings": "ALTER FUNCTION audit.purge_events(integer) RESET ALL",
    "rename the purge": "ALTER FUNCTION audit.purge_events(integer) RENAME TO purge_events_old",
    "take over the purge": "ALTER FUNCTION audit.purge_events(integer) OWNER TO CURRENT_USER",
    "drop the purge": "DROP FUNCTION audit.purge_events(integer)",
}


def cleanup_outcomes(db) -> dict[str, str | None]:
    return {label: db.attempt("audit_cleanup", statement) for label, statement in CLEANUP_REFUSALS.items()}


def test_audit_cleanup_can_only_execute_the_purge(db) -> None:
    assert cleanup_outcomes(db) == dict.fromkeys(CLEANUP_REFUSALS, DENIED)
    assert db.attempt("audit_cleanup", "SELECT audit.purge_events(13)") is None


@pytest.mark.parametrize(
    ("mutations", "now_allowed"),
    [
        ([("004_audit.sql", "GRANT EXECUTE ON FUNCTION audit.purge_events(integer) TO audit_cleanup;",
           "GRANT EXECUTE ON FUNCTION audit.purge_events(integer) TO audit_cleanup;\n"
           "GRANT SELECT ON TABLE audit.events TO audit_cleanup;")], "read rows"),
        ([("004_audit.sql", "GRANT USAGE ON SCHEMA audit TO control_plane,",
           "GRANT CREATE ON SCHEMA audit TO audit_cleanup;\nGRANT USAGE ON SCHEMA audit TO control_plane,")],
         "create a table in audit"),
        ([("001_roles.sql", "REVOKE ALL ON DATABASE %I FROM PUBLIC", "REVOKE CONNECT ON DATABASE %I FROM PUBLIC")],
         "create a temporary table"),
    ],
    ids=["select-granted", "create-on-audit-granted", "temp-left-to-public"],
)
def test_cleanup_check_notices_a_weakened_schema(make_db, mutations, now_allowed: str) -> None:
    assert cleanup_outcomes(make_db(mutations=mutations))[now_allowed] is None


# --- writers: append only ---------------------------------------------------------------------------

WRITER_ATTEMPTS = {
    "insert an event": INSERT_EVENT,
    "read events": "SELECT count(*) FROM audit.events",
    "backdate an event": (
        "INSERT INTO audit.events (occurred_at, actor, action) VALUES (now() - interval '2 years', 'x', 'y')"
    ),
    "choose an id": "INSERT INTO audit.events (id, actor, action) OVERRIDING SYSTEM VALUE VALUES (-1, 'x', 'y')",
    "update events": "UPDATE audit.events SET actor = 'nobody'",
    "delete events": "DELETE FROM audit.events",
    "truncate": "TRUNCATE audit.events",
    "disable all triggers": "ALTER TABLE audit.events DISABLE TRIGGER ALL",
    "disable the append-only trigger": "ALTER TABLE audit.events DISABLE TRIGGER events_append_only",
    "drop the append-only trigger": "DROP TRIGGER events_append_only ON audit.events",
    "replace the trigger function": (
        "CREATE OR REPLACE FUNCTION audit.refuse_mutation() RETURNS trigger LANGUAGE plpgsql AS 'BEGIN RETURN OLD; END'"
    ),
    "skip triggers in replica mode": "SET LOCAL session_replication_role = replica",
}


def writer_outcomes(db, role: str) -> dict[str, str | None]:
    return {label: db.attempt(role, statement) for label, statement in WRITER_ATTEMPTS.items()}


@pytest.mark.parametrize("role", APP_ROLES)
def test_application_roles_can_only_append(db, role: str) -> None:
    expected = dict.fromkeys(WRITER_ATTEMPTS, DENIED)
    expected["insert an event"] = None
    if role == "control_plane":  # serves the customer-facing audit log
        expected["read events"] = None
    assert writer_outcomes(db, role) == expected


def test_writer_check_notices_a_delete_grant(make_db) -> None:
    weakened = make_db(mutations=[(
        "004_audit.sql", "GRANT SELECT ON TABLE audit.events TO control_plane;",
        "GRANT SELECT ON TABLE audit.events TO control_plane;\nGRANT DELETE ON TABLE audit.events TO connector;",
    )])
    # The table is empty (every attempt is rolled back), so only the privilege check could refuse.
    assert writer_outcomes(weakened, "connector")["delete events"] is None


# --- the trigger: the second line of defence --------------------------------------------------------

TRIGGER_ATTEMPTS = {
    "delete as the migrator": ("migrator", "DELETE FROM audit.events"),
    "update as the migrator": ("migrator", "UPDATE audit.events SET actor = 'nobody'"),
    "truncate as the migrator": ("migrator", "TRUNCATE audit.events"),
    "delete as perfloop_owner with the purge flag set": (
        "migrator", "SET LOCAL ROLE perfloop_owner; SET LOCAL perfloop.audit_purge = 'on'; DELETE FROM audit.events"
    ),
    "purge as the migrator": ("migrator", "SELECT audit.purge_events(13)"),
    "delete as a superuser": ("superuser", "DELETE FROM audit.events"),
    "delete as a superuser in replica mode": (
        "superuser", "SET LOCAL session_replication_role = replica; DELETE FROM audit.events"
    ),
    "truncate as a superuser in replica mode": (
        "superuser", "SET LOCAL session_replication_role = replica; TRUNCATE audit.events"
    ),
    "delete through a mistaken grant, with the purge flag set": (
        "connector", "SET LOCAL perfloop.audit_purge = 'on'; DELETE FROM audit.events"
    ),
    "update through a mistaken grant": ("connector", "UPDATE audit.events SET actor = 'nobody'"),
    "delete in another owner-owned SECURITY DEFINER function": ("connector", "SELECT public.careless_cleanup()"),
}


def trigger_outcomes(db) -> dict[str, str | None]:
    """Give the trigger something to stop (rows, one past the floor), then make the mistakes it exists
    for: a role granted DELETE and UPDATE by mistake, and an owner-owned SECURITY DEFINER function
    that deletes audit rows without going through the purge."""
    insert_aged_rows(db, AGES)
    db.conn("superuser").execute("""
        GRANT DELETE, UPDATE ON audit.events TO connector;
        CREATE FUNCTION public.careless_cleanup() RETURNS void LANGUAGE sql SECURITY DEFINER
            SET search_path = pg_catalog, pg_temp AS 'DELETE FROM audit.events';
        ALTER FUNCTION public.careless_cleanup() OWNER TO perfloop_owner;
        GRANT EXECUTE ON FUNCTION public.careless_cleanup() TO connector;
    """)
    return {label: db.attempt(who, statement) for label, (who, statement) in TRIGGER_ATTEMPTS.items()}


def test_no_one_mutates_audit_rows_outside_the_purge(make_db) -> None:
    db = make_db()
    assert trigger_outcomes(db) == dict.fromkeys(TRIGGER_ATTEMPTS, APPEND_ONLY_SQLSTATE)
    assert remaining(db) == set(AGES)


@pytest.mark.parametrize(
    ("mutations", "now_allowed"),
    [
        ([("004_audit.sql", "CREATE OR REPLACE TRIGGER events_append_only\n    BEFORE UPDATE OR DELETE ON audit.events\n"
           "    FOR EACH ROW EXECUTE FUNCTION audit.refuse_mutation();\n", ""),
          ("004_audit.sql", "ENABLE ALWAYS TRIGGER events_append_only,\n    ", "")],
         ["delete as the migrator", "update as the migrator", "delete as a superuser"]),
        ([("004_audit.sql", "       AND NOT pg_has_role(session_user, 'perfloop_owner', 'MEMBER')\n", "")],
         ["delete as perfloop_owner with the purge flag set", "purge as the migrator"]),
        ([("004_audit.sql", "       AND current_user = 'perfloop_owner'\n", "")],
         ["delete through a mistaken grant, with the purge flag set"]),
        ([("004_audit.sql", "       AND current_setting('perfloop.audit_purge', true) = 'on'\n", "")],
         ["delete in another owner-owned SECURITY DEFINER function"]),
        ([("004_audit.sql", "ALTER TABLE audit.events\n    ENABLE ALWAYS TRIGGER events_append_only,\n"
           "    ENABLE ALWAYS TRIGGER events_no_truncate;\n", "")],
         ["delete as a superuser in replica mode", "truncate as a superuser in replica mode"]),
    ],
    ids=["no-row-trigger", "no-session-member-check", "no-current-user-check", "no-purge-flag-check",
         "not-enabled-always"],
)
def test_trigger_check_notices_each_weakened_condition(make_db, mutations, now_allowed: list[str]) -> None:
    outcomes = trigger_outcomes(make_db(mutations=mutations))
    assert {label: outcomes[label] for label in now_allowed} == dict.fromkeys(now_allowed)


# --- the floor and the purge, weakened --------------------------------------------------------------


@pytest.mark.parametrize(
    "mutation",
    [
        ("004_audit.sql", "RETURN 13;", "RETURN 12;"),
        ("004_audit.sql", "floor_months constant integer := audit.retention_floor_months();",
         "floor_months constant integer := coalesce(current_setting('perfloop.audit_retention_floor_months', true)"
         "::integer, audit.retention_floor_months());"),
    ],
    ids=["floor-lowered", "floor-from-a-setting"],
)
def test_floor_check_notices_a_lowerable_floor(make_db, mutation) -> None:
    assert purge_12_months_after_caller_tricks(make_db(mutations=[mutation])) is None


@pytest.mark.parametrize(
    "mutation",
    [
        ("004_audit.sql", "SET TimeZone = 'UTC'\n", ""),
        ("004_audit.sql", "SET search_path = pg_catalog, pg_temp\nSET TimeZone", "SET TimeZone"),
    ],
    ids=["time-zone-not-pinned", "search-path-not-pinned"],
)
def test_purge_definition_check_notices_an_unpinned_setting(make_db, mutation) -> None:
    assert purge_definition(make_db(mutations=[mutation]))[2] != ["search_path=pg_catalog, pg_temp", "TimeZone=UTC"]
