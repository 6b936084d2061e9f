-- Follow-ups that cannot be inserted, and jobs a worker does not know (issue 23).
--
-- A follow-up spec that PostgreSQL refuses (a priority out of smallint's range, written
-- through SQL where Python's checks never ran) used to abort the transaction that
-- finished the group's last member: the worker's round trip, or the rescuer's batch of
-- every queue. Now the insert runs in a subtransaction; if it fails, the group keeps the
-- error (`groups.error`) and each of its follow-ups is recorded as a failed job carrying
-- it, so the failure shows where failures show (`recent_failures`, `clerk failed`),
-- and the finish itself commits.
--
-- `jobs.unknown_returns` counts how often workers that did not know a job's task gave it
-- back (a rolling upgrade: an old worker claims a job for a task only new ones have).

ALTER TABLE {schema}.groups ADD COLUMN error text;
ALTER TABLE {schema}.jobs ADD COLUMN unknown_returns integer NOT NULL DEFAULT 0;

CREATE FUNCTION {schema}.record_unusable_specs(specs jsonb, default_priority smallint,
                                               default_tag text, origin_group bigint,
                                               problem text)
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    n integer := 0;
BEGIN
    INSERT INTO {schema}.job_history (id, queue, task, args, priority, state, attempt,
                                      max_attempts, run_at, origin_group_id, tag, last_error,
                                      created_at, finished_at)
    SELECT nextval(pg_get_serial_sequence({schema_name} || '.jobs', 'id')),
           coalesce(spec->>'queue', '?'), coalesce(spec->>'task', '?'),
           CASE WHEN jsonb_typeof(spec->'args') = 'object' THEN spec->'args' ELSE '{{}}' END,
           default_priority, 'failed', 0, 1, now(), origin_group,
           coalesce(spec->>'tag', default_tag),
           'follow-up could not be enqueued: ' || problem, now(), now()
    FROM jsonb_array_elements(CASE WHEN jsonb_typeof(specs) = 'array' THEN specs
                                   ELSE jsonb_build_array(specs) END) AS spec;
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END
$$;

CREATE OR REPLACE FUNCTION {schema}.fire_group() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    problem text;
BEGIN
    IF NEW.cancelled_at IS NULL THEN
        BEGIN
            PERFORM {schema}.insert_specs(NEW.on_complete, NEW.priority, NEW.tag, NEW.id);
        EXCEPTION WHEN OTHERS THEN
            GET STACKED DIAGNOSTICS problem = MESSAGE_TEXT;
            RAISE WARNING 'pgqueue: group % (%) could not enqueue its follow-ups: %',
                NEW.id, NEW.key, problem;
            UPDATE {schema}.groups SET error = 'follow-ups could not be enqueued: ' || problem
            WHERE id = NEW.id;
            BEGIN
                PERFORM {schema}.record_unusable_specs(NEW.on_complete, NEW.priority, NEW.tag,
                                                       NEW.id, problem);
            EXCEPTION WHEN OTHERS THEN
                NULL;  -- the group's error column still says what happened
            END;
        END;
    END IF;
    RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION {schema}.fire_chain() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    problem text;
BEGIN
    BEGIN
        PERFORM {schema}.insert_specs(NEW.on_success, NEW.priority, NEW.tag, NEW.origin_group_id);
    EXCEPTION WHEN OTHERS THEN
        GET STACKED DIAGNOSTICS problem = MESSAGE_TEXT;
        RAISE WARNING 'pgqueue: job % could not enqueue its on_success chain: %', NEW.id, problem;
        BEGIN
            PERFORM {schema}.record_unusable_specs(NEW.on_success, NEW.priority, NEW.tag,
                                                   NEW.origin_group_id, problem);
        EXCEPTION WHEN OTHERS THEN
            NULL;
        END;
    END;
    RETURN NULL;
END
$$;

CREATE OR REPLACE VIEW {schema}.group_progress AS
    SELECT id, key, tag, total, total - pending AS done, failed, cancelled, pending,
           CASE WHEN total = 0 THEN 100.0 ELSE round(100.0 * (total - pending) / total, 1) END AS percent,
           sealed, created_at AS started_at, updated_at, completed_at, cancelled_at, error
    FROM {schema}.groups;
