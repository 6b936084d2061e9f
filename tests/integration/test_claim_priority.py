"""Priority wins over the claim buffer: jobs a worker holds in memory never let a backlog
of lower-priority work run ahead of a higher-priority run's next step.

Orders of execution, never timings: one slot, so the order the tasks record is the order
the worker ran them.
"""

from __future__ import annotations

import time

from pgqueue import Queue
from pgqueue.claiming import ClaimSizer
from pgqueue.worker import Worker

HIGH = 10


def test_a_high_priority_chain_is_not_overtaken_by_buffered_backlog(db_url: str) -> None:
    app = Queue(db_url)
    ran: list[str] = []
    workers: list[Worker] = []
    try:
        @app.task(name="low", queue="backlog")
        def low(i: int) -> None:
            ran.append("low")

        @app.task(name="step", queue="run")
        def step(name: str, spawn: str | None = None) -> None:
            ran.append(name)
            if spawn is None:
                return
            # More backlog arrives while the run's first step runs: its NOTIFY makes the
            # worker top its buffer up now, before the step enqueues its next one.
            trips = workers[0].stats.claim_round_trips
            low.enqueue(i=-1)
            deadline = time.monotonic() + 60
            while workers[0].stats.claim_round_trips == trips:
                assert time.monotonic() < deadline, "the worker never claimed again"
                time.sleep(0.01)
            step.enqueue(name=spawn, priority=HIGH)  # the next step, enqueued by this one

        app.enqueue_many(low, [{"i": i} for i in range(200)])
        # `chained` follows the first step through on_success: inserted when its finish
        # is recorded, in the round trip that claims what runs next.
        step.enqueue(name="first", spawn="spawned", priority=HIGH,
                     on_success=[step.spec(name="chained").then(step.spec(name="last"))])
        # prefetch=50: a buffer of 50 jobs from the first claim on, nothing to measure.
        workers.append(app.worker(["backlog", "run"], concurrency=1, burst=True, prefetch=50,
                                  poll_interval=0.2, install_signals=False))
        assert workers[0].run() == 0
    finally:
        app.close()
    assert len(ran) == 205
    run_steps = [i for i, name in enumerate(ran) if name != "low"]
    assert [ran[i] for i in run_steps] == ["first", "spawned", "chained", "last"]
    assert run_steps == [0, 1, 2, 3], f"backlog jobs ran inside the high-priority run: {ran[:8]}"


def test_a_claim_returns_its_jobs_in_the_order_they_should_run(db_url: str) -> None:
    """The slots take claimed jobs in the order the claim returns them: best first."""
    app = Queue(db_url)
    try:
        @app.task(name="low", queue="backlog")
        def low(i: int) -> None: ...

        @app.task(name="high", queue="run")
        def high(i: int) -> None: ...

        @app.task(name="solo", queue="solo")
        def solo(i: int) -> None: ...

        app.enqueue_many(low, [{"i": i} for i in range(200)])
        high.enqueue(i=0, priority=HIGH)
        app.enqueue_many(solo, [{"i": i} for i in range(200)])
        solo.enqueue(i=-1, priority=HIGH)
        for queues in (["backlog", "run"], ["solo"]):
            with app.store.connect(autocommit=True) as conn:
                jobs = app.store.claim(conn, worker_id=None, queues=queues, limit=51,
                                       lease_seconds=30)
            assert len(jobs) == 51
            assert [job.priority for job in jobs] == [HIGH] + [0] * 50, queues
            assert [job.id for job in jobs[1:]] == sorted(job.id for job in jobs[1:])
    finally:
        app.close()


def test_jobs_of_a_queue_not_yet_measured_are_not_hoarded(db_url: str) -> None:
    """A worker whose `fast` queue is measured (a large buffer) still claims the jobs of
    `slow`, whose run time it does not know yet, only for its free slot."""
    app = Queue(db_url)
    held: list[int] = []
    try:
        @app.task(name="fast", queue="fast")
        def fast() -> None: ...

        @app.task(name="slow", queue="slow")
        def slow() -> None:
            with app.session() as conn:  # slow jobs this worker holds, this one included
                row = conn.execute("SELECT count(*) AS n FROM pgqueue.jobs"
                                   " WHERE queue = 'slow' AND state = 'running'").fetchone()
            held.append(row["n"])

        fast.enqueue()  # first: measured before any slow job is claimed
        app.enqueue_many(slow, [{} for _ in range(5)])
        worker = app.worker(["fast", "slow"], concurrency=1, burst=True, poll_interval=0.2,
                            install_signals=False)
        assert worker.run() == 0
    finally:
        app.close()
    # The first slow job ran alone: the others stayed queued for any worker to take. (Once
    # one has finished, slow's run time is known, and these no-op jobs may be buffered.)
    assert len(held) == 5 and held[0] == 1, held


def test_the_sizer_names_the_queues_it_may_buffer() -> None:
    sizer = ClaimSizer(concurrency=2)
    assert sizer.buffered_queues() == []  # nothing measured: free slots only, any queue
    sizer.observe_job("fast", 0.001)
    sizer.observe_job("ocr", 30.0)
    assert sizer.buffered_queues() == ["fast", "ocr"]
    assert ClaimSizer(concurrency=2, prefetch=10).buffered_queues() is None  # the user's call
