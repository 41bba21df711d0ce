-- 002_admin: the perfloop_admin schema, the migration ledger, and the helper that grants a workload
-- group role to a Cloud SQL IAM user (used by 003_iam_users).
SET LOCAL ROLE perfloop_owner;

-- Nothing here is granted to anyone: migrator reaches it as a member of perfloop_owner.
CREATE SCHEMA IF NOT EXISTS perfloop_admin;
REVOKE ALL ON SCHEMA perfloop_admin FROM PUBLIC;

-- One row per migration file, written by infra/sql_migrations.apply_migrations in the same
-- transaction as the migrations. checksum is the SHA-256 of the migration's source (the template for
-- *.sql.j2), so that stack values may change between runs but an applied migration's logic may not.
CREATE TABLE IF NOT EXISTS perfloop_admin.schema_migrations (
    filename   text PRIMARY KEY CHECK (filename ~ '^[0-9]{3}_[a-z0-9_]+\.sql$'),
    checksum   text NOT NULL CHECK (checksum ~ '^[0-9a-f]{64}$'),
    applied_at timestamptz NOT NULL DEFAULT pg_catalog.now()
);
REVOKE ALL ON TABLE perfloop_admin.schema_migrations FROM PUBLIC;

-- SECURITY INVOKER on purpose: creating a role needs CREATEROLE, which only the migration runner has
-- (perfloop_owner deliberately has none). The group role is checked against the workload roles so
-- that this helper can never hand out perfloop_owner or any other role.
CREATE OR REPLACE FUNCTION perfloop_admin.grant_workload_role(group_role text, member text)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $function$
BEGIN
    IF group_role IS NULL OR group_role <> ALL (ARRAY['control_plane', 'session_controller',
            'agent_orchestrator', 'connector', 'audit_cleanup', 'migrator']) THEN
        RAISE EXCEPTION USING
            ERRCODE = 'invalid_parameter_value',
            MESSAGE = format('%L is not a workload group role', group_role);
    END IF;
    -- On Cloud SQL the IAM user already exists (the Cloud SQL API created it); elsewhere (tests,
    -- local development) it is created here, without a password.
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = member) THEN
        EXECUTE format('CREATE ROLE %I LOGIN', member);
    ELSIF NOT (SELECT rolcanlogin FROM pg_roles WHERE rolname = member) THEN
        RAISE EXCEPTION USING
            ERRCODE = 'invalid_parameter_value',
            MESSAGE = format('%I is not a login role, so it cannot be a workload IAM user', member);
    END IF;
    EXECUTE format('GRANT %I TO %I', group_role, member);
END
$function$;
REVOKE ALL ON FUNCTION perfloop_admin.grant_workload_role(text, text) FROM PUBLIC;
