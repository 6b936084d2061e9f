-- Follow-up jobs: a group's on_complete specs and a job's on_success chain.
--
-- Both are fired by triggers on a transition that can happen only once:
--   * groups.completed_at goes from NULL to a time exactly once, under the group row's lock
--     (the statement that takes `pending` to 0 on a sealed group, or seals a group whose
--     `pending` is already 0). The trigger therefore inserts the follow-ups exactly once,
--     in the same transaction as the member that finished last.
--   * a job's history row is inserted exactly once, by the guarded DELETE of its live row.

CREATE FUNCTION {schema}.insert_specs(specs jsonb, default_priority smallint,
                                       default_tag text, origin_group bigint)
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    inserted_queue text;
    notified text[] := '{{}}';
    n integer := 0;
BEGIN
    FOR inserted_queue IN
        INSERT INTO {schema}.jobs (queue, task, args, priority, max_attempts, run_at, tag,
                                   dedupe_key, timeout_seconds, on_success, origin_group_id)
        SELECT spec->>'queue',
               spec->>'task',
               coalesce(spec->'args', '{{}}'::jsonb),
               greatest(coalesce((spec->>'priority')::smallint, default_priority), default_priority),
               coalesce((spec->>'max_attempts')::integer, 3),
               now() + coalesce((spec->>'delay')::double precision, 0) * interval '1 second',
               coalesce(spec->>'tag', default_tag),
               spec->>'dedupe_key',
               (spec->>'timeout')::integer,
               spec->'on_success',
               origin_group
        FROM jsonb_array_elements(specs) AS spec
        ON CONFLICT (dedupe_key) WHERE dedupe_key IS NOT NULL DO NOTHING
        RETURNING queue
    LOOP
        n := n + 1;
        IF NOT inserted_queue = ANY (notified) THEN
            notified := notified || inserted_queue;
            PERFORM pg_notify({schema_name} || '.' || inserted_queue, '');
        END IF;
    END LOOP;
    RETURN n;
END
$$;

CREATE FUNCTION {schema}.fire_group() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.cancelled_at IS NULL THEN
        PERFORM {schema}.insert_specs(NEW.on_complete, NEW.priority, NEW.tag, NEW.id);
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER groups_fire AFTER UPDATE OF completed_at ON {schema}.groups
    FOR EACH ROW WHEN (OLD.completed_at IS NULL AND NEW.completed_at IS NOT NULL)
    EXECUTE FUNCTION {schema}.fire_group();

CREATE FUNCTION {schema}.fire_chain() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM {schema}.insert_specs(NEW.on_success, NEW.priority, NEW.tag, NEW.origin_group_id);
    RETURN NULL;
END
$$;

CREATE TRIGGER job_history_chain AFTER INSERT ON {schema}.job_history
    FOR EACH ROW WHEN (NEW.state = 'succeeded' AND NEW.on_success IS NOT NULL)
    EXECUTE FUNCTION {schema}.fire_chain();

-- Public SQL entry point, so any language can enqueue (as graphile-worker's add_job).
CREATE FUNCTION {schema}.add_job(queue text, task text, args jsonb DEFAULT '{{}}',
                                 priority smallint DEFAULT 0, run_at timestamptz DEFAULT now(),
                                 max_attempts integer DEFAULT 3, tag text DEFAULT NULL,
                                 dedupe_key text DEFAULT NULL)
RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    new_id bigint;
BEGIN
    INSERT INTO {schema}.jobs (queue, task, args, priority, run_at, max_attempts, tag, dedupe_key)
    VALUES (add_job.queue, add_job.task, add_job.args, add_job.priority, add_job.run_at,
            add_job.max_attempts, add_job.tag, add_job.dedupe_key)
    RETURNING id INTO new_id;
    PERFORM pg_notify({schema_name} || '.' || add_job.queue, '');
    RETURN new_id;
END
$$;
