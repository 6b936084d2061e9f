"""The running job's context, for task code: `pgqueue.current_job()`."""

from __future__ import annotations

import contextvars
import threading
import time
from dataclasses import dataclass, field

from pgqueue.errors import JobCancelled, JobInterrupted, JobTimeout


@dataclass
class JobContext:
    id: int
    queue: str
    task: str
    attempt: int
    max_attempts: int
    tag: str | None
    group_id: int | None
    origin_group_id: int | None
    priority: int = 0
    deadline: float | None = None  # time.monotonic() value
    stop_reason: str | None = None
    _stop: threading.Event = field(default_factory=threading.Event, repr=False)

    @property
    def stopping(self) -> bool:
        return self._stop.is_set() or (self.deadline is not None and time.monotonic() > self.deadline)

    def interrupt(self, reason: str) -> None:
        self.stop_reason = reason
        self._stop.set()

    def check(self) -> None:
        """Raise if the job should stop: call it at safe points in long tasks."""
        if self.deadline is not None and time.monotonic() > self.deadline:
            raise JobTimeout(f"job {self.id} is over its timeout")
        if self._stop.is_set():
            if self.stop_reason == "cancelled":
                raise JobCancelled(f"job {self.id} was cancelled")
            raise JobInterrupted(f"job {self.id} must stop: {self.stop_reason}")


_current: contextvars.ContextVar[JobContext | None] = contextvars.ContextVar(
    "pgqueue_current_job", default=None)


def current_job() -> JobContext | None:
    """The job this thread is running, or None outside a job."""
    return _current.get()


def set_current(context: JobContext | None) -> contextvars.Token[JobContext | None]:
    return _current.set(context)
