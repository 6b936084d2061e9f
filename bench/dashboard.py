"""The dashboard's render times at 0 and at 1,000,000 rows of job history.

    python -m bench.dashboard                 # 0 and 1,000,000 history rows
    python -m bench.dashboard --rows 0 100000 1000000 --repeat 15

A throwaway PostgreSQL on 127.0.0.1; the history is inserted with generate_series (finished
over the last 30 days, 10% failed, 40 tags, 3 queues), plus 2,000 live jobs; the counting
ledger is folded (as a worker's maintenance leader does every few seconds), then ANALYZE.
Each page is requested over HTTP (Starlette's TestClient, in process) with the overview's
few-second cache OFF, so every overview render reads the database; the median and the
worst of `--repeat` requests are printed, and the ratio of the medians to the 0-row run.
"""

from __future__ import annotations

import argparse
import statistics
import time

import psycopg
from starlette.testclient import TestClient

from pgqueue import Queue
from pgqueue.counts import fold as fold_counts
from pgqueue.localserver import LocalServer
from pgqueue.web import create_app

HISTORY = """
INSERT INTO pgqueue.job_history (id, queue, task, args, priority, state, attempt, max_attempts,
    run_at, tag, created_at, started_at, finished_at, last_error)
SELECT i, (ARRAY['fetch','ocr','compile'])[1 + i %% 3], 'bench.task' || (i %% 5),
       jsonb_build_object('site', 'city' || (i %% 40), 'page', i),
       0, CASE WHEN i %% 10 = 0 THEN 'failed' ELSE 'succeeded' END::pgqueue.job_state, 1, 3,
       t, 'city' || (i %% 40), t, t, t + interval '1 second',
       CASE WHEN i %% 10 = 0 THEN 'Traceback: boom ' || i END
FROM generate_series(1, %(rows)s) AS i,
     LATERAL (SELECT now() - (i %% 2592000) * interval '1 second' AS t) AS times
"""
LIVE = """
INSERT INTO pgqueue.jobs (id, queue, task, args, run_at, tag)
SELECT %(rows)s + i, (ARRAY['fetch','ocr','compile'])[1 + i %% 3], 'bench.task1',
       jsonb_build_object('page', i), now() - interval '1 minute', 'city' || (i %% 40)
FROM generate_series(1, 2000) AS i
"""

PAGES = {
    "overview (HTML)": ("/", {}),
    "overview (JSON)": ("/", {"format": "json"}),
    "overview live partial": ("/_/overview", {}),
    "jobs, first page": ("/jobs", {}),
    "jobs, failed in ocr": ("/jobs", {"state": "failed", "queue": "ocr"}),
    "jobs, text in args": ("/jobs", {"q": "city7\""}),
    "jobs, text found nowhere": ("/jobs", {"q": "no such text"}),
    "groups": ("/groups", {}),
}


def timed(client: TestClient, path: str, params: dict[str, str], repeat: int) -> list[float]:
    client.get(path, params=params)  # warm: prepared statements, plans, templates
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        answer = client.get(path, params=params)
        times.append(time.perf_counter() - start)
        assert answer.status_code == 200, answer.text[:300]
    return times


def measure(admin: str, rows: int, repeat: int) -> dict[str, list[float]]:
    name = f"bench_dashboard_{rows}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name}")
        conn.execute(f"CREATE DATABASE {name}")
    url = admin.rsplit("/", 1)[0] + f"/{name}"
    queue = Queue(url)
    queue.migrate()
    with psycopg.connect(url, autocommit=True) as conn:
        if rows:
            conn.execute(HISTORY, {"rows": rows})
        conn.execute(LIVE, {"rows": rows})
        conn.execute(f"SELECT setval('pgqueue.jobs_id_seq', {rows + 2001})")
    fold_counts(queue.store)  # as a worker's maintenance leader does every few seconds
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")
    app = create_app(queue)
    app.state.reads.cache_seconds = 0.0  # every overview reads the database
    results: dict[str, list[float]] = {}
    with TestClient(app) as client:
        for label, (path, params) in PAGES.items():
            results[label] = timed(client, path, params, repeat)
        app.state.reads.cache_seconds = 2.0
        results["overview, cached"] = timed(client, "/", {}, repeat)
    queue.close()
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[0, 1_000_000])
    parser.add_argument("--repeat", type=int, default=11)
    args = parser.parse_args(argv)
    runs: dict[int, dict[str, list[float]]] = {}
    with LocalServer(settings={"fsync": "off", "synchronous_commit": "off"}) as server:
        admin = server.url("postgres")
        for rows in args.rows:
            started = time.perf_counter()
            runs[rows] = measure(admin, rows, args.repeat)
            print(f"[{rows:,} history rows: set up and measured in "
                  f"{time.perf_counter() - started:.0f} s]", flush=True)
    base = runs[args.rows[0]]
    header = f"{'page':<24}" + "".join(f"{f'{r:,} rows':>24}" for r in args.rows)
    print(header)
    print(f"{'':<24}" + "".join(f"{'median / worst ms':>24}" for _ in args.rows))
    for label in base:
        cells = []
        for rows in args.rows:
            times = runs[rows][label]
            median = statistics.median(times) * 1000
            ratio = median / (statistics.median(base[label]) * 1000)
            cells.append(f"{median:8.1f} / {max(times) * 1000:6.1f} (x{ratio:.1f})")
        print(f"{label:<24}" + "".join(f"{c:>24}" for c in cells))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
