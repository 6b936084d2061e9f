-- The dashboard's reads (pgqueue.web). Every statement is bounded: live tables are as small
-- as the backlog; history is read through an index range (one group, one job, a page of
-- ids), never counted whole. The overview's counts and rates are pgqueue's counters and
-- per-minute rollups (admin.job_counts, admin.finished_per_minute; migration 0008).

-- name: clock
-- The database's time: the overview's minutes are the rollups' (date_trunc of now()).
SELECT now() AS now, date_trunc('minute', now()) AS minute;

-- name: oldest_runnable
-- Per queue, the run_at of its oldest job that could run now (through jobs_claim).
SELECT queue, min(run_at) AS oldest, now() - min(run_at) AS age
FROM {schema}.jobs
WHERE state = 'queued' AND run_at <= now()
GROUP BY queue
ORDER BY queue;

-- name: workers_by_host
SELECT host, count(*) AS workers, sum(concurrency) AS slots,
       count(*) FILTER (WHERE last_beat < now() - %(stale_seconds)s * interval '1 second') AS stale
FROM {schema}.workers
WHERE stopped_at IS NULL
GROUP BY host
ORDER BY host;

-- name: workers
-- Workers not stopped, with the jobs they hold; a heartbeat older than stale_seconds is stale.
SELECT w.id, w.host, w.pid, w.queues, w.concurrency, w.started_at, w.last_beat, w.jobs_done,
       extract(epoch FROM now() - w.last_beat) AS beat_age,
       w.last_beat < now() - %(stale_seconds)s * interval '1 second' AS stale,
       count(j.id) AS busy,
       coalesce(array_agg(j.id ORDER BY j.id) FILTER (WHERE j.id IS NOT NULL), '{{}}') AS current_jobs,
       coalesce(array_agg(j.task ORDER BY j.id) FILTER (WHERE j.id IS NOT NULL), '{{}}') AS current_tasks
FROM {schema}.workers AS w
LEFT JOIN {schema}.jobs AS j ON j.worker_id = w.id AND j.state = 'running'
WHERE w.stopped_at IS NULL
GROUP BY w.id
ORDER BY w.host, w.pid, w.id;

-- name: filter_choices
-- Queue and task names for the filter's suggestions: live jobs and the last 20,000 finished
-- in the last day (bounded however busy the day was).
SELECT DISTINCT queue, task FROM {schema}.jobs
UNION
SELECT DISTINCT queue, task FROM (
    SELECT queue, task FROM {schema}.job_history
    WHERE state = ANY('{{succeeded,failed,cancelled}}'::{schema}.job_state[])
      AND finished_at > now() - interval '1 day'
    LIMIT 20000
) AS recent
ORDER BY 1, 2
LIMIT 500;

-- name: id_bounds
-- The lowest and highest job id, live or finished (two ends of two primary keys).
SELECT least((SELECT min(id) FROM {schema}.jobs), (SELECT min(id) FROM {schema}.job_history)) AS min_id,
       greatest((SELECT max(id) FROM {schema}.jobs), (SELECT max(id) FROM {schema}.job_history)) AS max_id;

-- name: jobs_newest
-- A page of jobs matching the filter, newest first, ids in (lo, hi): keyset, never OFFSET.
SELECT id, queue, task, args, priority, state, attempt, max_attempts, run_at, tag, group_id,
       last_error, created_at, started_at, finished_at, worker_id
FROM {schema}.all_jobs
WHERE id > %(lo)s AND id < %(hi)s
  AND (%(state)s::text IS NULL OR state::text = %(state)s)
  AND (%(queue)s::text IS NULL OR queue = %(queue)s)
  AND (%(task)s::text IS NULL OR task = %(task)s)
  AND (%(tag)s::text IS NULL OR tag = %(tag)s)
  AND (%(priority)s::integer IS NULL OR priority = %(priority)s)
  AND (%(search)s::text IS NULL OR args::text ILIKE %(search)s)
  AND (%(since)s::timestamptz IS NULL OR created_at >= %(since)s)
  AND (%(until)s::timestamptz IS NULL OR created_at < %(until)s)
ORDER BY id DESC
LIMIT %(limit)s;

-- name: jobs_oldest
-- The same filter, oldest first.
SELECT id, queue, task, args, priority, state, attempt, max_attempts, run_at, tag, group_id,
       last_error, created_at, started_at, finished_at, worker_id
FROM {schema}.all_jobs
WHERE id > %(lo)s AND id < %(hi)s
  AND (%(state)s::text IS NULL OR state::text = %(state)s)
  AND (%(queue)s::text IS NULL OR queue = %(queue)s)
  AND (%(task)s::text IS NULL OR task = %(task)s)
  AND (%(tag)s::text IS NULL OR tag = %(tag)s)
  AND (%(priority)s::integer IS NULL OR priority = %(priority)s)
  AND (%(search)s::text IS NULL OR args::text ILIKE %(search)s)
  AND (%(since)s::timestamptz IS NULL OR created_at >= %(since)s)
  AND (%(until)s::timestamptz IS NULL OR created_at < %(until)s)
ORDER BY id
LIMIT %(limit)s;

-- name: matching_ids
-- Every job matching the filter whose state is one of `states`: what a bulk action acts on.
SELECT id FROM {schema}.all_jobs
WHERE state::text = ANY(%(states)s::text[])
  AND (%(state)s::text IS NULL OR state::text = %(state)s)
  AND (%(queue)s::text IS NULL OR queue = %(queue)s)
  AND (%(task)s::text IS NULL OR task = %(task)s)
  AND (%(tag)s::text IS NULL OR tag = %(tag)s)
  AND (%(priority)s::integer IS NULL OR priority = %(priority)s)
  AND (%(search)s::text IS NULL OR args::text ILIKE %(search)s)
  AND (%(since)s::timestamptz IS NULL OR created_at >= %(since)s)
  AND (%(until)s::timestamptz IS NULL OR created_at < %(until)s)
ORDER BY id;

-- name: job
SELECT j.*, w.host AS worker_host, w.pid AS worker_pid, w.last_beat AS worker_beat,
       extract(epoch FROM now() - w.last_beat) AS beat_age,
       extract(epoch FROM j.lease_until - now()) AS lease_left
FROM {schema}.all_jobs AS j
LEFT JOIN {schema}.workers AS w ON w.id = j.worker_id
WHERE j.id = %(id)s;

-- name: group
SELECT * FROM {schema}.group_progress WHERE id = %(id)s;

-- name: group_spec
SELECT on_complete FROM {schema}.groups WHERE id = %(id)s;

-- name: groups_page
-- Groups newest first, ids below `hi` (keyset); `open`: only those not completed or cancelled.
SELECT g.*, (g.completed_at IS NOT NULL AND g.cancelled_at IS NULL AND g.error IS NULL
             AND jsonb_array_length(s.on_complete) > 0) AS fired,
       jsonb_array_length(s.on_complete) AS followups
FROM {schema}.group_progress AS g
JOIN {schema}.groups AS s USING (id)
WHERE g.id < %(hi)s
  AND (NOT %(open)s OR (g.completed_at IS NULL AND g.cancelled_at IS NULL))
  AND (%(tag)s::text IS NULL OR g.tag = %(tag)s)
ORDER BY g.id DESC
LIMIT %(limit)s;

-- name: group_members
-- Members of a group, live and finished, by state (through jobs_group and job_history_group).
SELECT state::text AS state, count(*) AS jobs FROM {schema}.jobs
WHERE group_id = %(id)s GROUP BY 1
UNION ALL
SELECT state::text, count(*) FROM {schema}.job_history
WHERE group_id = %(id)s GROUP BY 1;

-- name: group_followups
-- The jobs a group's completion enqueued: they carry it as origin_group_id and were created
-- when it completed (the history is read from that time on, through job_history_prune).
SELECT id, queue, task, state::text AS state, created_at, NULL::timestamptz AS finished_at,
       last_error
FROM {schema}.jobs
WHERE origin_group_id = %(id)s AND created_at >= %(completed_at)s
UNION ALL
SELECT id, queue, task, state::text, created_at, finished_at, last_error
FROM {schema}.job_history
WHERE origin_group_id = %(id)s
  AND state = ANY('{{succeeded,failed,cancelled}}'::{schema}.job_state[])
  AND finished_at >= %(completed_at)s AND created_at >= %(completed_at)s
ORDER BY id
LIMIT 100;

-- name: job_attempts
-- A job's attempts that did not end it (migration 0009), newest first through the primary
-- key (job_id, id), at most `limit` (a job retried by hand again and again keeps them all);
-- `total` counts them all. The attempt that ended the job, or that it is running, is its
-- own row (`job`).
SELECT a.attempt, a.outcome, a.error, a.worker_id, w.host AS worker_host, w.pid AS worker_pid,
       a.started_at, a.ended_at, count(*) OVER () AS total
FROM {schema}.job_attempts AS a
LEFT JOIN {schema}.workers AS w ON w.id = a.worker_id
WHERE a.job_id = %(id)s
ORDER BY a.id DESC
LIMIT %(limit)s;
