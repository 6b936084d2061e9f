"""The figures. Each takes the cluster, one contender and the sizes, and returns a dict
whose `value` is the headline number (jobs/s, or milliseconds for latency)."""

from __future__ import annotations

import socket
import statistics
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import psycopg

from bench.contenders.base import LATENCY_TASK, Contender, Layout
from bench.harness import Cluster, Workers
from bench.probe import decode

POLL = 0.02  # seconds between the parent's counts of unfinished jobs
LATENCY_SETTLE = 2.0  # seconds for idle workers to LISTEN before the first probe
LATENCY_WARMUP = 10  # probes sent and ignored first (connections, caches, JIT of plans)


@dataclass
class Sizes:
    enqueue_one: int = 5_000
    enqueue_bulk: int = 50_000
    chunk: int = 1_000  # jobs per bulk call
    drain: int = 20_000
    drain_cap: float = 30.0  # seconds; a slower system is measured on what it did by then
    latency: int = 500
    latency_interval: float = 0.010
    sustained: int = 200_000
    sustained_cap: float = 60.0
    sustained_processes: int = 2
    sustained_backlog: int = 5_000  # the producer tops the queue up to this many jobs
    window: float = 5.0  # seconds per sustained window

    @classmethod
    def quick(cls) -> Sizes:
        return cls(enqueue_one=1_000, enqueue_bulk=10_000, drain=5_000, drain_cap=10.0,
                   latency=200, sustained=20_000, sustained_cap=15.0, window=2.0)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _chunks(start: int, total: int, size: int) -> list[range]:
    return [range(i, min(i + size, start + total)) for i in range(start, start + total, size)]


def _analyze(dsn: str) -> None:
    """Fresh statistics and a checkpoint, so no figure pays for the set-up's writes."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("ANALYZE")
        conn.execute("CHECKPOINT")


def table_sizes(conn: psycopg.Connection[Any], contender: Contender) -> dict[str, int | None]:
    sizes: dict[str, int | None] = {}
    for table in contender.tables:
        row = conn.execute("SELECT pg_total_relation_size(to_regclass(%s))", (table,)).fetchone()
        sizes[table] = int(row[0]) if row and row[0] is not None else None
    return sizes


def enqueue_one(cluster: Cluster, contender: Contender, sizes: Sizes) -> dict[str, Any]:
    with cluster.database(contender, "enqueue_one") as dsn:
        producer = contender.producer(dsn)
        try:
            producer.each(range(-20, 0))  # warm-up: prepared plans, pools
            started = time.perf_counter()
            producer.each(range(sizes.enqueue_one))
            seconds = time.perf_counter() - started
        finally:
            producer.close()
    return {"value": sizes.enqueue_one / seconds, "jobs": sizes.enqueue_one, "seconds": seconds}


def enqueue_bulk(cluster: Cluster, contender: Contender, sizes: Sizes) -> dict[str, Any]:
    with cluster.database(contender, "enqueue_bulk") as dsn:
        producer = contender.producer(dsn)
        try:
            producer.bulk(range(-sizes.chunk, 0))  # warm-up
            started = time.perf_counter()
            for chunk in _chunks(0, sizes.enqueue_bulk, sizes.chunk):
                producer.bulk(chunk)
            seconds = time.perf_counter() - started
        finally:
            producer.close()
    return {"value": sizes.enqueue_bulk / seconds, "jobs": sizes.enqueue_bulk,
            "seconds": seconds, "chunk": sizes.chunk}


def drain(cluster: Cluster, contender: Contender, sizes: Sizes, processes: int,
          overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Time from releasing the workers until no job is left unfinished."""
    return drain_with(cluster, contender, sizes, contender.layout(processes, overrides))


def drain_with(cluster: Cluster, contender: Contender, sizes: Sizes,
               layout: Layout) -> dict[str, Any]:
    """`drain` with a given layout (the default-layout and 2x8 figures)."""
    processes = layout.processes
    with cluster.database(contender, f"drain{processes}") as dsn:
        producer = contender.producer(dsn)
        try:
            for chunk in _chunks(0, sizes.drain, sizes.chunk):
                producer.bulk(chunk)
        finally:
            producer.close()
        _analyze(dsn)
        workers = Workers(contender, dsn, layout, burst=True).start()
        with psycopg.connect(dsn, autocommit=True) as conn:
            try:
                started = workers.go()
                capped = False
                while True:
                    time.sleep(POLL)
                    pending = contender.pending(conn)
                    elapsed = time.perf_counter() - started
                    if pending == 0:
                        break
                    if elapsed > sizes.drain_cap:
                        capped = True
                        break
                    if not workers.alive():
                        raise RuntimeError(f"{contender.name} workers exited with {pending} "
                                           f"jobs unfinished: {workers.failed()}")
            finally:
                workers.stop(grace=0.0 if capped else 5.0)
            failures = workers.failed()
    done = sizes.drain - pending
    return {"value": done / elapsed, "jobs": done, "seconds": elapsed, "capped": capped,
            "layout": layout.describe(), "options": layout.options, "processes": processes,
            "worker_failures": failures}


class _ProbeReceiver:
    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = int(self.sock.getsockname()[1])
        self.started: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="probe-receiver", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(64)
            except TimeoutError:
                continue
            i, at = decode(data)
            self.started.setdefault(i, at)

    def wait_for(self, n: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while sum(1 for i in self.started if i >= 0) < n and time.monotonic() < deadline:
            time.sleep(0.05)

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.sock.close()


def _percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = (len(ordered) - 1) * q
    low = int(k)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (k - low)


def latency(cluster: Cluster, contender: Contender, sizes: Sizes) -> dict[str, Any]:
    """Enqueue a probe every `latency_interval` to one idle worker process."""
    layout = contender.layout(1)
    receiver = _ProbeReceiver()
    sent: dict[int, float] = {}
    call_ms: list[float] = []
    with cluster.database(contender, "latency") as dsn:
        workers = Workers(contender, dsn, layout, burst=False, probe_port=receiver.port).start()
        producer = contender.producer(dsn)
        try:
            workers.go()
            time.sleep(LATENCY_SETTLE)
            for i in range(-LATENCY_WARMUP, 0):
                producer.one(i, LATENCY_TASK)
                time.sleep(sizes.latency_interval)
            time.sleep(0.5)
            origin = time.perf_counter()
            for i in range(sizes.latency):
                delay = origin + i * sizes.latency_interval - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
                sent[i] = time.time()
                before = time.perf_counter()
                producer.one(i, LATENCY_TASK)
                call_ms.append((time.perf_counter() - before) * 1000)
            receiver.wait_for(sizes.latency, timeout=10.0)
        finally:
            producer.close()
            workers.stop(grace=0.0)
            receiver.close()
    delays = [(receiver.started[i] - sent[i]) * 1000 for i in sent if i in receiver.started]
    return {"value": _percentile(delays, 0.5), "p50": _percentile(delays, 0.5),
            "p95": _percentile(delays, 0.95), "p99": _percentile(delays, 0.99),
            "max": max(delays) if delays else float("nan"),
            "mean": statistics.fmean(delays) if delays else float("nan"),
            "enqueue_call_ms_p50": _percentile(call_ms, 0.5),
            "probes": sizes.latency, "received": len(delays), "layout": layout.describe()}


def sustained(cluster: Cluster, contender: Contender, sizes: Sizes) -> dict[str, Any]:
    """Jobs flow through continuously: the producer keeps a backlog, workers never idle."""
    layout = contender.layout(sizes.sustained_processes)
    total, backlog = sizes.sustained, sizes.sustained_backlog
    with cluster.database(contender, "sustained") as dsn, \
            psycopg.connect(dsn, autocommit=True) as conn:
        before = table_sizes(conn, contender)
        producer = contender.producer(dsn)
        workers = Workers(contender, dsn, layout, burst=False).start()
        samples: list[tuple[float, int]] = [(0.0, 0)]
        try:
            enqueued = 0
            for chunk in _chunks(0, min(backlog, total), sizes.chunk):
                producer.bulk(chunk)
                enqueued += len(chunk)
            started = workers.go()
            while True:
                pending = contender.pending(conn)
                now = time.perf_counter() - started
                samples.append((now, enqueued - pending))
                if enqueued - pending >= total or now > sizes.sustained_cap:
                    break
                if not workers.alive():
                    raise RuntimeError(f"{contender.name} workers died: {workers.failed()}")
                room = min(backlog - pending, total - enqueued)
                if room >= sizes.chunk or (room > 0 and enqueued + room == total):
                    chunk = range(enqueued, enqueued + min(room, sizes.chunk))
                    producer.bulk(chunk)
                    enqueued += len(chunk)
                else:
                    time.sleep(POLL)
        finally:
            producer.close()
            workers.stop(grace=0.0)
        after = table_sizes(conn, contender)
    elapsed, completed = samples[-1]
    windows = _windows(samples, sizes.window)
    return {"value": completed / elapsed, "jobs": completed, "seconds": elapsed,
            "capped": completed < total, "windows": windows, "window_seconds": sizes.window,
            "sizes_before": before, "sizes_after": after, "queue_table": contender.queue_table,
            "layout": layout.describe()}


def _windows(samples: list[tuple[float, int]], window: float) -> list[float]:
    """Jobs/s in consecutive windows of `window` seconds (the last may be shorter)."""
    rates: list[float] = []
    edge, last_t, last_c = window, 0.0, 0
    for t, c in samples:
        if t >= edge:
            rates.append((c - last_c) / (t - last_t))
            last_t, last_c = t, c
            edge = t + window
    end_t, end_c = samples[-1]
    if end_t - last_t > window / 4:
        rates.append((end_c - last_c) / (end_t - last_t))
    return rates
