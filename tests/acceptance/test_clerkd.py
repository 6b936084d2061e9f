"""clerkd as a real process: pools, SIGTERM without loss, SIGKILL recovery, status, metrics."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families

from pgqueue.localserver import free_port
from tests.support.pipeline import LocalServer as HttpServer
from tests.support.pipeline import PdfFactory, Route
from tests.support.secrets import SECRET, password_url

VENV_BIN = Path(sys.executable).parent
ZERO_POOLS = {"FETCH_WORKERS": "0", "OCR_WORKERS": "0", "EXTRACTION_WORKERS": "0",
              "COMPILATION_WORKERS": "0", "DEPLOY_WORKERS": "0"}


def wait_for(condition: Callable[[], object], what: str, timeout: float = 60.0) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def rows(db_url: str, statement: str, params: tuple[object, ...] = ()) -> list[tuple]:
    with psycopg.connect(db_url) as conn:
        return conn.execute(statement, params).fetchall()


def slow_pdf_route(body: bytes, seconds: float) -> Route:
    """A valid PDF sent in pieces over `seconds`: a fetch job that runs that long."""
    def handler(request: BaseHTTPRequestHandler) -> None:
        request.send_response(200)
        request.send_header("Content-Type", "application/pdf")
        request.send_header("Content-Length", str(len(body)))
        request.end_headers()
        pieces = 20
        step = max(1, len(body) // pieces)
        for start in range(0, len(body), step):
            request.wfile.write(body[start:start + step])
            request.wfile.flush()
            time.sleep(seconds / pieces)
    return Route(handler=handler)


@pytest.fixture
def site(http_server: HttpServer, pdf_factory: PdfFactory) -> Iterator[str]:
    """An index page linking one slow agenda (about 4 s to download) and one quick minutes."""
    slow = pdf_factory.text_pdf("agenda.pdf", ["Call to order. Budget hearing.", "Adjourn."])
    quick = pdf_factory.text_pdf("minutes.pdf", ["Motion by Councilmember Diaz, seconded by "
                                                 "Councilmember Lee. Ayes: Diaz, Lee. Passed 2-0."])
    http_server.routes["/agenda.pdf"] = slow_pdf_route(slow.read_bytes(), 4.0)
    http_server.static("/minutes.pdf", quick.read_bytes())
    http_server.static("/index.html", b"""<html><body>
        <a href="/agenda.pdf">City Council Agenda 2024-03-05</a>
        <a href="/minutes.pdf">City Council Minutes 2024-03-05</a></body></html>""",
                       content_type="text/html")
    yield http_server.url("/index.html")


@pytest.fixture
def clerk_env(db_url: str, tmp_path: Path) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items()
           if not key.startswith("CLERK_") and key != "DATABASE_URL"}
    env.update(ZERO_POOLS)
    env.update({"DATABASE_URL": db_url, "CLERK_STORAGE_DIR": str(tmp_path / "sites"),
                "CLERK_DEPLOY_DIR": str(tmp_path / "deploy"), "CLERK_LEASE_SECONDS": "2",
                "CLERK_POLL_INTERVAL": "0.5", "CLERK_SHUTDOWN_GRACE": "30",
                "CLERK_ENV_FILE": str(tmp_path / "none.env"),
                "CLERK_ALLOW_PRIVATE_HOSTS": "127.0.0.1"})  # the test sites' address
    return env


def clerk(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([str(VENV_BIN / "clerk"), *args], env=env, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return result


class Clerkd:
    def __init__(self, env: dict[str, str], log: Path, **pools: int) -> None:
        self.env = {**env, **{f"{name.upper()}_WORKERS": str(n) for name, n in pools.items()}}
        self.log = log
        with log.open("w") as output:
            self.process = subprocess.Popen([str(VENV_BIN / "clerkd")], env=self.env,
                                            stdout=output, stderr=subprocess.STDOUT,
                                            start_new_session=True)

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)


@pytest.fixture
def daemons() -> Iterator[list[Clerkd]]:
    started: list[Clerkd] = []
    yield started
    for daemon in started:
        daemon.stop()


def worker_rows(db_url: str) -> list[tuple]:
    return rows(db_url, "SELECT pid, queues FROM pgqueue.active_workers ORDER BY pid")


def test_sigterm_mid_job_loses_nothing(site: str, http_server: HttpServer,
                                       clerk_env: dict[str, str], db_url: str,
                                       tmp_path: Path, daemons: list[Clerkd]) -> None:
    clerk(clerk_env, "site", "add", "springfield", "--url", site)
    clerk(clerk_env, "enqueue", "springfield")
    daemon = Clerkd(clerk_env, tmp_path / "clerkd.log", fetch=1)
    daemons.append(daemon)
    # Claimed is not yet started: wait for the fetch to be downloading the slow agenda.
    wait_for(lambda: any(seen.path == "/agenda.pdf" for seen in http_server.requests),
             "the fetch job to be downloading")
    daemon.process.send_signal(signal.SIGTERM)
    assert daemon.process.wait(90) == 0, daemon.log.read_text()
    # The fetch finished within the grace period: its run's page jobs are all queued.
    fetch = rows(db_url, "SELECT state, attempt FROM pgqueue.all_jobs WHERE task = 'clerk.fetch'")
    assert fetch == [("succeeded", 1)]
    assert rows(db_url, "SELECT count(*) FROM pgqueue.jobs WHERE queue = 'ocr'") == [(3,)]
    # A burst daemon with every pool finishes the run.
    finisher = Clerkd({**clerk_env, "CLERK_BURST": "1"}, tmp_path / "burst.log", ocr=2,
                      extraction=1, compilation=1, deploy=1)
    daemons.append(finisher)
    wait_for(lambda: rows(db_url, "SELECT 1 FROM pgqueue.job_history WHERE task = 'clerk.deploy'"
                                  " AND state = 'succeeded'"), "the deploy", timeout=120)
    assert (tmp_path / "deploy" / "springfield.db").exists()
    status = json.loads(clerk(clerk_env, "status", "--subdomain", "springfield", "--json").stdout)
    assert status["complete"], status


def test_sigterm_after_grace_gives_the_job_back(site: str, http_server: HttpServer,
                                                clerk_env: dict[str, str],
                                                db_url: str, tmp_path: Path,
                                                daemons: list[Clerkd]) -> None:
    clerk(clerk_env, "site", "add", "springfield", "--url", site)
    clerk(clerk_env, "enqueue", "springfield")
    daemon = Clerkd({**clerk_env, "CLERK_SHUTDOWN_GRACE": "0.5"}, tmp_path / "clerkd.log", fetch=1)
    daemons.append(daemon)
    # Claimed is not yet started: wait for the fetch to be downloading the slow agenda.
    wait_for(lambda: any(seen.path == "/agenda.pdf" for seen in http_server.requests),
             "the fetch job to be downloading")
    daemon.process.send_signal(signal.SIGTERM)
    assert daemon.process.wait(60) == 0, daemon.log.read_text()
    # Too slow for the grace period: given back, not lost, and its attempt not counted.
    assert rows(db_url, "SELECT state, attempt FROM pgqueue.jobs WHERE task = 'clerk.fetch'") == \
        [("queued", 0)]


def test_sigkilled_worker_is_replaced_and_its_job_rerun(site: str, clerk_env: dict[str, str],
                                                        db_url: str, tmp_path: Path,
                                                        daemons: list[Clerkd]) -> None:
    clerk(clerk_env, "site", "add", "springfield", "--url", site)
    clerk(clerk_env, "enqueue", "springfield")
    daemon = Clerkd(clerk_env, tmp_path / "clerkd.log", fetch=1)
    daemons.append(daemon)
    running = wait_for(lambda: rows(db_url, "SELECT w.pid FROM pgqueue.jobs j JOIN pgqueue.workers w"
                                            " ON w.id = j.worker_id WHERE j.state = 'running'"),
                       "the fetch job to start")
    victim = running[0][0]
    os.kill(victim, signal.SIGKILL)
    wait_for(lambda: [r for r in worker_rows(db_url) if r[0] != victim],
             "a replacement worker")
    done = wait_for(lambda: rows(db_url, "SELECT attempt, rescues FROM pgqueue.job_history"
                                         " WHERE task = 'clerk.fetch' AND state = 'succeeded'"),
                    "the fetch to be re-run", timeout=90)
    assert done == [(2, 1)]
    assert "exit=-9" in daemon.log.read_text() or "signal" in daemon.log.read_text()


def test_two_daemons_share_one_database_and_show_in_status(
        clerk_env: dict[str, str], db_url: str, tmp_path: Path, daemons: list[Clerkd]) -> None:
    port = free_port()
    secret_env = {**clerk_env, "DATABASE_URL": password_url(db_url)}  # a password to leak
    ocr_host = Clerkd({**secret_env, "METRICS_PORT": str(port)}, tmp_path / "ocr.log", ocr=2)
    other_host = Clerkd(clerk_env, tmp_path / "other.log", fetch=1, extraction=1,
                        compilation=1, deploy=1)
    daemons.extend([ocr_host, other_host])
    # One worker process per queue; the OCR one has two slots (issue 21: connections per
    # process, not per slot).
    wait_for(lambda: len(worker_rows(db_url)) == 5, "five workers to register")
    shown = clerk(secret_env, "status", "--json").stdout
    assert SECRET not in shown
    status = json.loads(shown)
    assert status["workers_per_queue"] == {"fetch": 1, "ocr": 2, "extraction": 1,
                                           "compilation": 1, "deploy": 1}
    assert "***" in status["database"]
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=10).read().decode()
    assert SECRET not in body
    health = json.loads(body)
    assert health["status"] == "ok"
    assert health["workers"] == {"fetch": 0, "ocr": 2, "extraction": 0, "compilation": 0, "deploy": 0}
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    assert SECRET not in text
    families = {family.name: family for family in text_string_to_metric_families(text)}
    alive = {sample.labels["queue"]: sample.value
             for sample in families["pgqueue_workers_alive"].samples}
    # worker processes, read from the shared database: the OCR one runs two slots
    assert alive["ocr"] == 1 and alive["deploy"] == 1
    assert "pgqueue_queue_depth" in families


def test_health_of_an_unreachable_database_hides_the_password(
        clerk_env: dict[str, str], db_url: str, tmp_path: Path, daemons: list[Clerkd]) -> None:
    role = "clerkd_health_pw"
    port = free_port()
    daemon = Clerkd({**clerk_env, "DATABASE_URL": password_url(db_url, role),
                     "METRICS_PORT": str(port)}, tmp_path / "clerkd.log")
    daemons.append(daemon)

    def health() -> dict[str, str] | None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=10) as answer:
                body = answer.read().decode()
        except urllib.error.HTTPError as error:  # 503: unhealthy, with its JSON body
            body = error.read().decode()
        except OSError:
            assert daemon.process.poll() is None, daemon.log.read_text()
            return None
        assert SECRET not in body
        return dict(json.loads(body))

    # /health answers from the start; the role is refused only once clerkd has started (it
    # migrates and checks first, and a start that cannot connect exits, as it should).
    wait_for(lambda: "clerkd starting" in daemon.log.read_text(), "clerkd started")
    wait_for(lambda: (h := health()) and h["database"] == "reachable", "/health: reachable")
    with psycopg.connect(db_url, autocommit=True) as conn:  # the server now refuses the role
        conn.execute(f"ALTER ROLE {role} NOLOGIN")
    try:
        report = wait_for(lambda: (h := health()) and h["database"] != "reachable" and h,
                          "/health: unreachable")
    finally:
        with psycopg.connect(db_url, autocommit=True) as conn:
            conn.execute(f"ALTER ROLE {role} LOGIN")
    assert isinstance(report, dict) and report["status"] == "database_unreachable"
    assert "127.0.0.1" in report["database"] and "not permitted to log in" in report["database"]
