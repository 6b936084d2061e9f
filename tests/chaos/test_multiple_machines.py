"""Three "machines" in network namespaces: PostgreSQL with password auth, two worker hosts.

Host A is the OCR-like host (queue `work`), host B runs the follow-ups (queue `followup`):
together they carry one group's run to completion. Then B takes `work` too, A's link is cut
mid-run, and the jobs A held come back after their leases and finish on B.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from pgqueue import Queue
from tests.chaos.conftest import Fleet, scalar, wait_for
from tests.chaos.netlab import NamespacedServer, NetLab, netns_unavailable, write_hba
from tests.support import worker_app

ROLE, PASSWORD, DATABASE = "clerk_chaos", "s3cret-Pw", "chaos_net"


@pytest.fixture
def netlab(tmp_path: Path) -> Iterator[tuple[NetLab, NamespacedServer]]:
    reason = netns_unavailable()
    if reason is not None:
        print(f"skipping the multi-machine test: {reason}")
        pytest.skip(reason)
    lab = NetLab()
    server: NamespacedServer | None = None
    try:
        lab.build()
        server = NamespacedServer(base_dir=tmp_path / "pg", namespace=lab.db, settings={
            "listen_addresses": ",".join(lab.db_address(i) for i in (1, 2, 3)),
            "password_encryption": "scram-sha-256", "fsync": "off"})
        server.start()
        write_hba(server.data_dir, server.user)
        with psycopg.connect(server.admin_conninfo(), autocommit=True) as conn:
            conn.execute("SELECT pg_reload_conf()")
            conn.execute(f"CREATE ROLE {ROLE} LOGIN PASSWORD '{PASSWORD}'")
            conn.execute(f"CREATE DATABASE {DATABASE} OWNER {ROLE}")
        yield lab, server
    finally:
        if server is not None:
            server.stop()
        lab.teardown()


def url(server: NamespacedServer, address: str, password: str = PASSWORD) -> str:
    return f"postgresql://{ROLE}:{password}@{address}:{server.port}/{DATABASE}"


def worker_pids(dsn: str, ids_sql: str, params: tuple[object, ...]) -> set[int]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return {r[0] for r in conn.execute(
            f"SELECT DISTINCT w.pid FROM pgqueue.workers w WHERE w.id IN ({ids_sql})", params)}


@pytest.mark.netns
@pytest.mark.slow
@pytest.mark.timeout(300)
def test_two_hosts_share_a_run_and_survive_a_cut_link(
        netlab: tuple[NetLab, NamespacedServer], fleet: Fleet,
        monkeypatch: pytest.MonkeyPatch) -> None:
    lab, server = netlab
    here = url(server, lab.db_address(3))
    on_a, on_b = url(server, lab.db_address(1)), url(server, lab.db_address(2))

    # Password authentication is enforced over the network, and stored as SCRAM.
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(url(server, lab.db_address(3), password="wrong"), connect_timeout=5).close()
    with psycopg.connect(server.admin_conninfo(), autocommit=True) as conn:
        stored = conn.execute("SELECT rolpassword FROM pg_authid WHERE rolname = %s", (ROLE,)).fetchone()
        assert stored is not None and stored[0].startswith("SCRAM-SHA-256$")

    Queue(here).migrate()
    with psycopg.connect(here, autocommit=True) as conn:
        conn.execute(worker_app.EFFECTS_DDL)
    monkeypatch.setattr(worker_app.queue, "dsn", here)
    app = worker_app.queue

    # -- one run shared by two hosts ------------------------------------------------------
    a_procs = [fleet.start(on_a, "work", concurrency=4, prefix=lab.exec_prefix(lab.host("a")))
               for _ in range(2)]
    b_follow = fleet.start(on_b, "followup", concurrency=2, prefix=lab.exec_prefix(lab.host("b")))
    with app.group("net-1", on_complete=[worker_app.collect.spec(label="net-1")]) as first:
        first.enqueue_many(worker_app.record, [{"item": i} for i in range(1, 101)])
    wait_for(lambda: scalar(here, "SELECT count(*) FROM pgqueue.job_history WHERE task = 'collect' "
                                  "AND origin_group_id = %s", (first.id,)) == 1,
             timeout=60, what="the first group's follow-up", watch=fleet)
    a_pids = {p.pid for p in a_procs}
    assert worker_pids(here, "SELECT worker_id FROM pgqueue.job_history WHERE group_id = %s",
                       (first.id,)) <= a_pids
    assert worker_pids(here, "SELECT worker_id FROM pgqueue.job_history WHERE origin_group_id = %s",
                       (first.id,)) == {b_follow.pid}
    assert scalar(here, "SELECT count(*) FROM pgqueue.job_history WHERE group_id = %s "
                        "AND state = 'succeeded'", (first.id,)) == 100

    # -- host A loses its link mid-run ----------------------------------------------------
    b_work = fleet.start(on_b, "work", concurrency=2, prefix=lab.exec_prefix(lab.host("b")))
    with app.group("net-2", on_complete=[worker_app.collect.spec(label="net-2")]) as second:
        second.enqueue_many(worker_app.started_then_sleep,
                            [{"item": 1000 + i, "sleep": 1.0} for i in range(1, 41)])
    a_running = f"SELECT j.id FROM pgqueue.jobs j JOIN pgqueue.workers w ON w.id = j.worker_id " \
                f"WHERE j.state = 'running' AND j.group_id = {second.id} " \
                f"AND w.pid IN ({','.join(map(str, a_pids))})"

    def held_by_a() -> list[int]:
        with psycopg.connect(here, autocommit=True) as conn:
            return [r[0] for r in conn.execute(a_running)]

    wait_for(lambda: len(held_by_a()) >= 2, timeout=30, what="host A to hold jobs of the second run",
             interval=0.05, watch=fleet)
    lab.cut(1)
    with psycopg.connect(here, autocommit=True) as conn:
        # Nothing from A can reach the server now, so what A held at the cut is what it holds.
        orphans = [r[0] for r in conn.execute(a_running)]
    print(f"\nhost A's link cut while it held jobs {orphans}")
    assert orphans
    wait_for(lambda: scalar(here, "SELECT count(*) FROM pgqueue.job_history WHERE task = 'collect' "
                                  "AND origin_group_id = %s", (second.id,)) == 1,
             # leases expire, the leader's keepalives notice the cut, B re-runs what A held:
             # under a loaded CI machine that took more than 90 s once
             timeout=180, what="the second group's follow-up after the cut")
    assert b_follow.poll() is None and b_work.poll() is None, "host B's workers died"

    with psycopg.connect(here, autocommit=True) as conn:
        rows = conn.execute("SELECT h.id, h.state::text, h.rescues, w.pid FROM pgqueue.job_history h "
                            "JOIN pgqueue.workers w ON w.id = h.worker_id WHERE h.id = ANY(%s)",
                            (orphans,)).fetchall()
        states = dict(conn.execute("SELECT state::text, count(*) FROM pgqueue.job_history "
                                   "WHERE group_id = %s GROUP BY 1", (second.id,)).fetchall())
        items = conn.execute("SELECT count(DISTINCT item) FROM effects WHERE item > 1000").fetchone()
    assert len(rows) == len(orphans)
    for job_id, state, rescues, pid in rows:
        assert state == "succeeded", job_id
        assert rescues >= 1, job_id
        assert pid == b_work.pid, f"job {job_id} finished on {pid}, not on host B"
    assert states == {"succeeded": 40}
    assert items == (40,)
    assert scalar(here, "SELECT count(*) FROM pgqueue.jobs") == 0
