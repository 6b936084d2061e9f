-- Counts that do not grow with history (issue 21): `queue_depth`, /metrics and `clerk
-- status` used to aggregate all of job_history (0.6 s at 1M rows, 2.5 s at 3M). Now:
--
-- job_count_changes  an append-only ledger written by statement-level triggers on
--                    `job_history`: per (queue, state, task, minute) a statement inserted
--                    (a finish), the jobs and their run seconds; per (queue, state) a
--                    statement deleted (pruning, a retry of failed jobs), minus the jobs.
--                    Appending never waits on another transaction: there is no single hot
--                    counter row that every worker's finish would have to lock until commit.
-- job_counts         finished jobs in retention by queue and state, exact once the ledger
--                    is added: readers sum both (pgqueue/counts.py). Live jobs (`jobs`,
--                    the backlog) are counted as they are: that cost is the backlog's.
-- job_totals         jobs ever finished by queue, task and state, with their run seconds:
--                    running totals that pruning never lowers (Prometheus counters).
-- job_rollups        the same per minute, kept ROLLUP_KEEP (pgqueue/counts.py) for rates.
--
-- The maintenance leader folds the ledger into the three tables every tick, in one
-- statement (`fold_counts`): the rows it deletes are exactly the ones it adds, so a reader
-- summing counts and ledger sees the same total before and after. Triggers are per
-- statement with transition tables: a finish of 500 jobs appends a few ledger rows, not
-- 500. Every path is counted whatever wrote it (a worker's finish, a cancel, the rescuer
-- failing a job, follow-ups recorded as failed, a retry of failed jobs, pruning, psql);
-- TRUNCATE is not. The insert trigger also notifies '<schema>.tag_finished' with each
-- tag that had jobs finished, for those who follow a tag's progress without polling.

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

-- A tag's jobs of one queue, newest first (clerk status: a site's latest fetch is one
-- probe, not a walk through every row the site has in retention).
CREATE INDEX job_history_tag_queue ON {schema}.job_history (tag, queue, id) WHERE tag IS NOT NULL;

CREATE FUNCTION {schema}.count_history_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO {schema}.job_count_changes (queue, state, jobs, task, minute, finished, seconds)
    SELECT queue, state, count(*), task, date_trunc('minute', finished_at), count(*),
           coalesce(sum(extract(epoch FROM finished_at - started_at)), 0)
    FROM new_rows GROUP BY queue, state, task, date_trunc('minute', finished_at);
    -- Whoever follows a tag's jobs (clerk enqueue --wait follows sites) sleeps on this
    -- channel: one notification per tag and transaction (identical ones are folded).
    PERFORM pg_notify({schema_name} || '.tag_finished', tag)
    FROM (SELECT DISTINCT tag FROM new_rows WHERE tag IS NOT NULL) AS tags;
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

CREATE TRIGGER job_history_count_insert AFTER INSERT ON {schema}.job_history
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION {schema}.count_history_inserted();
CREATE TRIGGER job_history_count_delete AFTER DELETE ON {schema}.job_history
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION {schema}.count_history_deleted();

-- What was there before this migration, counted once.
INSERT INTO {schema}.job_counts (queue, state, jobs)
SELECT queue, state, count(*) FROM {schema}.job_history GROUP BY 1, 2;

INSERT INTO {schema}.job_totals (queue, task, state, jobs, seconds)
SELECT queue, task, state, count(*), coalesce(sum(extract(epoch FROM finished_at - started_at)), 0)
FROM {schema}.job_history GROUP BY 1, 2, 3;

INSERT INTO {schema}.job_rollups (minute, queue, task, state, jobs, seconds)
SELECT date_trunc('minute', finished_at), queue, task, state, count(*),
       coalesce(sum(extract(epoch FROM finished_at - started_at)), 0)
FROM {schema}.job_history GROUP BY 1, 2, 3, 4;

-- The view reads the counters for finished jobs now (same columns as before). Live jobs
-- are the backlog, not the history: counted from `jobs` as before (statement triggers on
-- every claim, heartbeat and finish of `jobs` cost a quarter of the drain rate).
CREATE OR REPLACE VIEW {schema}.queue_depth AS
    SELECT queue,
           CASE WHEN state = 'queued' AND run_at > now() THEN 'scheduled' ELSE state::text END AS state,
           count(*) AS jobs
    FROM {schema}.jobs
    GROUP BY 1, 2
    UNION ALL
    SELECT queue, state::text, sum(jobs)::bigint FROM (
        SELECT queue, state, jobs FROM {schema}.job_counts
        UNION ALL
        SELECT queue, state, jobs FROM {schema}.job_count_changes
    ) AS finished
    GROUP BY 1, 2 HAVING sum(jobs) <> 0;
