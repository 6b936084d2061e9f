"""PostgreSQL restarted twice under running workers: a fast restart, then a crash (immediate
stop) with the server down until every worker has tried to reconnect.

Workers lose every connection (main, listener, heartbeat, the task's own); they must
reconnect, record what they finished, and leave nothing lost and nothing `running`.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from pgqueue.localserver import LocalServer
from tests.chaos.conftest import (
    Fleet,
    bind_app,
    new_database,
    scalar,
    scaled,
    wait_for,
)
from tests.support import worker_app

JOBS = scaled(1_200, 5_000)
GROUP_SIZE = 100
# Each worker logs one warning per outage, and "database reachable again" when it ends.
REFUSED = "database unreachable"


def worker_logs(fleet: Fleet) -> dict[Path, str]:
    return {path: path.read_text(errors="replace") for path in fleet.log_dir.glob("*.log")}


@pytest.mark.slow
@pytest.mark.timeout(scaled(240, 600))
def test_workers_survive_fast_and_immediate_restarts(own_server: LocalServer, fleet: Fleet,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    dsn = new_database(own_server, "chaos_restart")
    app = bind_app(monkeypatch, dsn)
    # A task whose own connection fails while the server is down fails that attempt; five
    # attempts leave room for that without hiding a loss.
    record = dataclasses.replace(worker_app.record, max_attempts=5)
    groups = JOBS // GROUP_SIZE
    for g in range(groups):
        with app.group(f"restart-{g}", on_complete=[worker_app.collect.spec(label=f"g{g}")]) as group:
            group.enqueue_many(record, [{"item": g * GROUP_SIZE + i} for i in range(1, GROUP_SIZE + 1)])

    fleet.start(dsn, "work,followup", concurrency=4)
    fleet.start(dsn, "work,followup", concurrency=4)
    fleet.start(dsn, "work,followup", concurrency=2, isolation="process")

    def finished() -> int:
        return int(scalar(dsn, "SELECT count(*) FROM pgqueue.job_history WHERE task = 'record'"))

    wait_for(lambda: finished() >= JOBS // 4, timeout=60, what="a quarter of the jobs", watch=fleet)
    before = finished()
    own_server.restart("fast")
    wait_for(lambda: finished() >= before + JOBS // 4, timeout=60,
             what="progress after the fast restart", watch=fleet)
    # A crash (immediate stop), and PostgreSQL back only once every worker has tried and
    # failed to reconnect, as when systemd restarts it a few seconds later.
    before = finished()
    refused = {path: text.count(REFUSED) for path, text in worker_logs(fleet).items()}
    own_server.stop_server("immediate")
    wait_for(lambda: all(text.count(REFUSED) > refused.get(path, 0)
                         for path, text in worker_logs(fleet).items()),
             timeout=30, what="every worker to find the database down")
    own_server.start()
    wait_for(lambda: finished() >= before + JOBS // 10, timeout=60,
             what="progress after the immediate restart", watch=fleet)

    wait_for(lambda: scalar(dsn, "SELECT count(*) FROM pgqueue.jobs") == 0
             and scalar(dsn, "SELECT count(*) FROM pgqueue.job_history WHERE task = 'collect'") == groups,
             timeout=120, what="every job and follow-up to finish", interval=0.3, watch=fleet)
    fleet.stop_all()
    logs = fleet.logs()
    print(f"\n{logs.count('database unreachable')} 'database unreachable' lines in worker logs")
    assert "database unreachable" in logs  # the restarts were felt

    assert scalar(dsn, "SELECT count(*) FROM pgqueue.jobs WHERE state = 'running'") == 0
    assert scalar(dsn, "SELECT count(*) FROM pgqueue.job_history WHERE task = 'record' "
                       "AND state = 'succeeded'") == JOBS
    assert scalar(dsn, "SELECT count(*) FROM generate_series(1, %s) AS i "
                       "WHERE NOT EXISTS (SELECT 1 FROM effects e WHERE e.item = i)", (JOBS,)) == 0
    assert scalar(dsn, "SELECT count(*) FROM pgqueue.groups WHERE completed_at IS NOT NULL") == groups
    assert scalar(dsn, "SELECT max(n) FROM (SELECT count(*) n FROM pgqueue.job_history "
                       "WHERE task = 'collect' GROUP BY origin_group_id) c") == 1
    retried = scalar(dsn, "SELECT count(*) FROM pgqueue.job_history WHERE attempt > 1")
    print(f"{retried} jobs needed more than one attempt")
