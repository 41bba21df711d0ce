-- 005_workspaces: per-workspace storage for data kept "for the life of the workspace" (derived
-- aggregates and snapshots): one schema ws_<id> and one NOLOGIN role ws_<id>_rw per workspace.
--
-- create_workspace and drop_workspace are SECURITY INVOKER: creating and dropping roles needs
-- CREATEROLE, which only the migration runner has (perfloop_owner deliberately has none). Like
-- everything in perfloop_admin they are executable by perfloop_owner's members (migrator) only.
--
-- Audit rows are never stored in, or referenced from, a workspace schema (audit.events.workspace_id
-- is plain text, with no foreign key), so dropping a workspace schema CASCADE cannot reach
-- audit.events: offboarding keeps the audit trail for its full retention.
SET LOCAL ROLE perfloop_owner;

-- The single place a workspace id becomes identifiers. The pattern keeps names short (a role name
-- of at most 47 bytes, well under PostgreSQL's 63) and free of anything needing quoting; they are
-- still quoted with %I wherever they enter SQL.
CREATE OR REPLACE FUNCTION perfloop_admin.workspace_names(
    workspace_id text, OUT schema_name text, OUT role_name text)
LANGUAGE plpgsql
IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $function$
BEGIN
    IF workspace_id IS NULL OR workspace_id !~ '^[a-z][a-z0-9_]{0,40}$' THEN
        RAISE EXCEPTION USING
            ERRCODE = 'invalid_parameter_value',
            MESSAGE = format('invalid workspace id %L: it must match ^[a-z][a-z0-9_]{0,40}$', workspace_id);
    END IF;
    schema_name := 'ws_' || workspace_id;
    role_name := 'ws_' || workspace_id || '_rw';
END
$function$;

CREATE OR REPLACE FUNCTION perfloop_admin.create_workspace(workspace_id text)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $function$
DECLARE
    names record := perfloop_admin.workspace_names(workspace_id);
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = names.role_name) THEN
        EXECUTE format('CREATE ROLE %I NOLOGIN', names.role_name);
    END IF;
    EXECUTE format('CREATE SCHEMA IF NOT EXISTS %I AUTHORIZATION perfloop_owner', names.schema_name);
    EXECUTE format('REVOKE ALL ON SCHEMA %I FROM PUBLIC', names.schema_name);
    EXECUTE format('GRANT USAGE ON SCHEMA %I TO %I', names.schema_name, names.role_name);
    EXECUTE format($ddl$
        CREATE TABLE IF NOT EXISTS %I.snapshots (
            id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            captured_at timestamptz NOT NULL DEFAULT now(),
            kind        text NOT NULL,
            summary     jsonb NOT NULL
        )$ddl$, names.schema_name);
    -- Created by the invoker; the owner must be perfloop_owner like every other object.
    EXECUTE format('ALTER TABLE %I.snapshots OWNER TO perfloop_owner', names.schema_name);
    EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA %I TO %I',
                   names.schema_name, names.role_name);
    -- Derived tables that later migrations add to workspace schemas are covered as well.
    EXECUTE format('ALTER DEFAULT PRIVILEGES FOR ROLE perfloop_owner IN SCHEMA %I '
                   'GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO %I',
                   names.schema_name, names.role_name);
END
$function$;

-- Dropping the schema also drops its default-privilege entries, so the role is left with no
-- privileges and can be dropped; memberships granted in it disappear with it.
CREATE OR REPLACE FUNCTION perfloop_admin.drop_workspace(workspace_id text)
RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $function$
DECLARE
    names record := perfloop_admin.workspace_names(workspace_id);
BEGIN
    EXECUTE format('DROP SCHEMA IF EXISTS %I CASCADE', names.schema_name);
    EXECUTE format('DROP ROLE IF EXISTS %I', names.role_name);
END
$function$;

REVOKE ALL ON FUNCTION perfloop_admin.workspace_names(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION perfloop_admin.create_workspace(text) FROM PUBLIC;
REVOKE ALL ON FUNCTION perfloop_admin.drop_workspace(text) FROM PUBLIC;
