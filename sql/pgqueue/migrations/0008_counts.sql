-- Counts that do not grow with history (issue 21): `queue_depth`, /metrics and `clerk
-- status` used to aggregate all of job_history (0.6 s at 1M rows, 2.5 s at 3M). Now:
--
-- job_count_changes  an append-only ledger written by statement-level triggers on `jobs`
--                    and `job_history`: one row per (queue, state) a statement changed,
--                    with the net change; for finished jobs also task, minute and seconds.
--                    Appending never waits on another transaction: there is no single hot
--                    counter row that every worker's finish would have to lock until commit.
-- job_counts         jobs by queue and state (live and in retention), exact once the ledger
--                    is added: readers sum both (pgqueue/counts.py).
-- job_totals         jobs ever finished by queue, task and state, with their run seconds:
--                    running totals that pruning never lowers (Prometheus counters).
-- job_rollups        the same per minute, kept ROLLUP_KEEP (pgqueue/counts.py) for rates.
--
-- The maintenance leader folds the ledger into the three tables every tick, in one
-- statement (`fold_counts`): the rows it deletes are exactly the ones it adds, so a reader
-- summing counts and ledger sees the same total before and after. Triggers are per
-- statement with transition tables: a finish of 500 jobs appends a few ledger rows, not
-- 500. Every path is counted whatever wrote it (enqueue, COPY, claim, retry, rescue,
-- cancel, finish, requeue of failed jobs, pruning, psql); TRUNCATE is not (see README).

CREATE TABLE {schema}.job_count_changes (
    queue    text NOT NULL,
    state    {schema}.job_state NOT NULL,
    jobs     bigint NOT NULL,
    -- Set for jobs reaching job_history (a finish), NULL for other changes:
    task     text,
    minute   timestamptz,
    finished bigint,  -- how many finished (jobs counts history deletions too)
    seconds  double precision
);

CREATE TABLE {schema}.job_counts (
    queue  text NOT NULL,
    state  {schema}.job_state NOT NULL,
    jobs   bigint NOT NULL,
    PRIMARY KEY (queue, state)
);

CREATE TABLE {schema}.job_totals (
    queue    text NOT NULL,
    task     text NOT NULL,
    state    {schema}.job_state NOT NULL,
    jobs     bigint NOT NULL,
    seconds  double precision NOT NULL,
    PRIMARY KEY (queue, task, state)
);

CREATE TABLE {schema}.job_rollups (
    minute   timestamptz NOT NULL,
    queue    text NOT NULL,
    task     text NOT NULL,
    state    {schema}.job_state NOT NULL,
    jobs     bigint NOT NULL,
    seconds  double precision NOT NULL,
    PRIMARY KEY (minute, queue, task, state)
);

-- `scheduled` (queued, run_at in the future: a delay or a retry's backoff) depends on the
-- clock, so no counter can hold it: this index reads just the future part of the backlog.
CREATE INDEX jobs_scheduled ON {schema}.jobs (run_at) INCLUDE (queue) WHERE state = 'queued';

CREATE FUNCTION {schema}.count_jobs_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO {schema}.job_count_changes (queue, state, jobs)
    SELECT queue, state, count(*) FROM new_rows GROUP BY 1, 2;
    RETURN NULL;
END
$$;

CREATE FUNCTION {schema}.count_jobs_deleted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO {schema}.job_count_changes (queue, state, jobs)
    SELECT queue, state, -count(*) FROM old_rows GROUP BY 1, 2;
    RETURN NULL;
END
$$;

-- Most UPDATEs of `jobs` change no state (a heartbeat's lease): they append nothing.
CREATE FUNCTION {schema}.count_jobs_updated() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO {schema}.job_count_changes (queue, state, jobs)
    SELECT queue, state, sum(n) FROM (
        SELECT queue, state, -1 AS n FROM old_rows
        UNION ALL
        SELECT queue, state, 1 FROM new_rows
    ) AS moved
    GROUP BY 1, 2 HAVING sum(n) <> 0;
    RETURN NULL;
END
$$;

CREATE FUNCTION {schema}.count_history_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO {schema}.job_count_changes (queue, state, jobs, task, minute, finished, seconds)
    SELECT queue, state, count(*), task, date_trunc('minute', finished_at), count(*),
           coalesce(sum(extract(epoch FROM finished_at - started_at)), 0)
    FROM new_rows GROUP BY queue, state, task, date_trunc('minute', finished_at);
    RETURN NULL;
END
$$;

CREATE FUNCTION {schema}.count_history_deleted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO {schema}.job_count_changes (queue, state, jobs)
    SELECT queue, state, -count(*) FROM old_rows GROUP BY 1, 2;
    RETURN NULL;
END
$$;

CREATE TRIGGER jobs_count_insert AFTER INSERT ON {schema}.jobs
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION {schema}.count_jobs_inserted();
CREATE TRIGGER jobs_count_update AFTER UPDATE ON {schema}.jobs
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION {schema}.count_jobs_updated();
CREATE TRIGGER jobs_count_delete AFTER DELETE ON {schema}.jobs
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION {schema}.count_jobs_deleted();
CREATE TRIGGER job_history_count_insert AFTER INSERT ON {schema}.job_history
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION {schema}.count_history_inserted();
CREATE TRIGGER job_history_count_delete AFTER DELETE ON {schema}.job_history
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION {schema}.count_history_deleted();

-- What was there before this migration, counted once.
INSERT INTO {schema}.job_counts (queue, state, jobs)
SELECT queue, state, count(*) FROM (
    SELECT queue, state FROM {schema}.jobs
    UNION ALL
    SELECT queue, state FROM {schema}.job_history
) AS existing
GROUP BY 1, 2;

INSERT INTO {schema}.job_totals (queue, task, state, jobs, seconds)
SELECT queue, task, state, count(*), coalesce(sum(extract(epoch FROM finished_at - started_at)), 0)
FROM {schema}.job_history GROUP BY 1, 2, 3;

INSERT INTO {schema}.job_rollups (minute, queue, task, state, jobs, seconds)
SELECT date_trunc('minute', finished_at), queue, task, state, count(*),
       coalesce(sum(extract(epoch FROM finished_at - started_at)), 0)
FROM {schema}.job_history GROUP BY 1, 2, 3, 4;

-- The view reads the counters now (same columns as before: queue, state, jobs).
CREATE OR REPLACE VIEW {schema}.queue_depth AS
    WITH counted AS (
        SELECT queue, state, sum(jobs)::bigint AS jobs FROM (
            SELECT queue, state, jobs FROM {schema}.job_counts
            UNION ALL
            SELECT queue, state, jobs FROM {schema}.job_count_changes
        ) AS parts
        GROUP BY 1, 2
    ),
    scheduled AS (
        SELECT queue, count(*) AS jobs FROM {schema}.jobs
        WHERE state = 'queued' AND run_at > now()
        GROUP BY 1
    )
    SELECT c.queue, c.state::text AS state,
           c.jobs - CASE WHEN c.state = 'queued' THEN coalesce(s.jobs, 0) ELSE 0 END AS jobs
    FROM counted AS c LEFT JOIN scheduled AS s ON s.queue = c.queue AND c.state = 'queued'
    WHERE c.jobs - CASE WHEN c.state = 'queued' THEN coalesce(s.jobs, 0) ELSE 0 END > 0
    UNION ALL
    SELECT queue, 'scheduled', jobs FROM scheduled;
