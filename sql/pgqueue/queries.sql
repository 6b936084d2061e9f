-- Every statement pgqueue runs at run time, one `-- name:` block each, all run through
-- `pgqueue.store.JobStore` (the bookkeeping of `pgqueue.migrate` is the one exception: it
-- must run before this file's tables exist). clerk reads a few of the views below too.
-- `{schema}` is the configured schema (an identifier); `{schema_name}` the same as a literal.

-- name: insert_jobs
-- One round trip for any number of jobs: parallel arrays unnested into one INSERT.
-- The NOTIFY sits in an InitPlan so it runs once per statement, once per distinct queue;
-- PostgreSQL then folds identical notifications of a transaction into one at commit.
WITH inserted AS (
    INSERT INTO {schema}.jobs (queue, task, args, priority, max_attempts, run_at, group_id,
                               tag, dedupe_key, timeout_seconds, on_success)
    SELECT * FROM unnest(%(queues)s::text[], %(tasks)s::text[], %(args)s::jsonb[],
                         %(priorities)s::smallint[], %(max_attempts)s::integer[],
                         %(run_ats)s::timestamptz[], %(group_ids)s::bigint[], %(tags)s::text[],
                         %(dedupe_keys)s::text[], %(timeouts)s::integer[], %(on_success)s::jsonb[])
    ON CONFLICT (dedupe_key) WHERE dedupe_key IS NOT NULL DO NOTHING
    RETURNING id, queue
)
SELECT coalesce(array_agg(id ORDER BY id), '{{}}') AS ids,
       (SELECT count(pg_notify({schema_name} || '.' || queue, ''))
        FROM (SELECT DISTINCT queue FROM inserted) AS queues) AS notified
FROM inserted;

-- name: insert_job
-- One job, scalar parameters (no arrays to build and unnest): the single enqueue path.
WITH inserted AS (
    INSERT INTO {schema}.jobs (queue, task, args, priority, max_attempts, run_at, tag,
                               dedupe_key, timeout_seconds, on_success)
    VALUES (%(queue)s, %(task)s, %(args)s::jsonb, %(priority)s, %(max_attempts)s,
            coalesce(%(run_at)s::timestamptz, now()), %(tag)s, %(dedupe_key)s, %(timeout)s,
            %(on_success)s::jsonb)
    ON CONFLICT (dedupe_key) WHERE dedupe_key IS NOT NULL DO NOTHING
    RETURNING id, queue
)
SELECT id, pg_notify({schema_name} || '.' || queue, '') FROM inserted;

-- name: reserve_job_ids
-- Ids for a COPY of new jobs (see pgqueue/enqueue.py: big batches without dedupe keys), and
-- the NOTIFY of their queues in the same round trip: it is delivered at commit, with them.
-- The sequence comes as a regclass parameter, resolved once: pg_get_serial_sequence() per
-- row cost about 7 µs a job, half the cost of the whole COPY.
SELECT array(SELECT nextval(%(sequence)s::regclass)
             FROM generate_series(1, %(count)s)) AS ids,
       (SELECT count(pg_notify({schema_name} || '.' || q, ''))
        FROM unnest(%(queues)s::text[]) AS q) AS notified;

-- name: copy_jobs
COPY {schema}.jobs (id, args, queue, task, priority, max_attempts, run_at, group_id, tag,
                    timeout_seconds, on_success) FROM STDIN;

-- name: notify_queue
SELECT pg_notify({schema_name} || '.' || %(queue)s, '');

-- name: find_dedupe
SELECT id FROM {schema}.jobs WHERE dedupe_key = %(dedupe_key)s;

-- name: claim
-- The jobs a worker takes next, best first, from one queue or several: locked, leased
-- (attempt counted now) and returned in the order they run.
-- The walk: per queue, a LATERAL reads jobs_claim (queued rows only) in this ORDER BY and
-- stops at LIMIT, so claiming costs the same however much history or backlog exists;
-- the queues' few rows are then merged by the outer ORDER BY. (Written as one walk with
-- `queue = ANY(...)`, PostgreSQL cannot read the index in order and sorts the whole
-- backlog: seen, a sequential scan and sort over 10,000 queued rows for a LIMIT 10.)
-- The MATERIALIZED CTE is an optimisation fence: written as `WHERE id IN (subquery)` the
-- planner may re-run the LIMIT subquery per row and claim more rows than asked.
-- SKIP LOCKED lets concurrent workers take disjoint rows; rows locked but not chosen are
-- released at commit. A paused queue (paused_queues) is skipped before its walk.
-- fair_rank (migration 0005) orders keys (tags) round-robin within a priority; it is
-- assigned when a job is inserted, so the walk is the same ordered index scan as ever.
-- Priority over the buffer: the first %(free)s rows are for free slots; the rest wait in
-- the worker's memory, and only at the best priority found, and at least %(floor)s (the
-- best the worker holds): a lower-priority job held there would run ahead of a
-- higher-priority job enqueued meanwhile (a running job's next step). And only from the
-- queues in %(buffered)s (NULL: any), those whose run times the worker has measured as
-- short: an unknown job may be an hour long.
-- Limits (pgqueue/limits.py): the candidates of a limited task ask take_slots() for their
-- key's slots, one call per key, in key order (two claims never wait for each other's
-- keys in opposite orders); those refused are parked (run_at moved to when they may run)
-- and come back as one row with a NULL id whose run_at is the earliest time a parked job
-- of the keys it saw may start (jobs_parked), so the worker wakes then.
WITH locked AS MATERIALIZED (
    SELECT c.* FROM unnest(%(queues)s::text[]) AS q(name)
    CROSS JOIN LATERAL (
        SELECT id, queue, task, args, attempt, priority, fair_rank, run_at FROM {schema}.jobs
        WHERE state = 'queued' AND queue = q.name AND run_at <= now()
        ORDER BY priority DESC, fair_rank, run_at, id
        LIMIT %(limit)s
        FOR UPDATE SKIP LOCKED
    ) AS c
    WHERE NOT EXISTS (SELECT FROM {schema}.paused_queues AS p WHERE p.queue = q.name)
    ORDER BY c.priority DESC, c.fair_rank, c.run_at, c.id
    LIMIT %(limit)s
),
candidates AS MATERIALIZED (
    SELECT * FROM (
        SELECT *, row_number() OVER (ORDER BY priority DESC, fair_rank, run_at, id) AS n,
               max(priority) OVER () AS top
        FROM locked
    ) AS ranked
    WHERE n <= %(free)s
       OR (priority >= greatest(top, %(floor)s::smallint)
           AND (%(buffered)s::text[] IS NULL OR queue = ANY(%(buffered)s::text[])))
),
verdicts AS MATERIALIZED (
    SELECT v.job_id, v.park_until, k.task || ':' || k.key AS limit_key
    FROM (SELECT m.task, coalesce(c.args ->> m.key_arg, '') AS key,
                 array_agg(c.id ORDER BY c.n) AS ids,
                 array_agg(c.attempt + 1 ORDER BY c.n) AS attempts
          FROM candidates AS c JOIN {schema}.limits AS m ON m.task = c.task
          GROUP BY 1, 2 ORDER BY 1, 2) AS k
    CROSS JOIN LATERAL {schema}.take_slots(k.task, k.key, k.ids, k.attempts,
                                           %(park_seconds)s) AS v
),
parked AS (
    UPDATE {schema}.jobs AS j
    SET run_at = v.park_until, parked_until = v.park_until, limit_key = v.limit_key
    FROM verdicts AS v
    WHERE j.id = v.job_id AND v.park_until IS NOT NULL
    RETURNING j.run_at
),
claimed AS (
    UPDATE {schema}.jobs AS j
    SET state = 'running', attempt = j.attempt + 1, worker_id = %(worker_id)s,
        lease_until = now() + %(lease_seconds)s * interval '1 second',
        started_at = now(), updated_at = now(), limit_key = v.limit_key
    FROM candidates AS c LEFT JOIN verdicts AS v ON v.job_id = c.id
    WHERE j.id = c.id AND v.park_until IS NULL
    RETURNING j.id, j.queue, j.task, j.args, j.priority, j.attempt, j.max_attempts,
              j.group_id, j.origin_group_id, j.tag, j.timeout_seconds, j.rescues, j.run_at,
              j.fair_rank
)
SELECT id, queue, task, args, priority, attempt, max_attempts, group_id, origin_group_id, tag,
       timeout_seconds, rescues, run_at
FROM (SELECT * FROM claimed ORDER BY priority DESC, fair_rank, run_at, id) AS ordered
UNION ALL
SELECT NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, min(run_at)
FROM (SELECT run_at FROM parked
      UNION ALL
      SELECT (SELECT p.run_at FROM {schema}.jobs AS p
              WHERE p.limit_key = k.limit_key AND p.state = 'queued'
                AND p.parked_until IS NOT NULL AND p.run_at > now()
              ORDER BY p.run_at LIMIT 1)
      FROM (SELECT DISTINCT limit_key FROM verdicts) AS k) AS next_parked
HAVING min(run_at) IS NOT NULL;

-- name: finish_jobs
-- Moves jobs to a final state. The guard (state and attempt as the finisher saw them)
-- makes a late or duplicate finish harmless: a worker whose lease expired and whose job
-- was re-run finds no row, and nothing below happens twice.
-- In the same statement: the history row (whose trigger fires an on_success chain), and
-- one aggregated decrement per group; the update that takes a sealed group's `pending`
-- to 0 sets completed_at, whose trigger inserts the group's follow-ups exactly once.
WITH outcome AS (
    SELECT * FROM unnest(%(ids)s::bigint[], %(attempts)s::integer[], %(states)s::text[],
                         %(errors)s::text[], %(results)s::text[]) AS o(id, attempt, state, error, result)
),
-- `locked` carries each outcome on to the DELETE, which joins nothing else: a second join
-- with `outcome` was planned (estimates of 10 and 1 rows) as a nested loop scanning the
-- whole batch for every row, quadratic: 20 ms for a finish of 340 jobs, half the drain rate.
-- `j.id = ANY(ids)` is the join condition again, said so the planner reads `jobs` by its
-- primary key: from the join alone it estimated a sequential scan of the backlog cheaper
-- than 450 index probes, and hashed 20,000 rows to finish 450 (7 of a finish's 12 ms).
locked AS (
    SELECT j.id, o.state AS final_state, o.error AS final_error, o.result::jsonb AS final_result
    FROM {schema}.jobs AS j JOIN outcome AS o USING (id)
    WHERE j.id = ANY(%(ids)s::bigint[]) AND (
       j.attempt = o.attempt AND j.state = %(from_state)s::{schema}.job_state
       -- A success of the attempt a job was rescued after, while it waits to run again
       -- (its worker was frozen or cut off, not dead): the work is done, so it is kept.
       -- Any other outcome of that attempt, or any outcome of another, changes nothing.
       OR j.attempt = o.attempt AND j.state = 'queued' AND o.state = 'succeeded'
          AND %(from_state)s::text = 'running')
    ORDER BY j.id
    FOR UPDATE OF j
),
done AS (
    DELETE FROM {schema}.jobs AS j
    USING locked
    WHERE j.id = locked.id
    RETURNING j.*, locked.final_state, locked.final_error, locked.final_result
),
recorded AS (
    INSERT INTO {schema}.job_history (id, queue, task, args, priority, state, attempt,
        max_attempts, run_at, worker_id, group_id, origin_group_id, tag, dedupe_key,
        timeout_seconds, on_success, rescues, last_error, created_at, started_at, finished_at,
        result)
    SELECT id, queue, task, args, priority, final_state::{schema}.job_state, attempt,
           max_attempts, run_at, worker_id, group_id, origin_group_id, tag, dedupe_key,
           timeout_seconds, on_success, rescues, coalesce(final_error, last_error), created_at,
           started_at, now(), final_result
    FROM done
    RETURNING id
),
per_group AS (
    SELECT group_id, count(*) AS finished,
           count(*) FILTER (WHERE final_state = 'failed') AS failed,
           count(*) FILTER (WHERE final_state = 'cancelled') AS cancelled
    FROM done WHERE group_id IS NOT NULL GROUP BY group_id
),
counted AS (
    UPDATE {schema}.groups AS g
    SET pending = g.pending - p.finished,
        failed = g.failed + p.failed,
        cancelled = g.cancelled + p.cancelled,
        updated_at = now(),
        completed_at = CASE WHEN g.sealed AND g.pending - p.finished = 0 THEN now()
                            ELSE g.completed_at END
    FROM per_group AS p
    WHERE g.id = p.group_id
    RETURNING g.id
)
SELECT (SELECT count(*) FROM recorded) AS finished, (SELECT count(*) FROM counted) AS groups;

-- name: requeue_attempts
-- An attempt that ended without ending its job goes back to queued, after a backoff: a
-- failure with attempts left (outcome 'failed', from its worker) or a lost one ('rescued',
-- from the rescuer, which already holds the rows (expired_leases), counted in rescues).
-- It is recorded in job_attempts (with the worker that ran it, which the update clears)
-- in the same statement. The rows are locked first, under the guard, in id order
-- (finish_jobs' order): what is recorded is exactly what is requeued, so a late failure
-- from a worker whose job was rescued records nothing. A success never comes here: it
-- writes no attempt row.
WITH locked AS (
    SELECT j.id, j.attempt, j.worker_id, j.started_at, o.delay, o.error
    FROM {schema}.jobs AS j
    JOIN unnest(%(ids)s::bigint[], %(attempts)s::integer[], %(delays)s::double precision[],
                %(errors)s::text[]) AS o(id, attempt, delay, error)
        ON j.id = o.id AND j.id = ANY(%(ids)s::bigint[])  -- by primary key: see finish_jobs
    WHERE j.attempt = o.attempt AND j.state = 'running'
    ORDER BY j.id
    FOR UPDATE OF j
),
recorded AS (
    INSERT INTO {schema}.job_attempts (job_id, attempt, outcome, error, worker_id, started_at)
    SELECT id, attempt, %(outcome)s::text, error, worker_id, started_at FROM locked
)
UPDATE {schema}.jobs AS j
SET state = 'queued', run_at = now() + locked.delay * interval '1 second',
    rescues = j.rescues + (%(outcome)s::text = 'rescued')::int,
    last_error = locked.error, lease_until = NULL, worker_id = NULL, updated_at = now()
FROM locked
WHERE j.id = locked.id
RETURNING j.id;

-- name: release_jobs
-- A warm shutdown gives unfinished jobs back: queued again, the attempt not counted, run_at
-- kept (the job keeps its place in line, and a periodic job still shows its slot). Those a
-- slot had started (%(started)s) are recorded in job_attempts as 'returned'; those still
-- waiting in the worker's inbox never ran, and leave no trace.
WITH released AS (
    UPDATE {schema}.jobs
    SET state = 'queued', attempt = attempt - 1, lease_until = NULL, worker_id = NULL,
        updated_at = now()
    WHERE id = ANY(%(ids)s::bigint[]) AND worker_id = %(worker_id)s AND state = 'running'
    RETURNING id, attempt + 1 AS attempt, started_at
),
recorded AS (
    INSERT INTO {schema}.job_attempts (job_id, attempt, outcome, error, worker_id, started_at)
    SELECT id, attempt, 'returned', %(reason)s, %(worker_id)s, started_at FROM released
    WHERE id = ANY(%(started)s::bigint[])
)
SELECT id FROM released;

-- name: give_back_unknown
-- A job whose task this worker does not know (an older worker, during a rolling upgrade):
-- queued again a little later for a worker that knows it, the attempt not counted, at
-- most %(max_returns)s times (jobs.unknown_returns); the caller fails the others.
-- The give-back is recorded in job_attempts as 'returned' (locked first, as in requeue_attempts).
WITH locked AS (
    SELECT j.id, j.attempt, j.worker_id, j.started_at, o.error
    FROM {schema}.jobs AS j
    JOIN unnest(%(ids)s::bigint[], %(attempts)s::integer[], %(errors)s::text[])
        AS o(id, attempt, error) ON j.id = o.id AND j.id = ANY(%(ids)s::bigint[])
    WHERE j.attempt = o.attempt AND j.state = 'running'
      AND j.unknown_returns < %(max_returns)s
    ORDER BY j.id
    FOR UPDATE OF j
),
recorded AS (
    INSERT INTO {schema}.job_attempts (job_id, attempt, outcome, error, worker_id, started_at)
    SELECT id, attempt, 'returned', error, worker_id, started_at FROM locked
)
UPDATE {schema}.jobs AS j
SET state = 'queued', attempt = j.attempt - 1, unknown_returns = j.unknown_returns + 1,
    lease_until = NULL, worker_id = NULL, last_error = locked.error, updated_at = now(),
    run_at = now() + %(delay)s * power(2, j.unknown_returns) * interval '1 second'
FROM locked
WHERE j.id = locked.id
RETURNING j.id;

-- name: heartbeat
-- Extends the leases of the jobs this worker still holds; a job missing from the result
-- was rescued from under it. cancel_requested tells the worker to stop a job. Rows are
-- locked in id order, the order finish_jobs deletes them in, so the two never deadlock.
WITH beat AS (
    UPDATE {schema}.workers SET last_beat = now() WHERE id = %(worker_id)s RETURNING id
),
held AS (
    SELECT id FROM {schema}.jobs
    WHERE id = ANY(%(ids)s::bigint[]) AND worker_id = %(worker_id)s AND state = 'running'
      AND EXISTS (SELECT 1 FROM beat)
    ORDER BY id
    FOR UPDATE
)
UPDATE {schema}.jobs AS j
SET lease_until = now() + %(lease_seconds)s * interval '1 second'
FROM held
WHERE j.id = held.id
RETURNING j.id, j.cancel_requested;

-- name: register_worker
INSERT INTO {schema}.workers (host, pid, queues, concurrency, metadata)
VALUES (%(host)s, %(pid)s, %(queues)s, %(concurrency)s, %(metadata)s)
RETURNING id;

-- name: worker_done_jobs
UPDATE {schema}.workers SET jobs_done = jobs_done + %(count)s WHERE id = %(worker_id)s;

-- name: stop_worker
UPDATE {schema}.workers SET stopped_at = now() WHERE id = %(worker_id)s;

-- name: unfinished_soon
-- Burst mode's "nothing left": no job of these queues running, nor due within the horizon.
SELECT count(*) AS n FROM {schema}.jobs
WHERE queue = ANY(%(queues)s::text[])
  AND (state = 'running' OR run_at <= now() + %(horizon)s * interval '1 second');

-- name: try_advisory_lock
-- One process at a time for a duty (maintenance, pruning): a session lock, never waited on.
SELECT pg_try_advisory_lock(%(key)s) AS locked;

-- name: advisory_unlock
SELECT pg_advisory_unlock(%(key)s) AS unlocked;

-- name: set_setting
-- A session setting (the maintenance leader's TCP keepalives); set_config takes parameters.
SELECT set_config(%(name)s, %(value)s, false) AS value;

-- name: connection_limits
-- What the server allows clients that are not superusers: max_connections less the slots
-- reserved for superusers (and, from PostgreSQL 16, for pg_use_reserved_connections).
SELECT current_setting('max_connections')::int AS max_connections,
       current_setting('superuser_reserved_connections')::int
       + coalesce(nullif(current_setting('reserved_connections', true), '')::int, 0) AS reserved;

-- name: connections_by_role
-- Client connections to the whole server by application_name (pgqueue:work, clerk:cli...).
-- A role without pg_read_all_stats sees other roles' rows with application_name hidden:
-- they count under '(other)'.
SELECT coalesce(nullif(application_name, ''), '(other)') AS role, count(*) AS connections
FROM pg_stat_activity
WHERE backend_type = 'client backend'
GROUP BY 1 ORDER BY 2 DESC, 1;

-- name: expired_leases
-- The rescuer's scan: running jobs whose lease ran out (their worker died or lost the
-- database). Locked so two rescuers never handle the same job.
SELECT id, attempt, max_attempts, rescues, task, worker_id
FROM {schema}.jobs
WHERE state = 'running' AND lease_until < now()
ORDER BY lease_until
LIMIT %(limit)s
FOR UPDATE SKIP LOCKED;

-- name: stale_workers
-- Worker rows whose heartbeat stopped: marked stopped so status no longer lists them.
UPDATE {schema}.workers SET stopped_at = now()
WHERE stopped_at IS NULL AND last_beat < now() - %(stale_seconds)s * interval '1 second'
RETURNING id;

-- name: get_job
SELECT * FROM {schema}.all_jobs WHERE id = %(id)s;

-- name: create_group
INSERT INTO {schema}.groups (key, tag, priority, on_complete)
VALUES (%(key)s, %(tag)s, %(priority)s, %(on_complete)s)
ON CONFLICT (key) DO NOTHING
RETURNING id;

-- name: find_group
SELECT id, sealed, completed_at FROM {schema}.groups WHERE key = %(key)s;

-- name: grow_group
-- Adding members to an open group counts them in the same transaction that inserts them.
UPDATE {schema}.groups
SET total = total + %(count)s, pending = pending + %(count)s, updated_at = now()
WHERE id = %(id)s AND NOT sealed
RETURNING id;

-- name: seal_group
-- Once sealed, a group completes when pending reaches 0; if it is 0 already (an empty
-- run, or members that all finished before sealing) it completes here and now.
UPDATE {schema}.groups
SET sealed = true, updated_at = now(),
    completed_at = CASE WHEN pending = 0 THEN now() ELSE completed_at END
WHERE id = %(id)s AND NOT sealed
RETURNING id, pending, completed_at IS NOT NULL AS completed;

-- name: group_row
SELECT key, tag, priority FROM {schema}.groups WHERE id = %(id)s;

-- name: group_by_id
SELECT * FROM {schema}.group_progress WHERE id = %(id)s;

-- name: group_failures
SELECT id, task, args, attempt, last_error, finished_at
FROM {schema}.job_history
WHERE group_id = %(group_id)s AND state = 'failed'
ORDER BY id;

-- name: lock_queued_by_tag
SELECT id, attempt FROM {schema}.jobs
WHERE tag = %(tag)s AND state = 'queued'
FOR UPDATE SKIP LOCKED;

-- name: lock_queued_by_group
SELECT id, attempt FROM {schema}.jobs
WHERE group_id = %(group_id)s AND state = 'queued'
FOR UPDATE SKIP LOCKED;

-- name: lock_queued_by_ids
SELECT id, attempt FROM {schema}.jobs
WHERE id = ANY(%(ids)s::bigint[]) AND state = 'queued'
FOR UPDATE SKIP LOCKED;

-- name: cancel_group
UPDATE {schema}.groups SET cancelled_at = now(), updated_at = now()
WHERE id = %(id)s AND completed_at IS NULL AND cancelled_at IS NULL
RETURNING id;

-- name: lock_queued_by_queue
SELECT id, attempt FROM {schema}.jobs
WHERE queue = %(queue)s AND state = 'queued'
FOR UPDATE SKIP LOCKED;

-- name: cancel_groups_by_tag
UPDATE {schema}.groups SET cancelled_at = now(), updated_at = now()
WHERE tag = %(tag)s AND completed_at IS NULL AND cancelled_at IS NULL
RETURNING id;

-- name: request_cancel_running
-- Running jobs cannot be deleted under their worker: flag them and tell the workers.
-- Their rows are locked in id order, as a worker's finish locks them, and before a cancel
-- touches any group (a finish locks jobs, then groups): no deadlock between the two.
WITH chosen AS (
    SELECT id FROM {schema}.jobs
    WHERE state = 'running' AND NOT cancel_requested
      AND ((%(tag)s::text IS NOT NULL AND tag = %(tag)s)
        OR (%(queue)s::text IS NOT NULL AND queue = %(queue)s)
        OR (%(group_id)s::bigint IS NOT NULL AND group_id = %(group_id)s)
        OR id = ANY(%(ids)s::bigint[]))
    ORDER BY id
    FOR UPDATE
),
flagged AS (
    UPDATE {schema}.jobs AS j SET cancel_requested = true, updated_at = now()
    FROM chosen WHERE j.id = chosen.id
    RETURNING j.id
)
SELECT coalesce(array_agg(id), '{{}}') AS ids,
       (SELECT count(pg_notify({schema_name} || '.cancel', '')) FROM flagged LIMIT 1) AS notified
FROM flagged;

-- name: lock_failed
-- Failed jobs to retry: by ids, by queue or by tag (NULL filters match everything).
SELECT id FROM {schema}.job_history
WHERE state = 'failed'
  AND (%(ids)s::bigint[] IS NULL OR id = ANY(%(ids)s::bigint[]))
  AND (%(queue)s::text IS NULL OR queue = %(queue)s)
  AND (%(tag)s::text IS NULL OR tag = %(tag)s)
FOR UPDATE;

-- name: requeue_failed
-- A retried job returns to `jobs` with its id and a fresh attempt count. Inserted first,
-- and only what was inserted leaves the history: a job whose dedupe key a live job holds
-- meanwhile (the next run's) stays failed, with its record, and is not counted. The last
-- attempt, which the history row held, goes to job_attempts (if it ran: a follow-up
-- recorded failed never started), so the job page still shows why it failed.
WITH inserted AS (
    INSERT INTO {schema}.jobs (id, queue, task, args, priority, state, attempt, max_attempts,
                               run_at, group_id, origin_group_id, tag, dedupe_key,
                               timeout_seconds, on_success, last_error, created_at)
    SELECT id, queue, task, args, priority, 'queued', 0, max_attempts, now(), NULL,
           origin_group_id, tag, dedupe_key, timeout_seconds, on_success, last_error, created_at
    FROM {schema}.job_history
    WHERE id = ANY(%(ids)s::bigint[]) AND state = 'failed'
    ON CONFLICT (dedupe_key) WHERE dedupe_key IS NOT NULL DO NOTHING
    RETURNING id, queue
),
recorded AS (
    INSERT INTO {schema}.job_attempts (job_id, attempt, outcome, error, worker_id, started_at,
                                       ended_at)
    SELECT h.id, h.attempt, 'failed', h.last_error, h.worker_id, h.started_at, h.finished_at
    FROM {schema}.job_history AS h JOIN inserted USING (id)
    WHERE h.started_at IS NOT NULL
    ORDER BY h.id
),
moved AS (
    DELETE FROM {schema}.job_history AS h USING inserted WHERE h.id = inserted.id
)
SELECT id, queue FROM inserted;

-- name: failed_jobs
SELECT id, queue, task, args, tag, group_id, attempt, max_attempts, last_error, failed_at, final
FROM {schema}.recent_failures
WHERE (%(queue)s::text IS NULL OR queue = %(queue)s)
  AND (%(tag)s::text IS NULL OR tag = %(tag)s)
ORDER BY failed_at DESC
LIMIT %(limit)s;

-- name: prune_history
-- Deleted in batches (each a short transaction) through job_history_prune; a job's earlier
-- attempts (job_attempts, through its primary key) go in the same statement. The rows are
-- locked, skipping any that a retry of failed jobs holds (lock_failed): that job goes back
-- to `jobs` with its attempts, so they must not be deleted from under it.
WITH doomed AS MATERIALIZED (
    SELECT id FROM {schema}.job_history
    WHERE state = %(state)s::{schema}.job_state
      AND finished_at < now() - %(older_than)s * interval '1 second'
    ORDER BY finished_at
    LIMIT %(batch)s
    FOR UPDATE SKIP LOCKED
),
attempts AS (
    DELETE FROM {schema}.job_attempts AS a USING doomed WHERE a.job_id = doomed.id
)
DELETE FROM {schema}.job_history AS h USING doomed WHERE h.id = doomed.id;

-- name: prune_groups
WITH doomed AS (
    SELECT id FROM {schema}.groups
    WHERE coalesce(completed_at, cancelled_at) < now() - %(older_than)s * interval '1 second'
    ORDER BY id
    LIMIT %(batch)s
)
DELETE FROM {schema}.groups AS g USING doomed WHERE g.id = doomed.id;

-- name: prune_workers
DELETE FROM {schema}.workers
WHERE stopped_at < now() - %(older_than)s * interval '1 second';

-- name: queue_depth
SELECT queue, state, jobs FROM {schema}.queue_depth ORDER BY queue, state;

-- name: active_workers
SELECT * FROM {schema}.active_workers ORDER BY host, pid;

-- name: groups_by_tag
SELECT * FROM {schema}.group_progress WHERE tag = %(tag)s ORDER BY id DESC;

-- name: active_groups
SELECT * FROM {schema}.group_progress
WHERE completed_at IS NULL AND cancelled_at IS NULL
ORDER BY started_at;

-- name: task_counts
-- For /metrics: jobs ever finished, by queue, task and state, with their run seconds:
-- running totals (job_totals, migration 0008) plus what the ledger holds not yet folded.
-- Pruning never lowers them, and they cost the same at 3M history rows as at none.
SELECT queue, task, state::text, sum(jobs)::bigint AS jobs, sum(seconds) AS seconds
FROM (SELECT queue, task, state, jobs, seconds FROM {schema}.job_totals
      UNION ALL
      SELECT queue, task, state, finished, seconds FROM {schema}.job_count_changes
      WHERE task IS NOT NULL) AS parts
GROUP BY 1, 2, 3;

-- name: durations_between
-- For /metrics: succeeded jobs' run times by queue, task and histogram bucket: how many
-- of the ascending bounds lie below the run time (0: within the first, `le` counting a run
-- time equal to a bound in; len(bounds): above the last). width_bucket counts the bounds
-- at or below a value, hence its use on the negated bounds, reversed (%(negated)s).
-- Jobs finished after %(since)s (NULL: the last %(window)s seconds) and up to
-- %(settle)s seconds ago, a margin for finishes not yet committed. `until` comes back on
-- every row (alone, with NULLs, when none finished): the next call's `since`. Each call
-- reads only what finished between two scrapes, through job_history_prune.
WITH bounds AS (
    SELECT coalesce(%(since)s::timestamptz, now() - %(window)s * interval '1 second') AS since,
           now() - %(settle)s * interval '1 second' AS until
)
SELECT b.until, d.queue, d.task, d.bucket, d.jobs, d.seconds
FROM bounds AS b LEFT JOIN LATERAL (
    SELECT h.queue, h.task,
           cardinality(%(negated)s::float8[]) - width_bucket(-h.seconds, %(negated)s::float8[])
               AS bucket,
           count(*) AS jobs, sum(h.seconds) AS seconds
    FROM (SELECT queue, task, extract(epoch FROM finished_at - started_at)::float8 AS seconds
          FROM {schema}.job_history
          WHERE state = 'succeeded' AND finished_at > b.since AND finished_at <= b.until
            AND started_at IS NOT NULL) AS h
    GROUP BY 1, 2, 3
) AS d ON true;

-- name: live_by_tag
-- A site's unfinished jobs by queue and state (clerk's one-run-per-site check and --wait).
SELECT queue, state::text, count(*) AS jobs FROM {schema}.jobs
WHERE tag = %(tag)s GROUP BY 1, 2 ORDER BY 1, 2;

-- name: history_by_tag
-- A site's finished jobs since a time, by queue, task and state (status --subdomain).
SELECT queue, task, state::text, count(*) AS jobs, max(finished_at) AS last_finished
FROM {schema}.job_history
WHERE tag = %(tag)s AND finished_at >= %(since)s
GROUP BY 1, 2, 3 ORDER BY 1, 2, 3;

-- name: jobs_by_tag_since
-- A tag's jobs (live and finished) created since a time, leaving out one queue (clerk
-- leaves out its per-page OCR jobs, which the group's counters summarise).
SELECT id, queue, task, args, state::text, attempt, max_attempts, last_error, created_at,
       started_at, finished_at
FROM {schema}.all_jobs
WHERE tag = %(tag)s AND created_at >= %(since)s AND queue <> %(exclude_queue)s
ORDER BY id;

-- name: latest_group_by_tag
SELECT * FROM {schema}.group_progress WHERE tag = %(tag)s ORDER BY id DESC LIMIT 1;

-- name: live_tags
SELECT tag, queue, count(*) AS jobs FROM {schema}.jobs WHERE tag IS NOT NULL GROUP BY 1, 2;

-- name: periodic_now
-- Periodic jobs (pgqueue/periodic.py). New schedules start from the database's clock.
SELECT now() AS now;

-- name: periodic_upsert
-- Declare schedules, one statement for any number. An unchanged cron or period keeps its
-- next_run_at (a restart neither skips nor repeats a slot); a changed one starts afresh.
INSERT INTO {schema}.periodic AS p (name, task, queue, args, priority, max_attempts,
                                    timeout_seconds, tag, cron, every_seconds, missed,
                                    grace_seconds, next_run_at)
SELECT * FROM unnest(%(names)s::text[], %(tasks)s::text[], %(queues)s::text[],
                     %(args)s::jsonb[], %(priorities)s::smallint[], %(max_attempts)s::integer[],
                     %(timeouts)s::integer[], %(tags)s::text[], %(crons)s::text[],
                     %(everys)s::double precision[], %(missed)s::text[],
                     %(graces)s::double precision[], %(next_run_ats)s::timestamptz[])
ON CONFLICT (name) DO UPDATE SET
    task = EXCLUDED.task, queue = EXCLUDED.queue, args = EXCLUDED.args,
    priority = EXCLUDED.priority, max_attempts = EXCLUDED.max_attempts,
    timeout_seconds = EXCLUDED.timeout_seconds, tag = EXCLUDED.tag, missed = EXCLUDED.missed,
    grace_seconds = EXCLUDED.grace_seconds, cron = EXCLUDED.cron,
    every_seconds = EXCLUDED.every_seconds,
    next_run_at = CASE WHEN p.cron IS NOT DISTINCT FROM EXCLUDED.cron
                        AND p.every_seconds IS NOT DISTINCT FROM EXCLUDED.every_seconds
                       THEN p.next_run_at ELSE EXCLUDED.next_run_at END,
    updated_at = now()
WHERE (p.task, p.queue, p.args, p.priority, p.max_attempts, p.timeout_seconds, p.tag, p.cron,
       p.every_seconds, p.missed, p.grace_seconds)
      IS DISTINCT FROM
      (EXCLUDED.task, EXCLUDED.queue, EXCLUDED.args, EXCLUDED.priority, EXCLUDED.max_attempts,
       EXCLUDED.timeout_seconds, EXCLUDED.tag, EXCLUDED.cron, EXCLUDED.every_seconds,
       EXCLUDED.missed, EXCLUDED.grace_seconds);

-- name: periodic_delete
DELETE FROM {schema}.periodic WHERE name = ANY(%(names)s::text[]);

-- name: periodic_due
-- The leader's tick: due schedules, locked until the tick commits. SKIP LOCKED: a second
-- scheduler (a leader cut off from its lock but still connected) passes over rows the
-- first holds, and finds them advanced once it commits (periodic_next index).
SELECT p.*, now() AS now FROM {schema}.periodic p
WHERE p.next_run_at <= now()
ORDER BY p.next_run_at
LIMIT %(limit)s
FOR UPDATE SKIP LOCKED;

-- name: periodic_insert_jobs
-- One job per due slot, run_at the slot; NOTIFY once per queue (see insert_jobs).
WITH inserted AS (
    INSERT INTO {schema}.jobs (queue, task, args, priority, max_attempts, run_at, tag,
                               dedupe_key, timeout_seconds)
    SELECT * FROM unnest(%(queues)s::text[], %(tasks)s::text[], %(args)s::jsonb[],
                         %(priorities)s::smallint[], %(max_attempts)s::integer[],
                         %(run_ats)s::timestamptz[], %(tags)s::text[], %(dedupe_keys)s::text[],
                         %(timeouts)s::integer[])
    ON CONFLICT (dedupe_key) WHERE dedupe_key IS NOT NULL DO NOTHING
    RETURNING id, queue, dedupe_key
)
SELECT id, dedupe_key,
       (SELECT count(pg_notify({schema_name} || '.' || q.queue, ''))
        FROM (SELECT DISTINCT queue FROM inserted) AS q) AS notified
FROM inserted;

-- name: periodic_advance
-- Move each schedule past the slots just enqueued, guarded by the next_run_at read.
UPDATE {schema}.periodic p
SET next_run_at = u.next_run_at, last_slot = coalesce(u.last_slot, p.last_slot),
    last_job_id = coalesce(u.job_id, p.last_job_id), enqueued = p.enqueued + u.enqueued,
    skipped = p.skipped + u.skipped, updated_at = now()
FROM unnest(%(names)s::text[], %(expected)s::timestamptz[], %(next_run_ats)s::timestamptz[],
            %(last_slots)s::timestamptz[], %(job_ids)s::bigint[], %(enqueued)s::bigint[],
            %(skipped)s::bigint[])
     AS u (name, expected, next_run_at, last_slot, job_id, enqueued, skipped)
WHERE p.name = u.name AND p.next_run_at = u.expected;

-- name: periodic_next_due
SELECT extract(epoch FROM min(next_run_at) - now()) AS seconds FROM {schema}.periodic;

-- name: periodic_list
SELECT * FROM {schema}.periodic_schedules
WHERE %(names)s::text[] IS NULL OR name = ANY(%(names)s::text[])
ORDER BY next_run_at, name;

-- name: live_tags_among
-- Which of these tags have unfinished jobs (clerk's bulk enqueue: one query per batch).
SELECT tag, count(*) AS jobs FROM {schema}.jobs
WHERE tag = ANY(%(tags)s::text[]) GROUP BY tag;

-- name: periodic_summary
-- How many schedules have a name starting with `prefix`, and the soonest of them.
SELECT count(*) AS schedules,
       (SELECT name FROM {schema}.periodic WHERE starts_with(name, %(prefix)s)
        ORDER BY next_run_at, name LIMIT 1) AS next_name,
       min(next_run_at) AS next_run_at
FROM {schema}.periodic WHERE starts_with(name, %(prefix)s);

-- name: fold_counts
-- The maintenance leader's fold of the counting ledger (migration 0008): the changes it
-- deletes are the ones it adds to job_counts, job_totals and job_rollups, in one
-- statement, so a reader summing counters and ledger sees the same figures before and
-- after. Changes of transactions still open are invisible here and wait for the next fold.
-- Only the leader writes the three tables: no worker ever waits on a counter row.
WITH moved AS (
    DELETE FROM {schema}.job_count_changes RETURNING *
),
counted AS (
    INSERT INTO {schema}.job_counts AS c (queue, state, jobs)
    SELECT queue, state, sum(jobs) FROM moved GROUP BY 1, 2
    ON CONFLICT (queue, state) DO UPDATE SET jobs = c.jobs + EXCLUDED.jobs
    RETURNING 1
),
totalled AS (
    INSERT INTO {schema}.job_totals AS t (queue, task, state, jobs, seconds)
    SELECT queue, task, state, sum(finished), sum(seconds) FROM moved
    WHERE task IS NOT NULL GROUP BY 1, 2, 3
    ON CONFLICT (queue, task, state)
    DO UPDATE SET jobs = t.jobs + EXCLUDED.jobs, seconds = t.seconds + EXCLUDED.seconds
    RETURNING 1
),
rolled AS (
    INSERT INTO {schema}.job_rollups AS r (minute, queue, task, state, jobs, seconds)
    SELECT minute, queue, task, state, sum(finished), sum(seconds) FROM moved
    WHERE task IS NOT NULL GROUP BY 1, 2, 3, 4
    ON CONFLICT (minute, queue, task, state)
    DO UPDATE SET jobs = r.jobs + EXCLUDED.jobs, seconds = r.seconds + EXCLUDED.seconds
    RETURNING 1
)
SELECT (SELECT count(*) FROM moved) AS changes, (SELECT count(*) FROM counted) AS counts,
       (SELECT count(*) FROM rolled) AS rollups;

-- name: prune_rollups
-- Per-minute rollups older than the given age (through the primary key's leading minute).
DELETE FROM {schema}.job_rollups WHERE minute < now() - %(older_than)s * interval '1 second';

-- name: finished_per_minute
-- Jobs finished per minute, by queue and state, over the last %(minutes)s minutes (the
-- dashboard's rates): rollups plus the ledger not yet folded; read through the primary key.
SELECT minute, queue, state::text, sum(jobs)::bigint AS jobs, sum(seconds) AS seconds
FROM (SELECT minute, queue, state, jobs, seconds FROM {schema}.job_rollups
      WHERE minute >= date_trunc('minute', now()) - %(minutes)s * interval '1 minute'
      UNION ALL
      SELECT minute, queue, state, finished, seconds FROM {schema}.job_count_changes
      WHERE task IS NOT NULL
        AND minute >= date_trunc('minute', now()) - %(minutes)s * interval '1 minute') AS parts
GROUP BY 1, 2, 3 ORDER BY 1, 2, 3;

-- name: exact_counts
-- Jobs by queue and state counted the slow way from the tables themselves (tests):
-- whole-table scans, never on a hot path.
SELECT queue, state::text, count(*) AS jobs FROM (
    SELECT queue, state FROM {schema}.jobs
    UNION ALL
    SELECT queue, state FROM {schema}.job_history
) AS rows GROUP BY 1, 2 ORDER BY 1, 2;

-- name: verify_counts
-- The finished jobs' counters beside a real count of job_history, in one snapshot: the
-- (queue, state) pairs that differ (a whole-table scan: tests and operators only).
WITH counted AS (
    SELECT queue, state, sum(jobs)::bigint AS jobs FROM (
        SELECT queue, state, jobs FROM {schema}.job_counts
        UNION ALL
        SELECT queue, state, jobs FROM {schema}.job_count_changes
    ) AS parts GROUP BY 1, 2
),
real AS (
    SELECT queue, state, count(*) AS jobs FROM {schema}.job_history GROUP BY 1, 2
)
SELECT queue, state::text, coalesce(c.jobs, 0) AS counted, coalesce(r.jobs, 0) AS real
FROM counted AS c FULL JOIN real AS r USING (queue, state)
WHERE coalesce(c.jobs, 0) <> coalesce(r.jobs, 0)
ORDER BY 1, 2;

-- name: notify_waiters
-- Wakes the `Queue.wait` callers of jobs no longer in `jobs` (finished): run after
-- `finish_jobs`, in its transaction, so with a snapshot taken after finish_jobs locked (and
-- deleted) the jobs. A waiter inserts its row, then reads the job FOR KEY SHARE, which
-- waits for a finish in flight to commit: either its row was committed before this
-- snapshot (it is notified), or its read comes after the finish (it sees the job finished).
-- Each row goes with its notification. No parameter: the finish batch's ids are not sent
-- twice; the work is a scan of `job_waiters`, empty when nobody waits, and one probe of
-- the jobs' key per waiter (a waiter holds a connection, so they are few).
WITH woken AS (
    DELETE FROM {schema}.job_waiters AS w
    WHERE NOT EXISTS (SELECT 1 FROM {schema}.jobs AS j WHERE j.id = w.job_id)
    RETURNING w.job_id
)
SELECT count(pg_notify({schema_name} || '.finished', job_id::text)) AS woken FROM woken;

-- name: add_waiter
INSERT INTO {schema}.job_waiters (job_id) VALUES (%(id)s);

-- name: remove_waiter
-- A waiter that gives up removes one row of its job's (its own, or an equal one).
DELETE FROM {schema}.job_waiters
WHERE ctid = (SELECT ctid FROM {schema}.job_waiters WHERE job_id = %(id)s LIMIT 1);

-- name: unfinished_job
-- A waiter's look at a job not yet finished: FOR KEY SHARE waits for a finish in flight
-- (which holds the row FOR UPDATE), then finds no row; it never blocks a claim or a lease.
SELECT id, state FROM {schema}.jobs WHERE id = %(id)s FOR KEY SHARE;

-- name: group_results
-- The results of a group's members that succeeded (a follow-up reads its group's).
SELECT id, result FROM {schema}.job_history
WHERE group_id = %(group_id)s AND state = 'succeeded'
ORDER BY id;

-- name: pause_queue
-- Paused queues (pgqueue/limits.py): the claim skips them (see `claim`).
INSERT INTO {schema}.paused_queues AS p (queue, reason) VALUES (%(queue)s, %(reason)s)
ON CONFLICT (queue) DO UPDATE SET reason = coalesce(EXCLUDED.reason, p.reason)
RETURNING (xmax = 0) AS inserted;

-- name: resume_queue
-- Resumed: its workers are woken in the same transaction (NOTIFY at commit).
WITH resumed AS (
    DELETE FROM {schema}.paused_queues WHERE queue = %(queue)s RETURNING queue
)
SELECT queue, pg_notify({schema_name} || '.' || queue, '') FROM resumed;

-- name: paused_queues
SELECT queue, reason, paused_at FROM {schema}.queue_pauses ORDER BY queue;

-- name: fair_weight_set
INSERT INTO {schema}.fair_weights (queue, key, weight) VALUES (%(queue)s, %(key)s, %(weight)s)
ON CONFLICT (queue, key) DO UPDATE SET weight = EXCLUDED.weight;

-- name: fair_weight_delete
DELETE FROM {schema}.fair_weights WHERE queue = %(queue)s AND key = %(key)s;

-- name: limits_upsert
-- A task's limit, written by the workers that know the task (and by Queue.set_limit).
INSERT INTO {schema}.limits AS l (task, key_arg, concurrency, rate, per_seconds)
SELECT * FROM unnest(%(tasks)s::text[], %(key_args)s::text[], %(concurrencies)s::integer[],
                     %(rates)s::integer[], %(pers)s::double precision[])
ON CONFLICT (task) DO UPDATE SET
    key_arg = EXCLUDED.key_arg, concurrency = EXCLUDED.concurrency, rate = EXCLUDED.rate,
    per_seconds = EXCLUDED.per_seconds, updated_at = now()
WHERE (l.key_arg, l.concurrency, l.rate, l.per_seconds)
      IS DISTINCT FROM (EXCLUDED.key_arg, EXCLUDED.concurrency, EXCLUDED.rate,
                        EXCLUDED.per_seconds);

-- name: limits_delete
DELETE FROM {schema}.limits WHERE task = ANY(%(tasks)s::text[]);

-- name: limit_usage
SELECT * FROM {schema}.limit_usage
WHERE %(tasks)s::text[] IS NULL OR task = ANY(%(tasks)s::text[])
ORDER BY task, key;
