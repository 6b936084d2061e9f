"""Reads that do not grow with history (issue 21): `queue_depth`, the /metrics snapshot,
the dashboard's counts and `clerk status` at 0, 1M and 3M job_history rows, beside the
old way (an aggregate over all of job_history) for comparison. Milliseconds, median of 5.

    python -m bench.status_scale                    # 0, 1M, 3M
    python -m bench.status_scale --rows 0,200000    # quicker

History is filled with generate_series (the statement triggers count it as any finish is
counted), on a throwaway PostgreSQL on 127.0.0.1; 50 sites have a run in flight, newer
than their history (its ids are below theirs, as earlier runs' are).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg

from clerk.config import Settings
from clerk.pipeline import build_pipeline
from clerk.status import overview
from pgqueue import admin, counts
from pgqueue.localserver import LocalServer

ACTIVE_SITES = 50
FILL = """
INSERT INTO pgqueue.job_history (id, queue, task, args, priority, state, attempt,
    max_attempts, run_at, tag, created_at, started_at, finished_at)
SELECT -g, CASE WHEN g %% 10 = 0 THEN 'fetch' ELSE 'ocr' END,
       CASE WHEN g %% 10 = 0 THEN 'clerk.fetch' ELSE 'clerk.ocr' END, '{}', 0,
       CASE WHEN g %% 97 = 0 THEN 'failed' ELSE 'succeeded' END::pgqueue.job_state, 1, 3,
       now(), 'city-' || (g %% 3000), now(), now() - interval '3 seconds',
       now() - (g %% 1440) * interval '1 minute'
FROM generate_series(%(start)s, %(stop)s) g
"""
OLD_WAY = """
SELECT queue, state::text, count(*) FROM pgqueue.job_history GROUP BY 1, 2
"""


def median_ms(action: Callable[[], Any], times: int = 5) -> float:
    action()  # warm: plans cached, pages in shared buffers
    samples = []
    for _ in range(times):
        started = time.perf_counter()
        action()
        samples.append((time.perf_counter() - started) * 1000)
    return statistics.median(samples)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default="0,1000000,3000000",
                        help="history sizes to measure at, ascending, comma-separated")
    options = parser.parse_args(argv)
    sizes = [int(size) for size in options.rows.split(",")]
    with tempfile.TemporaryDirectory() as work, LocalServer() as server:
        url = server.url()
        pipeline = build_pipeline(Settings(database_url=url, storage_dir=Path(work)), url)
        pipeline.migrate()
        with psycopg.connect(url, autocommit=True) as conn:
            for n in range(ACTIVE_SITES):  # a run in flight: its fetch job and some pages
                conn.execute("INSERT INTO clerk.sites (subdomain, name, source_url) "
                             "VALUES (%s, %s, %s)",
                             (f"city-{n}", f"City {n}", f"https://city{n}.example.org/"))
                pipeline.queue.enqueue(pipeline.fetch_task, {"site": f"city-{n}"}, tag=f"city-{n}")
        print(f"{'history rows':>13} {'depth':>8} {'metrics':>8} {'counts':>8} "
              f"{'status':>8} {'old way':>9}  (ms)")
        filled = 0
        for size in sizes:
            with psycopg.connect(url, autocommit=True) as conn:
                if size > filled:
                    conn.execute(FILL, {"start": 10_000_000 + filled,
                                        "stop": 10_000_000 + size - 1})
                    filled = size
                counts.fold(pipeline.queue.store)
                conn.execute("VACUUM ANALYZE")
                old = median_ms(lambda c=conn: c.execute(OLD_WAY).fetchall(), 3)
            depth = median_ms(pipeline.queue.queue_depth)
            metrics = median_ms(pipeline.queue.metrics_snapshot)
            counted = median_ms(lambda: admin.job_counts(pipeline.queue.store))
            status = median_ms(lambda: overview(pipeline))
            print(f"{size:>13,} {depth:>8.1f} {metrics:>8.1f} {counted:>8.1f} {status:>8.1f} "
                  f"{old:>9.1f}")
        pipeline.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
