"""Jobs and their states.

    enqueue ──▶ queued ──claim──▶ running ──▶ succeeded
                  ▲                  │    ├──▶ failed      (attempts exhausted, or rescued
                  │                  │    │                 with none left)
                  │                  │    └──▶ cancelled   (by a user)
                  └──────────────────┘
          retry after backoff, rescue of an expired lease, or release on a warm shutdown

queued and running jobs live in `jobs`; the three final states live in `job_history`.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def storable(text: str | None) -> str | None:
    """Text PostgreSQL can store: a NUL (which `text` refuses) becomes the four characters
    \\x00, a lone surrogate (which UTF-8 cannot encode) U+FFFD. A job's error message is
    whatever its exception said; it must never make the statement recording it fail."""
    if text is None or not _UNSTORABLE.search(text):
        return text
    return _UNSTORABLE.sub(lambda m: "\\x00" if m.group() == "\x00" else "\ufffd", text)


class UndecodableArgs(dict[str, Any]):
    """Stands for JSON Python could not decode (say, nested thousands deep): empty, with
    the reason. A job claimed with such args fails alone, saying so."""

    def __init__(self, reason: str) -> None:
        super().__init__()
        self.reason = reason

    def __reduce__(self) -> tuple[Any, ...]:
        return (UndecodableArgs, (self.reason,))


class JobState(enum.StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def final(self) -> bool:
        return self in (JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED)


@dataclass(frozen=True)
class Job:
    """A snapshot of one job, live or finished."""

    id: int
    queue: str
    task: str
    args: dict[str, Any]
    priority: int
    state: JobState
    attempt: int
    max_attempts: int
    run_at: datetime
    tag: str | None = None
    group_id: int | None = None
    origin_group_id: int | None = None
    dedupe_key: str | None = None
    timeout_seconds: int | None = None
    worker_id: int | None = None
    rescues: int = 0
    last_error: str | None = None
    created_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    lease_until: datetime | None = None
    cancel_requested: bool = False
    on_success: list[dict[str, Any]] | None = field(default=None, repr=False)
    # A succeeded job's return value, decoded from its JSON (None: none, or not finished)
    result: Any = field(default=None, repr=False)

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Job:
        names = cls.__dataclass_fields__.keys()
        values = {key: row[key] for key in names if key in row}
        values["state"] = JobState(row["state"])
        return cls(**values)


@dataclass(frozen=True, slots=True)
class ClaimedJob:
    """What a worker holds while it runs a job."""

    id: int
    queue: str
    task: str
    args: dict[str, Any]
    priority: int
    attempt: int
    max_attempts: int
    group_id: int | None
    origin_group_id: int | None
    tag: str | None
    timeout_seconds: int | None
    rescues: int

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> ClaimedJob:
        return cls(row["id"], row["queue"], row["task"], row["args"], row["priority"],
                   row["attempt"], row["max_attempts"], row["group_id"], row["origin_group_id"],
                   row["tag"], row["timeout_seconds"], row["rescues"])

    def fields(self) -> dict[str, Any]:
        """The job as plain data (what a process-isolated child is sent)."""
        return {name: getattr(self, name) for name in self.__dataclass_fields__}
