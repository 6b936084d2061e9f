"""Security: passwords never shown, health and metrics on loopback, a minimal database role.

A dedicated cluster with scram-sha-256 on TCP (the session cluster trusts 127.0.0.1, which
would hide a password that is never needed). Two roles: the owner, who migrates, and
`clerk_worker`, with only the grants of sql/roles.sql.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from pgqueue import Queue
from pgqueue.localserver import LocalServer, free_port
from tests.chaos.conftest import ROOT, Fleet, scalar, wait_for
from tests.support import worker_app

OWNER_SECRET = "Own3r-S3CRET-pw"
WORKER_SECRET = "W0rker-S3CRET-pw"
WRONG_SECRET = "Wr0ng-S3CRET-pw"
SECRETS = (OWNER_SECRET, WORKER_SECRET, WRONG_SECRET)
DATABASE = "chaos_sec"
BIN = Path(sys.executable).parent  # the console scripts `clerk` and `clerkd`


@dataclass
class SecureDb:
    server: LocalServer
    owner_url: str
    worker_url: str

    def admin(self, dbname: str = DATABASE) -> str:
        server = self.server
        return f"host={server.socket_dir} port={server.port} user={server.user} dbname={dbname}"

    def url(self, role: str, secret: str, port: int | None = None) -> str:
        return f"postgresql://{role}:{secret}@127.0.0.1:{port or self.server.port}/{DATABASE}"


@pytest.fixture(scope="module")
def secure(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureDb]:
    server = LocalServer(base_dir=tmp_path_factory.mktemp("secure") / "pg",
                         settings={"fsync": "off", "password_encryption": "scram-sha-256"})
    server.start()
    try:
        (server.data_dir / "pg_hba.conf").write_text(
            f"local all {server.user} trust\nhost all all 127.0.0.1/32 scram-sha-256\n")
        socket = f"host={server.socket_dir} port={server.port} user={server.user}"
        with psycopg.connect(f"{socket} dbname=postgres", autocommit=True) as conn:
            conn.execute("SELECT pg_reload_conf()")
            conn.execute(f"CREATE ROLE clerk_owner LOGIN PASSWORD '{OWNER_SECRET}'")
            conn.execute(f"CREATE ROLE clerk_worker LOGIN PASSWORD '{WORKER_SECRET}'")
            conn.execute(f"CREATE DATABASE {DATABASE} OWNER clerk_owner")
            conn.execute(f"REVOKE ALL ON DATABASE {DATABASE} FROM PUBLIC")
            conn.execute(f"GRANT CONNECT ON DATABASE {DATABASE} TO clerk_owner, clerk_worker")
        db = SecureDb(server, "", "")
        db.owner_url = db.url("clerk_owner", OWNER_SECRET)
        db.worker_url = db.url("clerk_worker", WORKER_SECRET)

        from clerk.db import migrate_clerk
        Queue(db.owner_url).migrate()
        migrate_clerk(db.owner_url)
        with psycopg.connect(db.owner_url, autocommit=True) as conn:
            conn.execute((ROOT / "sql" / "roles.sql").read_text())
            # The test app's own table, not part of clerk: granted here, not in roles.sql.
            conn.execute(worker_app.EFFECTS_DDL)
            conn.execute("GRANT SELECT, INSERT ON effects TO clerk_worker")
            conn.execute("GRANT USAGE ON SEQUENCE effects_id_seq TO clerk_worker")
        yield db
    finally:
        server.stop()


def assert_no_secret(text: str, where: str) -> None:
    for secret in SECRETS:
        assert secret not in text, f"a password appears in {where}:\n{text[-2000:]}"


def clerk_cli(*argv: str, database_url: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLERK_") and k != "DATABASE_URL"}
    env.update(DATABASE_URL=database_url, CLERK_ENV_FILE=str(tmp_path / "absent.env"),
               STORAGE_DIR=str(tmp_path / "storage"), DEPLOY_DIR=str(tmp_path / "deploy"),
               PYTHONPATH=str(ROOT))
    return subprocess.run([str(BIN / "clerk"), *argv], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=60)


def test_auth_is_scram(secure: SecureDb) -> None:
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(secure.url("clerk_worker", WRONG_SECRET), connect_timeout=5).close()
    with psycopg.connect(secure.admin(), autocommit=True) as conn:
        stored = conn.execute("SELECT rolname, rolpassword FROM pg_authid WHERE rolname LIKE 'clerk_%'"
                              ).fetchall()
    assert len(stored) == 2 and all(p.startswith("SCRAM-SHA-256$") for _, p in stored)


@pytest.mark.timeout(120)
def test_minimal_role_runs_workers_and_admin(secure: SecureDb, fleet: Fleet,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    url = secure.worker_url
    monkeypatch.setattr(worker_app.queue, "dsn", url)
    app = worker_app.queue
    with app.group("minimal", tag="minimal", on_complete=[worker_app.collect.spec(label="minimal")]) as group:
        group.enqueue_many(worker_app.record, [{"item": i} for i in range(1, 41)])
        group.enqueue_many(worker_app.fail_if, [{"item": 100 + i, "fail": True} for i in range(2)])
    with psycopg.connect(url, autocommit=True) as conn:  # the SQL entry point, too
        conn.execute("SELECT pgqueue.add_job('work', 'record', '{\"item\": 200}'::jsonb)")

    workers = [fleet.start(url, "work,followup", concurrency=4, burst=True),
               fleet.start(url, "work,followup", concurrency=2, isolation="process", burst=True)]
    for proc in workers:
        assert proc.wait(90) == 0, fleet.logs()[-3000:]
    assert_no_secret(fleet.logs(), "worker logs")
    assert scalar(url, "SELECT count(*) FROM pgqueue.job_history WHERE task = 'collect' "
                       "AND origin_group_id = %s", (group.id,)) == 1
    assert scalar(url, "SELECT count(*) FROM pgqueue.job_history WHERE state = 'succeeded'") == 42
    progress = app.get_group(group.id)
    assert (progress.pending, progress.failed) == (0, 2)

    # Operator actions, all as the minimal role.
    assert len(app.group_failures(group.id)) == 2
    assert {(r["queue"], r["state"]) for r in app.queue_depth()} >= {("work", "failed")}
    assert len(app.failed_jobs(queue="work")) == 2
    app.active_workers()
    app.metrics_snapshot()
    assert app.retry_failed(queue="work") == 2
    assert app.cancel(tag="minimal").cancelled == 2
    app.enqueue(worker_app.noop, {"item": 1})
    assert app.purge_queue("work").cancelled == 1
    assert app.rescue_expired() == {"requeued": 0, "failed": 0}
    deleted = app.prune(succeeded_after=0, cancelled_after=0, failed_after=0, groups_after=0)
    assert deleted is not None and deleted["succeeded"] == 42 and deleted["groups"] == 1

    # And nothing more: no DDL, no TRUNCATE, no migrations.
    for statement in ("DROP TABLE pgqueue.jobs", "TRUNCATE pgqueue.job_history",
                      "CREATE TABLE pgqueue.evil (id int)", "ALTER TABLE clerk.sites ADD COLUMN x int",
                      "CREATE TABLE public.evil (id int)", "CREATE TEMP TABLE evil (id int)"):
        with psycopg.connect(url, autocommit=True) as conn, \
                pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(statement)
    # Up to date, migrate() only reads: the minimal role may call it (clerkd does at start).
    assert Queue(url).migrate() == []


def test_credentials_not_in_cli_output(secure: SecureDb, tmp_path: Path) -> None:
    shown = clerk_cli("status", "--json", database_url=secure.owner_url, tmp_path=tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert_no_secret(shown.stdout + shown.stderr, "`clerk status --json`")
    data = json.loads(shown.stdout)
    assert "***" in data["database"] and "clerk_owner" in data["database"]

    for url, what in ((secure.url("clerk_worker", WRONG_SECRET), "a wrong password"),
                      (secure.url("clerk_worker", WORKER_SECRET, port=free_port()), "a closed port")):
        failed = clerk_cli("status", "--json", database_url=url, tmp_path=tmp_path)
        assert failed.returncode != 0
        assert_no_secret(failed.stdout + failed.stderr, f"`clerk status` with {what}")
        assert "Traceback" not in failed.stderr


def test_status_runs_as_the_minimal_role(secure: SecureDb, tmp_path: Path) -> None:
    shown = clerk_cli("status", "--json", database_url=secure.worker_url, tmp_path=tmp_path)
    assert_no_secret(shown.stdout + shown.stderr, "`clerk status --json` as clerk_worker")
    assert shown.returncode == 0, shown.stderr


def test_worker_that_cannot_connect_does_not_print_the_password(secure: SecureDb, fleet: Fleet) -> None:
    proc = fleet.start(secure.url("clerk_worker", WRONG_SECRET), "work", burst=True)
    assert proc.wait(60) != 0
    logs = fleet.logs()
    assert "password authentication failed" in logs
    assert_no_secret(logs, "the log of a worker refused by the server")


def test_job_errors_do_not_keep_the_password(secure: SecureDb) -> None:
    queue = Queue(secure.worker_url)

    @queue.task(name="leaky", queue="leaky", max_attempts=1)
    def leaky() -> None:
        raise RuntimeError(f"could not sync with {secure.worker_url} (password={WORKER_SECRET})")

    try:
        job_id = queue.enqueue(leaky)
        queue.work(["leaky"], burst=True, poll_interval=0.2)
        job = queue.get_job(job_id)
    finally:
        queue.close()
    assert job.state == "failed"
    assert_no_secret(job.last_error or "", "a job's stored error")


@pytest.mark.timeout(120)
def test_clerkd_health_and_metrics_on_loopback_without_secrets(secure: SecureDb, tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLERK_") and k != "DATABASE_URL"}
    env.update(DATABASE_URL=secure.owner_url, METRICS_PORT=str(port), PYTHONPATH=str(ROOT),
               CLERK_ENV_FILE=str(tmp_path / "absent.env"), STORAGE_DIR=str(tmp_path / "storage"),
               DEPLOY_DIR=str(tmp_path / "deploy"), FETCH_WORKERS="1", OCR_WORKERS="0",
               EXTRACTION_WORKERS="0", COMPILATION_WORKERS="0", DEPLOY_WORKERS="0")
    log = tmp_path / "clerkd.log"
    with log.open("wb") as out:
        daemon = subprocess.Popen([str(BIN / "clerkd")], cwd=tmp_path, env=env,
                                  stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        def get(path: str) -> str | None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
                    return str(response.read().decode())
            except OSError:
                assert daemon.poll() is None, log.read_text()
                return None

        health = wait_for(lambda: get("/health"), timeout=60, what="clerkd's /health")
        metrics = get("/metrics") or ""
        assert "pgqueue" in metrics or "clerk" in metrics
        assert_no_secret(health, "/health")
        assert_no_secret(metrics, "/metrics")

        listening = subprocess.run(["ss", "-ltnH", f"sport = :{port}"], capture_output=True,
                                   text=True, check=True).stdout.split()
        assert f"127.0.0.1:{port}" in listening, listening
        assert f"0.0.0.0:{port}" not in listening and f"*:{port}" not in listening
    finally:
        if daemon.poll() is None:
            os.killpg(daemon.pid, signal.SIGTERM)
        try:
            daemon.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(daemon.pid, signal.SIGKILL)
            daemon.wait(10)
    assert_no_secret(log.read_text(errors="replace"), "clerkd's log")
