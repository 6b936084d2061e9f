"""The running job's context, for task code: `pgqueue.current_job()`."""

from __future__ import annotations

import contextvars
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pgqueue.errors import JobCancelled, JobInterrupted, JobTimeout

if TYPE_CHECKING:
    from pgqueue.jobs import ClaimedJob

CANCELLED = "cancelled"  # the stop reason a user's cancel sets; any other reason is a loss


@dataclass(slots=True)
class JobContext:
    """What a task can learn about the job it runs, and how it learns it must stop.

    `check()` raises when the job is over its deadline (`JobTimeout`), cancelled
    (`JobCancelled`), or must stop for another reason (`JobInterrupted`: its lease was
    lost, the worker is shutting down). Thread isolation cannot kill a task, so long
    tasks call it at safe points; a process-isolated job is killed by its parent, and
    `check()` in the child knows the deadline but not the other reasons.
    """

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

    @classmethod
    def for_job(cls, job: ClaimedJob, deadline: float | None = None) -> JobContext:
        return cls(job.id, job.queue, job.task, job.attempt, job.max_attempts, job.tag,
                   job.group_id, job.origin_group_id, job.priority, deadline)

    @property
    def stopping(self) -> bool:
        return self.stop_reason is not None or (
            self.deadline is not None and time.monotonic() > self.deadline)

    def interrupt(self, reason: str) -> None:
        """Ask the job to stop (a plain attribute write: safe from any thread)."""
        self.stop_reason = reason

    def check(self) -> None:
        """Raise if the job should stop: call it at safe points in long tasks."""
        if self.deadline is not None and time.monotonic() > self.deadline:
            raise JobTimeout(f"job {self.id} is over its timeout")
        reason = self.stop_reason
        if reason is not None:
            if reason == CANCELLED:
                raise JobCancelled(f"job {self.id} was cancelled")
            raise JobInterrupted(f"job {self.id} must stop: {reason}")


_current: contextvars.ContextVar[JobContext | None] = contextvars.ContextVar(
    "pgqueue_current_job", default=None)


def current_job() -> JobContext | None:
    """The job this thread is running, or None outside a job."""
    return _current.get()


def set_current(context: JobContext | None) -> contextvars.Token[JobContext | None]:
    return _current.set(context)
