"""Load: many small jobs through two "instances" of four worker processes each.

Printed, not asserted: throughput per one-second window. Asserted: the flow is steady (no
empty window between the first and the last finish), worker memory stays bounded, and a
prune in the middle of the run shrinks the history instead of letting it grow.
"""

from __future__ import annotations

import psycopg
import pytest

from pgqueue import Queue
from tests.chaos.conftest import Fleet, scalar, scaled, vm_rss_kb, wait_for
from tests.support import worker_app

JOBS = scaled(20_000, 100_000)
INSTANCES, PER_INSTANCE, CONCURRENCY = 2, 4, 4
RSS_BOUND_KB = 200 * 1024
WINDOW_SECONDS = 1

# A log of every finish, kept by a statement-level trigger in the test's database, so the
# throughput survives the prune (which deletes the history rows it would be read from).
FINISH_LOG = """
CREATE TABLE chaos_finished (id bigint PRIMARY KEY, finished_at timestamptz NOT NULL);
CREATE FUNCTION chaos_log_finished() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO chaos_finished SELECT id, finished_at FROM new_rows ON CONFLICT DO NOTHING;
    RETURN NULL;
END $$;
CREATE TRIGGER chaos_log_finished AFTER INSERT ON pgqueue.job_history
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION chaos_log_finished();
"""

WINDOWS = """
WITH bounds AS (
    SELECT floor(extract(epoch FROM min(finished_at)) / %(w)s) AS first,
           floor(extract(epoch FROM max(finished_at)) / %(w)s) AS last FROM chaos_finished
), counts AS (
    SELECT floor(extract(epoch FROM finished_at) / %(w)s) AS bucket, count(*) AS jobs
    FROM chaos_finished GROUP BY 1
)
SELECT b.bucket - bounds.first AS window, coalesce(c.jobs, 0) AS jobs
FROM bounds, generate_series(bounds.first, bounds.last) AS b(bucket)
LEFT JOIN counts c ON c.bucket = b.bucket
ORDER BY 1
"""


@pytest.mark.slow
@pytest.mark.timeout(scaled(280, 1200))
def test_load_is_steady_bounded_and_prunable(app: Queue, db_url: str, fleet: Fleet) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(FINISH_LOG)
    app.enqueue_many(worker_app.noop, ({"item": i} for i in range(1, JOBS + 1)))

    def finished() -> int:
        return int(scalar(db_url, "SELECT count(*) FROM chaos_finished"))

    procs = [fleet.start(db_url, "work", concurrency=CONCURRENCY, lease=5, poll=1)
             for _ in range(INSTANCES * PER_INSTANCE)]
    # Memory at start: once every worker has finished some jobs (imports and pools warm).
    wait_for(lambda: scalar(db_url, "SELECT count(*) FROM pgqueue.workers WHERE jobs_done > 0")
             >= len(procs), timeout=60, what="every worker to finish a job", watch=fleet)
    rss_start = {p.pid: vm_rss_kb(p.pid) for p in procs}

    wait_for(lambda: finished() >= JOBS // 2, timeout=scaled(240, 900), what="half the jobs", watch=fleet,
             interval=0.25)
    history_before = int(scalar(db_url, "SELECT count(*) FROM pgqueue.job_history"))
    deleted = app.prune(succeeded_after=0)
    history_after = int(scalar(db_url, "SELECT count(*) FROM pgqueue.job_history"))
    print(f"\nprune mid-run: history {history_before} -> {history_after} rows, deleted {deleted}")
    assert deleted is not None and deleted["succeeded"] > 0
    assert history_after <= history_before

    wait_for(lambda: finished() >= JOBS, timeout=scaled(240, 900), what=f"all {JOBS} jobs", watch=fleet,
             interval=0.25)
    rss_end = {p.pid: vm_rss_kb(p.pid) for p in procs}
    fleet.stop_all()

    with psycopg.connect(db_url, autocommit=True) as conn:
        windows = conn.execute(WINDOWS, {"w": WINDOW_SECONDS}).fetchall()
        states = dict(conn.execute("SELECT state::text, count(*) FROM pgqueue.job_history "
                                   "GROUP BY 1").fetchall())
    rates = [jobs for _, jobs in windows]
    print(f"{JOBS} jobs, {INSTANCES} instances x {PER_INSTANCE} workers x {CONCURRENCY} slots: "
          f"{len(rates)} windows of {WINDOW_SECONDS} s, mean {JOBS / max(1, len(rates)):.0f} jobs/s")
    print("jobs per window:", " ".join(str(r) for r in rates))
    for pid in rss_start:
        print(f"worker {pid}: VmRSS {rss_start[pid] / 1024:.1f} MB -> {rss_end[pid] / 1024:.1f} MB")

    assert finished() == JOBS
    assert scalar(db_url, "SELECT count(*) FROM pgqueue.jobs") == 0
    assert set(states) <= {"succeeded"}
    assert 0 not in rates, f"a window with no finished job: {rates}"
    for pid, start in rss_start.items():
        assert rss_end[pid] < start + RSS_BOUND_KB, f"worker {pid} grew {start} -> {rss_end[pid]} kB"
