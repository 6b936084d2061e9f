"""Per-key concurrency and rate limits (issue 15): enforced by the claim across processes,
exact under races, never losing or starving a job, and freed when a killed holder's lease
is rescued. Counts from the database, never timings (the rate's count has a bound of ±1)."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pgqueue import ConfigurationError, Limit, Queue
from tests.support import fair_app

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def fair(db_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Queue]:
    monkeypatch.setenv("PGQUEUE_APP_DSN", db_url)
    monkeypatch.setattr(fair_app.queue, "dsn", db_url)
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(fair_app.RUNS_DDL)
    yield fair_app.queue
    fair_app.queue.close()


def wait_until(condition: object, what: str, timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


class Sampler:
    """Counts the running jobs of each limited key, over and over, in its own thread."""

    def __init__(self, db_url: str) -> None:
        self.most: Counter[str] = Counter()
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(db_url,), daemon=True)

    def _run(self, db_url: str) -> None:
        with psycopg.connect(db_url, autocommit=True) as conn:
            while not self._stop.is_set():
                for key, running in conn.execute(
                        "SELECT limit_key, count(*) FROM pgqueue.jobs WHERE state = 'running' "
                        "AND limit_key IS NOT NULL GROUP BY 1"):
                    self.most[key] = max(self.most[key], running)
                self.samples += 1
                time.sleep(0.005)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)


def most_overlapping(db_url: str, task: str) -> dict[str, int]:
    """Per key, the most runs (as the jobs recorded them) that overlapped in time."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        rows = conn.execute("SELECT key, started_at, ended_at FROM runs WHERE task = %s "
                            "AND ended_at IS NOT NULL", (task,)).fetchall()
    events: dict[str, list[tuple[object, int]]] = {}
    for key, started, ended in rows:
        events.setdefault(key, []).extend([(started, 1), (ended, -1)])
    most: dict[str, int] = {}
    for key, marks in events.items():
        running = 0
        for _, step in sorted(marks, key=lambda m: (m[0], m[1])):  # ends before starts
            running += step
            most[key] = max(most.get(key, 0), running)
    return most


def start_workers(db_url: str, queues: str, processes: int, concurrency: int,
                  tmp_path: Path, lease: float = 30.0) -> list[subprocess.Popen[bytes]]:
    procs = []
    for n in range(processes):
        log = (tmp_path / f"worker-{len(list(tmp_path.glob('worker-*')))}-{n}.log").open("wb")
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "tests.support.fair_app", db_url, queues,
             "--concurrency", str(concurrency), "--poll", "0.5", "--lease", str(lease)],
            cwd=ROOT, stdout=log, stderr=subprocess.STDOUT))
        log.close()
    return procs


def stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
    for proc in procs:
        proc.wait(60)


def succeeded(db_url: str, task: str) -> int:
    with psycopg.connect(db_url, autocommit=True) as conn:
        row = conn.execute("SELECT count(*) FROM pgqueue.job_history WHERE task = %s "
                           "AND state = 'succeeded'", (task,)).fetchone()
    return int(row[0]) if row else 0


def test_a_limit_parks_what_it_refuses_and_a_holders_end_wakes_one(fair: Queue) -> None:
    fair.set_limit(fair_app.fetch, fair_app.fetch.limit)
    fair.enqueue_many(fair_app.fetch, [{"host": "a.example", "n": i} for i in range(5)])
    fair_app.fetch.enqueue(host="b.example", n=0)
    with fair.store.connect(autocommit=True) as conn:
        jobs = fair.store.claim(conn, worker_id=None, queues=["fetch"], limit=10,
                                lease_seconds=60)
        assert sorted(str(j.args["host"]) for j in jobs) == ["a.example", "a.example",
                                                             "b.example"]
        assert fair.store.wake_at is not None  # the parked jobs' time comes back
        [usage_a, usage_b] = fair.limit_usage()
        assert (usage_a["key"], usage_a["running"], usage_a["parked"]) == ("a.example", 2, 3)
        assert (usage_b["key"], usage_b["running"]) == ("b.example", 1)
        assert fair.store.claim(conn, worker_id=None, queues=["fetch"], limit=10,
                                lease_seconds=60) == []  # parked: not even looked at
        holder = next(j for j in jobs if j.args["host"] == "a.example")
        fair.store.finish(conn, [(holder.id, holder.attempt, "succeeded", None)],
                          from_state="running")
        [woken] = fair.store.claim(conn, worker_id=None, queues=["fetch"], limit=10,
                                   lease_seconds=60)
        assert woken.args["host"] == "a.example"


def test_limits_are_checked_when_declared(fair: Queue) -> None:
    for bad in (Limit(key="host"), Limit(concurrency=0), Limit(rate=1, per=0),
                Limit(key="", concurrency=1)):
        with pytest.raises(ConfigurationError):
            fair.set_limit("fetch", bad)


def test_three_processes_never_run_more_than_the_limit_of_a_key(
        fair: Queue, db_url: str, tmp_path: Path) -> None:
    """Issue 15's test: 3 processes x 8 slots, 200 jobs over 5 keys with a limit of 2."""
    fair.enqueue_many(fair_app.fetch, [{"host": f"host-{i % 5}", "n": i, "sleep": 0.05}
                                       for i in range(200)])
    procs = start_workers(db_url, "fetch", 3, 8, tmp_path)
    try:
        with Sampler(db_url) as sampler:
            wait_until(lambda: succeeded(db_url, "fetch") == 200, "the 200 jobs")
    finally:
        stop(procs)
    assert sampler.samples > 20
    assert set(sampler.most) == {f"fetch:host-{i}" for i in range(5)}
    assert max(sampler.most.values()) == 2, sampler.most  # reached, never passed
    overlaps = most_overlapping(db_url, "fetch")
    assert len(overlaps) == 5 and max(overlaps.values()) <= 2, overlaps


def test_a_killed_holders_slot_frees_when_its_lease_is_rescued(
        fair: Queue, db_url: str, tmp_path: Path) -> None:
    fair.enqueue_many(fair_app.fetch, [{"host": "slow.example", "n": i,
                                        "first_attempt_sleep": 3600} for i in range(2)])
    [victim] = start_workers(db_url, "fetch", 1, 4, tmp_path, lease=2.0)
    with psycopg.connect(db_url, autocommit=True) as conn:
        wait_until(lambda: conn.execute("SELECT count(*) FROM runs").fetchone()[0] == 2,
                   "the two holders to start")
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait(60)
    fair.enqueue_many(fair_app.fetch, [{"host": "slow.example", "n": i} for i in range(2, 8)])
    procs = start_workers(db_url, "fetch", 2, 4, tmp_path, lease=2.0)
    try:
        with Sampler(db_url) as sampler:
            wait_until(lambda: succeeded(db_url, "fetch") == 8, "all eight jobs, rescued too")
    finally:
        stop(procs)
    assert sampler.most["fetch:slow.example"] == 2
    with psycopg.connect(db_url, autocommit=True) as conn:
        rescued = conn.execute("SELECT count(*) FROM pgqueue.job_history WHERE rescues > 0"
                               ).fetchone()[0]
        first_new = conn.execute("SELECT min(started_at) FROM runs WHERE job_id IN "
                                 "(SELECT id FROM pgqueue.job_history WHERE rescues = 0)"
                                 ).fetchone()[0]
        killed_started = conn.execute("SELECT max(started_at) FROM runs WHERE ended_at IS NULL"
                                      ).fetchone()[0]
    assert rescued == 2
    assert first_new > killed_started


def test_one_start_per_second_per_key(fair: Queue, db_url: str, tmp_path: Path) -> None:
    """Issue 15's rate test: a limit of 1 start per second per key, two keys, two worker
    processes: over 10 s, 10 starts per key, give or take one (a count, not a timing). A
    backlog waits from the start, and new jobs keep coming (one per key every 0.2 s), so
    a job is always due whenever the window would let one more start."""
    fair.enqueue_many(fair_app.ping, [{"host": f"h{i % 2}", "n": i} for i in range(20)])
    stop_feeding = threading.Event()

    def feed() -> None:
        n = 1000
        while not stop_feeding.wait(0.2):
            for host in ("h0", "h1"):
                fair_app.ping.enqueue(host=host, n=n)
                n += 1

    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()
    procs = start_workers(db_url, "ping", 2, 4, tmp_path)
    try:
        with psycopg.connect(db_url, autocommit=True) as conn:
            def started(key: str) -> list[object]:
                return [r[0] for r in conn.execute(
                    "SELECT started_at FROM runs WHERE key = %s ORDER BY started_at", (key,))]
            wait_until(lambda: all(len(started(k)) >= 13 for k in ("h0", "h1")),
                       "13 starts per key")
            for key in ("h0", "h1"):
                times = started(key)
                first = times[0]
                window = conn.execute("SELECT %s::timestamptz + interval '10 seconds'",
                                      (first,)).fetchone()[0]
                within = sum(1 for t in times if t < window)  # type: ignore[operator]
                assert 9 <= within <= 11, (key, within, times)
            spacing = conn.execute(
                "SELECT min(gap) FROM (SELECT started_at - lag(started_at) OVER "
                "(PARTITION BY key ORDER BY started_at) AS gap FROM runs) g").fetchone()[0]
    finally:
        stop_feeding.set()
        feeder.join(30)
        stop(procs)
    # Each start was granted a second after the one before, by the database's clock; the
    # jobs record theirs a little later, so the gaps they see are close to a second.
    assert spacing.total_seconds() > 0.5, spacing


@settings(max_examples=6, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(limit=st.integers(1, 3), keys=st.integers(1, 4), claimers=st.integers(4, 8),
       seed=st.integers(0, 2**16))
def test_racing_claims_never_pass_a_limit(fair: Queue, db_url: str, limit: int, keys: int,
                                          claimers: int, seed: int) -> None:
    """Property: threads claiming and finishing at random, each on its own connection, never
    hold more than `limit` jobs of a key at once (checked from the database after every
    claim and by a sampler), and every job finishes."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("DELETE FROM pgqueue.jobs; DELETE FROM pgqueue.limit_keys")
    fair.set_limit(fair_app.fetch, Limit(key="host", concurrency=limit))
    total = 80
    ids = set(fair.enqueue_many(fair_app.fetch, [{"host": f"k{i % keys}", "n": i}
                                                 for i in range(total)]))
    finished: set[int] = set()
    worst: Counter[str] = Counter()
    lock = threading.Lock()
    errors: list[BaseException] = []

    def claimer(n: int) -> None:
        rng = random.Random(seed * 100 + n)
        held: list[tuple[int, int]] = []
        try:
            with fair.store.connect(autocommit=True) as conn:
                while True:
                    with lock:
                        if len(finished) == total:
                            return
                    for job in fair.store.claim(conn, worker_id=None, queues=["fetch"],
                                                limit=rng.randint(1, 4), lease_seconds=60):
                        held.append((job.id, job.attempt))
                    for row in conn.execute(
                            "SELECT limit_key, count(*) AS running FROM pgqueue.jobs "
                            "WHERE state = 'running' GROUP BY 1"):
                        with lock:
                            worst[row["limit_key"]] = max(worst[row["limit_key"]],
                                                          row["running"])
                    rng.shuffle(held)
                    cut = rng.randint(0, len(held))
                    done, held = held[:cut], held[cut:]
                    if done:
                        fair.store.finish(conn, [(i, a, "succeeded", None) for i, a in done],
                                          from_state="running")
                        with lock:
                            finished.update(i for i, _ in done)
                    elif not held:
                        time.sleep(0.01)  # parked jobs wait for the others' holders to end
        except BaseException as error:  # reported by the test thread
            errors.append(error)

    threads = [threading.Thread(target=claimer, args=(n,)) for n in range(claimers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not errors, errors
    assert finished == ids
    assert worst and max(worst.values()) <= limit, (worst, limit)
