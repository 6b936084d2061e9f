"""Three "machines" in network namespaces: PostgreSQL with password auth, two worker hosts.

Host A is the OCR-like host (queue `work`), host B runs the follow-ups (queue `followup`):
together they carry one group's run to completion. Then B takes `work` too, A's link is cut
mid-run, and the jobs A held come back after their leases and finish on B.

The clerk test (issue 16) gives every host its own filesystem as well: a private mount
namespace with a tmpfs over STORAGE_DIR (the same path on every host, so a path shared by
mistake cannot leak in), and its own host name. The city's site is served inside host A's
network namespace, so only A can fetch; B reads pages; C (the test's network namespace)
extracts, compiles and deploys; and D, started after B is killed mid-page with an empty
cache, finishes B's pages. Nothing is shared but PostgreSQL.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from pgqueue import Queue
from tests.chaos.conftest import ROOT, Fleet, scalar, wait_for
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


# -- clerk across hosts that share nothing but the database (issue 16) --------------------

CLERK = ROOT / ".venv" / "bin" / "clerk"


@dataclass
class Host:
    """Processes in one network namespace and one private mount namespace: a tmpfs over
    STORAGE_DIR, its own host name. `clerk worker` per queue, in one process group."""

    name: str
    proc: subprocess.Popen[bytes]

    def pids(self) -> list[int]:
        found = subprocess.run(["pgrep", "-g", str(self.proc.pid)], capture_output=True,
                               text=True, check=False).stdout.split()
        return [int(pid) for pid in found]

    def storage_files(self, storage: Path) -> list[str]:
        """What this host sees under STORAGE_DIR (through /proc/<pid>/root: its mounts)."""
        for pid in self.pids():
            root = Path(f"/proc/{pid}/root{storage}")
            try:
                return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
            except OSError:
                continue
        return []

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)


def start_host(name: str, netns: str | None, dsn: str, queues: list[str], env: dict[str, str],
               storage: Path, log_dir: Path) -> Host:
    workers = " & ".join(f"{CLERK} worker {queue} -n 1" for queue in queues)
    script = (f"hostname {name} && mount -t tmpfs -o size=512m clerk-{name} {storage} "
              f"&& {{ {workers} & wait; }}")
    argv = [*(("ip", "netns", "exec", netns) if netns else ()),
            "unshare", "--mount", "--uts", "--propagation", "private", "sh", "-c", script]
    log = (log_dir / f"host-{name}.log").open("wb")
    proc = subprocess.Popen(argv, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                            env={**env, "DATABASE_URL": dsn}, start_new_session=True)
    log.close()
    return Host(name, proc)


def serve_city(netns: str, directory: Path, log_dir: Path) -> subprocess.Popen[bytes]:
    log = (log_dir / "city.log").open("wb")
    proc = subprocess.Popen(["ip", "netns", "exec", netns, sys.executable, "-m", "http.server",
                             "--bind", "127.0.0.1", str(CITY_PORT), "--directory", str(directory)],
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    log.close()
    return proc


CITY_PORT = 8716


def publish_city(directory: Path) -> dict[str, str]:
    """A city site: born-digital minutes and a scanned agenda of four pages."""
    from tests.support.pipeline import PdfFactory

    factory = PdfFactory(directory)
    factory.text_pdf("minutes.pdf", ["Minutes: the heron count was approved by the council",
                                     "The council adjourned after thanking the marsh volunteers"])
    factory.scanned_pdf("agenda.pdf", [f"Pelican budget hearing number {n}" for n in range(1, 5)])
    (directory / "index.html").write_text(
        '<html><body><a href="minutes.pdf">City Council Minutes 2024-05-07</a>'
        '<a href="agenda.pdf">City Council Agenda 2024-05-07</a></body></html>')
    return {"minutes": "heron", "agenda": "pelican"}


@pytest.mark.netns
@pytest.mark.slow
@pytest.mark.timeout(420)
def test_clerk_stages_on_hosts_that_share_only_the_database(
        netlab: tuple[NetLab, NamespacedServer], tmp_path: Path) -> None:
    lab, server = netlab
    here = url(server, lab.db_address(3))
    storage, deploy = tmp_path / "storage", tmp_path / "deploy"
    storage.mkdir()
    log_dir = tmp_path / "logs"
    log_dir.mkdir()
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("CLERK_", "PGQUEUE_")) and k != "DATABASE_URL"}
    env.update({"PYTHONPATH": str(ROOT), "CLERK_ENV_FILE": str(tmp_path / "no.env"),
                "CLERK_STORAGE_DIR": str(storage), "CLERK_DEPLOY_DIR": str(deploy),
                "CLERK_OCR_DPI": "150", "CLERK_ALLOW_PRIVATE_HOSTS": "127.0.0.1",
                "CLERK_LEASE_SECONDS": "3", "CLERK_POLL_INTERVAL": "0.5",
                "CLERK_RETRY_BACKOFF": "0.5", "CLERK_LOG_LEVEL": "INFO",
                "CLERK_DEFAULT_OCR_BACKEND": "pytesseract"})

    def clerk(*argv: str) -> str:
        done = subprocess.run([str(CLERK), *argv], cwd=ROOT, capture_output=True, text=True,
                              env={**env, "DATABASE_URL": here}, timeout=120)
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    words = publish_city(tmp_path / "city")
    city = serve_city(lab.host("a"), tmp_path / "city", log_dir)
    hosts: list[Host] = []
    try:
        clerk("db", "upgrade")
        clerk("site", "add", "springfield", "--url", f"http://127.0.0.1:{CITY_PORT}/index.html")
        # B reads pages one at a time, slowly enough to be killed mid-page; C does the rest.
        b = start_host("host-b", lab.host("b"), url(server, lab.db_address(2)), ["ocr"], env,
                       storage, log_dir)
        c = start_host("host-c", None, here, ["extraction", "compilation", "deploy"], env,
                       storage, log_dir)
        a = start_host("host-a", lab.host("a"), url(server, lab.db_address(1)), ["fetch"], env,
                       storage, log_dir)
        hosts += [a, b, c]
        clerk("enqueue", "springfield")

        def running_on(host: str) -> list[int]:
            with psycopg.connect(here, autocommit=True) as conn:
                return [r[0] for r in conn.execute(
                    "SELECT j.id FROM pgqueue.jobs j JOIN pgqueue.workers w ON w.id = j.worker_id "
                    "WHERE j.state = 'running' AND j.queue = 'ocr' AND w.host = %s", (host,))]

        held = wait_for(lambda: running_on("host-b"), timeout=120, interval=0.05,
                        what="host B to be reading a page")
        b.kill()  # mid-page: its job's lease runs out, its cache dies with its mount namespace
        print(f"\nhost B killed while it read page job(s) {held}")
        d = start_host("host-d", lab.host("b"), url(server, lab.db_address(2)), ["ocr"], env,
                       storage, log_dir)
        hosts.append(d)
        # The deploy job records the site's success before its own finish is committed.
        wait_for(lambda: scalar(here, "SELECT count(*) FROM pgqueue.job_history WHERE "
                                      "task = 'clerk.deploy' AND state = 'succeeded'"),
                 timeout=300, what="the run to be deployed")

        with psycopg.connect(here, autocommit=True) as conn:
            stages = {(r[0], r[1]) for r in conn.execute(
                "SELECT h.task, w.host FROM pgqueue.job_history h "
                "JOIN pgqueue.workers w ON w.id = h.worker_id WHERE h.state = 'succeeded'")}
            rescued = conn.execute("SELECT h.state::text, w.host, h.rescues FROM pgqueue.job_history h "
                                   "JOIN pgqueue.workers w ON w.id = h.worker_id WHERE h.id = ANY(%s)",
                                   (held,)).fetchall()
            reads = conn.execute("SELECT kind, page, method, text FROM clerk.page_reads "
                                 "ORDER BY kind, page").fetchall()
        assert {task for task, _ in stages} >= {"clerk.fetch", "clerk.ocr_page", "clerk.extract",
                                                "clerk.compile", "clerk.deploy"}
        assert {host for task, host in stages if task == "clerk.fetch"} == {"host-a"}
        assert {host for task, host in stages if task == "clerk.ocr_page"} <= {"host-b", "host-d"}
        assert {host for task, host in stages
                if task in ("clerk.extract", "clerk.compile", "clerk.deploy")} == {"host-c"}
        assert [(state, host) for state, host, _ in rescued] == [("succeeded", "host-d")] * len(held)
        assert all(rescues >= 1 for _, _, rescues in rescued)
        assert [(kind, page) for kind, page, _, _ in reads] == [
            ("agenda", 1), ("agenda", 2), ("agenda", 3), ("agenda", 4), ("minutes", 1),
            ("minutes", 2)]
        assert all(method == "ocr" for kind, _, method, _ in reads if kind == "agenda")

        # What each host holds: A its downloads, D the agenda it read (from the database),
        # C the layout it compiled and deployed; none sees another's files.
        a_files, c_files, d_files = (h.storage_files(storage) for h in (a, c, d))
        assert a_files and all(name.startswith(".cache/") for name in a_files), a_files
        assert [n for n in d_files if n.endswith(".pdf")] and \
            all(name.startswith(".cache/") for name in d_files), d_files
        assert "springfield/meetings.db" in c_files and "springfield/pdfs/City Council/2024-05-07.pdf" \
            in c_files, c_files
        assert list(storage.iterdir()) == []  # the test's own view: nothing leaked out

        [published] = list(deploy.rglob("*.db"))
        with sqlite3.connect(published) as db:
            for table, word in (("agendas", words["agenda"]), ("minutes", words["minutes"])):
                found = db.execute(f"SELECT count(*) FROM [{table}_fts] WHERE [{table}_fts] "
                                   "MATCH ?", (word,)).fetchone()[0]
                assert found >= 1, f"{word!r} not found in {table} of the deployed database"
    finally:
        for host in hosts:
            host.kill()
        city.kill()
        city.wait(10)
