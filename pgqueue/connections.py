"""How many connections a worker process holds, what each is for, and the job children's.

A worker process holds a fixed set, whatever its concurrency:

  pgqueue:work     the claim loop: record finished jobs and claim new ones (DATABASE_URL)
  pgqueue:lease    the lease keeper's heartbeats (DATABASE_URL; its own, so no beat waits
                   behind a claim)
  pgqueue:listen   LISTEN (LISTEN_DATABASE_URL: a session, never through a transaction
                   pooler, which would drop it)
  pgqueue:maintenance  the maintenance leader's session advisory lock and its duties
                   (LISTEN_DATABASE_URL too); held by the one leader of the schema only: the
                   others connect, find the lock taken and close, once per interval
  pgqueue:pool     short work of the process (enqueues, reads, in-thread tasks): a pool of
                   at most `pool_size` (DATABASE_URL)

Job children (process isolation) share `job_connections` connections per worker process
(`JOB_CONNECTIONS` by default), whatever the number of slots: a child opens one
(`pgqueue:job`) when its job opens a session, after taking one of the worker's
job-connection slots, and closes it and frees the slot when that session ends (nested
sessions share it), so an OCR job holds no slot while Tesseract runs; a connection costs a
few milliseconds, a page of OCR a second. A slot is an
fcntl lock on one byte of a file the worker made before forking, so a child killed with
its job (a timeout, a segfault) frees its slot with its death, and no count can leak.
Children that wait for a slot wait only for other jobs' short sessions.

Why not report through the parent: a job's session is arbitrary SQL in its own
transaction (a fetch creates a group and its members atomically with its bookkeeping);
carrying that over a pipe would be a second database protocol. A child connection per
session, under a per-process cap, keeps the job's code as it is.
"""

from __future__ import annotations

import fcntl
import os
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass

WORK = "pgqueue:work"
LEASE = "pgqueue:lease"
LISTEN = "pgqueue:listen"
MAINTENANCE = "pgqueue:maintenance"
POOL = "pgqueue:pool"
JOB = "pgqueue:job"

JOB_CONNECTIONS = 2  # job children of one worker process holding a connection at once
WORKER_DEDICATED = 4  # work, lease, listen, maintenance (held by the leader only)


@dataclass(frozen=True)
class Budget:
    """The most connections one worker process opens: its own, and its job children's."""

    dedicated: int  # work, lease, listen, maintenance
    pool: int  # the process's pool (in-thread tasks, enqueues), at most
    jobs: int  # job children (process isolation), at most

    @property
    def total(self) -> int:
        return self.dedicated + self.pool + self.jobs

    @property
    def direct(self) -> int:
        """Those that must reach PostgreSQL itself (LISTEN, session locks)."""
        return 2


def worker_budget(concurrency: int, isolation: str, *, pool_size: int,
                  job_connections: int = JOB_CONNECTIONS) -> Budget:
    """What a worker of `concurrency` slots opens at most. A process-isolated worker's
    own tasks run in children: its pool serves the claim loop's helpers only (one)."""
    if isolation == "process":
        return Budget(WORKER_DEDICATED, 1, min(max(1, concurrency), job_connections))
    return Budget(WORKER_DEDICATED, min(pool_size, max(1, concurrency)), 0)


class JobGate:
    """The job-connection slots of one worker process (see the module docstring)."""

    def __init__(self, slots: int) -> None:
        self.slots = max(1, slots)
        handle, path = tempfile.mkstemp(prefix="pgqueue-jobconn-")
        os.unlink(path)  # the descriptor is enough; nothing left behind
        os.ftruncate(handle, self.slots)
        self.fd = handle
        self._held: int | None = None
        self._users = 0  # sessions of this process holding the slot (nested, or two stores)
        self._lock = threading.Lock()

    def acquire(self) -> None:
        """Take a free slot, or wait for one (this process's own, for its job)."""
        with self._lock:
            self._users += 1
            if self._held is not None:
                return
            for index in range(self.slots):
                try:
                    fcntl.lockf(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, index)
                except OSError:
                    continue
                self._held = index
                return
            index = os.getpid() % self.slots
            fcntl.lockf(self.fd, fcntl.LOCK_EX, 1, index)
            self._held = index

    def release(self, *, all_users: bool = False) -> None:
        with self._lock:
            self._users = 0 if all_users else max(0, self._users - 1)
            if self._held is not None and self._users == 0:
                fcntl.lockf(self.fd, fcntl.LOCK_UN, 1, self._held)
                self._held = None

    def close(self) -> None:
        try:
            os.close(self.fd)
        except OSError:
            pass


# Set in a job child (by `pgqueue.execution`): sessions there take a gated connection.
_job_gate: JobGate | None = None
_in_job_child = False


def set_job_gate(gate: JobGate | None) -> None:
    """The worker's gate, set before it forks its hosts (children inherit it)."""
    global _job_gate
    _job_gate = gate


def enter_job_child() -> None:
    global _in_job_child
    _in_job_child = True


def in_job_child() -> bool:
    return _in_job_child


def job_gate() -> JobGate | None:
    return _job_gate


_on_job_end: list[Callable[[], None]] = []


def on_job_end(callback: Callable[[], None]) -> None:
    """Run `callback` in a job child after each job (the store closes its connection)."""
    _on_job_end.append(callback)


def end_job() -> None:
    """A job child's job ended: its connections close, its slot is freed."""
    for callback in _on_job_end:
        callback()
    if _job_gate is not None:
        _job_gate.release(all_users=True)
