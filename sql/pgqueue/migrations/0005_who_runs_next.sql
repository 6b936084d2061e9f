-- Who runs next (issues 13 and 15): paused queues, a fair order across keys within a
-- queue, and per-key concurrency and rate limits. All three are enforced by the claim
-- statements (sql/pgqueue/queries.sql: claim, claim_across_queues); see pgqueue/limits.py.

-- 1. Paused queues. A queue listed here is claimed by no worker on any machine: the
-- claim's walk of a paused queue is cut off by a one-time filter before it reads a row.
CREATE TABLE {schema}.paused_queues (
    queue      text PRIMARY KEY,
    reason     text,
    paused_at  timestamptz NOT NULL DEFAULT now()
);

-- 2. Fair order. Each tagged job gets a rank when it is inserted: start-time fair
-- queueing, with the tag as the key. A job's rank is one step (1/weight) after the later
-- of the queue's virtual time (the rank of its first due job at that priority) and the
-- last rank its own key has queued at that priority. The claim takes jobs by
-- (priority, fair_rank, run_at, id): round-robin across keys, weighted, work-conserving
-- (every queued job has a rank, so nothing waits while another job is runnable), and the
-- claim's cost stays one ordered index walk (jobs_claim), as before. A key whose backlog
-- drains keeps no credit: its next job starts from the queue's virtual time again.
-- Untagged jobs keep rank 0: they come first at their priority, in FIFO order.
ALTER TABLE {schema}.jobs ADD COLUMN fair_rank double precision NOT NULL DEFAULT 0;

DROP INDEX {schema}.jobs_claim;
CREATE INDEX jobs_claim ON {schema}.jobs (queue, priority DESC, fair_rank, run_at, id)
    WHERE state = 'queued';
-- A key's last queued rank at a priority: one backward step down this index.
CREATE INDEX jobs_fair_key ON {schema}.jobs (queue, tag, priority, fair_rank)
    WHERE state = 'queued' AND tag IS NOT NULL;

-- Optional weights: a key of weight 2 gets two turns for another's one.
CREATE TABLE {schema}.fair_weights (
    queue   text NOT NULL,
    key     text NOT NULL,
    weight  double precision NOT NULL CHECK (weight > 0 AND weight <= 1000),
    PRIMARY KEY (queue, key)
);

-- A BEFORE ROW trigger, so every path that inserts jobs (INSERT, COPY, follow-ups fired
-- by triggers, retried failures, periodic slots) ranks them alike; rows inserted earlier
-- by the same statement are visible here, so a bulk insert of one key ranks 1, 2, 3...
-- Its probes must be index probes whatever the planner believes: PL/pgSQL keeps a plan
-- per session, and one made while `jobs` was nearly empty (a session's first insert, or
-- the first rows of a bulk insert, whose later rows grow the table within the statement)
-- could be a sequential scan, then run for every row of a large table.
CREATE FUNCTION {schema}.assign_fair_rank() RETURNS trigger LANGUAGE plpgsql
SET enable_seqscan = off SET enable_bitmapscan = off AS $$
DECLARE
    head double precision;
    last double precision;
    step double precision;
BEGIN
    SELECT j.fair_rank INTO head FROM {schema}.jobs j
    WHERE j.state = 'queued' AND j.queue = NEW.queue AND j.priority = NEW.priority
      AND j.run_at <= now()
    ORDER BY j.fair_rank LIMIT 1;
    SELECT j.fair_rank INTO last FROM {schema}.jobs j
    WHERE j.state = 'queued' AND j.tag IS NOT NULL AND j.queue = NEW.queue
      AND j.tag = NEW.tag AND j.priority = NEW.priority
    ORDER BY j.fair_rank DESC LIMIT 1;
    SELECT w.weight INTO step FROM {schema}.fair_weights w
    WHERE w.queue = NEW.queue AND w.key = NEW.tag;
    NEW.fair_rank := greatest(coalesce(head, 0), coalesce(last, 0)) + 1.0 / coalesce(step, 1);
    RETURN NEW;
END
$$;

CREATE TRIGGER jobs_fair_rank BEFORE INSERT ON {schema}.jobs
    FOR EACH ROW WHEN (NEW.tag IS NOT NULL) EXECUTE FUNCTION {schema}.assign_fair_rank();

-- 3. Limits per key: at most `concurrency` running and at most `rate` starts per
-- `per_seconds`, for the jobs of a task, keyed by one of their arguments (NULL: one key
-- for the whole task). Declared by the workers that know the task (@q.task(limit=...)).
CREATE TABLE {schema}.limits (
    task         text PRIMARY KEY,
    key_arg      text,
    concurrency  integer CHECK (concurrency >= 1),
    rate         integer CHECK (rate >= 1),
    per_seconds  double precision CHECK (per_seconds > 0),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    CHECK ((rate IS NULL) = (per_seconds IS NULL)),
    CHECK (concurrency IS NOT NULL OR rate IS NOT NULL)
);

-- One row per key in use, locked by the claim that grants its slots (so two claims on
-- two machines never both take the last one): the jobs holding a running slot (with the
-- attempt each holds it for) and the recent starts. A holder is freed lazily, by the
-- next claim that finds its job no longer running that attempt (finished, retried,
-- released, or rescued after its worker died): no statement that ends a job changes.
CREATE TABLE {schema}.limit_keys (
    task            text NOT NULL,
    key             text NOT NULL,
    holders         bigint[] NOT NULL DEFAULT '{{}}',
    attempts        integer[] NOT NULL DEFAULT '{{}}',
    starts          timestamptz[] NOT NULL DEFAULT '{{}}',
    PRIMARY KEY (task, key)
);

-- A limited job carries its key (set by the claim); a job the claim could not start is
-- parked: run_at moved to when it may (`parked_until`), out of the claim's way.
ALTER TABLE {schema}.jobs ADD COLUMN limit_key text;
ALTER TABLE {schema}.jobs ADD COLUMN parked_until timestamptz;
-- A key's parked jobs by the time they may start: whom a holder's end wakes first, and
-- when the next of them is due (the claim tells its worker, which waits no longer).
CREATE INDEX jobs_parked ON {schema}.jobs (limit_key, run_at)
    WHERE state = 'queued' AND parked_until IS NOT NULL;

-- A job waiting on a full key is parked for at most CONCURRENCY_PARK seconds: when a
-- holder ends, the trigger below wakes one waiter at once; the bound covers a waiter
-- parked by a claim that committed after the holder's end had looked for waiters.
CREATE FUNCTION {schema}.take_slots(p_task text, p_key text, p_ids bigint[],
                                    p_attempts integer[], p_park_seconds double precision)
-- ROWS 10: one row per job asked about (a claim's few); with the default estimate of 1000
-- the claim's UPDATE of parked jobs was planned as a hash join over a scan of all `jobs`.
RETURNS TABLE (job_id bigint, park_until timestamptz) LANGUAGE plpgsql ROWS 10 AS $$
DECLARE
    lim {schema}.limits%ROWTYPE;
    held {schema}.limit_keys%ROWTYPE;
    alive_ids bigint[];
    alive_attempts integer[];
    recent timestamptz[] := '{{}}';
    clock timestamptz;
    wanted integer := cardinality(p_ids);
    granted integer;
    full_slots boolean := false;
    i integer;
BEGIN
    SELECT * INTO lim FROM {schema}.limits l WHERE l.task = p_task;
    IF NOT FOUND THEN  -- the limit was removed meanwhile
        RETURN QUERY SELECT u, NULL::timestamptz FROM unnest(p_ids) AS u;
        RETURN;
    END IF;
    INSERT INTO {schema}.limit_keys (task, key) VALUES (p_task, p_key) ON CONFLICT DO NOTHING;
    -- Waits for a claim holding the key; each statement of this function then takes a new
    -- snapshot, so the jobs that claim granted are seen running below.
    SELECT * INTO held FROM {schema}.limit_keys k WHERE k.task = p_task AND k.key = p_key
    FOR UPDATE;
    clock := clock_timestamp();
    SELECT coalesce(array_agg(h.id ORDER BY h.n), '{{}}'),
           coalesce(array_agg(h.attempt ORDER BY h.n), '{{}}')
    INTO alive_ids, alive_attempts
    FROM unnest(held.holders, held.attempts) WITH ORDINALITY AS h(id, attempt, n)
    WHERE EXISTS (SELECT 1 FROM {schema}.jobs j
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
    UPDATE {schema}.limit_keys k
    SET holders = CASE WHEN lim.concurrency IS NULL THEN '{{}}'
                       ELSE alive_ids || p_ids[1:granted] END,
        attempts = CASE WHEN lim.concurrency IS NULL THEN '{{}}'
                        ELSE alive_attempts || p_attempts[1:granted] END,
        starts = recent
    WHERE k.task = p_task AND k.key = p_key;
END
$$;

-- A limited job that stops running (finished, retried, released, rescued) wakes one job
-- parked on its key, and its queue's workers. Row triggers whose WHEN is false cost no
-- function call: jobs without a limit pay nothing.
CREATE FUNCTION {schema}.wake_parked() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE {schema}.jobs j SET run_at = now(), parked_until = NULL
    WHERE j.id = (SELECT p.id FROM {schema}.jobs p
                  WHERE p.limit_key = OLD.limit_key AND p.state = 'queued'
                    AND p.parked_until IS NOT NULL AND p.run_at = p.parked_until
                  ORDER BY p.run_at
                  LIMIT 1 FOR UPDATE SKIP LOCKED);
    IF FOUND THEN
        PERFORM pg_notify({schema_name} || '.' || OLD.queue, '');
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER jobs_limit_freed_on_delete AFTER DELETE ON {schema}.jobs
    FOR EACH ROW WHEN (OLD.limit_key IS NOT NULL AND OLD.state = 'running')
    EXECUTE FUNCTION {schema}.wake_parked();
CREATE TRIGGER jobs_limit_freed_on_update AFTER UPDATE OF state ON {schema}.jobs
    FOR EACH ROW WHEN (OLD.limit_key IS NOT NULL AND OLD.state = 'running'
                       AND NEW.state <> 'running')
    EXECUTE FUNCTION {schema}.wake_parked();

-- For psql and `status`: what is paused, and each limited key's use right now.
CREATE VIEW {schema}.queue_pauses AS
    SELECT queue, reason, paused_at FROM {schema}.paused_queues;

CREATE VIEW {schema}.limit_usage AS
    SELECT k.task, k.key, l.concurrency, l.rate, l.per_seconds,
           (SELECT count(*) FROM unnest(k.holders, k.attempts) AS h(id, attempt)
            WHERE EXISTS (SELECT 1 FROM {schema}.jobs j
                          WHERE j.id = h.id AND j.state = 'running'
                            AND j.attempt = h.attempt)) AS running,
           (SELECT count(*) FROM unnest(k.starts) AS s
            WHERE s > now() - l.per_seconds * interval '1 second') AS recent_starts,
           (SELECT count(*) FROM {schema}.jobs j
            WHERE j.limit_key = k.task || ':' || k.key AND j.state = 'queued'
              AND j.parked_until IS NOT NULL) AS parked
    FROM {schema}.limit_keys k JOIN {schema}.limits l USING (task);
