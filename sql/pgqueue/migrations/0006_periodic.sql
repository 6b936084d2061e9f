-- Periodic jobs (issue 15): one row per schedule, with its next slot. See pgqueue/periodic.py.
--
-- The schedule lives here, not in a worker's memory: whichever worker is the elected
-- maintenance leader enqueues the due slots of every schedule, in the transaction that
-- advances `next_run_at` (the row locked FOR UPDATE), so a slot is enqueued once however
-- many workers run, and a slot that fell due while everything was down is still due when
-- a worker starts. Each slot's job carries the dedupe key 'pgqueue:periodic:<name>:<slot>'.

CREATE TABLE {schema}.periodic (
    name             text PRIMARY KEY CHECK (length(name) BETWEEN 1 AND 200),
    task             text NOT NULL,
    queue            text NOT NULL,
    args             jsonb NOT NULL DEFAULT '{{}}',
    priority         smallint NOT NULL DEFAULT 0,
    max_attempts     integer NOT NULL DEFAULT 3 CHECK (max_attempts >= 1),
    timeout_seconds  integer,
    tag              text,
    -- Exactly one of: a cron expression (5 fields, or 6 with seconds first), or a period
    -- in seconds whose slots are aligned on the Unix epoch (so every machine agrees).
    cron             text,
    every_seconds    double precision CHECK (every_seconds >= 1),
    -- Slots older than `grace_seconds` when the leader finds them are "missed" (everything
    -- was down): 'run_once' enqueues one job for the latest of them, 'skip' none.
    missed           text NOT NULL DEFAULT 'run_once' CHECK (missed IN ('run_once', 'skip')),
    grace_seconds    double precision NOT NULL DEFAULT 60 CHECK (grace_seconds >= 0),
    next_run_at      timestamptz NOT NULL,
    last_slot        timestamptz,
    last_job_id      bigint,
    enqueued         bigint NOT NULL DEFAULT 0,
    skipped          bigint NOT NULL DEFAULT 0,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    CHECK ((cron IS NULL) <> (every_seconds IS NULL))
);
-- The leader's question every tick: which schedules are due, and when is the next one.
CREATE INDEX periodic_next ON {schema}.periodic (next_run_at);

-- For psql and `status`: each schedule, when it runs next, and its last slot's job.
CREATE VIEW {schema}.periodic_schedules AS
    SELECT p.name, p.task, p.queue, p.tag,
           coalesce(p.cron, 'every ' || p.every_seconds || ' s') AS schedule,
           p.missed, p.next_run_at, p.last_slot, p.last_job_id, p.enqueued, p.skipped,
           coalesce(j.state::text, h.state::text) AS last_job_state
    FROM {schema}.periodic p
    LEFT JOIN {schema}.jobs j ON j.id = p.last_job_id
    LEFT JOIN {schema}.job_history h ON h.id = p.last_job_id AND j.id IS NULL;
