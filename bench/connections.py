"""How many PostgreSQL connections a worker process and a clerkd hold.

    python -m bench.connections                      # workers of 1, 4, 16 slots; a clerkd
    python -m bench.connections --slots 1 16 --clerkd-ocr 16

Each worker runs in its own process (thread and process isolation) against a throwaway
PostgreSQL on 127.0.0.1; once it is listening and has run a job on every slot (the jobs
touch the database through the queue, as clerk's do), the rows of `pg_stat_activity` of
its database are counted, by `application_name`. clerkd is started with its default pools
(and `--clerkd-ocr N` OCR slots) and counted once all its workers have registered.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import psycopg

from pgqueue import Queue
from pgqueue.localserver import LocalServer

WORKER = """
import sys, time
from pgqueue import Queue
q = Queue(sys.argv[1])
@q.task(name="touch", queue="bench")
def touch(n):
    with q.session() as conn:
        conn.execute("SELECT pg_sleep(0.3)")
sys.exit(q.work(["bench"], concurrency=int(sys.argv[2]), isolation=sys.argv[3],
                burst=False, poll_interval=0.5))
"""


def held(url: str) -> Counter[str]:
    """Connections to the database of `url`, by application_name (this one left out)."""
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT coalesce(nullif(application_name, ''), '(none)') FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            " AND backend_type = 'client backend'").fetchall()
    return Counter(row[0] for row in rows)


def wait(condition: Any, timeout: float = 120.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise TimeoutError("timed out")


def measure_worker(admin: str, slots: int, isolation: str) -> tuple[int, int, Counter[str]]:
    """(connections while idle, most seen while every slot runs a job, roles at most)."""
    name = f"bench_conn_{slots}_{isolation}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name}")
        conn.execute(f"CREATE DATABASE {name}")
    url = admin.rsplit("/", 1)[0] + f"/{name}"
    queue = Queue(url)
    queue.migrate()
    queue.close()
    process = subprocess.Popen([sys.executable, "-c", WORKER, url, str(slots), isolation])
    try:
        wait(lambda: _scalar(url, "SELECT count(*) FROM pgqueue.active_workers") == 1)
        time.sleep(1.0)  # the listener and maintenance connect right after registering
        idle = sum(held(url).values())
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("SELECT pgqueue.add_job('bench', 'touch', jsonb_build_object('n', g))"
                         " FROM generate_series(1, %s) g", (slots * 3,))
        most: Counter[str] = Counter()
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            now = held(url)
            if sum(now.values()) > sum(most.values()):
                most = now
            if _scalar(url, "SELECT count(*) FROM pgqueue.jobs") == 0:
                break
            time.sleep(0.05)
        return idle, sum(most.values()), most
    finally:
        process.terminate()
        process.wait(60)


def _scalar(url: str, statement: str) -> int:
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            row = conn.execute(statement).fetchone()  # type: ignore[arg-type]
    except psycopg.errors.UndefinedTable:  # clerkd has not migrated yet
        return 0
    return int(row[0]) if row else 0


def measure_clerkd(admin: str, ocr: int | None) -> tuple[int, Counter[str]]:
    name = "bench_conn_clerkd"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name}")
        conn.execute(f"CREATE DATABASE {name}")
    url = admin.rsplit("/", 1)[0] + f"/{name}"
    with tempfile.TemporaryDirectory() as tmp:
        env = {k: v for k, v in os.environ.items()
               if not k.startswith("CLERK_") and k != "DATABASE_URL"}
        env.update({"DATABASE_URL": url, "CLERK_STORAGE_DIR": f"{tmp}/s",
                    "CLERK_DEPLOY_DIR": f"{tmp}/d", "CLERK_ENV_FILE": f"{tmp}/none.env",
                    "CLERK_LOG_LEVEL": "WARNING"})
        if ocr is not None:
            env["OCR_WORKERS"] = str(ocr)
        clerkd = Path(sys.executable).with_name("clerkd")
        process = subprocess.Popen([str(clerkd)], env=env, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)
        try:
            from clerk.config import load_settings
            expected = load_settings(None, env).total_workers
            wait(lambda: _scalar(url, "SELECT coalesce(sum(concurrency), 0) FROM "
                                      "pgqueue.active_workers") >= expected, 180)
            time.sleep(2.0)
            roles = held(url)
            return sum(roles.values()), roles
        finally:
            process.terminate()
            process.wait(90)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slots", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--clerkd-ocr", type=int, default=None,
                        help="OCR_WORKERS for the clerkd measured (default: its default)")
    parser.add_argument("--no-clerkd", action="store_true")
    args = parser.parse_args(argv)
    with LocalServer(settings={"fsync": "off", "max_connections": "300"}) as server:
        admin = server.url("postgres")
        print(f"{'isolation':<10}{'slots':>6}{'idle':>6}{'busy':>6}  roles at most")
        for isolation in ("thread", "process"):
            for slots in args.slots:
                idle, busy, roles = measure_worker(admin, slots, isolation)
                print(f"{isolation:<10}{slots:>6}{idle:>6}{busy:>6}  {dict(sorted(roles.items()))}",
                      flush=True)
        if not args.no_clerkd:
            total, roles = measure_clerkd(admin, args.clerkd_ocr)
            print(f"clerkd (OCR_WORKERS={args.clerkd_ocr or 'default'}): {total} connections "
                  f"idle  {dict(sorted(roles.items()))}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
