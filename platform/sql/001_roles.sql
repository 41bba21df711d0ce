-- 001_roles: the owner role, the workload group roles, and database-wide privileges.
--
-- Runs as the migration runner itself (no SET ROLE): a LOGIN role with CREATEROLE that is not a
-- superuser (on Cloud SQL, a member of cloudsqlsuperuser) and may grant on the current database.
-- Roles are cluster-wide, so every statement here tolerates roles that already exist.

-- perfloop_owner owns every object; the workload group roles carry the workloads' privileges.
-- A pre-existing role of one of these names with any elevated attribute is refused rather than
-- adopted: a group role that could log in or create roles would defeat the privilege model.
DO $migration$
DECLARE
    role_name text;
BEGIN
    FOREACH role_name IN ARRAY ARRAY['perfloop_owner', 'control_plane', 'session_controller',
                                     'agent_orchestrator', 'connector', 'audit_cleanup', 'migrator']
    LOOP
        IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = role_name) THEN
            EXECUTE pg_catalog.format('CREATE ROLE %I NOLOGIN', role_name);
        ELSIF EXISTS (SELECT FROM pg_catalog.pg_roles
                      WHERE rolname = role_name
                        AND (rolcanlogin OR rolsuper OR rolcreaterole OR rolcreatedb
                             OR rolreplication OR rolbypassrls)) THEN
            RAISE EXCEPTION USING
                ERRCODE = 'object_not_in_prerequisite_state',
                MESSAGE = pg_catalog.format('role %I exists with LOGIN or an elevated attribute', role_name),
                HINT = 'Group roles must be NOLOGIN NOSUPERUSER NOCREATEROLE NOCREATEDB NOREPLICATION NOBYPASSRLS.';
        END IF;
    END LOOP;
END
$migration$;

-- The migrator workload owns the schema: its members may SET ROLE perfloop_owner. The runner joins
-- migrator so that the following migrations (which SET LOCAL ROLE perfloop_owner) work on the very
-- first run, before 003 has granted migrator to the migrator's IAM user.
GRANT perfloop_owner TO migrator;
GRANT migrator TO CURRENT_USER;

-- Only the workload roles may connect, nobody may create temporary objects (audit_cleanup in
-- particular must not be able to create anything, pg_temp included), and only the owner may create
-- schemas. The database name is not known in advance, hence the dynamic SQL.
DO $migration$
BEGIN
    EXECUTE pg_catalog.format('REVOKE ALL ON DATABASE %I FROM PUBLIC', pg_catalog.current_database());
    EXECUTE pg_catalog.format(
        'GRANT CONNECT ON DATABASE %I TO control_plane, session_controller, agent_orchestrator, '
        'connector, audit_cleanup, migrator', pg_catalog.current_database());
    EXECUTE pg_catalog.format('GRANT CREATE ON DATABASE %I TO perfloop_owner', pg_catalog.current_database());
END
$migration$;

-- PostgreSQL 15 no longer grants CREATE on public to PUBLIC, but a database restored or upgraded from
-- an older version still does; state it explicitly so the guarantee never depends on history.
REVOKE CREATE ON SCHEMA public FROM PUBLIC;

-- Functions are executable by PUBLIC by default; every function perfloop_owner creates starts with
-- no EXECUTE grant, and each migration grants EXECUTE to exactly the roles that need it.
ALTER DEFAULT PRIVILEGES FOR ROLE perfloop_owner REVOKE EXECUTE ON FUNCTIONS FROM PUBLIC;
