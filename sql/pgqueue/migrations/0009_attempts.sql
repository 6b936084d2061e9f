-- Every attempt of a job, with its error (issue 13: the dashboard's job page). Until now a
-- job kept the error of its last attempt only: a retry overwrote `last_error`, and a rescue
-- left no trace of the attempt its worker lost.
--
-- Only attempts that did not end the job are rows here: one failed and retried, one whose
-- lease expired and was rescued, one given back by a worker that did not know its task, and
-- a failed job's last attempt when someone retries the job (its history row goes back to
-- `jobs`). Each is written by the statement that ends it, in the same statement
-- (`retry_later`, `requeue_rescued`, `give_back_unknown`, `requeue_failed`). The attempt
-- that ends a job is its row in `job_history` (state, last_error, worker_id, started_at,
-- finished_at), so a job that succeeds at its first attempt writes nothing here: the
-- success path, the drain rate, costs what it cost.
--
-- Rows go with their job: `prune_history` deletes them in the statement that deletes the
-- job's history row. Nothing counts them (the counters of migration 0008 are untouched).

CREATE TABLE {schema}.job_attempts (
    job_id      bigint NOT NULL,
    -- Insertion order, which is the order the attempts ended in. The attempt number alone
    -- is no key: a give-back does not count its attempt (the next one has the same number),
    -- and a retried failed job starts again at attempt 1.
    id          bigint GENERATED ALWAYS AS IDENTITY,
    attempt     integer NOT NULL,   -- jobs.attempt during the attempt
    outcome     text NOT NULL CHECK (outcome IN ('failed', 'rescued', 'returned')),
    error       text,               -- with the traceback, as last_error holds it
    worker_id   bigint,             -- workers.id (that row may be pruned before this one)
    started_at  timestamptz,
    ended_at    timestamptz NOT NULL DEFAULT now(),
    -- (job_id, id): a job's attempts in order, and the prune's delete by job, on one index.
    PRIMARY KEY (job_id, id)
);
