-- Read paths for `clerk status` and for people at a psql prompt. See sql/monitoring.sql.

-- Every job, live or finished, one shape.
CREATE VIEW {schema}.all_jobs AS
    SELECT id, queue, task, args, priority, state, attempt, max_attempts, run_at, lease_until,
           worker_id, group_id, origin_group_id, tag, dedupe_key, timeout_seconds, on_success,
           cancel_requested, rescues, last_error, created_at, started_at, NULL::timestamptz AS finished_at
    FROM {schema}.jobs
    UNION ALL
    SELECT id, queue, task, args, priority, state, attempt, max_attempts, run_at, NULL,
           worker_id, group_id, origin_group_id, tag, dedupe_key, timeout_seconds, on_success,
           false, rescues, last_error, created_at, started_at, finished_at
    FROM {schema}.job_history;

-- Queue depth by state. `scheduled` is queued with a run_at in the future (delayed or
-- waiting for a retry); finished states count what retention still keeps.
CREATE VIEW {schema}.queue_depth AS
    SELECT queue,
           CASE WHEN state = 'queued' AND run_at > now() THEN 'scheduled' ELSE state::text END AS state,
           count(*) AS jobs
    FROM {schema}.jobs
    GROUP BY 1, 2
    UNION ALL
    SELECT queue, state::text, count(*) FROM {schema}.job_history GROUP BY 1, 2;

-- Worker processes whose heartbeat is recent, with the jobs they hold.
CREATE VIEW {schema}.active_workers AS
    SELECT w.id, w.host, w.pid, w.queues, w.concurrency, w.started_at, w.last_beat, w.jobs_done,
           coalesce(array_agg(j.id ORDER BY j.id) FILTER (WHERE j.id IS NOT NULL), '{{}}') AS current_jobs,
           string_agg(DISTINCT j.task, ', ') AS current_tasks
    FROM {schema}.workers w
    LEFT JOIN {schema}.jobs j ON j.worker_id = w.id AND j.state = 'running'
    WHERE w.stopped_at IS NULL AND w.last_beat > now() - interval '60 seconds'
    GROUP BY w.id;

-- Per-group progress (a clerk site run is one group).
CREATE VIEW {schema}.group_progress AS
    SELECT id, key, tag, total, total - pending AS done, failed, cancelled, pending,
           CASE WHEN total = 0 THEN 100.0 ELSE round(100.0 * (total - pending) / total, 1) END AS percent,
           sealed, created_at AS started_at, updated_at, completed_at, cancelled_at
    FROM {schema}.groups;

-- Failures: final ones from history, and live jobs waiting to retry after an error.
CREATE VIEW {schema}.recent_failures AS
    SELECT id, queue, task, args, tag, group_id, attempt, max_attempts, last_error,
           finished_at AS failed_at, true AS final
    FROM {schema}.job_history WHERE state = 'failed'
    UNION ALL
    SELECT id, queue, task, args, tag, group_id, attempt, max_attempts, last_error,
           updated_at, false
    FROM {schema}.jobs WHERE last_error IS NOT NULL AND state = 'queued';
