"""pgqueue's exceptions, under one base class.

    PgQueueError
    ├── ConfigurationError        bad schema name, unknown option
    ├── MigrationError
    │   └── MigrationChecksumMismatch  an applied migration's file has changed
    ├── DatabaseUnavailable       cannot connect, or the connection was lost (names host and
    │                             port, never the password)
    ├── DatabaseError             a statement failed (the psycopg error is its __cause__)
    ├── SerializationError        job args that are not JSON (also a TypeError)
    ├── InvalidJobSpec            a job option out of its column's range (also a ValueError)
    ├── DuplicateJob              dedupe key already held by a queued or running job
    ├── GroupError
    │   ├── GroupExists           a group key already used (sealed)
    │   └── GroupSealed           members added after sealing
    ├── PermanentFailure          raised by a task: fail now, do not retry
    ├── UnknownTask               a claimed job names a task this worker does not know
    ├── JobNotFound
    ├── JobFailed                 `Queue.wait`: the job failed or was cancelled (its error)
    ├── WaitTimeout               `Queue.wait`: not finished in time (also a TimeoutError)
    └── JobInterrupted            raised inside a task: cancelled, timed out, or lease lost
        ├── JobCancelled
        └── JobTimeout

psycopg errors are translated at one boundary, `pgqueue.db.translate_errors`: `db.query`
runs every statement of the `JobStore` (`pgqueue.store`) inside it, and so do the store's
pipelined transactions and `db.connect`. Code that runs its own SQL on a connection it was
handed (a task, clerk) sees psycopg's errors, as it asked for them.
"""

from __future__ import annotations


class PgQueueError(Exception):
    """Base class of every pgqueue error."""


class ConfigurationError(PgQueueError):
    """A bad schema or queue name, or an unknown option."""


class DatabaseUnavailable(PgQueueError):
    """PostgreSQL cannot be reached, or the connection broke; worth retrying later."""


class DatabaseError(PgQueueError):
    """A statement failed; the psycopg error is its __cause__."""


class SerializationError(PgQueueError, TypeError):
    pass


class InvalidJobSpec(PgQueueError, ValueError):
    """A job's (or a follow-up's) priority, attempts, timeout or delay out of range."""


class DuplicateJob(PgQueueError):
    def __init__(self, dedupe_key: str, existing_id: int | None) -> None:
        super().__init__(f"a job with dedupe key {dedupe_key!r} is already queued or running"
                         + (f" (job {existing_id})" if existing_id is not None else ""))
        self.dedupe_key = dedupe_key
        self.existing_id = existing_id


class GroupError(PgQueueError):
    pass


class GroupExists(GroupError):
    def __init__(self, key: str, group_id: int) -> None:
        super().__init__(f"group {key!r} already exists (id {group_id}) and is sealed")
        self.key = key
        self.group_id = group_id


class GroupSealed(GroupError):
    pass


class PermanentFailure(PgQueueError):
    """Raise from a task when retrying cannot help (a corrupt file, a bad argument)."""


class UnknownTask(PgQueueError):
    pass


class JobNotFound(PgQueueError):
    pass


class JobFailed(PgQueueError):
    """The job `Queue.wait` waited for ended failed or cancelled: `state`, and `error`,
    the error recorded on the job (a traceback, or what stopped it)."""

    def __init__(self, job_id: int, state: str, error: str | None) -> None:
        last = (error or "").strip().splitlines()
        super().__init__(f"job {job_id} {state}: {last[-1] if last else 'no error recorded'}")
        self.job_id = job_id
        self.state = state
        self.error = error


class WaitTimeout(PgQueueError, TimeoutError):
    """`Queue.wait` gave up: the job had not finished within its timeout."""


class JobInterrupted(PgQueueError):
    """The job must stop: cancelled by a user, over its timeout, or its lease was lost."""


class JobCancelled(JobInterrupted):
    pass


class JobTimeout(JobInterrupted):
    pass


class MigrationError(PgQueueError):
    """A migration cannot be applied (pgqueue.migrate)."""


class MigrationChecksumMismatch(MigrationError):
    """An applied migration's file has changed since it was applied."""
