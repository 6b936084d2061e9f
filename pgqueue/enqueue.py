"""Turning task calls into rows: one INSERT per batch, whatever the number of jobs."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from pgqueue.db import query
from pgqueue.sql import Statements
from pgqueue.tasks import JobSpec, Task, dump_args

DEFAULT_BATCH_SIZE = 5000  # rows per INSERT: one round trip each, bounded memory


@dataclass
class RowBatch:
    """Parallel arrays, the shape `insert_jobs` unnests."""

    queues: list[str] = field(default_factory=list)
    tasks: list[str] = field(default_factory=list)
    args: list[str] = field(default_factory=list)
    priorities: list[int] = field(default_factory=list)
    max_attempts: list[int] = field(default_factory=list)
    run_ats: list[datetime] = field(default_factory=list)
    group_ids: list[int | None] = field(default_factory=list)
    tags: list[str | None] = field(default_factory=list)
    dedupe_keys: list[str | None] = field(default_factory=list)
    timeouts: list[int | None] = field(default_factory=list)
    on_success: list[str | None] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.tasks)

    def add(self, task: Task, args: dict[str, Any], *, priority: int | None, run_at: datetime,
            group_id: int | None, tag: str | None, dedupe_key: str | None,
            on_success: Sequence[JobSpec] | None) -> None:
        self.queues.append(task.queue)
        self.tasks.append(task.name)
        self.args.append(dump_args(args))
        self.priorities.append(task.priority if priority is None else priority)
        self.max_attempts.append(task.max_attempts)
        self.run_ats.append(run_at)
        self.group_ids.append(group_id)
        self.tags.append(tag)
        self.dedupe_keys.append(dedupe_key)
        self.timeouts.append(task.timeout)
        self.on_success.append(json.dumps([s.to_json() for s in on_success]) if on_success else None)

    def params(self) -> dict[str, Any]:
        return dict(self.__dict__)


def run_at_for(run_at: datetime | None, delay: float | None) -> datetime:
    now = datetime.now(UTC)
    if run_at is not None:
        return run_at if run_at.tzinfo else run_at.replace(tzinfo=UTC)
    return now + timedelta(seconds=delay) if delay else now


def insert_batch(conn: psycopg.Connection[Any], statements: Statements, batch: RowBatch) -> list[int]:
    if not len(batch):
        return []
    row = query(conn, statements.insert_jobs, batch.params()).fetchone()
    assert row is not None
    return list(row["ids"])


def batched(items: Iterable[dict[str, Any]], size: int) -> Iterable[list[dict[str, Any]]]:
    chunk: list[dict[str, Any]] = []
    for item in items:
        chunk.append(item)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def to_jsonb(value: Any) -> Jsonb:
    return Jsonb(value)
