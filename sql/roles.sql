-- The minimal database role for clerk workers (clerkd, `clerk` commands, pgqueue workers).
--
-- Migrations are run by the owner of the database (`clerk db upgrade` with the owner's
-- DATABASE_URL): it creates the schemas `pgqueue` and `clerk` and everything in them.
-- Workers then connect as a role that can read and write rows, and nothing more: no DDL,
-- no TRUNCATE, no owning anything, so a leaked worker password cannot drop the queue.
--
-- 1. As a superuser (or a role with CREATEROLE), once:
--        CREATE ROLE clerk_worker LOGIN PASSWORD '...';   -- stored as SCRAM-SHA-256
--    and in pg_hba.conf, for the workers' network:
--        host  <database>  clerk_worker  10.0.0.0/8  scram-sha-256
-- 2. As the owner, after migrating (and again after any migration that adds tables,
--    sequences or functions; the ALTER DEFAULT PRIVILEGES below covers objects the owner
--    creates later):
--        psql "$OWNER_DATABASE_URL" -v ON_ERROR_STOP=1 -f sql/roles.sql
-- To use another role name, replace clerk_worker below.

-- Reach the objects in both schemas (not CREATE: workers never change the schema).
GRANT USAGE ON SCHEMA pgqueue, clerk TO clerk_worker;

-- Rows: jobs, job_history, groups, workers, migrations (read to check the version),
-- sites, documents, and the views (SELECT is what a view needs).
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA pgqueue, clerk TO clerk_worker;

-- bigserial ids: nextval needs USAGE on the sequences.
GRANT USAGE ON ALL SEQUENCES IN SCHEMA pgqueue, clerk TO clerk_worker;

-- pgqueue.add_job (enqueue from SQL) and the trigger functions that fire follow-ups.
-- (PostgreSQL grants EXECUTE to PUBLIC by default; this keeps working if that is revoked.)
GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA pgqueue TO clerk_worker;

-- Objects the owner creates in later migrations get the same grants.
ALTER DEFAULT PRIVILEGES IN SCHEMA pgqueue, clerk
    GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO clerk_worker;
ALTER DEFAULT PRIVILEGES IN SCHEMA pgqueue, clerk
    GRANT USAGE ON SEQUENCES TO clerk_worker;
ALTER DEFAULT PRIVILEGES IN SCHEMA pgqueue
    GRANT EXECUTE ON FUNCTIONS TO clerk_worker;
