"""Prometheus metrics for pgqueue, filled at scrape time from the database or in process.

Workers are separate processes, so in-process counters in the supervisor would see none
of their jobs, and prometheus_client's multiprocess mode needs a shared directory and
cleanup of dead pids. The jobs table already knows everything, so the preferred source
is a `fetch` callable that reads the monitoring views when /metrics is scraped and
returns a `Snapshot`. Without `fetch` (a single-process worker, a test), the methods
`job_started()`, `job_finished()`, `set_queue_depth()` and `set_workers()` feed the same
metrics directly. With `fetch`, every key present in the snapshot wins over the
in-process values for its metrics, and absent keys fall back to them; a host can thus
report its own live children (`set_workers()` from the supervisor) next to queue depth
read from the database.

Metrics (labels in braces):

    pgqueue_jobs_started_total{queue,task}
    pgqueue_jobs_succeeded_total{queue,task}
    pgqueue_jobs_failed_total{queue,task}       attempts that ended in an error
    pgqueue_job_duration_seconds{queue,task}    histogram, 1 ms .. 1 h (DURATION_BUCKETS)
    pgqueue_queue_depth{queue,state}            gauge
    pgqueue_workers_alive{queue}                gauge
    pgqueue_snapshot_ok                         1 if the last fetch worked, else 0

Counters read from the database must not go down: count from rows that pruning keeps
(or a running total), or Prometheus sees each prune as a counter reset. The duration
histogram is such a running total (`DurationTally`): each scrape adds the jobs finished
since the previous one, read through an index, so a scrape costs the same whatever the
history holds, and no bucket ever goes down (a host restart is an ordinary reset).
"""

from __future__ import annotations

import bisect
import logging
import math
import threading
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import TypedDict

from prometheus_client import CollectorRegistry
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

__all__ = ["DEPTH_STATES", "DURATION_BUCKETS", "DurationTally", "Metrics", "Snapshot",
           "SnapshotCollector"]

logger = logging.getLogger(__name__)

# From a 1 ms no-op to an hour-long extraction, roughly x2.5 apart: 21 buckets.
DURATION_BUCKETS: tuple[float, ...] = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0,
)
# States shown as 0 for every known queue, so an empty queue never vanishes from a graph.
DEPTH_STATES: tuple[str, ...] = ("queued", "scheduled", "running")

DurationValue = Sequence[float] | Mapping[str, float | Mapping[float, float]]


class Snapshot(TypedDict, total=False):
    """What a `fetch` callable returns; every key is optional.

    depth:     (queue, state, jobs)                 from the queue_depth view
    workers:   (queue, alive worker processes)
    started:   (queue, task, jobs)                  defaults to the sum of `finished`
    finished:  (queue, task, state, jobs)           state: succeeded, failed (others ignored)
    durations: (queue, task, seconds) where seconds is either a list of job durations or
               {"sum": s, "count": n, "buckets": {upper_bound: cumulative_count}}, the
               form SQL computes cheaply with count(*) FILTER (WHERE seconds <= bound)
               for each bound in DURATION_BUCKETS ("buckets" may be left out).
    """

    depth: Sequence[tuple[str, str, int]]
    workers: Sequence[tuple[str, int]]
    started: Sequence[tuple[str, str, int]]
    finished: Sequence[tuple[str, str, str, int]]
    durations: Sequence[tuple[str, str, DurationValue]]


class _Histogram:
    """Per-label bucket counts (not cumulative), sum and count."""

    def __init__(self, buckets: Sequence[float]) -> None:
        self.bounds = tuple(buckets)
        self.counts = [0.0] * (len(self.bounds) + 1)  # the last one is +Inf
        self.total = 0.0
        self.count = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, seconds)] += 1
        self.total += seconds
        self.count += 1

    def cumulative(self) -> list[tuple[str, float]]:
        running = 0.0
        rows = []
        for bound, count in zip((*self.bounds, math.inf), self.counts, strict=True):
            running += count
            rows.append((_le(bound), running))
        return rows


class DurationTally:
    """Running duration histograms of finished jobs, fed from the database at each scrape.

    A scrape takes `lock`, asks the database for the jobs finished since `since` (the
    `durations_between` statement: counts per queue, task and bucket, already summed),
    `add`s them and moves `since` on; the first scrape starts `window` seconds back, so a
    new host shows the recent past at once. `value()` gives the snapshot's durations.
    """

    def __init__(self, buckets: Sequence[float] = DURATION_BUCKETS, window: float = 3600.0) -> None:
        self.bounds = tuple(sorted(buckets))
        self.window = window
        self.since: object = None  # the database's timestamp; None before the first scrape
        self.lock = threading.Lock()
        self._histograms: dict[tuple[str, str], _Histogram] = {}

    def params(self, settle: float) -> dict[str, object]:
        """The statement's parameters (see `durations_between` in queries.sql)."""
        return {"since": self.since, "window": self.window, "settle": settle,
                "negated": [-bound for bound in reversed(self.bounds)]}

    def add(self, queue: str, task: str, bucket: int, jobs: int, seconds: float) -> None:
        """`jobs` more in bucket `bucket` (how many bounds lie below their run times)."""
        histogram = self._histograms.get((queue, task))
        if histogram is None:
            histogram = self._histograms[(queue, task)] = _Histogram(self.bounds)
        histogram.counts[min(max(bucket, 0), len(self.bounds))] += jobs
        histogram.total += seconds
        histogram.count += jobs

    def value(self) -> list[tuple[str, str, DurationValue]]:
        """(queue, task, {"sum", "count", "buckets"}) for `Snapshot.durations`."""
        rows: list[tuple[str, str, DurationValue]] = []
        for (queue, task), histogram in sorted(self._histograms.items()):
            running, buckets = 0.0, {}
            for bound, count in zip(self.bounds, histogram.counts, strict=False):
                running += count
                buckets[bound] = running
            rows.append((queue, task, {"sum": histogram.total, "count": histogram.count,
                                       "buckets": buckets}))
        return rows


def _le(bound: float) -> str:
    return "+Inf" if math.isinf(bound) else repr(float(bound))


class SnapshotCollector(Collector):
    """Builds every pgqueue metric at scrape time from a snapshot and in-process values."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def describe(self) -> Iterable[Metric]:
        # Names only, so that registering checks for clashes without querying the database.
        return list(self._families())

    def collect(self) -> Iterable[Metric]:
        snapshot: Snapshot = {}
        ok = True
        if self._metrics.fetch is not None:
            try:
                snapshot = self._metrics.fetch()
            except Exception as error:  # noqa: BLE001 - a scrape must answer with the DB down
                ok = False
                logger.warning("metrics snapshot failed: %s", error,
                               extra={"action": "metrics_snapshot_failed"})
        return list(self._families(snapshot, ok))

    def _families(self, snapshot: Snapshot | None = None, ok: bool = True) -> Iterator[Metric]:
        local = self._metrics
        started = CounterMetricFamily("pgqueue_jobs_started", "Jobs started (attempts).",
                                      labels=["queue", "task"])
        succeeded = CounterMetricFamily("pgqueue_jobs_succeeded", "Jobs that succeeded.",
                                        labels=["queue", "task"])
        failed = CounterMetricFamily("pgqueue_jobs_failed", "Job attempts that ended in an error.",
                                     labels=["queue", "task"])
        durations = HistogramMetricFamily("pgqueue_job_duration_seconds",
                                          "Time from start to finish of a job attempt.",
                                          labels=["queue", "task"])
        depth = GaugeMetricFamily("pgqueue_queue_depth", "Jobs by queue and state.",
                                  labels=["queue", "state"])
        workers = GaugeMetricFamily("pgqueue_workers_alive", "Worker processes alive.",
                                    labels=["queue"])
        up = GaugeMetricFamily("pgqueue_snapshot_ok",
                               "1 if the last database snapshot for these metrics worked.")
        if snapshot is None:
            yield from (started, succeeded, failed, durations, depth, workers, up)
            return

        with local.lock:
            counts = {key: dict(values) for key, values in local.counters.items()}
            histograms = {labels: (h.cumulative(), h.total) for labels, h in local.histograms.items()}
            depth_rows = dict(local.depth)
            worker_rows = dict(local.workers)

        if "finished" in snapshot:
            counts["succeeded"] = defaultdict(float)
            counts["failed"] = defaultdict(float)
            finished_sum: dict[tuple[str, str], float] = defaultdict(float)
            for queue, task, state, jobs in snapshot["finished"]:
                finished_sum[(queue, task)] += jobs
                if state in ("succeeded", "failed"):
                    counts[state][(queue, task)] += jobs
            if "started" not in snapshot:
                counts["started"] = dict(finished_sum)
        if "started" in snapshot:
            counts["started"] = {(queue, task): float(jobs)
                                 for queue, task, jobs in snapshot["started"]}
        if "durations" in snapshot:
            histograms = {(queue, task): _histogram_rows(value, local.buckets)
                          for queue, task, value in snapshot["durations"]}
        if "depth" in snapshot:
            depth_rows = {(queue, state): float(jobs) for queue, state, jobs in snapshot["depth"]}
        if "workers" in snapshot:
            worker_rows = {queue: float(alive) for queue, alive in snapshot["workers"]}

        for queue in local.queues:
            for state in DEPTH_STATES:
                depth_rows.setdefault((queue, state), 0.0)
            worker_rows.setdefault(queue, 0.0)

        for family, name in ((started, "started"), (succeeded, "succeeded"), (failed, "failed")):
            for (queue, task), value in sorted(counts.get(name, {}).items()):
                family.add_metric([queue, task], value)
        for (queue, task), (buckets, total) in sorted(histograms.items()):
            durations.add_metric([queue, task], buckets, total)
        for (queue, state), value in sorted(depth_rows.items()):
            depth.add_metric([queue, state], value)
        for queue, value in sorted(worker_rows.items()):
            workers.add_metric([queue], value)
        up.add_metric([], 1.0 if ok else 0.0)
        yield from (started, succeeded, failed, durations, depth, workers, up)


def _histogram_rows(value: DurationValue, bounds: Sequence[float]) -> tuple[list[tuple[str, float]], float]:
    """Turn a snapshot's durations (a list, or sum/count/buckets) into histogram rows."""
    if isinstance(value, Mapping):
        total = float(value.get("sum", 0.0))  # type: ignore[arg-type]
        count = float(value.get("count", 0.0))  # type: ignore[arg-type]
        given = value.get("buckets") or {}
        assert isinstance(given, Mapping)
        rows = [(_le(bound), float(given[bound])) for bound in sorted(given) if
                not math.isinf(bound)]
        return [*rows, ("+Inf", count)], total
    histogram = _Histogram(bounds)
    for seconds in value:
        histogram.observe(float(seconds))
    return histogram.cumulative(), histogram.total


class Metrics:
    """The pgqueue metrics in their own CollectorRegistry (scrape it with /metrics).

    queues: names that always appear (with 0) in depth and workers, so a quiet queue is
    still visible. fetch: called at each scrape; see `Snapshot` and the module docstring.
    """

    def __init__(
        self,
        *,
        fetch: Callable[[], Snapshot] | None = None,
        queues: Iterable[str] = (),
        registry: CollectorRegistry | None = None,
        buckets: Sequence[float] = DURATION_BUCKETS,
    ) -> None:
        self.fetch = fetch
        self.queues = tuple(queues)
        self.buckets = tuple(sorted(buckets))
        self.registry = registry if registry is not None else CollectorRegistry()
        self.lock = threading.Lock()
        self.counters: dict[str, dict[tuple[str, str], float]] = {
            "started": defaultdict(float),
            "succeeded": defaultdict(float),
            "failed": defaultdict(float),
        }
        self.histograms: dict[tuple[str, str], _Histogram] = {}
        self.depth: dict[tuple[str, str], float] = {}
        self.workers: dict[str, float] = {}
        self.collector = SnapshotCollector(self)
        self.registry.register(self.collector)

    def job_started(self, queue: str, task: str) -> None:
        """Count one attempt of `task` starting on `queue`."""
        with self.lock:
            self.counters["started"][(queue, task)] += 1

    def job_finished(self, queue: str, task: str, outcome: str, seconds: float) -> None:
        """Record one attempt's end: outcome 'succeeded', or 'failed'/'retried' (an error).

        Other outcomes ('cancelled', 'lost') only add to the duration histogram.
        """
        with self.lock:
            if outcome == "succeeded":
                self.counters["succeeded"][(queue, task)] += 1
            elif outcome in ("failed", "retried"):
                self.counters["failed"][(queue, task)] += 1
            histogram = self.histograms.get((queue, task))
            if histogram is None:
                histogram = self.histograms[(queue, task)] = _Histogram(self.buckets)
            histogram.observe(max(0.0, seconds))

    def set_queue_depth(self, rows: Iterable[tuple[str, str, int]]) -> None:
        """Replace the depth gauge with (queue, state, jobs) rows, e.g. from queue_depth."""
        fresh = {(queue, state): float(jobs) for queue, state, jobs in rows}
        with self.lock:
            self.depth = fresh

    def set_workers(self, counts: Mapping[str, int] | Iterable[tuple[str, int]]) -> None:
        """Replace the workers gauge: {queue: alive} or (queue, alive) pairs."""
        pairs = counts.items() if isinstance(counts, Mapping) else counts
        fresh = {queue: float(alive) for queue, alive in pairs}
        with self.lock:
            self.workers = fresh
