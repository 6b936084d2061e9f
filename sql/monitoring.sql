-- Monitoring queries for psql. Read-only; `clerk status` reads the same views.
-- The schema is `pgqueue` (the default); replace it if you configured another.

-- Queue depth by state (scheduled = queued with run_at in the future: delayed or retrying).
SELECT * FROM pgqueue.queue_depth ORDER BY queue, state;

-- Oldest runnable job per queue: how far behind each queue is.
SELECT queue, count(*) AS runnable, now() - min(run_at) AS oldest_wait
FROM pgqueue.jobs WHERE state = 'queued' AND run_at <= now()
GROUP BY queue ORDER BY oldest_wait DESC;

-- Worker processes on every machine, with their current jobs and last heartbeat.
SELECT host, pid, queues, current_jobs, current_tasks, now() - last_beat AS since_beat, jobs_done
FROM pgqueue.active_workers ORDER BY host, pid;

-- Running jobs whose lease is about to run out, or has (their worker may be gone).
SELECT id, queue, task, tag, attempt, worker_id, lease_until - now() AS lease_left
FROM pgqueue.jobs WHERE state = 'running' ORDER BY lease_until LIMIT 20;

-- Progress of site runs (groups) still in flight.
SELECT key, tag, done, total, percent, failed, started_at, updated_at
FROM pgqueue.group_progress WHERE completed_at IS NULL AND cancelled_at IS NULL
ORDER BY started_at;

-- All jobs of one site (one indexed query on the tag), live and finished.
SELECT id, queue, task, state, attempt, created_at, finished_at
FROM pgqueue.all_jobs WHERE tag = 'pleasanton' ORDER BY id DESC LIMIT 50;

-- Recent failures with the last line of their error.
SELECT id, queue, task, tag, attempt, max_attempts, final, failed_at,
       regexp_replace(last_error, '^.*\n(?=[^\n]+\n?$)', '') AS error
FROM pgqueue.recent_failures ORDER BY failed_at DESC LIMIT 20;

-- Why one job took several attempts: each attempt that did not end it (failed and retried,
-- lost with its worker and rescued, given back), oldest first, with the last line of its
-- error (the column holds the whole traceback); the attempt that ended it is its
-- job_history row.
SELECT attempt, outcome, worker_id, started_at, ended_at,
       regexp_replace(error, '^.*\n(?=[^\n]+\n?$)', '') AS error
FROM pgqueue.job_attempts WHERE job_id = 42 ORDER BY id;

-- Throughput: jobs finished per minute over the last hour, by queue and state.
SELECT date_trunc('minute', finished_at) AS minute, queue, state, count(*)
FROM pgqueue.job_history WHERE finished_at > now() - interval '1 hour'
GROUP BY 1, 2, 3 ORDER BY 1 DESC, 2;

-- Table and index sizes: the live table should stay as small as the backlog.
SELECT relname, pg_size_pretty(pg_total_relation_size(oid)) AS total
FROM pg_class WHERE relnamespace = 'pgqueue'::regnamespace AND relkind = 'r'
ORDER BY pg_total_relation_size(oid) DESC;

-- Queues with runnable jobs that no live worker takes from (`clerk enqueue --wait` and
-- `clerk status` say "no worker is running for queue ..." for these).
SELECT j.queue, count(*) AS runnable, now() - min(j.run_at) AS oldest_wait
FROM pgqueue.jobs AS j
WHERE j.state = 'queued' AND j.run_at <= now()
  AND NOT EXISTS (SELECT 1 FROM pgqueue.active_workers AS w WHERE j.queue = ANY (w.queues))
GROUP BY j.queue ORDER BY j.queue;

-- Periodic schedules (clerk: one per refreshed site), soonest first, with the last slot's job.
SELECT name, task, schedule, next_run_at, last_slot, last_job_state, enqueued, skipped
FROM pgqueue.periodic_schedules ORDER BY next_run_at LIMIT 20;

-- Paused queues (`clerk pause QUEUE`): no worker claims them until `clerk resume QUEUE`.
SELECT queue, reason, now() - paused_at AS paused_for FROM pgqueue.queue_pauses ORDER BY queue;

-- Per-key limits in use (clerk: fetches per source host): running, recent starts, parked.
SELECT task, key, running, concurrency, recent_starts, rate, per_seconds, parked
FROM pgqueue.limit_usage ORDER BY parked DESC, running DESC LIMIT 20;

-- Fair order: the next jobs of a queue in the order the claim takes them (tags in turn).
SELECT id, tag, priority, fair_rank, run_at FROM pgqueue.jobs
WHERE state = 'queued' AND queue = 'ocr' AND run_at <= now()
ORDER BY priority DESC, fair_rank, run_at, id LIMIT 20;
