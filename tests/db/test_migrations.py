"""The migrations apply from scratch as a non-superuser, re-apply idempotently, guard their ledger, and
leave every workload role with exactly the privileges of the privilege model."""

from __future__ import annotations

import shutil
from pathlib import Path

import psycopg
import pytest

from infra import sql_migrations
from infra.sql_migrations import WORKLOAD_ROLES, MigrationChecksumError, render_migrations

pytestmark = pytest.mark.db

USER_SCHEMAS = """
    n.nspname NOT IN ('pg_catalog', 'information_schema')
    AND n.nspname !~ '^pg_(toast|temp_|toast_temp_)'
"""

# Roles, memberships, schemas, relations, column ACLs, functions, triggers, default privileges and
# the database's ACL: everything the migrations create or grant.
SNAPSHOT_QUERIES = {
    "roles": """
        SELECT rolname, rolsuper, rolinherit, rolcreaterole, rolcreatedb, rolcanlogin, rolreplication, rolbypassrls
        FROM pg_roles WHERE rolname !~ '^pg_' ORDER BY rolname""",
    "memberships": """
        SELECT r.rolname, m.rolname, g.rolname, am.admin_option
        FROM pg_auth_members am JOIN pg_roles r ON r.oid = am.roleid JOIN pg_roles m ON m.oid = am.member
        JOIN pg_roles g ON g.oid = am.grantor ORDER BY 1, 2, 3""",
    "schemas": f"""
        SELECT n.nspname, pg_get_userbyid(n.nspowner), n.nspacl::text FROM pg_namespace n
        WHERE {USER_SCHEMAS} ORDER BY 1""",
    "relations": f"""
        SELECT n.nspname, c.relname, c.relkind, pg_get_userbyid(c.relowner), c.relacl::text, c.relrowsecurity
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE {USER_SCHEMAS} ORDER BY 1, 2""",
    "columns": f"""
        SELECT n.nspname, c.relname, a.attname, a.attacl::text
        FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE {USER_SCHEMAS} AND a.attacl IS NOT NULL ORDER BY 1, 2, 3""",
    "functions": f"""
        SELECT p.oid::regprocedure::text, pg_get_userbyid(p.proowner), p.prosecdef, p.provolatile,
               p.proconfig, p.proacl::text, md5(pg_get_functiondef(p.oid))
        FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE {USER_SCHEMAS} ORDER BY 1""",
    "triggers": """
        SELECT tgrelid::regclass::text, tgname, tgenabled, pg_get_triggerdef(oid)
        FROM pg_trigger WHERE NOT tgisinternal ORDER BY 1, 2""",
    "default_privileges": """
        SELECT pg_get_userbyid(defaclrole), defaclnamespace::regnamespace::text, defaclobjtype, defaclacl::text
        FROM pg_default_acl ORDER BY 1, 2, 3""",
    "database": "SELECT datacl::text FROM pg_database WHERE datname = current_database()",
    "ledger": "SELECT filename, checksum FROM perfloop_admin.schema_migrations ORDER BY 1",
}

# Everything a role may do in the database, whether granted to it, to a role it inherits, or to PUBLIC:
# database privileges, schema privileges, table privileges, column privileges beyond the table-level
# ones, sequence privileges and EXECUTE on functions outside the system schemas.
INVENTORY = f"""
WITH role AS (SELECT %(role)s::name AS name)
SELECT 'DATABASE ' || p FROM role, unnest(ARRAY['CONNECT', 'CREATE', 'TEMPORARY']) p
WHERE has_database_privilege(role.name, current_database(), p)
UNION ALL
SELECT format('SCHEMA %%s %%s', n.nspname, p)
FROM role, pg_namespace n, unnest(ARRAY['USAGE', 'CREATE']) p
WHERE {USER_SCHEMAS} AND has_schema_privilege(role.name, n.oid, p)
UNION ALL
SELECT format('TABLE %%s %%s', c.oid::regclass, p)
FROM role, pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace,
     unnest(ARRAY['SELECT', 'INSERT', 'UPDATE', 'DELETE', 'TRUNCATE', 'REFERENCES', 'TRIGGER']) p
WHERE {USER_SCHEMAS} AND c.relkind IN ('r', 'p', 'v', 'm', 'f') AND has_table_privilege(role.name, c.oid, p)
UNION ALL
SELECT format('COLUMN %%s.%%s %%s', c.oid::regclass, a.attname, p)
FROM role, pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace JOIN pg_attribute a ON a.attrelid = c.oid,
     unnest(ARRAY['SELECT', 'INSERT', 'UPDATE', 'REFERENCES']) p
WHERE {USER_SCHEMAS} AND c.relkind IN ('r', 'p', 'v', 'm', 'f') AND a.attnum > 0 AND NOT a.attisdropped
  AND has_column_privilege(role.name, c.oid, a.attnum, p) AND NOT has_table_privilege(role.name, c.oid, p)
UNION ALL
SELECT format('SEQUENCE %%s %%s', c.oid::regclass, p)
FROM role, pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace, unnest(ARRAY['USAGE', 'SELECT', 'UPDATE']) p
WHERE {USER_SCHEMAS} AND c.relkind = 'S' AND has_sequence_privilege(role.name, c.oid, p)
UNION ALL
SELECT format('FUNCTION %%s EXECUTE', f.oid::regprocedure)
FROM role, pg_proc f JOIN pg_namespace n ON n.oid = f.pronamespace
WHERE {USER_SCHEMAS} AND has_function_privilege(role.name, f.oid, 'EXECUTE')
"""

PUBLIC_ONLY = {"SCHEMA public USAGE"}
AUDIT_WRITER = PUBLIC_ONLY | {
    "DATABASE CONNECT",
    "SCHEMA audit USAGE",
    *(f"COLUMN audit.events.{column} INSERT" for column in ("actor", "action", "workspace_id", "query_text", "details")),
}
EXPECTED_INVENTORY = {
    "control_plane": AUDIT_WRITER | {"TABLE audit.events SELECT"},
    "session_controller": AUDIT_WRITER,
    "agent_orchestrator": AUDIT_WRITER,
    "connector": AUDIT_WRITER,
    "audit_cleanup": PUBLIC_ONLY | {"DATABASE CONNECT", "SCHEMA audit USAGE", "FUNCTION audit.purge_events(integer) EXECUTE"},
}


def snapshot(db) -> dict[str, list[tuple]]:
    conn = db.conn("superuser")
    return {name: conn.execute(query).fetchall() for name, query in SNAPSHOT_QUERIES.items()}


def inventory(db, role: str) -> set[str]:
    return {row[0] for row in db.conn("superuser").execute(INVENTORY, {"role": role})}


def test_migrations_apply_without_superuser_and_owner_owns_everything(db, server) -> None:
    runner = db.conn("superuser").execute(
        "SELECT rolsuper, rolcreaterole FROM pg_roles WHERE rolname = %s", (server.runner,)
    ).fetchone()
    assert runner == (False, True)
    owners = db.conn("superuser").execute("""
        SELECT DISTINCT pg_get_userbyid(owner) FROM (
            SELECT nspowner FROM pg_namespace n WHERE nspname IN ('audit', 'perfloop_admin')
            UNION ALL SELECT relowner FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                      WHERE n.nspname IN ('audit', 'perfloop_admin')
            UNION ALL SELECT proowner FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
                      WHERE n.nspname IN ('audit', 'perfloop_admin')
        ) AS objects(owner)""").fetchall()
    assert owners == [("perfloop_owner",)]


def test_reapplying_leaves_the_catalogue_unchanged(make_db, server) -> None:
    db = make_db()
    before = snapshot(db)
    assert before["ledger"] and before["functions"] and before["triggers"]  # not comparing two empty sets
    assert db.migrate(render_migrations(server.iam_users)) == []
    assert snapshot(db) == before


def test_first_run_applies_and_records_every_migration(db) -> None:
    names = [name for name, _ in render_migrations(db.server.iam_users)]
    assert db.initially_applied == names
    assert [row[0] for row in snapshot(db)["ledger"]] == names


def test_reapplying_repairs_drift(make_db, server) -> None:
    db = make_db()
    before = snapshot(db)
    db.conn("superuser").execute("""
        ALTER TABLE audit.events DISABLE TRIGGER USER;
        REVOKE INSERT (actor) ON audit.events FROM connector;
        GRANT SELECT ON audit.events TO audit_cleanup;
    """)
    assert snapshot(db) != before
    db.migrate(render_migrations(server.iam_users))
    assert snapshot(db) == before


def test_group_role_with_login_is_refused(make_db, server) -> None:
    # Roles are cluster-wide: give the shared role LOGIN only for the duration of this test.
    superuser = server.superuser("postgres")
    superuser.execute("ALTER ROLE control_plane LOGIN")
    try:
        with pytest.raises(psycopg.errors.ObjectNotInPrerequisiteState, match="role control_plane exists with LOGIN"):
            make_db()
    finally:
        superuser.execute("ALTER ROLE control_plane NOLOGIN")
        superuser.close()


def test_changed_migration_is_refused_and_nothing_is_applied(
    make_db, server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = make_db()
    edited = tmp_path / "sql"
    shutil.copytree(sql_migrations.SQL_DIR, edited)
    with open(edited / "004_audit.sql", "a") as migration:
        migration.write("CREATE TABLE audit.edited_after_the_fact ();\n")
    monkeypatch.setattr(sql_migrations, "SQL_DIR", edited)
    with pytest.raises(MigrationChecksumError, match=r"changed \['004_audit.sql'\] or missing \[\]"):
        db.migrate(render_migrations(server.iam_users))
    assert db.conn("superuser").execute("SELECT to_regclass('audit.edited_after_the_fact')").fetchone() == (None,)


def test_removed_migration_is_refused(make_db, server) -> None:
    db = make_db()
    without = [(name, text) for name, text in render_migrations(server.iam_users) if name != "005_workspaces.sql"]
    with pytest.raises(MigrationChecksumError, match=r"changed \[\] or missing \['005_workspaces.sql'\]"):
        db.migrate(without)


def test_iam_user_missing_from_the_cluster_is_created_and_granted(make_db, server) -> None:
    # On Cloud SQL the API creates IAM users before the Job runs; elsewhere the migration creates them.
    extra = "pf-connector-eu@perfloop-test.iam"
    db = make_db(iam_users={**server.iam_users, "connector": [*server.iam_users["connector"], extra]})
    conn = db.conn("superuser")
    attributes = conn.execute("SELECT rolcanlogin, rolcreaterole FROM pg_roles WHERE rolname = %s", (extra,)).fetchone()
    assert attributes == (True, False)
    assert conn.execute(
        "SELECT roleid::regrole::text FROM pg_auth_members WHERE member = %s::regrole", (f'"{extra}"',)
    ).fetchall() == [("connector",)]


def test_migrations_apply_before_any_iam_user_is_known(make_db) -> None:
    # 003 then renders to comments only; the runner still gets migrator from 001.
    applied = make_db(iam_users={}).initially_applied
    assert applied == [name for name, _ in render_migrations({})]


def test_each_iam_user_is_a_member_of_its_group_role_only(db, server) -> None:
    conn = db.conn("superuser")
    for group_role, (member,) in server.iam_users.items():
        memberships = {
            row[0]
            for row in conn.execute(
                "SELECT roleid::regrole::text FROM pg_auth_members WHERE member = %s::regrole", (f'"{member}"',)
            )
        }
        # The runner is also cloudsqlsuperuser's member, as on Cloud SQL.
        assert memberships - {"cloudsqlsuperuser"} == {group_role}, member


def test_group_roles_are_unprivileged_and_only_migrator_owns(db) -> None:
    conn = db.conn("superuser")
    attributes = conn.execute(
        """SELECT rolname, rolcanlogin OR rolsuper OR rolcreaterole OR rolcreatedb OR rolreplication OR rolbypassrls
           FROM pg_roles WHERE rolname = ANY(%s) ORDER BY rolname""",
        (["perfloop_owner", *WORKLOAD_ROLES],),
    ).fetchall()
    assert attributes == sorted((role, False) for role in ["perfloop_owner", *WORKLOAD_ROLES])
    owner_members = conn.execute(
        "SELECT member::regrole::text FROM pg_auth_members WHERE roleid = 'perfloop_owner'::regrole"
    ).fetchall()
    assert owner_members == [("migrator",)]


@pytest.mark.parametrize(
    ("group_role", "member"),
    [("perfloop_owner", "pf-connector@perfloop-test.iam"), ("cloudsqlsuperuser", "pf-connector@perfloop-test.iam"),
     ("connector", "audit_cleanup"), (None, "pf-connector@perfloop-test.iam")],
)
def test_grant_helper_grants_only_workload_roles_to_logins(db, group_role: str | None, member: str) -> None:
    outcome = db.attempt("migrator", "SELECT perfloop_admin.grant_workload_role(%s, %s)", (group_role, member))
    assert outcome == psycopg.errors.InvalidParameterValue.sqlstate


@pytest.mark.parametrize("role", [*EXPECTED_INVENTORY, "outsider"])
def test_each_role_holds_exactly_the_privileges_of_the_model(db, server, role: str) -> None:
    expected = EXPECTED_INVENTORY.get(role, PUBLIC_ONLY)
    assert inventory(db, server.outsider if role == "outsider" else role) == expected


@pytest.mark.parametrize(
    ("mutation", "role"),
    [
        (("004_audit.sql", "GRANT SELECT ON TABLE audit.events TO control_plane;",
          "GRANT SELECT ON TABLE audit.events TO control_plane, audit_cleanup;"), "audit_cleanup"),
        (("004_audit.sql", "GRANT INSERT (actor, action,", "GRANT INSERT (occurred_at, actor, action,"), "connector"),
        (("001_roles.sql", "REVOKE CREATE ON SCHEMA public FROM PUBLIC;", "GRANT CREATE ON SCHEMA public TO PUBLIC;"),
         "outsider"),
        (("001_roles.sql", "REVOKE ALL ON DATABASE %I FROM PUBLIC", "REVOKE CONNECT ON DATABASE %I FROM PUBLIC"),
         "outsider"),
    ],
)
def test_inventory_detects_a_stray_grant(make_db, server, mutation, role: str) -> None:
    weakened = make_db(mutations=[mutation])
    expected = EXPECTED_INVENTORY.get(role, PUBLIC_ONLY)
    assert inventory(weakened, server.outsider if role == "outsider" else role) != expected
