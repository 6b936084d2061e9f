"""Groups: fan-out to many members, fan-in to follow-up jobs exactly once.

A group row counts its unfinished members (`pending`). Adding members increments it in the
transaction that inserts them; a member reaching a final state decrements it in the
transaction that finishes it (`finish_jobs`). When a sealed group's count reaches zero,
`completed_at` is set, and a trigger inserts the follow-ups in that same transaction. The
transition can happen once only, so the follow-ups are inserted exactly once, whatever the
retries, rescues and duplicate finishes. Members that failed for good or were cancelled
count as finished, so one bad member never hangs the group; follow-ups read them with
`Queue.group_failures(origin_group_id)`.

Known limit: every member updates the one group row. At OCR speed (seconds a member) that
is free; at thousands of members a second it serialises completions on that row. Batched
completions take it once per batch, which is what the worker does.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import psycopg

from pgqueue.db import query
from pgqueue.enqueue import DEFAULT_BATCH_SIZE, RowBatch, batched, insert_batch, run_at_for
from pgqueue.errors import GroupExists, GroupSealed
from pgqueue.tasks import JobSpec, Task

if TYPE_CHECKING:
    from pgqueue.queue import Queue


@dataclass(frozen=True)
class GroupProgress:
    id: int
    key: str
    tag: str | None
    total: int
    done: int
    failed: int
    cancelled: int
    pending: int
    percent: float
    sealed: bool
    started_at: Any
    updated_at: Any
    completed_at: Any
    cancelled_at: Any

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> GroupProgress:
        values = {key: row[key] for key in cls.__dataclass_fields__}
        values["percent"] = float(values["percent"])
        return cls(**values)


class Group:
    """An open group on one connection. Members added here are counted atomically."""

    def __init__(self, queue: Queue, conn: psycopg.Connection[Any], group_id: int, key: str,
                 tag: str | None, priority: int) -> None:
        self.queue = queue
        self.conn = conn
        self.id = group_id
        self.key = key
        self.tag = tag
        self.priority = priority
        self.sealed = False
        self.added = 0

    def enqueue(self, task: Task, **kwargs: Any) -> int:
        return self.enqueue_many(task, [kwargs])[0]

    def enqueue_many(self, task: Task, args_list: Iterable[dict[str, Any]], *,
                     priority: int | None = None,
                     on_success: Sequence[JobSpec] | None = None) -> list[int]:
        if self.sealed:
            raise GroupSealed(f"group {self.key!r} is sealed; no members can be added")
        statements = self.queue.statements
        effective = self.priority if priority is None else priority
        ids: list[int] = []
        now = run_at_for(None, None)
        for chunk in batched(args_list, DEFAULT_BATCH_SIZE):
            batch = RowBatch()
            for args in chunk:
                batch.add(task, args, priority=effective, run_at=now, group_id=self.id,
                          tag=self.tag, dedupe_key=None, on_success=on_success)
            with self.conn.transaction():
                grown = query(self.conn, statements.grow_group,
                                          {"id": self.id, "count": len(batch)}).fetchone()
                if grown is None:
                    raise GroupSealed(f"group {self.key!r} is sealed; no members can be added")
                ids.extend(insert_batch(self.conn, statements, batch))
        self.added += len(ids)
        return ids

    def seal(self) -> bool:
        """No more members; returns True if the group completed at once (no pending members)."""
        row = query(self.conn, self.queue.statements.seal_group, {"id": self.id}).fetchone()
        self.sealed = True
        return bool(row and row["completed"])


def create_group(queue: Queue, conn: psycopg.Connection[Any], key: str,
                 on_complete: Sequence[JobSpec], tag: str | None, priority: int) -> Group:
    specs = json.dumps([spec.to_json() for spec in on_complete])
    row = query(conn, queue.statements.create_group,
                       {"key": key, "tag": tag, "priority": priority, "on_complete": specs}
                       ).fetchone()
    if row is None:
        existing = query(conn, queue.statements.find_group, {"key": key}).fetchone()
        assert existing is not None
        if existing["sealed"]:
            raise GroupExists(key, existing["id"])
        return Group(queue, conn, existing["id"], key, tag, priority)
    return Group(queue, conn, row["id"], key, tag, priority)
