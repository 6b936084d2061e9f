"""The bench's machinery: one throwaway cluster, a fresh database per figure, worker
processes behind a start barrier, and the facts of the machine the numbers come from."""

from __future__ import annotations

import contextlib
import itertools
import multiprocessing
import os
import platform
import subprocess
import time
from collections.abc import Iterator
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import psycopg

from bench.contenders import get
from bench.contenders.base import Contender, Layout
from bench.probe import ADDRESS_ENV

# PostgreSQL's defaults (fsync, synchronous_commit, shared_buffers...) for everyone; only
# room for the connections of 4 worker processes with 50 threads each.
SERVER_SETTINGS = {"max_connections": "300"}
READY_TIMEOUT = 60.0  # seconds for worker processes to import, connect and reach the barrier
STOP_GRACE = 5.0  # seconds a worker gets to exit by itself before it is terminated

_SPAWN = multiprocessing.get_context("spawn")
_counter = itertools.count()


class Cluster:
    """One local PostgreSQL for the whole run; `database()` hands out fresh databases."""

    def __init__(self) -> None:
        from pgqueue.localserver import LocalServer
        self.server = LocalServer(settings=dict(SERVER_SETTINGS))

    def start(self) -> Cluster:
        self.server.start()
        return self

    def stop(self) -> None:
        self.server.stop()

    def admin(self) -> psycopg.Connection[Any]:
        return psycopg.connect(self.server.url(), autocommit=True)

    @contextlib.contextmanager
    def database(self, contender: Contender, figure: str) -> Iterator[str]:
        """A new database with the contender's schema installed; dropped afterwards."""
        name = f"b{next(_counter)}_{contender.name}_{figure}"[:63]
        with self.admin() as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
            dsn = self.server.url(name)
            contender.install(dsn)
            conn.execute("CHECKPOINT")  # the schema's writes are not billed to the figure
        try:
            yield dsn
        finally:
            with self.admin() as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def facts(self) -> dict[str, Any]:
        with self.admin() as conn:
            row = conn.execute("SELECT version()").fetchone()
            settings = {name: conn.execute(f"SHOW {name}").fetchone()[0]  # type: ignore[index]
                        for name in ("fsync", "synchronous_commit", "wal_level",
                                     "shared_buffers", "max_connections", "full_page_writes")}
        return {"postgresql": row[0] if row else "?", "settings": settings}


def _child(contender_name: str, dsn: str, options: dict[str, Any], burst: bool,
           barrier: Any, probe_port: int | None) -> None:
    if probe_port is not None:
        os.environ[ADDRESS_ENV] = str(probe_port)
    get(contender_name).work(dsn, options, burst, barrier)


class Workers:
    """`layout.processes` worker processes, all held at a barrier until `go()`."""

    def __init__(self, contender: Contender, dsn: str, layout: Layout, *, burst: bool,
                 probe_port: int | None = None) -> None:
        self.barrier = _SPAWN.Barrier(layout.processes + 1)
        self.processes = [
            _SPAWN.Process(target=_child, name=f"bench-{contender.name}-{n}",
                           args=(contender.name, dsn, layout.options, burst, self.barrier,
                                 probe_port))
            for n in range(layout.processes)]

    def start(self) -> Workers:
        for process in self.processes:
            process.start()
        return self

    def go(self) -> float:
        """Release the workers once all are connected; returns the start time."""
        self.barrier.wait(READY_TIMEOUT)
        return time.perf_counter()

    def alive(self) -> bool:
        return any(p.is_alive() for p in self.processes)

    def failed(self) -> list[str]:
        return [f"{p.name} exit {p.exitcode}" for p in self.processes
                if p.exitcode not in (None, 0, -15)]

    def stop(self, grace: float = STOP_GRACE) -> None:
        deadline = time.monotonic() + grace
        for process in self.processes:
            process.join(max(0.0, deadline - time.monotonic()))
        for process in self.processes:
            if process.is_alive():
                process.terminate()
        for process in self.processes:
            process.join(5)
            if process.is_alive():
                process.kill()
                process.join()


def _version(package: str) -> str:
    try:
        return version(package)
    except PackageNotFoundError:
        return "not installed"


def machine_facts() -> dict[str, Any]:
    model = platform.processor() or "?"
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    memory = None
    with contextlib.suppress(OSError, ValueError, IndexError):
        with open("/proc/meminfo") as meminfo:
            memory = int(meminfo.readline().split()[1]) // 1024
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True, check=False).stdout.strip()
    return {
        "cpu_count": os.cpu_count(),
        "cpu_model": model,
        "memory_mb": memory,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "git_commit": commit or None,
        # other work on the machine skews every figure; compare runs with similar load
        "load_average_at_start": os.getloadavg(),
        "packages": {name: _version(name) for name in (
            "clerk", "procrastinate", "pgqueuer", "psycopg", "psycopg-binary",
            "psycopg-pool", "asyncpg")},
    }
