"""Groups: fan-out to many members, fan-in to follow-up jobs exactly once.

A group row counts its unfinished members (`pending`). Adding members increments it in the
transaction that inserts them; a member reaching a final state decrements it in the
transaction that finishes it (`finish_jobs`). When a sealed group's count reaches zero,
`completed_at` is set, and a trigger inserts the follow-ups in that same transaction. The
transition can happen once only, so the follow-ups are inserted exactly once, whatever the
retries, rescues and duplicate finishes. Members that failed for good or were cancelled
count as finished, so one bad member never hangs the group; follow-ups read them with
`Queue.group_failures(origin_group_id)`.

Where the count goes down is SQL, not Python: the `per_group` and `counted` steps of
`finish_jobs` in `sql/pgqueue/queries.sql`, and the follow-ups come from the `groups_fire`
trigger of `sql/pgqueue/migrations/0002_followups.sql`.

Known limit: every member updates the one group row. At OCR speed (seconds a member) that
is free; at thousands of members a second it serialises completions on that row. Batched
completions take it once per batch, which is what the worker does.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg

from pgqueue.enqueue import run_at_for
from pgqueue.errors import GroupExists, GroupSealed
from pgqueue.store import JobStore
from pgqueue.tasks import JobSpec, Task, check_priority


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
    started_at: datetime
    updated_at: datetime
    completed_at: datetime | None
    cancelled_at: datetime | None
    error: str | None = None  # why its follow-ups could not be enqueued, if they could not

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> GroupProgress:
        values = {key: row[key] for key in cls.__dataclass_fields__ if key in row}
        values["percent"] = float(values["percent"])
        return cls(**values)


class Group:
    """An open group on one connection. Members added here are counted atomically."""

    def __init__(self, store: JobStore, conn: psycopg.Connection[Any], group_id: int, key: str,
                 tag: str | None, priority: int) -> None:
        self.store = store
        self.conn = conn
        self.id = group_id
        self.key = key
        self.tag = tag
        self.priority = priority
        self.sealed = False

    def enqueue(self, task: Task, **kwargs: Any) -> int:
        return self.enqueue_many(task, [kwargs])[0]

    def enqueue_many(self, task: Task, args_list: Iterable[dict[str, Any]], *,
                     priority: int | None = None,
                     on_success: Sequence[JobSpec] | None = None) -> list[int]:
        if self.sealed:
            raise self._sealed()
        with self.conn.transaction():
            return self.store.insert_rows(
                self.conn, task, args_list, priority=self.priority if priority is None else priority,
                run_at=run_at_for(None, None), group_id=self.id, tag=self.tag, dedupe_keys=None,
                on_success=on_success, before_each=self._grow)

    def _grow(self, conn: psycopg.Connection[Any], count: int) -> None:
        """Count the next batch of members, in the transaction that inserts them."""
        if self.store.run(conn, "grow_group", {"id": self.id, "count": count}).fetchone() is None:
            raise self._sealed()

    def _sealed(self) -> GroupSealed:
        return GroupSealed(f"group {self.key!r} is sealed; no members can be added")

    def seal(self) -> bool:
        """No more members; returns True if the group completed at once (no pending members)."""
        row = self.store.run(self.conn, "seal_group", {"id": self.id}).fetchone()
        self.sealed = True
        return bool(row and row["completed"])


def create_group(store: JobStore, conn: psycopg.Connection[Any], key: str,
                 on_complete: Sequence[JobSpec], tag: str | None, priority: int) -> Group:
    check_priority(priority, f"group {key!r}")
    specs = json.dumps([spec.to_json() for spec in on_complete])
    row = store.run(conn, "create_group", {"key": key, "tag": tag, "priority": priority,
                                           "on_complete": specs}).fetchone()
    if row is None:
        existing = store.run(conn, "find_group", {"key": key}).fetchone()
        assert existing is not None
        if existing["sealed"]:
            raise GroupExists(key, existing["id"])
        return Group(store, conn, existing["id"], key, tag, priority)
    return Group(store, conn, row["id"], key, tag, priority)
