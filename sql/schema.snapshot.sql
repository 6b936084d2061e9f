CREATE SCHEMA clerk;
CREATE SCHEMA pgqueue;
CREATE TYPE pgqueue.job_state AS ENUM (
    'queued',
    'running',
    'succeeded',
    'failed',
    'cancelled'
);
CREATE FUNCTION pgqueue.add_job(queue text, task text, args jsonb DEFAULT '{}'::jsonb, priority smallint DEFAULT 0, run_at timestamp with time zone DEFAULT now(), max_attempts integer DEFAULT 3, tag text DEFAULT NULL::text, dedupe_key text DEFAULT NULL::text) RETURNS bigint
    LANGUAGE plpgsql
    AS $$
DECLARE
    new_id bigint;
BEGIN
    INSERT INTO "pgqueue".jobs (queue, task, args, priority, run_at, max_attempts, tag, dedupe_key)
    VALUES (add_job.queue, add_job.task, add_job.args, add_job.priority, add_job.run_at,
            add_job.max_attempts, add_job.tag, add_job.dedupe_key)
    RETURNING id INTO new_id;
    PERFORM pg_notify('pgqueue' || '.' || add_job.queue, '');
    RETURN new_id;
END
$$;
CREATE FUNCTION pgqueue.assign_fair_rank() RETURNS trigger
    LANGUAGE plpgsql
    SET enable_seqscan TO 'off'
    SET enable_bitmapscan TO 'off'
    AS $$
DECLARE
    head double precision;
    last double precision;
    step double precision;
BEGIN
    SELECT j.fair_rank INTO head FROM "pgqueue".jobs j
    WHERE j.state = 'queued' AND j.queue = NEW.queue AND j.priority = NEW.priority
      AND j.run_at <= now()
    ORDER BY j.fair_rank LIMIT 1;
    SELECT j.fair_rank INTO last FROM "pgqueue".jobs j
    WHERE j.state = 'queued' AND j.tag IS NOT NULL AND j.queue = NEW.queue
      AND j.tag = NEW.tag AND j.priority = NEW.priority
    ORDER BY j.fair_rank DESC LIMIT 1;
    SELECT w.weight INTO step FROM "pgqueue".fair_weights w
    WHERE w.queue = NEW.queue AND w.key = NEW.tag;
    NEW.fair_rank := greatest(coalesce(head, 0), coalesce(last, 0)) + 1.0 / coalesce(step, 1);
    RETURN NEW;
END
$$;
CREATE FUNCTION pgqueue.count_history_deleted() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
BEGIN
    INSERT INTO "pgqueue".job_count_changes (queue, state, jobs)
    SELECT queue, state, -count(*) FROM old_rows GROUP BY 1, 2;
    RETURN NULL;
END
$$;
CREATE FUNCTION pgqueue.count_history_inserted() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
BEGIN
    INSERT INTO "pgqueue".job_count_changes (queue, state, jobs, task, minute, finished, seconds)
    SELECT queue, state, count(*), task, date_trunc('minute', finished_at), count(*),
           coalesce(sum(extract(epoch FROM finished_at - started_at)), 0)
    FROM new_rows GROUP BY queue, state, task, date_trunc('minute', finished_at);
    -- Whoever follows a tag's jobs (clerk enqueue --wait follows sites) sleeps on this
    -- channel: one notification per tag and transaction (identical ones are folded).
    PERFORM pg_notify('pgqueue' || '.tag_finished', tag)
    FROM (SELECT DISTINCT tag FROM new_rows WHERE tag IS NOT NULL) AS tags;
    RETURN NULL;
END
$$;
CREATE FUNCTION pgqueue.fire_chain() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
DECLARE
    problem text;
BEGIN
    BEGIN
        PERFORM "pgqueue".insert_specs(NEW.on_success, NEW.priority, NEW.tag, NEW.origin_group_id);
    EXCEPTION WHEN OTHERS THEN
        GET STACKED DIAGNOSTICS problem = MESSAGE_TEXT;
        RAISE WARNING 'pgqueue: job % could not enqueue its on_success chain: %', NEW.id, problem;
        BEGIN
            PERFORM "pgqueue".record_unusable_specs(NEW.on_success, NEW.priority, NEW.tag,
                                                   NEW.origin_group_id, problem);
        EXCEPTION WHEN OTHERS THEN
            NULL;
        END;
    END;
    RETURN NULL;
END
$$;
CREATE FUNCTION pgqueue.fire_group() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
DECLARE
    problem text;
BEGIN
    IF NEW.cancelled_at IS NULL THEN
        BEGIN
            PERFORM "pgqueue".insert_specs(NEW.on_complete, NEW.priority, NEW.tag, NEW.id);
        EXCEPTION WHEN OTHERS THEN
            GET STACKED DIAGNOSTICS problem = MESSAGE_TEXT;
            RAISE WARNING 'pgqueue: group % (%) could not enqueue its follow-ups: %',
                NEW.id, NEW.key, problem;
            UPDATE "pgqueue".groups SET error = 'follow-ups could not be enqueued: ' || problem
            WHERE id = NEW.id;
            BEGIN
                PERFORM "pgqueue".record_unusable_specs(NEW.on_complete, NEW.priority, NEW.tag,
                                                       NEW.id, problem);
            EXCEPTION WHEN OTHERS THEN
                NULL;  -- the group's error column still says what happened
            END;
        END;
    END IF;
    RETURN NULL;
END
$$;
CREATE FUNCTION pgqueue.insert_specs(specs jsonb, default_priority smallint, default_tag text, origin_group bigint) RETURNS integer
    LANGUAGE plpgsql
    AS $$
DECLARE
    inserted_queue text;
    notified text[] := '{}';
    n integer := 0;
BEGIN
    FOR inserted_queue IN
        INSERT INTO "pgqueue".jobs (queue, task, args, priority, max_attempts, run_at, tag,
                                   dedupe_key, timeout_seconds, on_success, origin_group_id)
        SELECT spec->>'queue',
               spec->>'task',
               coalesce(spec->'args', '{}'::jsonb),
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
            PERFORM pg_notify('pgqueue' || '.' || inserted_queue, '');
        END IF;
    END LOOP;
    RETURN n;
END
$$;
CREATE FUNCTION pgqueue.record_unusable_specs(specs jsonb, default_priority smallint, default_tag text, origin_group bigint, problem text) RETURNS integer
    LANGUAGE plpgsql
    AS $$
DECLARE
    n integer := 0;
BEGIN
    INSERT INTO "pgqueue".job_history (id, queue, task, args, priority, state, attempt,
                                      max_attempts, run_at, origin_group_id, tag, last_error,
                                      created_at, finished_at)
    SELECT nextval(pg_get_serial_sequence('pgqueue' || '.jobs', 'id')),
           coalesce(spec->>'queue', '?'), coalesce(spec->>'task', '?'),
           CASE WHEN jsonb_typeof(spec->'args') = 'object' THEN spec->'args' ELSE '{}' END,
           default_priority, 'failed', 0, 1, now(), origin_group,
           coalesce(spec->>'tag', default_tag),
           'follow-up could not be enqueued: ' || problem, now(), now()
    FROM jsonb_array_elements(CASE WHEN jsonb_typeof(specs) = 'array' THEN specs
                                   ELSE jsonb_build_array(specs) END) AS spec;
    GET DIAGNOSTICS n = ROW_COUNT;
    RETURN n;
END
$$;
CREATE FUNCTION pgqueue.take_slots(p_task text, p_key text, p_ids bigint[], p_attempts integer[], p_park_seconds double precision) RETURNS TABLE(job_id bigint, park_until timestamp with time zone)
    LANGUAGE plpgsql ROWS 10
    AS $$
DECLARE
    lim "pgqueue".limits%ROWTYPE;
    held "pgqueue".limit_keys%ROWTYPE;
    alive_ids bigint[];
    alive_attempts integer[];
    recent timestamptz[] := '{}';
    clock timestamptz;
    wanted integer := cardinality(p_ids);
    granted integer;
    full_slots boolean := false;
    i integer;
BEGIN
    SELECT * INTO lim FROM "pgqueue".limits l WHERE l.task = p_task;
    IF NOT FOUND THEN  -- the limit was removed meanwhile
        RETURN QUERY SELECT u, NULL::timestamptz FROM unnest(p_ids) AS u;
        RETURN;
    END IF;
    INSERT INTO "pgqueue".limit_keys (task, key) VALUES (p_task, p_key) ON CONFLICT DO NOTHING;
    -- Waits for a claim holding the key; each statement of this function then takes a new
    -- snapshot, so the jobs that claim granted are seen running below.
    SELECT * INTO held FROM "pgqueue".limit_keys k WHERE k.task = p_task AND k.key = p_key
    FOR UPDATE;
    clock := clock_timestamp();
    SELECT coalesce(array_agg(h.id ORDER BY h.n), '{}'),
           coalesce(array_agg(h.attempt ORDER BY h.n), '{}')
    INTO alive_ids, alive_attempts
    FROM unnest(held.holders, held.attempts) WITH ORDINALITY AS h(id, attempt, n)
    WHERE EXISTS (SELECT 1 FROM "pgqueue".jobs j
                  WHERE j.id = h.id AND j.state = 'running' AND j.attempt = h.attempt);
    granted := wanted;
    IF lim.concurrency IS NOT NULL THEN
        granted := least(granted, lim.concurrency - cardinality(alive_ids));
    END IF;
    IF lim.rate IS NOT NULL THEN
        recent := ARRAY(SELECT s FROM unnest(held.starts) AS s
                        WHERE s > clock - lim.per_seconds * interval '1 second' ORDER BY s);
        granted := least(granted, lim.rate - cardinality(recent));
    END IF;
    granted := greatest(granted, 0);
    full_slots := lim.concurrency IS NOT NULL
                  AND cardinality(alive_ids) + granted >= lim.concurrency;
    FOR i IN 1 .. granted LOOP
        recent := recent || clock;
    END LOOP;
    job_id := NULL;
    FOR i IN 1 .. granted LOOP
        job_id := p_ids[i];
        park_until := NULL;
        RETURN NEXT;
    END LOOP;
    IF granted < wanted THEN
        IF lim.rate IS NOT NULL AND NOT full_slots THEN
            -- Blocked by the rate: the k-th waiter may start when the k-th oldest start
            -- leaves the window (the last opening for the rest). Waiters parked until the
            -- same moment are then taken in claim order, the older first: none starves,
            -- and a claim looks at no more of them than it has room for.
            FOR i IN granted + 1 .. wanted LOOP
                job_id := p_ids[i];
                park_until := recent[least(i - granted, cardinality(recent))]
                              + lim.per_seconds * interval '1 second';
                RETURN NEXT;
            END LOOP;
        ELSE
            FOR i IN granted + 1 .. wanted LOOP
                job_id := p_ids[i];
                park_until := clock + p_park_seconds * interval '1 second';
                RETURN NEXT;
            END LOOP;
        END IF;
    END IF;
    UPDATE "pgqueue".limit_keys k
    SET holders = CASE WHEN lim.concurrency IS NULL THEN '{}'
                       ELSE alive_ids || p_ids[1:granted] END,
        attempts = CASE WHEN lim.concurrency IS NULL THEN '{}'
                        ELSE alive_attempts || p_attempts[1:granted] END,
        starts = recent
    WHERE k.task = p_task AND k.key = p_key;
END
$$;
CREATE FUNCTION pgqueue.wake_parked() RETURNS trigger
    LANGUAGE plpgsql
    AS $$
BEGIN
    UPDATE "pgqueue".jobs j SET run_at = now(), parked_until = NULL
    WHERE j.id = (SELECT p.id FROM "pgqueue".jobs p
                  WHERE p.limit_key = OLD.limit_key AND p.state = 'queued'
                    AND p.parked_until IS NOT NULL AND p.run_at = p.parked_until
                  ORDER BY p.run_at
                  LIMIT 1 FOR UPDATE SKIP LOCKED);
    IF FOUND THEN
        PERFORM pg_notify('pgqueue' || '.' || OLD.queue, '');
    END IF;
    RETURN NULL;
END
$$;
CREATE TABLE clerk.blob_chunks (
    sha256 text NOT NULL,
    seq integer NOT NULL,
    data bytea NOT NULL,
    CONSTRAINT blob_chunks_seq_check CHECK ((seq >= 0))
);
ALTER TABLE ONLY clerk.blob_chunks ALTER COLUMN data SET STORAGE EXTERNAL;
CREATE TABLE clerk.blobs (
    sha256 text NOT NULL,
    size bigint NOT NULL,
    chunks integer NOT NULL,
    stored_at timestamp with time zone DEFAULT now() NOT NULL,
    CONSTRAINT blobs_chunks_check CHECK ((chunks >= 0)),
    CONSTRAINT blobs_sha256_check CHECK ((sha256 ~ '^[0-9a-f]{64}$'::text)),
    CONSTRAINT blobs_size_check CHECK ((size >= 0))
);
CREATE TABLE clerk.documents (
    site text NOT NULL,
    kind text NOT NULL,
    meeting text NOT NULL,
    date date NOT NULL,
    url text NOT NULL,
    etag text,
    last_modified text,
    sha256 text,
    pages integer,
    fetched_at timestamp with time zone,
    error text,
    CONSTRAINT documents_kind_check CHECK ((kind = ANY (ARRAY['agenda'::text, 'minutes'::text])))
);
CREATE TABLE clerk.index_pages (
    site text NOT NULL,
    url text NOT NULL,
    etag text,
    last_modified text,
    sha256 text NOT NULL,
    result jsonb NOT NULL,
    fetched_at timestamp with time zone DEFAULT now() NOT NULL,
    checked_at timestamp with time zone DEFAULT now() NOT NULL
);
CREATE TABLE clerk.migrations (
    component text NOT NULL,
    version integer NOT NULL,
    name text NOT NULL,
    checksum text NOT NULL,
    applied_at timestamp with time zone DEFAULT now() NOT NULL
);
CREATE TABLE clerk.page_reads (
    site text NOT NULL,
    kind text NOT NULL,
    meeting text NOT NULL,
    date date NOT NULL,
    page integer NOT NULL,
    method text NOT NULL,
    decision text NOT NULL,
    reason text NOT NULL,
    engine text NOT NULL,
    chars integer NOT NULL,
    read_at timestamp with time zone DEFAULT now() NOT NULL,
    text text,
    sha256 text,
    dpi integer,
    seconds real,
    CONSTRAINT page_reads_decision_check CHECK ((decision = ANY (ARRAY['text-layer'::text, 'ocr'::text, 'compare'::text, 'imported'::text]))),
    CONSTRAINT page_reads_method_check CHECK ((method = ANY (ARRAY['text-layer'::text, 'ocr'::text, 'blank'::text, 'imported'::text]))),
    CONSTRAINT page_reads_page_check CHECK ((page >= 1))
);
CREATE TABLE clerk.refused_links (
    site text NOT NULL,
    url text NOT NULL,
    reason text NOT NULL,
    seen_at timestamp with time zone DEFAULT now() NOT NULL
);
CREATE TABLE clerk.sites (
    subdomain text NOT NULL,
    name text NOT NULL,
    source_url text NOT NULL,
    source_kind text DEFAULT 'index'::text NOT NULL,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    last_fetch_at timestamp with time zone,
    last_success_at timestamp with time zone,
    last_run_key text,
    last_result text,
    last_error text,
    source_auth text,
    refresh text,
    CONSTRAINT sites_refresh_check CHECK (((refresh IS NULL) OR ((length(refresh) >= 1) AND (length(refresh) <= 200)))),
    CONSTRAINT sites_source_url_check CHECK ((source_url ~* '^https?://'::text)),
    CONSTRAINT sites_subdomain_check CHECK ((subdomain ~ '^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$'::text))
);
CREATE VIEW pgqueue.active_workers AS
SELECT
    NULL::bigint AS id,
    NULL::text AS host,
    NULL::integer AS pid,
    NULL::text[] AS queues,
    NULL::integer AS concurrency,
    NULL::timestamp with time zone AS started_at,
    NULL::timestamp with time zone AS last_beat,
    NULL::bigint AS jobs_done,
    NULL::bigint[] AS current_jobs,
    NULL::text AS current_tasks;
CREATE TABLE pgqueue.job_history (
    id bigint NOT NULL,
    queue text NOT NULL,
    task text NOT NULL,
    args jsonb NOT NULL,
    priority smallint NOT NULL,
    state pgqueue.job_state NOT NULL,
    attempt integer NOT NULL,
    max_attempts integer NOT NULL,
    run_at timestamp with time zone NOT NULL,
    worker_id bigint,
    group_id bigint,
    origin_group_id bigint,
    tag text,
    dedupe_key text,
    timeout_seconds integer,
    on_success jsonb,
    rescues integer DEFAULT 0 NOT NULL,
    last_error text,
    created_at timestamp with time zone NOT NULL,
    started_at timestamp with time zone,
    finished_at timestamp with time zone DEFAULT now() NOT NULL,
    result jsonb,
    CONSTRAINT job_history_state_check CHECK ((state = ANY (ARRAY['succeeded'::pgqueue.job_state, 'failed'::pgqueue.job_state, 'cancelled'::pgqueue.job_state])))
);
CREATE TABLE pgqueue.jobs (
    id bigint NOT NULL,
    queue text NOT NULL,
    task text NOT NULL,
    args jsonb DEFAULT '{}'::jsonb NOT NULL,
    priority smallint DEFAULT 0 NOT NULL,
    state pgqueue.job_state DEFAULT 'queued'::pgqueue.job_state NOT NULL,
    attempt integer DEFAULT 0 NOT NULL,
    max_attempts integer DEFAULT 3 NOT NULL,
    run_at timestamp with time zone DEFAULT now() NOT NULL,
    lease_until timestamp with time zone,
    worker_id bigint,
    group_id bigint,
    origin_group_id bigint,
    tag text,
    dedupe_key text,
    timeout_seconds integer,
    on_success jsonb,
    cancel_requested boolean DEFAULT false NOT NULL,
    rescues integer DEFAULT 0 NOT NULL,
    last_error text,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    started_at timestamp with time zone,
    updated_at timestamp with time zone DEFAULT now() NOT NULL,
    unknown_returns integer DEFAULT 0 NOT NULL,
    fair_rank double precision DEFAULT 0 NOT NULL,
    limit_key text,
    parked_until timestamp with time zone,
    CONSTRAINT jobs_max_attempts_check CHECK ((max_attempts >= 1)),
    CONSTRAINT jobs_state_check CHECK ((state = ANY (ARRAY['queued'::pgqueue.job_state, 'running'::pgqueue.job_state])))
);
CREATE VIEW pgqueue.all_jobs AS
 SELECT jobs.id,
    jobs.queue,
    jobs.task,
    jobs.args,
    jobs.priority,
    jobs.state,
    jobs.attempt,
    jobs.max_attempts,
    jobs.run_at,
    jobs.lease_until,
    jobs.worker_id,
    jobs.group_id,
    jobs.origin_group_id,
    jobs.tag,
    jobs.dedupe_key,
    jobs.timeout_seconds,
    jobs.on_success,
    jobs.cancel_requested,
    jobs.rescues,
    jobs.last_error,
    jobs.created_at,
    jobs.started_at,
    NULL::timestamp with time zone AS finished_at,
    NULL::jsonb AS result
   FROM pgqueue.jobs
UNION ALL
 SELECT job_history.id,
    job_history.queue,
    job_history.task,
    job_history.args,
    job_history.priority,
    job_history.state,
    job_history.attempt,
    job_history.max_attempts,
    job_history.run_at,
    NULL::timestamp with time zone AS lease_until,
    job_history.worker_id,
    job_history.group_id,
    job_history.origin_group_id,
    job_history.tag,
    job_history.dedupe_key,
    job_history.timeout_seconds,
    job_history.on_success,
    false AS cancel_requested,
    job_history.rescues,
    job_history.last_error,
    job_history.created_at,
    job_history.started_at,
    job_history.finished_at,
    job_history.result
   FROM pgqueue.job_history;
CREATE TABLE pgqueue.fair_weights (
    queue text NOT NULL,
    key text NOT NULL,
    weight double precision NOT NULL,
    CONSTRAINT fair_weights_weight_check CHECK (((weight > (0)::double precision) AND (weight <= (1000)::double precision)))
);
CREATE TABLE pgqueue.groups (
    id bigint NOT NULL,
    key text NOT NULL,
    tag text,
    priority smallint DEFAULT 0 NOT NULL,
    total integer DEFAULT 0 NOT NULL,
    pending integer DEFAULT 0 NOT NULL,
    failed integer DEFAULT 0 NOT NULL,
    cancelled integer DEFAULT 0 NOT NULL,
    sealed boolean DEFAULT false NOT NULL,
    on_complete jsonb DEFAULT '[]'::jsonb NOT NULL,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    updated_at timestamp with time zone DEFAULT now() NOT NULL,
    completed_at timestamp with time zone,
    cancelled_at timestamp with time zone,
    error text,
    CONSTRAINT groups_pending_check CHECK ((pending >= 0))
);
CREATE VIEW pgqueue.group_progress AS
 SELECT groups.id,
    groups.key,
    groups.tag,
    groups.total,
    (groups.total - groups.pending) AS done,
    groups.failed,
    groups.cancelled,
    groups.pending,
        CASE
            WHEN (groups.total = 0) THEN 100.0
            ELSE round(((100.0 * ((groups.total - groups.pending))::numeric) / (groups.total)::numeric), 1)
        END AS percent,
    groups.sealed,
    groups.created_at AS started_at,
    groups.updated_at,
    groups.completed_at,
    groups.cancelled_at,
    groups.error
   FROM pgqueue.groups;
CREATE SEQUENCE pgqueue.groups_id_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;
ALTER SEQUENCE pgqueue.groups_id_seq OWNED BY pgqueue.groups.id;
CREATE TABLE pgqueue.job_attempts (
    job_id bigint NOT NULL,
    id bigint NOT NULL,
    attempt integer NOT NULL,
    outcome text NOT NULL,
    error text,
    worker_id bigint,
    started_at timestamp with time zone,
    ended_at timestamp with time zone DEFAULT now() NOT NULL,
    CONSTRAINT job_attempts_outcome_check CHECK ((outcome = ANY (ARRAY['failed'::text, 'rescued'::text, 'returned'::text])))
);
ALTER TABLE pgqueue.job_attempts ALTER COLUMN id ADD GENERATED ALWAYS AS IDENTITY (
    SEQUENCE NAME pgqueue.job_attempts_id_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1
);
CREATE TABLE pgqueue.job_count_changes (
    queue text NOT NULL,
    state pgqueue.job_state NOT NULL,
    jobs bigint NOT NULL,
    task text,
    minute timestamp with time zone,
    finished bigint,
    seconds double precision
);
CREATE TABLE pgqueue.job_counts (
    queue text NOT NULL,
    state pgqueue.job_state NOT NULL,
    jobs bigint NOT NULL
);
CREATE TABLE pgqueue.job_rollups (
    minute timestamp with time zone NOT NULL,
    queue text NOT NULL,
    task text NOT NULL,
    state pgqueue.job_state NOT NULL,
    jobs bigint NOT NULL,
    seconds double precision NOT NULL
);
CREATE TABLE pgqueue.job_totals (
    queue text NOT NULL,
    task text NOT NULL,
    state pgqueue.job_state NOT NULL,
    jobs bigint NOT NULL,
    seconds double precision NOT NULL
);
CREATE TABLE pgqueue.job_waiters (
    job_id bigint NOT NULL,
    since timestamp with time zone DEFAULT now() NOT NULL
);
CREATE SEQUENCE pgqueue.jobs_id_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;
ALTER SEQUENCE pgqueue.jobs_id_seq OWNED BY pgqueue.jobs.id;
CREATE TABLE pgqueue.limit_keys (
    task text NOT NULL,
    key text NOT NULL,
    holders bigint[] DEFAULT '{}'::bigint[] NOT NULL,
    attempts integer[] DEFAULT '{}'::integer[] NOT NULL,
    starts timestamp with time zone[] DEFAULT '{}'::timestamp with time zone[] NOT NULL
);
CREATE TABLE pgqueue.limits (
    task text NOT NULL,
    key_arg text,
    concurrency integer,
    rate integer,
    per_seconds double precision,
    updated_at timestamp with time zone DEFAULT now() NOT NULL,
    CONSTRAINT limits_check CHECK (((rate IS NULL) = (per_seconds IS NULL))),
    CONSTRAINT limits_check1 CHECK (((concurrency IS NOT NULL) OR (rate IS NOT NULL))),
    CONSTRAINT limits_concurrency_check CHECK ((concurrency >= 1)),
    CONSTRAINT limits_per_seconds_check CHECK ((per_seconds > (0)::double precision)),
    CONSTRAINT limits_rate_check CHECK ((rate >= 1))
);
CREATE VIEW pgqueue.limit_usage AS
 SELECT k.task,
    k.key,
    l.concurrency,
    l.rate,
    l.per_seconds,
    ( SELECT count(*) AS count
           FROM UNNEST(k.holders, k.attempts) h(id, attempt)
          WHERE (EXISTS ( SELECT 1
                   FROM pgqueue.jobs j
                  WHERE ((j.id = h.id) AND (j.state = 'running'::pgqueue.job_state) AND (j.attempt = h.attempt))))) AS running,
    ( SELECT count(*) AS count
           FROM unnest(k.starts) s(s)
          WHERE (s.s > (now() - (l.per_seconds * '00:00:01'::interval)))) AS recent_starts,
    ( SELECT count(*) AS count
           FROM pgqueue.jobs j
          WHERE ((j.limit_key = ((k.task || ':'::text) || k.key)) AND (j.state = 'queued'::pgqueue.job_state) AND (j.parked_until IS NOT NULL))) AS parked
   FROM (pgqueue.limit_keys k
     JOIN pgqueue.limits l USING (task));
CREATE TABLE pgqueue.migrations (
    component text NOT NULL,
    version integer NOT NULL,
    name text NOT NULL,
    checksum text NOT NULL,
    applied_at timestamp with time zone DEFAULT now() NOT NULL
);
CREATE TABLE pgqueue.paused_queues (
    queue text NOT NULL,
    reason text,
    paused_at timestamp with time zone DEFAULT now() NOT NULL
);
CREATE TABLE pgqueue.periodic (
    name text NOT NULL,
    task text NOT NULL,
    queue text NOT NULL,
    args jsonb DEFAULT '{}'::jsonb NOT NULL,
    priority smallint DEFAULT 0 NOT NULL,
    max_attempts integer DEFAULT 3 NOT NULL,
    timeout_seconds integer,
    tag text,
    cron text,
    every_seconds double precision,
    missed text DEFAULT 'run_once'::text NOT NULL,
    grace_seconds double precision DEFAULT 60 NOT NULL,
    next_run_at timestamp with time zone NOT NULL,
    last_slot timestamp with time zone,
    last_job_id bigint,
    enqueued bigint DEFAULT 0 NOT NULL,
    skipped bigint DEFAULT 0 NOT NULL,
    created_at timestamp with time zone DEFAULT now() NOT NULL,
    updated_at timestamp with time zone DEFAULT now() NOT NULL,
    CONSTRAINT periodic_check CHECK (((cron IS NULL) <> (every_seconds IS NULL))),
    CONSTRAINT periodic_every_seconds_check CHECK ((every_seconds >= (1)::double precision)),
    CONSTRAINT periodic_grace_seconds_check CHECK ((grace_seconds >= (0)::double precision)),
    CONSTRAINT periodic_max_attempts_check CHECK ((max_attempts >= 1)),
    CONSTRAINT periodic_missed_check CHECK ((missed = ANY (ARRAY['run_once'::text, 'skip'::text]))),
    CONSTRAINT periodic_name_check CHECK (((length(name) >= 1) AND (length(name) <= 200)))
);
CREATE VIEW pgqueue.periodic_schedules AS
 SELECT p.name,
    p.task,
    p.queue,
    p.tag,
    COALESCE(p.cron, (('every '::text || p.every_seconds) || ' s'::text)) AS schedule,
    p.missed,
    p.next_run_at,
    p.last_slot,
    p.last_job_id,
    p.enqueued,
    p.skipped,
    COALESCE((j.state)::text, (h.state)::text) AS last_job_state
   FROM ((pgqueue.periodic p
     LEFT JOIN pgqueue.jobs j ON ((j.id = p.last_job_id)))
     LEFT JOIN pgqueue.job_history h ON (((h.id = p.last_job_id) AND (j.id IS NULL))));
CREATE VIEW pgqueue.queue_depth AS
 SELECT jobs.queue,
        CASE
            WHEN ((jobs.state = 'queued'::pgqueue.job_state) AND (jobs.run_at > now())) THEN 'scheduled'::text
            ELSE (jobs.state)::text
        END AS state,
    count(*) AS jobs
   FROM pgqueue.jobs
  GROUP BY jobs.queue,
        CASE
            WHEN ((jobs.state = 'queued'::pgqueue.job_state) AND (jobs.run_at > now())) THEN 'scheduled'::text
            ELSE (jobs.state)::text
        END
UNION ALL
 SELECT finished.queue,
    (finished.state)::text AS state,
    (sum(finished.jobs))::bigint AS jobs
   FROM ( SELECT job_counts.queue,
            job_counts.state,
            job_counts.jobs
           FROM pgqueue.job_counts
        UNION ALL
         SELECT job_count_changes.queue,
            job_count_changes.state,
            job_count_changes.jobs
           FROM pgqueue.job_count_changes) finished
  GROUP BY finished.queue, (finished.state)::text
 HAVING (sum(finished.jobs) <> (0)::numeric);
CREATE VIEW pgqueue.queue_pauses AS
 SELECT paused_queues.queue,
    paused_queues.reason,
    paused_queues.paused_at
   FROM pgqueue.paused_queues;
CREATE VIEW pgqueue.recent_failures AS
 SELECT job_history.id,
    job_history.queue,
    job_history.task,
    job_history.args,
    job_history.tag,
    job_history.group_id,
    job_history.attempt,
    job_history.max_attempts,
    job_history.last_error,
    job_history.finished_at AS failed_at,
    true AS final
   FROM pgqueue.job_history
  WHERE (job_history.state = 'failed'::pgqueue.job_state)
UNION ALL
 SELECT jobs.id,
    jobs.queue,
    jobs.task,
    jobs.args,
    jobs.tag,
    jobs.group_id,
    jobs.attempt,
    jobs.max_attempts,
    jobs.last_error,
    jobs.updated_at AS failed_at,
    false AS final
   FROM pgqueue.jobs
  WHERE ((jobs.last_error IS NOT NULL) AND (jobs.state = 'queued'::pgqueue.job_state));
CREATE TABLE pgqueue.workers (
    id bigint NOT NULL,
    host text NOT NULL,
    pid integer NOT NULL,
    queues text[] NOT NULL,
    concurrency integer DEFAULT 1 NOT NULL,
    started_at timestamp with time zone DEFAULT now() NOT NULL,
    last_beat timestamp with time zone DEFAULT now() NOT NULL,
    stopped_at timestamp with time zone,
    jobs_done bigint DEFAULT 0 NOT NULL,
    metadata jsonb DEFAULT '{}'::jsonb NOT NULL
);
CREATE SEQUENCE pgqueue.workers_id_seq
    START WITH 1
    INCREMENT BY 1
    NO MINVALUE
    NO MAXVALUE
    CACHE 1;
ALTER SEQUENCE pgqueue.workers_id_seq OWNED BY pgqueue.workers.id;
ALTER TABLE ONLY pgqueue.groups ALTER COLUMN id SET DEFAULT nextval('pgqueue.groups_id_seq'::regclass);
ALTER TABLE ONLY pgqueue.jobs ALTER COLUMN id SET DEFAULT nextval('pgqueue.jobs_id_seq'::regclass);
ALTER TABLE ONLY pgqueue.workers ALTER COLUMN id SET DEFAULT nextval('pgqueue.workers_id_seq'::regclass);
ALTER TABLE ONLY clerk.blob_chunks
    ADD CONSTRAINT blob_chunks_pkey PRIMARY KEY (sha256, seq);
ALTER TABLE ONLY clerk.blobs
    ADD CONSTRAINT blobs_pkey PRIMARY KEY (sha256);
ALTER TABLE ONLY clerk.documents
    ADD CONSTRAINT documents_pkey PRIMARY KEY (site, kind, meeting, date);
ALTER TABLE ONLY clerk.index_pages
    ADD CONSTRAINT index_pages_pkey PRIMARY KEY (site, url);
ALTER TABLE ONLY clerk.migrations
    ADD CONSTRAINT migrations_pkey PRIMARY KEY (component, version);
ALTER TABLE ONLY clerk.page_reads
    ADD CONSTRAINT page_reads_pkey PRIMARY KEY (site, kind, meeting, date, page);
ALTER TABLE ONLY clerk.refused_links
    ADD CONSTRAINT refused_links_pkey PRIMARY KEY (site, url);
ALTER TABLE ONLY clerk.sites
    ADD CONSTRAINT sites_pkey PRIMARY KEY (subdomain);
ALTER TABLE ONLY pgqueue.fair_weights
    ADD CONSTRAINT fair_weights_pkey PRIMARY KEY (queue, key);
ALTER TABLE ONLY pgqueue.groups
    ADD CONSTRAINT groups_key_key UNIQUE (key);
ALTER TABLE ONLY pgqueue.groups
    ADD CONSTRAINT groups_pkey PRIMARY KEY (id);
ALTER TABLE ONLY pgqueue.job_attempts
    ADD CONSTRAINT job_attempts_pkey PRIMARY KEY (job_id, id);
ALTER TABLE ONLY pgqueue.job_counts
    ADD CONSTRAINT job_counts_pkey PRIMARY KEY (queue, state);
ALTER TABLE ONLY pgqueue.job_history
    ADD CONSTRAINT job_history_pkey PRIMARY KEY (id);
ALTER TABLE ONLY pgqueue.job_rollups
    ADD CONSTRAINT job_rollups_pkey PRIMARY KEY (minute, queue, task, state);
ALTER TABLE ONLY pgqueue.job_totals
    ADD CONSTRAINT job_totals_pkey PRIMARY KEY (queue, task, state);
ALTER TABLE ONLY pgqueue.jobs
    ADD CONSTRAINT jobs_pkey PRIMARY KEY (id);
ALTER TABLE ONLY pgqueue.limit_keys
    ADD CONSTRAINT limit_keys_pkey PRIMARY KEY (task, key);
ALTER TABLE ONLY pgqueue.limits
    ADD CONSTRAINT limits_pkey PRIMARY KEY (task);
ALTER TABLE ONLY pgqueue.migrations
    ADD CONSTRAINT migrations_pkey PRIMARY KEY (component, version);
ALTER TABLE ONLY pgqueue.paused_queues
    ADD CONSTRAINT paused_queues_pkey PRIMARY KEY (queue);
ALTER TABLE ONLY pgqueue.periodic
    ADD CONSTRAINT periodic_pkey PRIMARY KEY (name);
ALTER TABLE ONLY pgqueue.workers
    ADD CONSTRAINT workers_pkey PRIMARY KEY (id);
CREATE INDEX documents_sha256 ON clerk.documents USING btree (sha256);
CREATE INDEX groups_completed ON pgqueue.groups USING btree (completed_at) WHERE (completed_at IS NOT NULL);
CREATE INDEX groups_tag ON pgqueue.groups USING btree (tag, created_at DESC);
CREATE INDEX job_history_failed ON pgqueue.job_history USING btree (queue, finished_at DESC) WHERE (state = 'failed'::pgqueue.job_state);
CREATE INDEX job_history_group ON pgqueue.job_history USING btree (group_id) WHERE (group_id IS NOT NULL);
CREATE INDEX job_history_prune ON pgqueue.job_history USING btree (state, finished_at);
CREATE INDEX job_history_tag ON pgqueue.job_history USING btree (tag, finished_at) WHERE (tag IS NOT NULL);
CREATE INDEX job_history_tag_queue ON pgqueue.job_history USING btree (tag, queue, id) WHERE (tag IS NOT NULL);
CREATE INDEX job_waiters_job ON pgqueue.job_waiters USING btree (job_id);
CREATE INDEX jobs_claim ON pgqueue.jobs USING btree (queue, priority DESC, fair_rank, run_at, id) WHERE (state = 'queued'::pgqueue.job_state);
CREATE UNIQUE INDEX jobs_dedupe ON pgqueue.jobs USING btree (dedupe_key) WHERE (dedupe_key IS NOT NULL);
CREATE INDEX jobs_fair_key ON pgqueue.jobs USING btree (queue, tag, priority, fair_rank) WHERE ((state = 'queued'::pgqueue.job_state) AND (tag IS NOT NULL));
CREATE INDEX jobs_group ON pgqueue.jobs USING btree (group_id) WHERE (group_id IS NOT NULL);
CREATE INDEX jobs_lease ON pgqueue.jobs USING btree (lease_until) WHERE (state = 'running'::pgqueue.job_state);
CREATE INDEX jobs_parked ON pgqueue.jobs USING btree (limit_key, run_at) WHERE ((state = 'queued'::pgqueue.job_state) AND (parked_until IS NOT NULL));
CREATE INDEX jobs_tag ON pgqueue.jobs USING btree (tag) WHERE (tag IS NOT NULL);
CREATE INDEX periodic_next ON pgqueue.periodic USING btree (next_run_at);
CREATE OR REPLACE VIEW pgqueue.active_workers AS
 SELECT w.id,
    w.host,
    w.pid,
    w.queues,
    w.concurrency,
    w.started_at,
    w.last_beat,
    w.jobs_done,
    COALESCE(array_agg(j.id ORDER BY j.id) FILTER (WHERE (j.id IS NOT NULL)), '{}'::bigint[]) AS current_jobs,
    string_agg(DISTINCT j.task, ', '::text) AS current_tasks
   FROM (pgqueue.workers w
     LEFT JOIN pgqueue.jobs j ON (((j.worker_id = w.id) AND (j.state = 'running'::pgqueue.job_state))))
  WHERE ((w.stopped_at IS NULL) AND (w.last_beat > (now() - '00:01:00'::interval)))
  GROUP BY w.id;
CREATE TRIGGER groups_fire AFTER UPDATE OF completed_at ON pgqueue.groups FOR EACH ROW WHEN (((old.completed_at IS NULL) AND (new.completed_at IS NOT NULL))) EXECUTE FUNCTION pgqueue.fire_group();
CREATE TRIGGER job_history_chain AFTER INSERT ON pgqueue.job_history FOR EACH ROW WHEN (((new.state = 'succeeded'::pgqueue.job_state) AND (new.on_success IS NOT NULL))) EXECUTE FUNCTION pgqueue.fire_chain();
CREATE TRIGGER job_history_count_delete AFTER DELETE ON pgqueue.job_history REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION pgqueue.count_history_deleted();
CREATE TRIGGER job_history_count_insert AFTER INSERT ON pgqueue.job_history REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION pgqueue.count_history_inserted();
CREATE TRIGGER jobs_fair_rank BEFORE INSERT ON pgqueue.jobs FOR EACH ROW WHEN ((new.tag IS NOT NULL)) EXECUTE FUNCTION pgqueue.assign_fair_rank();
CREATE TRIGGER jobs_limit_freed_on_delete AFTER DELETE ON pgqueue.jobs FOR EACH ROW WHEN (((old.limit_key IS NOT NULL) AND (old.state = 'running'::pgqueue.job_state))) EXECUTE FUNCTION pgqueue.wake_parked();
CREATE TRIGGER jobs_limit_freed_on_update AFTER UPDATE OF state ON pgqueue.jobs FOR EACH ROW WHEN (((old.limit_key IS NOT NULL) AND (old.state = 'running'::pgqueue.job_state) AND (new.state <> 'running'::pgqueue.job_state))) EXECUTE FUNCTION pgqueue.wake_parked();
ALTER TABLE ONLY clerk.blob_chunks
    ADD CONSTRAINT blob_chunks_sha256_fkey FOREIGN KEY (sha256) REFERENCES clerk.blobs(sha256) ON DELETE CASCADE;
ALTER TABLE ONLY clerk.documents
    ADD CONSTRAINT documents_site_fkey FOREIGN KEY (site) REFERENCES clerk.sites(subdomain) ON DELETE CASCADE;
ALTER TABLE ONLY clerk.index_pages
    ADD CONSTRAINT index_pages_site_fkey FOREIGN KEY (site) REFERENCES clerk.sites(subdomain) ON DELETE CASCADE;
ALTER TABLE ONLY clerk.page_reads
    ADD CONSTRAINT page_reads_site_kind_meeting_date_fkey FOREIGN KEY (site, kind, meeting, date) REFERENCES clerk.documents(site, kind, meeting, date) ON DELETE CASCADE;
ALTER TABLE ONLY clerk.refused_links
    ADD CONSTRAINT refused_links_site_fkey FOREIGN KEY (site) REFERENCES clerk.sites(subdomain) ON DELETE CASCADE;
ALTER TABLE ONLY pgqueue.jobs
    ADD CONSTRAINT jobs_group_id_fkey FOREIGN KEY (group_id) REFERENCES pgqueue.groups(id) ON DELETE SET NULL;
