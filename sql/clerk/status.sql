-- What `clerk status` and `clerk enqueue --wait` read, and the one write of `enqueue
-- --priority` on a run in progress. These statements join clerk's tables with pgqueue's:
-- `{schema}` is clerk's schema, `{queue_schema}` pgqueue's (configurable, QUEUE_SCHEMA).

-- name: site_runs
-- The latest run of each given site, in one round trip whatever the number of sites
-- (`enqueue --wait` runs it once per tick, `status` once for every site in flight).
-- A run starts with a fetch job; its page group is the newest one opened since that job
-- was created, and its later steps (compile, extract, deploy) are the site's jobs with a
-- higher id outside the fetch and page queues. Per-page jobs are not listed: the group's
-- counters summarise them. `served` is every queue some live worker (a heartbeat within
-- the active_workers view's window) takes jobs from.
SELECT t.site, s.name, s.source_url, s.created_at AS site_created_at, s.last_fetch_at,
       s.last_success_at, s.last_result,
       f.id AS fetch_id, f.state AS fetch_state, f.attempt AS fetch_attempt,
       f.max_attempts AS fetch_max_attempts, f.run_at <= now() AS fetch_runnable,
       f.last_error AS fetch_error, f.created_at AS fetch_created_at,
       f.finished_at AS fetch_finished_at,
       g.id AS group_id, g.total AS pages_total, g.pending AS pages_pending,
       g.failed AS pages_failed, g.cancelled AS pages_cancelled, g.started_at AS group_started_at,
       g.updated_at AS group_updated_at, g.completed_at AS group_completed_at,
       g.cancelled_at AS group_cancelled_at,
       coalesce(steps.steps, '[]') AS steps, coalesce(live.live, '{{}}') AS live,
       live.priority, live.updated_at AS live_updated_at, workers.served
FROM unnest(%(sites)s::text[]) AS t(site)
LEFT JOIN {schema}.sites AS s ON s.subdomain = t.site
LEFT JOIN LATERAL (
    -- The live fetch if any (one run per site at a time), else the one that finished last:
    -- one probe of jobs_tag and one of job_history_tag (tag, finished_at). Read through
    -- all_jobs by id, a site with an old run, or none, scanned all of job_history (57 s for
    -- 50 such sites at 1M history rows).
    SELECT latest.* FROM (
        (SELECT j.id, j.state::text AS state, j.attempt, j.max_attempts, j.run_at,
                j.last_error, j.created_at, NULL::timestamptz AS finished_at
         FROM {queue_schema}.jobs AS j
         WHERE j.tag = t.site AND j.queue = %(fetch_queue)s ORDER BY j.id DESC LIMIT 1)
        UNION ALL
        (SELECT h.id, h.state::text, h.attempt, h.max_attempts, h.run_at, h.last_error,
                h.created_at, h.finished_at
         FROM {queue_schema}.job_history AS h
         WHERE h.tag = t.site AND h.queue = %(fetch_queue)s
         ORDER BY h.finished_at DESC LIMIT 1)
    ) AS latest
    ORDER BY latest.id DESC LIMIT 1
) AS f ON true
LEFT JOIN LATERAL (
    SELECT * FROM {queue_schema}.group_progress AS gp
    WHERE gp.tag = t.site AND gp.started_at >= f.created_at
    ORDER BY gp.id DESC LIMIT 1
) AS g ON true
LEFT JOIN LATERAL (
    SELECT jsonb_agg(jsonb_build_object(
               'id', j.id, 'queue', j.queue, 'task', j.task,
               'entities', coalesce(j.args->>'entities' = 'true', false),
               'state', j.state::text, 'attempt', j.attempt, 'max_attempts', j.max_attempts,
               'runnable', j.run_at <= now(), 'error', j.last_error) ORDER BY j.id) AS steps
    FROM (  -- the run's jobs: live ones, and finished ones from the run's start on only
        SELECT l.id, l.queue, l.task, l.args, l.state, l.attempt, l.max_attempts, l.run_at,
               l.last_error
        FROM {queue_schema}.jobs AS l WHERE l.tag = t.site AND l.id > f.id
        UNION ALL
        SELECT h.id, h.queue, h.task, h.args, h.state, h.attempt, h.max_attempts, h.run_at,
               h.last_error
        FROM {queue_schema}.job_history AS h
        WHERE h.tag = t.site AND h.finished_at >= f.created_at AND h.id > f.id
    ) AS j
    WHERE j.queue <> %(fetch_queue)s AND j.queue <> %(page_queue)s
) AS steps ON true
LEFT JOIN LATERAL (
    SELECT jsonb_object_agg(per_queue.queue, per_queue.counts) AS live,
           max(per_queue.priority) AS priority, max(per_queue.updated_at) AS updated_at
    FROM (
        SELECT j.queue, max(j.priority) AS priority, max(j.updated_at) AS updated_at,
               jsonb_build_object(
                   'queued', count(*) FILTER (WHERE j.state = 'queued' AND j.run_at <= now()),
                   'scheduled', count(*) FILTER (WHERE j.state = 'queued' AND j.run_at > now()),
                   'running', count(*) FILTER (WHERE j.state = 'running')) AS counts
        FROM {queue_schema}.jobs AS j
        WHERE j.tag = t.site
        GROUP BY j.queue
    ) AS per_queue
) AS live ON true
CROSS JOIN (
    SELECT coalesce(array_agg(DISTINCT served_queue), '{{}}') AS served
    FROM {queue_schema}.active_workers AS w, unnest(w.queues) AS served_queue
) AS workers;

-- name: raise_run_priority
-- `clerk enqueue --priority high` on a site whose run is already in flight: raise (never
-- lower) the priority of the run's unfinished jobs and of its open page group, whose
-- follow-ups take the group's priority when they are inserted; a running job's chained
-- follow-ups take its priority when it finishes. Queued jobs a worker is claiming right
-- now are skipped (SKIP LOCKED): they are about to run anyway.
WITH queued AS (
    SELECT id FROM {queue_schema}.jobs
    WHERE tag = %(site)s AND state = 'queued' AND priority < %(priority)s
    FOR UPDATE SKIP LOCKED
),
raised AS (
    UPDATE {queue_schema}.jobs AS j SET priority = %(priority)s
    WHERE j.tag = %(site)s AND j.priority < %(priority)s
      AND (j.id IN (SELECT id FROM queued) OR j.state = 'running')
    RETURNING j.state::text AS state
),
groups AS (
    UPDATE {queue_schema}.groups SET priority = %(priority)s
    WHERE tag = %(site)s AND completed_at IS NULL AND cancelled_at IS NULL
      AND priority < %(priority)s
    RETURNING id
)
SELECT (SELECT count(*) FROM raised WHERE state = 'queued') AS queued,
       (SELECT count(*) FROM raised WHERE state = 'running') AS running,
       (SELECT count(*) FROM groups) AS groups,
       (SELECT count(*) FROM {queue_schema}.jobs WHERE tag = %(site)s) AS live,
       (SELECT max(priority) FROM {queue_schema}.jobs WHERE tag = %(site)s) AS priority_before;
