"""A pgqueue application with one periodic task, for tests that run workers in processes.

`tick` is declared every 2 seconds; each run records its job id in `periodic_runs`, so a
test counts real runs per slot (the slot is in the job's dedupe key). Run a worker with:

    python -m tests.support.periodic_app DSN [--concurrency N]
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

import psycopg

from pgqueue import Queue, current_job

queue = Queue(os.environ.get("PGQUEUE_APP_DSN", "postgresql:///unused"))

RUNS_DDL = """
CREATE TABLE IF NOT EXISTS periodic_runs (
    id bigserial PRIMARY KEY, job_id bigint NOT NULL, pid integer NOT NULL,
    at timestamptz NOT NULL DEFAULT clock_timestamp())
"""


# The missed-slot policy and grace come from the environment (the policy tests set them):
# what a process declares is what the schedule becomes when its worker starts.
@queue.periodic(every=2, name="tests.tick", queue="periodic",
                missed=os.environ.get("TICK_MISSED", "run_once"),
                grace=float(os.environ.get("TICK_GRACE", "60")))
def tick() -> None:
    job = current_job()
    assert job is not None
    with psycopg.connect(os.environ["PGQUEUE_APP_DSN"], autocommit=True) as conn:
        conn.execute("INSERT INTO periodic_runs (job_id, pid) VALUES (%s, %s)",
                     (job.id, os.getpid()))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("dsn")
    parser.add_argument("--concurrency", type=int, default=2)
    options = parser.parse_args(argv)
    os.environ["PGQUEUE_APP_DSN"] = options.dsn
    queue.dsn = options.dsn
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(process)d %(name)s %(message)s")
    # A 2 s lease: maintenance (and its leader election) runs every second.
    return queue.work(["periodic"], concurrency=options.concurrency, lease_seconds=2.0,
                      poll_interval=1.0, shutdown_grace=10.0)


if __name__ == "__main__":
    sys.exit(main())
