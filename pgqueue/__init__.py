"""pgqueue: a job queue that lives entirely in PostgreSQL."""

from pgqueue.admin import CancelResult
from pgqueue.aio import AsyncGroup, AsyncQueue
from pgqueue.context import JobContext, current_job
from pgqueue.errors import (
    ConfigurationError,
    DatabaseError,
    DatabaseUnavailable,
    DuplicateJob,
    GroupError,
    GroupExists,
    GroupSealed,
    InvalidJobSpec,
    JobCancelled,
    JobFailed,
    JobInterrupted,
    JobNotFound,
    JobTimeout,
    MigrationChecksumMismatch,
    MigrationError,
    PermanentFailure,
    PgQueueError,
    SerializationError,
    UnknownTask,
    WaitTimeout,
)
from pgqueue.groups import Group, GroupProgress
from pgqueue.jobs import Job, JobState
from pgqueue.queue import Queue
from pgqueue.retry import Backoff
from pgqueue.tasks import JobSpec, Limit, Task

__all__ = [
    "AsyncGroup",
    "AsyncQueue",
    "Backoff",
    "CancelResult",
    "ConfigurationError",
    "DatabaseError",
    "DatabaseUnavailable",
    "DuplicateJob",
    "Group",
    "GroupError",
    "GroupExists",
    "GroupProgress",
    "GroupSealed",
    "InvalidJobSpec",
    "Job",
    "JobCancelled",
    "JobContext",
    "JobFailed",
    "JobInterrupted",
    "JobNotFound",
    "JobSpec",
    "JobState",
    "JobTimeout",
    "Limit",
    "MigrationChecksumMismatch",
    "MigrationError",
    "PermanentFailure",
    "PgQueueError",
    "Queue",
    "SerializationError",
    "Task",
    "UnknownTask",
    "WaitTimeout",
    "current_job",
]
