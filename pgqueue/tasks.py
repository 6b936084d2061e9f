"""Tasks: functions registered on a Queue, and specs of jobs to enqueue later."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

from pgqueue.errors import SerializationError
from pgqueue.retry import Backoff

if TYPE_CHECKING:
    import psycopg

DEFAULT_QUEUE = "default"
_NUL_ESCAPE = re.compile(r"(?<!\\)(?:\\\\)*\\u0000")
DEFAULT_MAX_ATTEMPTS = 3
# One encoder, built once: json.dumps with options builds a new one per call.
_ENCODER = json.JSONEncoder(allow_nan=False, separators=(",", ":"), ensure_ascii=False)


def dump_args(args: dict[str, Any]) -> str:
    """JSON for the args column, or a SerializationError naming what is wrong."""
    if not isinstance(args, dict):
        raise SerializationError(f"job args must be a dict of keyword arguments, not {type(args).__name__}")
    try:
        text = _ENCODER.encode(args)
        text.encode("utf-8")  # a lone surrogate cannot be stored
    except (TypeError, ValueError) as error:
        raise SerializationError(f"job args are not JSON-serialisable: {error}") from None
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

    def to_json(self) -> dict[str, Any]:
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
