"""pgqueue: a job queue that lives entirely in PostgreSQL."""

from pgqueue.context import JobContext, current_job
from pgqueue.errors import (
    DatabaseUnavailable,
    DuplicateJob,
    GroupExists,
    GroupSealed,
    JobCancelled,
    JobInterrupted,
    JobNotFound,
    JobTimeout,
    PermanentFailure,
    PgQueueError,
    SerializationError,
    UnknownTask,
)
from pgqueue.jobs import Job, JobState
from pgqueue.queue import Queue
from pgqueue.retry import Backoff
from pgqueue.tasks import JobSpec, Task

__all__ = [
    "Backoff",
    "DatabaseUnavailable",
    "DuplicateJob",
    "GroupExists",
    "GroupSealed",
    "Job",
    "JobCancelled",
    "JobContext",
    "JobInterrupted",
    "JobNotFound",
    "JobSpec",
    "JobState",
    "JobTimeout",
    "PermanentFailure",
    "PgQueueError",
    "Queue",
    "SerializationError",
    "Task",
    "UnknownTask",
    "current_job",
]
