-- Job results (issue 19): a task's return value, as JSON, kept with the finished job.
--
-- Only a finished job has a result, and finished jobs live in `job_history`, so the column
-- is there alone: `jobs` (the hot, small table) gains nothing. `finish_jobs` writes it in
-- the statement that moves the job; pruning a job deletes its result with it. The worker
-- bounds its size before it gets here (pgqueue.execution.MAX_RESULT_BYTES).
ALTER TABLE {schema}.job_history ADD COLUMN result jsonb;

-- Who waits for which job (`Queue.wait`). A finish wakes waiters with a NOTIFY on
-- '<schema>.finished' (payload: the job id) only for the ids listed here, and deletes
-- their rows: the drain of jobs nobody waits for pays one index probe of an empty table
-- per finish batch, not a notification per job. A waiter inserts its row before it looks
-- at the job (see `notify_waiters` in queries.sql for why no finish is missed).
CREATE TABLE {schema}.job_waiters (
    job_id  bigint NOT NULL,
    since   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX job_waiters_job ON {schema}.job_waiters (job_id);

CREATE OR REPLACE VIEW {schema}.all_jobs AS
    SELECT id, queue, task, args, priority, state, attempt, max_attempts, run_at, lease_until,
           worker_id, group_id, origin_group_id, tag, dedupe_key, timeout_seconds, on_success,
           cancel_requested, rescues, last_error, created_at, started_at, NULL::timestamptz AS finished_at,
           NULL::jsonb AS result
    FROM {schema}.jobs
    UNION ALL
    SELECT id, queue, task, args, priority, state, attempt, max_attempts, run_at, NULL,
           worker_id, group_id, origin_group_id, tag, dedupe_key, timeout_seconds, on_success,
           false, rescues, last_error, created_at, started_at, finished_at, result
    FROM {schema}.job_history;
