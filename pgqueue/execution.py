"""Running one job: in the worker's thread, or in a child process that can be killed.

`thread` isolation suits light tasks. A thread cannot be killed, so a job over its timeout
is recorded failed ("timed out") by the worker, which abandons the slot's thread and starts
a new one; inside the task, `current_job().check()` raises `JobTimeout` (and
`JobCancelled` after a cancel), so a long task that calls it stops by itself. An abandoned
task that ignores `check()` may still be running when the job's retry starts elsewhere:
a task that must never overlap itself belongs in process isolation.

`process` isolation is for native code that can crash, hang or bloat (Tesseract, Poppler,
spaCy): the job runs in a child process; the parent keeps the connection and the lease,
kills the child on timeout or cancellation, and records "killed by signal 11" as the job's
error if it dies. Children are never forked from the multi-threaded worker (the POSIX
fork-with-threads hazard: a lock held by another thread at fork time stays locked forever
in the child). Instead each slot gets a `SlotHost` before the worker starts any thread: a
single-threaded process, forked while the worker still is single-threaded, that forks the
slot's job children on request and reports how they exited. A child serves up to
`max_jobs` jobs and is then replaced. With PR_SET_PDEATHSIG (Linux) the kernel kills a
host whose worker died, and a child whose host died, so no job outlives its lease holder.
"""

from __future__ import annotations

import ctypes
import json
import multiprocessing.connection
import os
import re
import signal
import socket
import struct
import sys
import time
import traceback
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pgqueue import connections
from pgqueue.context import CANCELLED, JobContext, set_current
from pgqueue.db import mask_url
from pgqueue.errors import JobCancelled, JobInterrupted, JobTimeout, PermanentFailure, UnknownTask
from pgqueue.jobs import ClaimedJob, UndecodableArgs, storable

if TYPE_CHECKING:
    from pgqueue.tasks import Task

PR_SET_PDEATHSIG = 1
CHECK_INTERVAL = 0.2  # seconds between the parent's checks of a child's deadline and flags
MAX_ERROR_CHARS = 20_000
# A task's return value is kept with its finished job as JSON of at most this many bytes
# (UTF-8); a larger one fails the job, saying so. Results travel in the finish batch and
# sit in job_history rows: big payloads belong in a table or object store of their own.
MAX_RESULT_BYTES = 1_048_576
# JSON text holding a NUL character (\u0000 not itself escaped), which jsonb refuses.
_JSON_NUL = re.compile(r"(?<!\\)(?:\\\\)*\\u0000")

Tasks = Mapping[str, "Task"]

_host_sockets: list[socket.socket] = []  # the worker's ends, closed in every later host


@dataclass(frozen=True, slots=True)
class Outcome:
    state: str  # succeeded | failed | cancelled | lost | returned (task unknown here)
    error: str | None = None
    retryable: bool = True
    result: str | None = None  # a succeeded job's return value, as JSON text


def succeeded(value: object) -> Outcome:
    """The outcome of a task that returned `value`: its JSON kept as the job's result
    (None: no result), or a failure, not retried, when it cannot be kept as JSON."""
    if value is None:
        return SUCCEEDED
    try:
        text = json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
        size = len(text.encode())
    except (TypeError, ValueError, RecursionError) as error:  # UnicodeEncodeError included
        return Outcome("failed", f"the task's return value is not JSON: {error}"[:2000],
                       retryable=False)
    if _JSON_NUL.search(text):
        return Outcome("failed", "the task's return value holds a NUL character (\\u0000), "
                       "which PostgreSQL's jsonb cannot store", retryable=False)
    if size > MAX_RESULT_BYTES:
        return Outcome("failed", f"the task's return value is {size} bytes of JSON, more "
                       f"than the {MAX_RESULT_BYTES} a result may hold (MAX_RESULT_BYTES)",
                       retryable=False)
    return Outcome("succeeded", result=text)


SUCCEEDED = Outcome("succeeded")


def _format_error(error: BaseException) -> str:
    text = mask_url("".join(traceback.format_exception(error)))  # no password in job errors
    return storable(text[-MAX_ERROR_CHARS:]) or ""  # a NUL, a lone surrogate: not in a log either


def timed_out(job: ClaimedJob, how: str = "") -> Outcome:
    return Outcome("failed", f"timed out after {job.timeout_seconds} s{how}")


def execute(tasks: Tasks, job: ClaimedJob, context: JobContext) -> Outcome:
    """Run the job's function here and now; never raises."""
    if isinstance(job.args, UndecodableArgs):  # fails alone, never runs (issue 23)
        return Outcome("failed", f"args could not be decoded: {job.args.reason}",
                       retryable=False)
    token = set_current(context)
    task = tasks.get(job.task)
    try:
        if task is None:
            raise UnknownTask(f"no task named {job.task!r} is registered on this worker")
        value = task.func(**job.args)
    except UnknownTask as error:
        return Outcome("failed", str(error), retryable=False)
    except JobCancelled:
        return Outcome("cancelled", "cancelled by request")
    except JobTimeout:
        return timed_out(job)
    except JobInterrupted as error:
        return Outcome("lost", str(error))
    except BaseException as error:  # noqa: BLE001 - a task's failure is data, not a crash
        retryable = (task is not None and not isinstance(error, PermanentFailure)
                     and isinstance(error, task.retry_on))
        return Outcome("failed", _format_error(error), retryable=retryable)
    finally:
        set_current(None)
        del token
    if context.stop_reason == CANCELLED:
        return Outcome("cancelled", "cancelled by request")
    return succeeded(value)


class ThreadRunner:
    """Runs jobs in the calling (slot) thread."""

    def __init__(self, tasks: Tasks) -> None:
        self.tasks = tasks

    def run(self, job: ClaimedJob, context: JobContext) -> Outcome:
        return execute(self.tasks, job, context)

    def close(self) -> None:
        pass


def _die_with_parent(parent_pid: int) -> None:
    """Linux: the kernel SIGKILLs this process when its parent dies (say, by SIGKILL)."""
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(1)


def _child_main(tasks: Tasks, pipe: multiprocessing.connection.Connection,
                max_jobs: int) -> None:
    """A job child: run the jobs the slot sends, reply with each outcome."""
    # The parent decides when a job stops; a Ctrl-C to the process group must not.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    connections.enter_job_child()  # sessions: one connection, under the worker's cap
    for _ in range(max_jobs):
        try:
            message = pipe.recv()
        except (EOFError, OSError, KeyboardInterrupt):
            return
        if message is None:
            return
        fields, seconds_left = message
        job = ClaimedJob(**fields)
        deadline = None if seconds_left is None else time.monotonic() + seconds_left
        try:
            outcome = execute(tasks, job, JobContext.for_job(job, deadline))
        finally:
            connections.end_job()  # an idle child holds no connection
        pipe.send((outcome.state, outcome.error, outcome.retryable, outcome.result))


def _host_main(sock: socket.socket, tasks: Tasks, max_jobs: int, parent_pid: int) -> None:
    """A slot host: fork a job child on b"F" (its channel's fd attached), report a child's
    exit status on b"W" + pid, leave on b"Q" or when the worker goes away."""
    _die_with_parent(parent_pid)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # it holds no job; it leaves with the worker
    host_pid = os.getpid()
    while True:
        try:
            message, fds, _, _ = socket.recv_fds(sock, 16, 1)
        except (OSError, KeyboardInterrupt):
            return
        if not message or message[:1] == b"Q":
            return
        if message[:1] == b"F":
            pid = os.fork()
            if pid == 0:
                sock.close()
                code = 0
                try:
                    # Its own process group, so a kill reaches whatever the job started
                    # (pdftoppm, tesseract): `ProcessRunner._kill` kills the group.
                    os.setpgid(0, 0)
                    _die_with_parent(host_pid)
                    _child_main(tasks, multiprocessing.connection.Connection(fds[0]), max_jobs)
                except BaseException:  # noqa: BLE001 - a child must never return into the host
                    code = 1
                finally:
                    sys.stdout.flush()
                    sys.stderr.flush()
                    os._exit(code)
            for fd in fds:
                os.close(fd)
            try:  # as the child does: the group exists before anyone may kill it
                os.setpgid(pid, pid)
            except OSError:
                pass
            sock.sendall(struct.pack("!q", pid))
        elif message[:1] == b"W":
            (child,) = struct.unpack("!q", message[1:9])
            try:
                _, status = os.waitpid(child, 0)
                code = os.waitstatus_to_exitcode(status)
            except ChildProcessError:
                code = 255
            sock.sendall(struct.pack("!q", code))


class SlotHost:
    """The single-threaded process that forks one slot's job children (see the module
    docstring). Create it before the worker starts any thread."""

    def __init__(self, tasks: Tasks, max_jobs: int) -> None:
        ours, theirs = socket.socketpair()
        parent_pid = os.getpid()
        pid = os.fork()
        if pid == 0:
            for inherited in [ours, *_host_sockets]:
                inherited.close()
            try:
                _host_main(theirs, tasks, max_jobs, parent_pid)
            finally:
                os._exit(0)
        theirs.close()
        self.pid = pid
        self._sock = ours
        _host_sockets.append(ours)

    def _ask(self, message: bytes, fds: list[int] | None = None) -> int:
        if fds:
            socket.send_fds(self._sock, [message], fds)
        else:
            self._sock.sendall(message)
        reply = b""
        while len(reply) < 8:
            chunk = self._sock.recv(8 - len(reply))
            if not chunk:
                raise RuntimeError(f"the slot host process {self.pid} died")
            reply += chunk
        return int(struct.unpack("!q", reply)[0])

    def fork_child(self) -> tuple[int, multiprocessing.connection.Connection]:
        ours, theirs = socket.socketpair()
        try:
            pid = self._ask(b"F", [theirs.fileno()])
        finally:
            theirs.close()
        return pid, multiprocessing.connection.Connection(ours.detach())

    def wait(self, pid: int) -> int:
        """The exit code of a child (negative: killed by that signal); blocks until it ends."""
        return self._ask(b"W" + struct.pack("!q", pid))

    def close(self) -> None:
        try:
            self._sock.sendall(b"Q")
        except OSError:
            pass
        if self._sock in _host_sockets:
            _host_sockets.remove(self._sock)
        self._sock.close()
        try:
            os.waitpid(self.pid, 0)
        except ChildProcessError:
            pass


def describe_exit(code: int | None) -> str:
    if code is None:
        return "worker process vanished"
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = str(-code)
        return f"worker process killed by signal {-code} ({name})"
    return f"worker process exited with status {code}"


class ProcessRunner:
    """Runs a slot's jobs in a child of its `SlotHost`, one child for up to `max_jobs`."""

    def __init__(self, host: SlotHost, max_jobs: int = 1000) -> None:
        self.host = host
        self.max_jobs = max_jobs
        self._pid: int | None = None
        self._pipe: multiprocessing.connection.Connection | None = None
        self._jobs = 0

    def _ensure_child(self) -> multiprocessing.connection.Connection:
        if self._pipe is None or self._jobs >= self.max_jobs:
            self.close()
            self._pid, self._pipe = self.host.fork_child()
            self._jobs = 0
        return self._pipe

    def _kill(self) -> int | None:
        """Kill the child (if still there) and return how it exited."""
        pid, pipe = self._pid, self._pipe
        self._pid, self._pipe = None, None
        if pipe is not None:
            pipe.close()
        if pid is None:
            return None
        # The child leads its own process group (see _host_main): the group goes with it,
        # the job's own children too. The child is still the host's unreaped child, so
        # neither its pid nor its group id can have been reused.
        for kill in (os.killpg, os.kill):
            try:
                kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        return self.host.wait(pid)

    def run(self, job: ClaimedJob, context: JobContext) -> Outcome:
        pipe = self._ensure_child()
        self._jobs += 1
        left = None if context.deadline is None else context.deadline - time.monotonic()
        try:
            pipe.send((job.fields(), left))
        except OSError:
            return Outcome("failed", describe_exit(self._kill()))
        while True:
            if context.deadline is not None and time.monotonic() > context.deadline:
                self._kill()
                return timed_out(job, " (worker process killed)")
            reason = context.stop_reason
            if reason is not None:
                self._kill()
                if reason == CANCELLED:
                    return Outcome("cancelled", "cancelled by request (worker process killed)")
                return Outcome("lost", reason)
            try:
                if pipe.poll(CHECK_INTERVAL):
                    state, error, retryable, result = pipe.recv()
                    return Outcome(state, error, retryable, result)
            except (EOFError, OSError):
                return Outcome("failed", describe_exit(self._kill()))

    def close(self) -> None:
        """Let the child finish its loop and exit (it may be running nothing)."""
        pid, pipe = self._pid, self._pipe
        if pid is None or pipe is None:
            return
        self._pid, self._pipe = None, None
        try:
            pipe.send(None)
        except OSError:
            pass
        pipe.close()
        try:
            self.host.wait(pid)
        except (OSError, RuntimeError):
            pass
