-- 004_audit: the append-only audit log, its retention floor, and its only exit, audit.purge_events().
SET LOCAL ROLE perfloop_owner;

CREATE SCHEMA IF NOT EXISTS audit;
REVOKE ALL ON SCHEMA audit FROM PUBLIC;
GRANT USAGE ON SCHEMA audit TO control_plane, session_controller, agent_orchestrator, connector, audit_cleanup;

-- query_text holds the verbatim text of every query a connector runs against a customer's store.
-- The identity column needs no sequence privilege to insert into (unlike serial), and GENERATED
-- ALWAYS keeps writers from choosing ids.
CREATE TABLE IF NOT EXISTS audit.events (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    occurred_at  timestamptz NOT NULL DEFAULT pg_catalog.now(),
    actor        text NOT NULL,
    action       text NOT NULL,
    workspace_id text,
    query_text   text,
    details      jsonb NOT NULL DEFAULT '{}'::jsonb
);
-- audit.purge_events() deletes by occurred_at range.
CREATE INDEX IF NOT EXISTS events_occurred_at_idx ON audit.events (occurred_at);

-- Writers may INSERT only, and only the content columns: occurred_at always comes from the
-- database clock, so no writer can backdate a row into the purge window (or postdate it out of it).
-- control_plane alone may read, to serve the customer-facing audit log; the other workloads are
-- write-only, so a compromised connector cannot read other workspaces' query history.
-- REVOKE ALL also removes column privileges, so re-applying converges to exactly these grants.
REVOKE ALL ON TABLE audit.events
    FROM PUBLIC, control_plane, session_controller, agent_orchestrator, connector, audit_cleanup, migrator;
GRANT INSERT (actor, action, workspace_id, query_text, details) ON TABLE audit.events
    TO control_plane, session_controller, agent_orchestrator, connector;
GRANT SELECT ON TABLE audit.events TO control_plane;

-- The floor is a constant in an owner-owned function: only perfloop_owner can replace it, nobody
-- else has CREATE on schema audit, and audit.purge_events() calls it schema-qualified with a fixed
-- search_path, so no caller can shadow it, and no setting or table row can lower it.
CREATE OR REPLACE FUNCTION audit.retention_floor_months()
RETURNS integer
LANGUAGE sql
IMMUTABLE
PARALLEL SAFE
RETURN 13;
REVOKE ALL ON FUNCTION audit.retention_floor_months() FROM PUBLIC;

-- Second line of defence behind the privileges above (which already give no role UPDATE, DELETE or
-- TRUNCATE): UPDATE and TRUNCATE are refused for everyone, DELETE unless all three hold:
--   1. current_user is perfloop_owner: the statement runs with the owner's identity, so a role that
--      was granted DELETE by mistake is still refused;
--   2. the session user is not a member of perfloop_owner (superusers count as members): a
--      non-member can only be perfloop_owner inside a SECURITY DEFINER function owned by it,
--      because SET ROLE requires membership and SECURITY DEFINER functions may not SET ROLE;
--      migrations, operators and superusers acting directly are therefore refused;
--   3. perfloop.audit_purge is 'on', as audit.purge_events() sets it around its DELETE: an
--      owner-owned SECURITY DEFINER function (present or future) that reaches audit.events by
--      mistake is refused.
-- Anyone can SET perfloop.audit_purge, but that only helps a caller already satisfying 1 and 2.
-- What this cannot stop: a member of perfloop_owner deliberately running DDL (DROP TRIGGER,
-- DISABLE TRIGGER, replacing this function); every migration run re-asserts the triggers below.
CREATE OR REPLACE FUNCTION audit.refuse_mutation()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $function$
BEGIN
    IF TG_OP = 'DELETE'
       AND current_user = 'perfloop_owner'
       AND NOT pg_has_role(session_user, 'perfloop_owner', 'MEMBER')
       AND current_setting('perfloop.audit_purge', true) = 'on'
    THEN
        RETURN OLD;
    END IF;
    RAISE EXCEPTION USING
        ERRCODE = 'PF002',
        MESSAGE = format('audit.events is append-only: %s refused', TG_OP),
        HINT = 'Rows leave audit.events only through audit.purge_events(), executed by audit_cleanup.';
END
$function$;
REVOKE ALL ON FUNCTION audit.refuse_mutation() FROM PUBLIC;

-- Row-level for UPDATE/DELETE so that the trigger is cloned onto partitions if audit.events is ever
-- partitioned (statement triggers are not); TRUNCATE has only statement triggers. ENABLE ALWAYS makes
-- them fire even under session_replication_role = replica, which Cloud SQL lets its admin set.
CREATE OR REPLACE TRIGGER events_append_only
    BEFORE UPDATE OR DELETE ON audit.events
    FOR EACH ROW EXECUTE FUNCTION audit.refuse_mutation();
CREATE OR REPLACE TRIGGER events_no_truncate
    BEFORE TRUNCATE ON audit.events
    FOR EACH STATEMENT EXECUTE FUNCTION audit.refuse_mutation();
ALTER TABLE audit.events
    ENABLE ALWAYS TRIGGER events_append_only,
    ENABLE ALWAYS TRIGGER events_no_truncate;

-- The only way rows leave audit.events. Months, not an interval: an interval such as '391 days'
-- compares above '13 months' (which interval comparison counts as 390 days) yet reaches back less
-- than 13 calendar months. Month arithmetic on timestamptz follows the TimeZone setting, so it is
-- pinned to UTC rather than left to the caller. Raises PF001 below the floor, and for NULL.
CREATE OR REPLACE FUNCTION audit.purge_events(retain_months integer)
RETURNS bigint
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET TimeZone = 'UTC'
AS $function$
DECLARE
    floor_months constant integer := audit.retention_floor_months();
    deleted bigint;
BEGIN
    IF retain_months IS NULL OR retain_months < floor_months THEN
        RAISE EXCEPTION USING
            ERRCODE = 'PF001',
            MESSAGE = format('audit retention of %s months is below the floor of %s months',
                             coalesce(retain_months::text, 'NULL'), floor_months);
    END IF;
    -- Transaction-local, and switched off again at once (a SET clause on the function would be
    -- neater, but PostgreSQL lets only superusers put a custom setting in one).
    PERFORM set_config('perfloop.audit_purge', 'on', true);
    DELETE FROM audit.events WHERE occurred_at < now() - make_interval(months => retain_months);
    GET DIAGNOSTICS deleted = ROW_COUNT;
    PERFORM set_config('perfloop.audit_purge', 'off', true);
    RETURN deleted;
END
$function$;
REVOKE ALL ON FUNCTION audit.purge_events(integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION audit.purge_events(integer) TO audit_cleanup;
