-- 006_workspace_lifecycle: perfloop_admin.reconcile_workspaces(registered, max_drops), which makes the
-- database's workspaces match the registered ones. The cell's workspace reconciler CronJob calls it
-- with the ids of the registration ConfigMaps that the tenant stacks own. A tenant's `pulumi up`
-- registers its workspace and the next run creates the workspace's storage; its `pulumi destroy`
-- removes the registration and the next run drops the storage.
--
-- SECURITY INVOKER, like create_workspace and drop_workspace, which it calls: creating and dropping
-- roles needs the runner's CREATEROLE. Only perfloop_owner's members (migrator) may execute it.
--
-- It never references audit.*. Dropping a workspace is drop_workspace's DROP SCHEMA CASCADE, which
-- cannot reach audit.events (see 005), so an offboarded workspace's audit rows stay for their full
-- retention.
SET LOCAL ROLE perfloop_owner;

-- All-or-nothing: the function runs inside the caller's transaction and either raises before
-- changing anything or makes every change. Returns one row per workspace it looked at, in id order
-- (collation "C"), whatever the order of `registered`:
--   created  registered, and its schema or role was missing: create_workspace was called;
--   kept     registered, and its schema (owned by perfloop_owner) and its role exist. Nothing is
--            touched: no DDL, no locks on its tables;
--   dropped  a ws_<id> schema owned by perfloop_owner whose id is not registered: drop_workspace
--            was called.
-- Schemas that create_workspace cannot have made are ignored: a ws_ name that is not a valid
-- workspace id, or a different owner. Only schemas are listed. Roles are cluster-wide, and a ws_*_rw
-- role without a schema in this database may belong to another database's workspace.
--
-- Refusals (the function raises and nothing is changed):
--   PF003  `registered` is NULL, or more than `max_drops` workspaces would be dropped. This guards
--          against an empty or truncated list wiping every workspace. An operator raises max_drops
--          deliberately to offboard several workspaces in one run;
--   22023  an id in `registered` is invalid (perfloop_admin.workspace_names, which checks every id
--          before anything is read or changed), `registered` has more than one dimension, or
--          `max_drops` is NULL or negative;
--   25000  the transaction is not READ COMMITTED (see concurrency below).
--
-- Concurrency. Before it reads the catalogue, the function takes the transaction-level advisory lock
-- that infra/sql_migrations.apply_migrations takes (key 0x70666D696772, "pfmigr"). So reconcilers
-- run one at a time, and they never overlap a migration run, which may change every workspace
-- schema. The lock is held until commit or rollback. A waiter gets it only after the previous
-- holder's transaction has ended, and in READ COMMITTED each statement of this VOLATILE function
-- takes a fresh snapshot. So every read after the lock sees everything the previous holder
-- committed, and the plan (what to create, keep and drop, and the max_drops count) is computed from
-- the current state, not from a stale one. A second reconciler with the same list therefore finds
-- everything `kept`. Under REPEATABLE READ or SERIALIZABLE the snapshot is taken by the caller's
-- first statement, before the lock, so the plan could be stale. That is why other isolation levels
-- are refused. Advisory locks are per database. Roles are cluster-wide, hence one product database
-- per instance. Direct calls of create_workspace and drop_workspace take no lock; the reconciler is
-- the only production caller.
--
-- lock_timeout is pinned to 10s, as apply_migrations does. A reconciler waiting behind a migration,
-- or a drop waiting behind a long transaction on the offboarded workspace's tables, fails (SQLSTATE
-- 55P03) and the CronJob retries on its next run. It does not queue other sessions behind it.
CREATE OR REPLACE FUNCTION perfloop_admin.reconcile_workspaces(registered text[], max_drops integer DEFAULT 1)
RETURNS TABLE (action text, workspace_id text)
LANGUAGE plpgsql
VOLATILE
SET search_path = pg_catalog, pg_temp
SET lock_timeout = '10s'
AS $function$
DECLARE
    plan_ids text[];
    plan_actions text[];
    doomed text[];
    i integer;
BEGIN
    IF registered IS NULL THEN
        RAISE EXCEPTION USING
            ERRCODE = 'PF003',
            MESSAGE = 'reconcile_workspaces refused: the list of registered workspaces is NULL',
            DETAIL = 'Nothing was changed.',
            HINT = 'Pass the id of every registered workspace, or an empty array if none is registered.';
    END IF;
    IF max_drops IS NULL OR max_drops < 0 THEN
        RAISE EXCEPTION USING
            ERRCODE = 'invalid_parameter_value',
            MESSAGE = format('max_drops must be zero or more, got %s', coalesce(max_drops::text, 'NULL'));
    END IF;
    IF array_ndims(registered) > 1 THEN
        RAISE EXCEPTION USING
            ERRCODE = 'invalid_parameter_value',
            MESSAGE = 'registered must be a one-dimensional array of workspace ids';
    END IF;
    -- Every id, in list order so that the first invalid one is named, before anything is read or
    -- changed: a list with a bad entry is not trusted to drop anything.
    PERFORM perfloop_admin.workspace_names(r.id)
    FROM unnest(registered) WITH ORDINALITY AS r(id, n)
    ORDER BY r.n;
    IF current_setting('transaction_isolation') <> 'read committed' THEN
        RAISE EXCEPTION USING
            ERRCODE = 'invalid_transaction_state',
            MESSAGE = format('reconcile_workspaces must run in a READ COMMITTED transaction, not %s',
                             upper(current_setting('transaction_isolation'))),
            HINT = 'Under a transaction snapshot it could plan from a state that a concurrent reconciler has already changed.';
    END IF;

    -- The key of infra/sql_migrations._ADVISORY_LOCK_KEY (0x70666D696772).
    PERFORM pg_advisory_xact_lock(123585224599410);

    -- The plan, read after the lock (see concurrency above), in id order.
    SELECT coalesce(array_agg(p.id ORDER BY p.id), '{}'), coalesce(array_agg(p.act ORDER BY p.id), '{}')
    INTO plan_ids, plan_actions
    FROM (
        SELECT coalesce(w.id, e.id) COLLATE "C" AS id,
               CASE
                   WHEN w.id IS NULL THEN 'dropped'
                   WHEN e.id IS NOT NULL
                        AND EXISTS (SELECT FROM pg_roles
                                    WHERE rolname = (perfloop_admin.workspace_names(w.id)).role_name)
                   THEN 'kept'
                   ELSE 'created'
               END AS act
        FROM (SELECT DISTINCT r.id FROM unnest(registered) AS r(id)) AS w
        FULL JOIN (
            SELECT substr(n.nspname, 4) AS id
            FROM pg_namespace n
            WHERE n.nspowner = 'perfloop_owner'::regrole
              AND n.nspname ~ '^ws_[a-z][a-z0-9_]{0,40}$'
        ) AS e ON e.id = w.id
    ) AS p;

    doomed := ARRAY(SELECT plan_ids[k] FROM generate_subscripts(plan_ids, 1) AS k
                    WHERE plan_actions[k] = 'dropped' ORDER BY k);
    IF cardinality(doomed) > max_drops THEN
        RAISE EXCEPTION USING
            ERRCODE = 'PF003',
            MESSAGE = format('reconcile_workspaces refused: it would drop %s workspaces, more than max_drops = %s',
                             cardinality(doomed), max_drops),
            DETAIL = format('Not registered: %s%s. Nothing was changed.',
                            array_to_string(doomed[1:10], ', '),
                            CASE WHEN cardinality(doomed) > 10
                                 THEN format(' and %s more', cardinality(doomed) - 10) ELSE '' END),
            HINT = 'If the list is complete, offboard them deliberately with a larger max_drops; '
                   'an empty or truncated list must never drop workspaces.';
    END IF;

    FOR i IN 1 .. cardinality(plan_ids) LOOP
        workspace_id := plan_ids[i];
        action := plan_actions[i];
        IF action = 'created' THEN
            PERFORM perfloop_admin.create_workspace(workspace_id);
        ELSIF action = 'dropped' THEN
            PERFORM perfloop_admin.drop_workspace(workspace_id);
        END IF;
        RETURN NEXT;
    END LOOP;
END
$function$;

REVOKE ALL ON FUNCTION perfloop_admin.reconcile_workspaces(text[], integer) FROM PUBLIC;
