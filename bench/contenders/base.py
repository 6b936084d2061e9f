"""What every contender provides to the figures: schema, producer, workers, counters.

The parent process talks to a contender through a `Producer` (enqueue one job or a
batch) and a plain psycopg connection (`pending`, table sizes). Workers run in child
processes started with `spawn`, so each imports its queue library fresh, as a real
worker would; `work` is called in the child after every worker has connected and the
start barrier has opened.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg

THROUGHPUT_TASK = "noop"
LATENCY_TASK = "stamp"
QUEUE = "bench"


class Producer:
    """Enqueues jobs from the benchmark process. `task` is THROUGHPUT_TASK or LATENCY_TASK."""

    def one(self, i: int, task: str = THROUGHPUT_TASK) -> None:
        raise NotImplementedError

    def each(self, numbers: Sequence[int]) -> None:
        """Enqueue one by one: one call, one transaction per job."""
        for i in numbers:
            self.one(i)

    def bulk(self, numbers: Sequence[int]) -> None:
        """Enqueue with the contender's batch API (one call for all `numbers`)."""
        raise NotImplementedError

    def close(self) -> None:
        pass


@dataclass
class Layout:
    """How workers are laid out: processes, and the contender's own knobs for each."""

    processes: int
    options: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> str:
        knobs = " ".join(f"{k}={v}" for k, v in self.options.items())
        return f"{self.processes} proc" + (f" {knobs}" if knobs else "")


class Contender:
    name = ""
    label = ""
    queue_table = ""  # the table live jobs sit in
    tables: tuple[str, ...] = ()  # every table the system writes per job

    def version(self) -> str:
        return ""

    def install(self, dsn: str) -> None:
        raise NotImplementedError

    def producer(self, dsn: str) -> Producer:
        raise NotImplementedError

    def layout(self, processes: int, overrides: dict[str, Any] | None = None) -> Layout:
        return Layout(processes, dict(overrides or {}))

    def best_layout(self) -> Layout:
        """The layout that drains fastest on the 2-core machine (`python -m bench --tune`)."""
        return self.layout(4)

    def default_layout(self) -> Layout:
        """What a user writes first. For a peer: its best layout, the bar to clear."""
        return self.best_layout()

    def layout_2x8(self) -> Layout:
        """Two processes of 8 slots, no options. For a peer: its best layout."""
        return self.best_layout()

    def pending(self, conn: psycopg.Connection[Any]) -> int:
        """Jobs not yet finished (queued or running), by one cheap query."""
        raise NotImplementedError

    @staticmethod
    def work(dsn: str, options: dict[str, Any], burst: bool, ready: Any) -> None:
        """In a worker process: set up, `ready.wait()` (the start barrier), then work."""
        raise NotImplementedError


def count(conn: psycopg.Connection[Any], query: str) -> int:
    row = conn.execute(query).fetchone()  # type: ignore[arg-type]
    assert row is not None
    return int(row[0])
