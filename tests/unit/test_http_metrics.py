"""The health/metrics endpoint over real HTTP on 127.0.0.1, and the metrics it serves."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import pytest
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from pgqueue.http import HealthServer, serve_health_and_metrics
from pgqueue.metrics import DURATION_BUCKETS, Metrics, Snapshot

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
def serve() -> Iterator[Callable[..., HealthServer]]:
    servers: list[HealthServer] = []

    def serve(health: Callable[[], Mapping[str, Any]],
              registry: CollectorRegistry | None = None) -> HealthServer:
        server = serve_health_and_metrics(health=health, registry=registry)
        servers.append(server)
        return server

    yield serve
    for server in servers:
        server.close()


def get(url: str) -> tuple[int, str, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.headers["Content-Type"], response.read()
    except urllib.error.HTTPError as error:
        with error:
            return error.code, error.headers["Content-Type"], error.read()


def samples(body: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a Prometheus text page, keyed by name and sorted labels."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(body.decode())
        for sample in family.samples
    }


def test_health_is_200_when_ok_and_503_otherwise(serve: Callable[..., HealthServer]) -> None:
    report: dict[str, Any] = {"status": "ok", "workers": {"ocr": 2}}
    server = serve(lambda: report)
    assert server.host == "127.0.0.1"
    assert server.port > 0
    code, kind, body = get(server.url + "/health")
    assert (code, kind) == (200, "application/json")
    assert json.loads(body) == report
    report["status"] = "crash_loop"
    code, _, body = get(server.url + "/health")
    assert code == 503
    assert json.loads(body)["status"] == "crash_loop"


def test_a_failing_health_check_is_a_503_not_a_dead_server(
        serve: Callable[..., HealthServer]) -> None:
    def broken() -> dict[str, Any]:
        raise RuntimeError("database unreachable")

    server = serve(broken)
    code, _, body = get(server.url + "/health")
    assert code == 503
    assert json.loads(body) == {"status": "error", "error": "database unreachable"}
    assert get(server.url + "/health")[0] == 503  # still serving


def test_unknown_paths_are_404(serve: Callable[..., HealthServer]) -> None:
    server = serve(lambda: {"status": "ok"})
    assert get(server.url + "/")[0] == 404
    assert get(server.url + "/metrics")[0] == 404  # no registry given
    assert get(server.url + "/health/../etc")[0] == 404


def test_metrics_from_in_process_calls(serve: Callable[..., HealthServer]) -> None:
    metrics = Metrics(queues=["ocr", "deploy"])
    metrics.job_started("ocr", "ocr_page")
    metrics.job_started("ocr", "ocr_page")
    metrics.job_finished("ocr", "ocr_page", "succeeded", 0.004)
    metrics.job_finished("ocr", "ocr_page", "failed", 42.0)
    metrics.set_queue_depth([("ocr", "queued", 7), ("ocr", "running", 2)])
    metrics.set_workers({"ocr": 2})
    server = serve(lambda: {"status": "ok"}, metrics.registry)

    code, kind, body = get(server.url + "/metrics")
    assert code == 200
    assert kind == CONTENT_TYPE_LATEST
    found = samples(body)
    ocr = (("queue", "ocr"), ("task", "ocr_page"))
    assert found[("pgqueue_jobs_started_total", ocr)] == 2
    assert found[("pgqueue_jobs_succeeded_total", ocr)] == 1
    assert found[("pgqueue_jobs_failed_total", ocr)] == 1
    assert found[("pgqueue_job_duration_seconds_count", ocr)] == 2
    assert found[("pgqueue_job_duration_seconds_sum", ocr)] == pytest.approx(42.004)
    assert found[("pgqueue_job_duration_seconds_bucket", (("le", "0.005"), *ocr))] == 1
    assert found[("pgqueue_job_duration_seconds_bucket", (("le", "30.0"), *ocr))] == 1
    assert found[("pgqueue_job_duration_seconds_bucket", (("le", "60.0"), *ocr))] == 2
    assert found[("pgqueue_queue_depth", (("queue", "ocr"), ("state", "queued")))] == 7
    # a known queue with nothing in it still shows up, as zeros
    assert found[("pgqueue_queue_depth", (("queue", "deploy"), ("state", "queued")))] == 0
    assert found[("pgqueue_workers_alive", (("queue", "deploy"),))] == 0
    assert found[("pgqueue_workers_alive", (("queue", "ocr"),))] == 2
    assert found[("pgqueue_snapshot_ok", ())] == 1


def test_metrics_from_a_database_snapshot_at_scrape_time(
        serve: Callable[..., HealthServer]) -> None:
    scrapes = []

    def fetch() -> Snapshot:
        scrapes.append(1)
        return {
            "depth": [("ocr", "queued", 120), ("ocr", "failed", 3)],
            "workers": [("ocr", 8)],
            "finished": [("ocr", "ocr_page", "succeeded", 50), ("ocr", "ocr_page", "failed", 3),
                         ("ocr", "ocr_page", "cancelled", 1)],
            "durations": [
                ("ocr", "ocr_page", [0.5, 1.5, 2.0]),
                ("fetch", "fetch", {"sum": 30.0, "count": 2, "buckets": {10.0: 1, 60.0: 2}}),
            ],
        }

    metrics = Metrics(fetch=fetch, queues=["ocr"])
    metrics.set_workers({"ocr": 1})  # the snapshot's own value wins
    server = serve(lambda: {"status": "ok"}, metrics.registry)
    assert scrapes == []  # registering did not query the database

    found = samples(get(server.url + "/metrics")[2])
    assert scrapes == [1]
    ocr = (("queue", "ocr"), ("task", "ocr_page"))
    assert found[("pgqueue_jobs_succeeded_total", ocr)] == 50
    assert found[("pgqueue_jobs_failed_total", ocr)] == 3
    assert found[("pgqueue_jobs_started_total", ocr)] == 54
    assert found[("pgqueue_workers_alive", (("queue", "ocr"),))] == 8
    assert found[("pgqueue_queue_depth", (("queue", "ocr"), ("state", "failed")))] == 3
    assert found[("pgqueue_queue_depth", (("queue", "ocr"), ("state", "running")))] == 0
    assert found[("pgqueue_job_duration_seconds_count", ocr)] == 3
    assert found[("pgqueue_job_duration_seconds_bucket",
                  (("le", "1.0"), ("queue", "ocr"), ("task", "ocr_page")))] == 1
    fetch_labels = (("le", "10.0"), ("queue", "fetch"), ("task", "fetch"))
    assert found[("pgqueue_job_duration_seconds_bucket", fetch_labels)] == 1
    assert found[("pgqueue_job_duration_seconds_sum",
                  (("queue", "fetch"), ("task", "fetch")))] == 30


def test_a_failing_snapshot_still_answers_and_says_so(
        serve: Callable[..., HealthServer]) -> None:
    def fetch() -> Snapshot:
        raise ConnectionError("database unreachable")

    metrics = Metrics(fetch=fetch, queues=["ocr"])
    server = serve(lambda: {"status": "ok"}, metrics.registry)
    code, _, body = get(server.url + "/metrics")
    assert code == 200
    found = samples(body)
    assert found[("pgqueue_snapshot_ok", ())] == 0
    assert found[("pgqueue_workers_alive", (("queue", "ocr"),))] == 0


def test_buckets_span_a_millisecond_to_an_hour() -> None:
    assert DURATION_BUCKETS[0] == 0.001
    assert DURATION_BUCKETS[-1] == 3600
    assert list(DURATION_BUCKETS) == sorted(DURATION_BUCKETS)
