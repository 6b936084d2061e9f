"""clerk's fetches are limited per source host (FETCH_PER_HOST, FETCH_RATE_PER_HOST) across
every machine: sites of one platform host wait their turn, others go on."""

from __future__ import annotations

from collections.abc import Callable

from clerk.config import Settings, load_settings
from clerk.pipeline import Pipeline
from tests.acceptance.conftest import Cli


def test_fetches_of_one_source_host_are_limited(cli: Cli, clerk_env: dict[str, str],
                                                make_pipeline: Callable[[Settings], Pipeline]
                                                ) -> None:
    pipeline = make_pipeline(load_settings(None, {**clerk_env, "CLERK_FETCH_PER_HOST": "2",
                                                  "CLERK_FETCH_RATE_PER_HOST": "0"}))
    for n in range(4):
        cli("site", "add", f"city{n}", "--url", f"https://Meetings.Example.org/city{n}/")
    cli("site", "add", "elsewhere", "--url", "https://elsewhere.example.net/agendas/")
    pipeline.enqueue_site("city0")  # one by one, and the rest in bulk: both carry the host
    cli("enqueue", "--all")
    pipeline.queue.worker(["fetch"])  # a worker declares its tasks' limits
    [limit] = pipeline.queue.limit_usage() or [None]
    with pipeline.queue.store.connect(autocommit=True) as conn:
        jobs = pipeline.queue.store.claim(conn, worker_id=None, queues=["fetch"], limit=10,
                                          lease_seconds=60)
        hosts = sorted(str(job.args["host"]) for job in jobs)
        assert hosts == ["elsewhere.example.net", "meetings.example.org",
                         "meetings.example.org"]
        usage = {row["key"]: (row["running"], row["parked"], row["concurrency"], row["rate"])
                 for row in pipeline.queue.limit_usage()}
    assert limit is None  # nothing in use before the first claim
    assert usage == {"meetings.example.org": (2, 2, 2, None),
                     "elsewhere.example.net": (1, 0, 2, None)}


def test_the_fetch_rate_is_per_minute_by_default(settings: Settings) -> None:
    from clerk.pipeline import fetch_limit
    limit = fetch_limit(settings)
    assert (limit.key, limit.concurrency, limit.rate, limit.per) == ("host", 2, 30, 60.0)
    assert fetch_limit(load_settings(None, {"CLERK_FETCH_RATE_PER_HOST": "0"})).rate is None
