"""Workers killed with SIGKILL at random, all through a run: nothing lost, fan-in exactly once.

Lesson from the queue this replaces: "a worker killed mid-page was never counted, and over a
hundred sites sat stuck". Here the lease runs out, the reaper puts the job back, and the
group counts it once when it finally finishes.
"""

from __future__ import annotations

import dataclasses
import random
import threading

import pytest

from pgqueue import Queue, Task
from tests.chaos.conftest import Fleet, scalar, scaled, wait_for
from tests.support import worker_app

JOBS = scaled(3_000, 10_000)
GROUP_SIZE = 100
WORKERS = 4
CONCURRENCY = 6
# Kill while most of the run is in flight, then let the tail finish: a job caught in the
# killer's path MAX_RESCUES times is failed on purpose (a poison job), which a random killer
# running to the very last job could do to an innocent one.
KILL_UNTIL_FRACTION = 0.9


def enqueue_groups(app: Queue, jobs: int, task: Task = worker_app.record) -> list[int]:
    # Five attempts (the rescue cap) instead of the task's three: this test is about kills,
    # and a job may be in a killed worker's hands more than twice.
    record = dataclasses.replace(task, max_attempts=5)
    group_ids = []
    items = list(range(1, jobs + 1))
    for start in range(0, jobs, GROUP_SIZE):
        chunk = items[start:start + GROUP_SIZE]
        with app.group(f"death-{start}", on_complete=[worker_app.collect.spec(label=f"g{start}")]) as group:
            group.enqueue_many(record, [{"item": i} for i in chunk])
        group_ids.append(group.id)
    return group_ids


# The same run with the members as `async def` tasks (tests.support.worker_app.arecord): a
# worker SIGKILLed with dozens of coroutines in flight on its event loop loses none of them.
@pytest.mark.slow
@pytest.mark.timeout(scaled(240, 900))
@pytest.mark.parametrize("task", [worker_app.record, worker_app.arecord], ids=["sync", "async"])
def test_random_sigkill_loses_nothing_and_fires_each_group_once(
        task: Task, app: Queue, db_url: str, fleet: Fleet, monkeypatch: pytest.MonkeyPatch) -> None:
    # Each arecord opens a connection for its effect: 4 workers x 20 stay within the server's.
    monkeypatch.setenv("PGQUEUE_APP_ASYNC_CONCURRENCY", "20")
    group_ids = enqueue_groups(app, JOBS, task)
    for _ in range(WORKERS):
        fleet.start(db_url, f"{task.queue},followup", concurrency=CONCURRENCY, lease=2, poll=1)

    kills = 0
    stop = threading.Event()
    rng = random.Random(7)
    errors: list[BaseException] = []

    def killer() -> None:
        nonlocal kills
        try:
            while not stop.wait(rng.uniform(0.2, 0.5)):
                done = scalar(db_url, "SELECT count(*) FROM pgqueue.job_history WHERE task = %s",
                              (task.name,))
                if done >= JOBS * KILL_UNTIL_FRACTION:
                    return
                victims = fleet.alive()
                if victims:
                    fleet.kill(rng.choice(victims))
                    kills += 1
                fleet.start(db_url, f"{task.queue},followup", concurrency=CONCURRENCY, lease=2, poll=1)
        except BaseException as error:
            errors.append(error)

    thread = threading.Thread(target=killer, name="killer", daemon=True)
    thread.start()
    try:
        wait_for(lambda: scalar(db_url, "SELECT count(*) FROM pgqueue.job_history "
                                        "WHERE task = 'collect'") >= len(group_ids)
                 and scalar(db_url, "SELECT count(*) FROM pgqueue.jobs") == 0,
                 timeout=scaled(200, 800), what=f"{JOBS} jobs and {len(group_ids)} follow-ups to finish",
                 interval=0.5, watch=fleet)
    finally:
        stop.set()
        thread.join(10)
    assert not errors, errors
    fleet.stop_all()
    # Finishing a batch (finish_jobs) and the heartbeat (lease extension) lock the same job
    # rows in different orders; PostgreSQL breaks the deadlock and the worker retries.
    print(f"\n'deadlock detected' in worker logs: {fleet.logs().count('deadlock detected')} times")

    history = dict(scalar(db_url, "SELECT array_agg(ARRAY[state::text, count::text]) FROM "
                                  "(SELECT state, count(*) FROM pgqueue.job_history "
                                  "WHERE task = %s GROUP BY state) s", (task.name,)) or [])
    rescued = scalar(db_url, "SELECT count(*) FROM pgqueue.job_history WHERE rescues > 0")
    print(f"\n{JOBS} jobs, {kills} workers killed, {rescued} jobs rescued after a kill, "
          f"history {history}")
    assert kills >= 5, "the killer barely ran; the test proves nothing"
    assert rescued > 0, "no job was ever in a killed worker's hands"

    # Every job finished exactly once, and succeeded; none is left in the live table.
    assert history == {"succeeded": str(JOBS)}
    assert scalar(db_url, "SELECT count(DISTINCT (args->>'item')::int) FROM pgqueue.job_history "
                          "WHERE task = %s", (task.name,)) == JOBS
    assert scalar(db_url, "SELECT count(*) FROM pgqueue.jobs") == 0

    # At least once: every item's side effect happened (twice is allowed, never zero).
    missing = scalar(db_url, "SELECT count(*) FROM generate_series(1, %s) AS i "
                             "WHERE NOT EXISTS (SELECT 1 FROM effects e WHERE e.item = i)", (JOBS,))
    assert missing == 0
    repeated = scalar(db_url, "SELECT count(*) FROM (SELECT item FROM effects WHERE item > 0 "
                              "GROUP BY item HAVING count(*) > 1) r")
    print(f"{repeated} items ran more than once (allowed: at-least-once)")

    # Fan-in exactly once: one follow-up job per group, and its effect recorded.
    per_group = scalar(db_url, "SELECT array_agg(n ORDER BY g) FROM (SELECT origin_group_id g, "
                               "count(*) n FROM pgqueue.job_history WHERE task = 'collect' "
                               "GROUP BY 1) c")
    assert per_group == [1] * len(group_ids)
    assert scalar(db_url, "SELECT count(*) FROM pgqueue.job_history WHERE task = 'collect' "
                          "AND state = 'succeeded' AND origin_group_id = ANY(%s)",
                  (group_ids,)) == len(group_ids)
    assert scalar(db_url, "SELECT count(DISTINCT e.job_id) FROM effects e JOIN pgqueue.job_history h "
                          "ON h.id = e.job_id WHERE e.item = 0 AND h.task = 'collect'") == len(group_ids)
    assert scalar(db_url, "SELECT count(*) FROM pgqueue.groups WHERE completed_at IS NOT NULL "
                          "AND pending = 0 AND failed = 0") == len(group_ids)
