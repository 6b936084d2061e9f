-- pgqueue core schema. `{schema}` is replaced by the configured schema identifier.
--
-- Live jobs (queued and running) sit in `jobs`; a job that reaches a final state moves to
-- `job_history` in the same statement that finishes it. `jobs` therefore stays as small as
-- the backlog, whatever the history, and the claim scans only runnable rows.

CREATE TYPE {schema}.job_state AS ENUM ('queued', 'running', 'succeeded', 'failed', 'cancelled');

CREATE TABLE {schema}.workers (
    id           bigserial PRIMARY KEY,
    host         text NOT NULL,
    pid          integer NOT NULL,
    queues       text[] NOT NULL,
    concurrency  integer NOT NULL DEFAULT 1,
    started_at   timestamptz NOT NULL DEFAULT now(),
    last_beat    timestamptz NOT NULL DEFAULT now(),
    stopped_at   timestamptz,
    jobs_done    bigint NOT NULL DEFAULT 0,
    metadata     jsonb NOT NULL DEFAULT '{{}}'
);

CREATE TABLE {schema}.groups (
    id            bigserial PRIMARY KEY,
    key           text NOT NULL UNIQUE,
    tag           text,
    priority      smallint NOT NULL DEFAULT 0,
    total         integer NOT NULL DEFAULT 0,
    pending       integer NOT NULL DEFAULT 0,
    failed        integer NOT NULL DEFAULT 0,
    cancelled     integer NOT NULL DEFAULT 0,
    sealed        boolean NOT NULL DEFAULT false,
    on_complete   jsonb NOT NULL DEFAULT '[]',
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    completed_at  timestamptz,
    cancelled_at  timestamptz,
    CHECK (pending >= 0)
);
CREATE INDEX groups_tag ON {schema}.groups (tag, created_at DESC);
CREATE INDEX groups_completed ON {schema}.groups (completed_at) WHERE completed_at IS NOT NULL;

CREATE TABLE {schema}.jobs (
    id              bigserial PRIMARY KEY,
    queue           text NOT NULL,
    task            text NOT NULL,
    args            jsonb NOT NULL DEFAULT '{{}}',
    priority        smallint NOT NULL DEFAULT 0,
    state           {schema}.job_state NOT NULL DEFAULT 'queued',
    attempt         integer NOT NULL DEFAULT 0,
    max_attempts    integer NOT NULL DEFAULT 3 CHECK (max_attempts >= 1),
    run_at          timestamptz NOT NULL DEFAULT now(),
    lease_until     timestamptz,
    worker_id       bigint,
    group_id        bigint REFERENCES {schema}.groups (id) ON DELETE SET NULL,
    origin_group_id bigint,
    tag             text,
    dedupe_key      text,
    timeout_seconds integer,
    on_success      jsonb,
    cancel_requested boolean NOT NULL DEFAULT false,
    rescues         integer NOT NULL DEFAULT 0,
    last_error      text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    started_at      timestamptz,
    updated_at      timestamptz NOT NULL DEFAULT now(),
    CHECK (state IN ('queued', 'running'))
);

-- The claim's index: runnable rows only, in the claim's ORDER BY.
CREATE INDEX jobs_claim ON {schema}.jobs (queue, priority DESC, run_at, id) WHERE state = 'queued';
-- The rescuer's index: running rows by lease.
CREATE INDEX jobs_lease ON {schema}.jobs (lease_until) WHERE state = 'running';
-- Dedupe: a key is unique among live (queued and running) jobs, which is all of `jobs`.
CREATE UNIQUE INDEX jobs_dedupe ON {schema}.jobs (dedupe_key) WHERE dedupe_key IS NOT NULL;
CREATE INDEX jobs_tag ON {schema}.jobs (tag) WHERE tag IS NOT NULL;
CREATE INDEX jobs_group ON {schema}.jobs (group_id) WHERE group_id IS NOT NULL;

CREATE TABLE {schema}.job_history (
    id              bigint PRIMARY KEY,
    queue           text NOT NULL,
    task            text NOT NULL,
    args            jsonb NOT NULL,
    priority        smallint NOT NULL,
    state           {schema}.job_state NOT NULL,
    attempt         integer NOT NULL,
    max_attempts    integer NOT NULL,
    run_at          timestamptz NOT NULL,
    worker_id       bigint,
    group_id        bigint,
    origin_group_id bigint,
    tag             text,
    dedupe_key      text,
    timeout_seconds integer,
    on_success      jsonb,
    rescues         integer NOT NULL DEFAULT 0,
    last_error      text,
    created_at      timestamptz NOT NULL,
    started_at      timestamptz,
    finished_at     timestamptz NOT NULL DEFAULT now(),
    CHECK (state IN ('succeeded', 'failed', 'cancelled'))
);
-- Pruning deletes oldest first, per state (failures are kept longer).
CREATE INDEX job_history_prune ON {schema}.job_history (state, finished_at);
CREATE INDEX job_history_tag ON {schema}.job_history (tag, finished_at) WHERE tag IS NOT NULL;
CREATE INDEX job_history_group ON {schema}.job_history (group_id) WHERE group_id IS NOT NULL;
CREATE INDEX job_history_failed ON {schema}.job_history (queue, finished_at DESC) WHERE state = 'failed';
