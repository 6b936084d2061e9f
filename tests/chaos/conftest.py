"""Fixtures for the chaos suite: worker fleets in real processes, dedicated servers, waiting.

Sizes are small by default so CI finishes in minutes; `CHAOS_SCALE=full` runs the big
versions (10,000 jobs under the killer, 100,000 under load).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest

from pgqueue.localserver import LocalServer

ROOT = Path(__file__).resolve().parents[2]
FULL = os.environ.get("CHAOS_SCALE", "small") == "full"


def scaled(small: int, full: int) -> int:
    return full if FULL else small


class WorkerDied(AssertionError):
    """A worker process exited on its own while the test expected it to keep running."""


def wait_for(condition: Callable[[], Any], *, timeout: float, what: str,
             interval: float = 0.1, watch: Fleet | None = None) -> Any:
    """Poll `condition` until it returns something truthy; fail naming `what` after `timeout`.

    With `watch`, a worker of that fleet exiting on its own fails at once (WorkerDied).
    """
    deadline = time.monotonic() + timeout
    while True:
        if watch is not None:
            watch.check()
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def scalar(dsn: str, statement: str, params: Any = None) -> Any:
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(statement, params).fetchone()
        return row[0] if row else None


@dataclass
class Fleet:
    """Worker processes of tests.support.worker_app, each in its own process group."""

    log_dir: Path
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    killed: set[int] = field(default_factory=set)
    _count: int = 0

    def start(self, dsn: str, queues: str, *, concurrency: int = 4, isolation: str = "thread",
              lease: float = 2.0, poll: float = 1.0, burst: bool = False,
              prefix: tuple[str, ...] = (), grace: float = 5.0) -> subprocess.Popen[bytes]:
        self._count += 1
        argv = [*prefix, sys.executable, "-m", "tests.support.worker_app", dsn, queues,
                "--concurrency", str(concurrency), "--isolation", isolation,
                "--lease", str(lease), "--poll", str(poll), "--grace", str(grace)]
        if burst:
            argv.append("--burst")
        log = (self.log_dir / f"worker-{self._count}.log").open("wb")
        env = {**os.environ, "PGQUEUE_APP_DSN": dsn, "PYTHONPATH": str(ROOT)}
        proc = subprocess.Popen(argv, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True)
        log.close()
        self.procs.append(proc)
        return proc

    def alive(self) -> list[subprocess.Popen[bytes]]:
        return [p for p in self.procs if p.poll() is None]

    def check(self) -> None:
        """Raise WorkerDied if a worker exited that the test did not stop."""
        for proc in self.procs:
            if proc.poll() is not None and proc.pid not in self.killed:
                tail = "\n".join(self.logs().splitlines()[-15:])
                raise WorkerDied(f"worker pid {proc.pid} exited with {proc.returncode}:\n{tail}")

    def kill(self, proc: subprocess.Popen[bytes], signum: int = signal.SIGKILL) -> None:
        self.killed.add(proc.pid)
        try:
            os.killpg(proc.pid, signum)
        except ProcessLookupError:
            pass
        if signum == signal.SIGKILL:
            proc.wait(10)

    def stop_all(self, timeout: float = 20.0) -> None:
        """SIGTERM (warm stop), then SIGKILL what is left; every process group."""
        for proc in self.alive():
            self.kill(proc, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for proc in self.procs:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
        for proc in self.procs:
            self.kill(proc)  # the group too: a worker's children die with it

    def logs(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in sorted(self.log_dir.glob("*.log")))


@pytest.fixture
def fleet(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Fleet]:
    (tmp_path / "logs").mkdir()
    workers = Fleet(tmp_path / "logs")
    try:
        yield workers
    finally:
        workers.stop_all(timeout=5)
        report = getattr(request.node, "rep_call", None)
        if report is not None and report.failed:
            print(f"\n--- worker logs (last 60 lines), in {workers.log_dir} ---")
            print("\n".join(workers.logs().splitlines()[-60:]))


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    if report.when == "call":
        item.rep_call = report  # type: ignore[attr-defined]
    return report


@pytest.fixture
def own_server(tmp_path: Path) -> Iterator[LocalServer]:
    """A PostgreSQL cluster for this test alone (one the test may restart or crash)."""
    # synchronous_commit stays on: an immediate stop must not lose a commit a worker saw.
    # fsync off is safe here, since only PostgreSQL dies, never the machine.
    with LocalServer(base_dir=tmp_path / "pg",
                     settings={"fsync": "off", "full_page_writes": "off"}) as server:
        yield server


def new_database(server: LocalServer, name: str) -> str:
    """A database on `server`, migrated (pgqueue), with the worker app's effects table."""
    from pgqueue import Queue
    from tests.support import worker_app

    with psycopg.connect(server.url("postgres"), autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = server.url(name)
    Queue(url).migrate()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(worker_app.EFFECTS_DDL)
    return url


def bind_app(monkeypatch: pytest.MonkeyPatch, dsn: str) -> Any:
    """The worker app's Queue, pointed at `dsn` for this test."""
    from tests.support import worker_app

    monkeypatch.setenv("PGQUEUE_APP_DSN", dsn)
    monkeypatch.setattr(worker_app.queue, "dsn", dsn)
    return worker_app.queue


def vm_rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0
