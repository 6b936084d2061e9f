"""Tasks: functions registered on a Queue, and specs of jobs to enqueue later."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

from pgqueue.errors import ConfigurationError, InvalidJobSpec, SerializationError
from pgqueue.retry import Backoff

if TYPE_CHECKING:
    import psycopg

DEFAULT_QUEUE = "default"
_NUL_ESCAPE = re.compile(r"(?<!\\)(?:\\\\)*\\u0000")
DEFAULT_MAX_ATTEMPTS = 3
# One encoder, built once: json.dumps with options builds a new one per call.
_ENCODER = json.JSONEncoder(allow_nan=False, separators=(",", ":"), ensure_ascii=False)
# The columns' ranges (sql/pgqueue/migrations/0001_jobs.sql): priority is a smallint,
# max_attempts and timeout_seconds integers. A value outside them is refused when the job
# (or the group or chain that will enqueue it later) is created, not when PostgreSQL
# meets it, perhaps at a fan-in long after.
PRIORITY_RANGE = (-32768, 32767)
INT_MAX = 2**31 - 1
MAX_DELAY_SECONDS = 100 * 365 * 24 * 3600.0


def check_priority(priority: int, what: str = "job") -> int:
    if isinstance(priority, bool) or not isinstance(priority, int) \
            or not PRIORITY_RANGE[0] <= priority <= PRIORITY_RANGE[1]:
        raise InvalidJobSpec(f"{what} priority {priority!r} is out of range: an integer from "
                             f"{PRIORITY_RANGE[0]} to {PRIORITY_RANGE[1]}")
    return priority


def dump_args(args: dict[str, Any]) -> str:
    """JSON for the args column, or a SerializationError naming what is wrong."""
    if not isinstance(args, dict):
        raise SerializationError(f"job args must be a dict of keyword arguments, not {type(args).__name__}")
    try:
        text = _ENCODER.encode(args)
        text.encode("utf-8")  # a lone surrogate cannot be stored
    except (TypeError, ValueError) as error:
        raise SerializationError(f"job args are not JSON-serialisable: {error}") from None
    except RecursionError:
        raise SerializationError("job args are nested too deep to store") from None
    if "\\u0000" in text and _NUL_ESCAPE.search(text):
        raise SerializationError("job args contain a NUL character, which PostgreSQL's jsonb "
                                 "cannot store")
    return text


@dataclass(frozen=True)
class JobSpec:
    """A job to enqueue later: a group's follow-up or a chain link."""

    task: str
    queue: str
    args: dict[str, Any] = field(default_factory=dict)
    priority: int | None = None
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    timeout: int | None = None
    tag: str | None = None
    dedupe_key: str | None = None
    delay: float | None = None
    on_success: tuple[JobSpec, ...] = ()

    def then(self, *specs: JobSpec) -> JobSpec:
        """This spec with `specs` to enqueue when it succeeds (a chain)."""
        return JobSpec(**{**self.__dict__, "on_success": self.on_success + specs})

    def check(self) -> None:
        """Refuse now what PostgreSQL would refuse when the spec is enqueued (InvalidJobSpec)."""
        what = f"follow-up {self.task!r}"
        for name in ("task", "queue"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value:
                raise InvalidJobSpec(f"{what}: {name} must be a non-empty string, not {value!r}")
        if self.priority is not None:
            check_priority(self.priority, what)
        if isinstance(self.max_attempts, bool) or not isinstance(self.max_attempts, int) \
                or not 1 <= self.max_attempts <= INT_MAX:
            raise InvalidJobSpec(f"{what}: max_attempts {self.max_attempts!r} is out of range "
                                 f"(1 to {INT_MAX})")
        if self.timeout is not None and (
                isinstance(self.timeout, bool) or not isinstance(self.timeout, int)
                or not 1 <= self.timeout <= INT_MAX):
            raise InvalidJobSpec(f"{what}: timeout {self.timeout!r} is out of range "
                                 f"(1 to {INT_MAX} seconds)")
        if self.delay is not None and (
                isinstance(self.delay, bool) or not isinstance(self.delay, int | float)
                or not 0 <= self.delay <= MAX_DELAY_SECONDS):
            raise InvalidJobSpec(f"{what}: delay {self.delay!r} is out of range "
                                 f"(0 to {MAX_DELAY_SECONDS:.0f} seconds)")
        for name in ("tag", "dedupe_key"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or "\x00" in value):
                raise InvalidJobSpec(f"{what}: {name} must be a string without NUL")

    def to_json(self) -> dict[str, Any]:
        self.check()
        dump_args(self.args)
        data: dict[str, Any] = {"task": self.task, "queue": self.queue, "args": self.args,
                                "max_attempts": self.max_attempts}
        for key in ("priority", "timeout", "tag", "dedupe_key", "delay"):
            if getattr(self, key) is not None:
                data[key] = getattr(self, key)
        if self.on_success:
            data["on_success"] = [spec.to_json() for spec in self.on_success]
        return data


class JobSink(Protocol):
    """Where `Task.enqueue` sends its job: the `JobStore` of the queue it is registered on."""

    def enqueue(self, task: Task, args: dict[str, Any] | None = None, *,
                priority: int | None = None, run_at: datetime | None = None,
                delay: float | None = None, dedupe_key: str | None = None,
                tag: str | None = None, on_success: Sequence[JobSpec] | None = None,
                conn: psycopg.Connection[Any] | None = None) -> int: ...


@dataclass(frozen=True)
class Limit:
    """At most `concurrency` jobs of a task running at once, and at most `rate` starting per
    `per` seconds, per value of the job argument `key` (None: one key for the task)."""

    key: str | None = None
    concurrency: int | None = None
    rate: int | None = None
    per: float = 1.0

    def check(self, task: str) -> Limit:
        if self.concurrency is None and self.rate is None:
            raise ConfigurationError(f"the limit of task {task!r} sets neither a concurrency "
                                     "nor a rate")
        for name in ("concurrency", "rate"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                      or value < 1):
                raise ConfigurationError(f"the limit of task {task!r}: {name} must be a whole "
                                         f"number of at least 1, not {value!r}")
        if self.rate is not None and (isinstance(self.per, bool) or not isinstance(
                self.per, int | float) or not self.per > 0):
            raise ConfigurationError(f"the limit of task {task!r}: per must be a positive "
                                     f"number of seconds, not {self.per!r}")
        if self.key is not None and (not isinstance(self.key, str) or not self.key):
            raise ConfigurationError(f"the limit of task {task!r}: key must name a job "
                                     f"argument, not {self.key!r}")
        return self


@dataclass
class Task:
    """A registered function. Call it directly to run it in-process; `.enqueue` to queue it."""

    sink: JobSink
    func: Callable[..., Any]
    name: str
    queue: str = DEFAULT_QUEUE
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    timeout: int | None = None
    retry_backoff: Backoff = field(default_factory=Backoff)
    priority: int = 0
    retry_on: tuple[type[BaseException], ...] = (Exception,)
    limit: Limit | None = None  # per-key concurrency and rate (pgqueue.limits)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.func(*args, **kwargs)

    def spec(self, *, priority: int | None = None, tag: str | None = None,
             dedupe_key: str | None = None, delay: float | None = None,
             **kwargs: Any) -> JobSpec:
        return JobSpec(task=self.name, queue=self.queue, args=kwargs, priority=priority,
                       max_attempts=self.max_attempts, timeout=self.timeout, tag=tag,
                       dedupe_key=dedupe_key, delay=delay)

    def enqueue(self, *, priority: int | None = None, run_at: datetime | None = None,
                delay: float | None = None, dedupe_key: str | None = None,
                tag: str | None = None, on_success: list[JobSpec] | None = None,
                conn: psycopg.Connection[Any] | None = None, **kwargs: Any) -> int:
        """Queue one job; with `conn`, inside the caller's transaction. Returns its id."""
        return self.sink.enqueue(
            self, kwargs, priority=priority, run_at=run_at, delay=delay,
            dedupe_key=dedupe_key, tag=tag, on_success=on_success, conn=conn)
