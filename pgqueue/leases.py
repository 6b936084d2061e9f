"""The lease keeper: keeps a worker's jobs leased, and tells jobs to stop.

Every `lease/3` seconds (or at once, on a NOTIFY on the cancel channel) one statement,
`heartbeat`, extends the leases of the jobs this worker holds and marks the worker alive.
A job missing from its result was rescued from under the worker (its lease had expired,
say during a network cut): the job is told to stop, and its late finish will change
nothing (the attempt guard of `finish_jobs`). A job flagged `cancel_requested` is told to
stop as cancelled. Jobs whose outcome is known but not yet recorded are left out: their
finish may be deleting the same rows at that moment.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import psycopg

from pgqueue.connections import LEASE
from pgqueue.context import CANCELLED, JobContext
from pgqueue.db import Outage
from pgqueue.errors import DatabaseUnavailable
from pgqueue.store import JobStore

RECONNECT_BACKOFF_MAX = 5.0
LEASE_LOST = "lease lost (job rescued by another worker)"


class Leases:
    def __init__(self, store: JobStore, *, lease_seconds: float,
                 worker_id: Callable[[], int | None],
                 held: Callable[[], dict[int, JobContext]], take_done: Callable[[], int],
                 exiting: threading.Event, outage: Outage) -> None:
        self.store = store
        self.lease_seconds = lease_seconds
        self.worker_id = worker_id
        self.held = held
        self.take_done = take_done
        self.exiting = exiting
        self.outage = outage
        self.beat_now = threading.Event()  # set by the listener on a cancel NOTIFY
        self.interval = max(0.2, lease_seconds / 3)
        # Set while the keeper holds its connection: the worker claims nothing without
        # it, since it could not keep what it claims leased (issue 23: with more workers
        # than the role's connection limit, leases were silently off for a whole run).
        self.connected = threading.Event()
        self._conn: psycopg.Connection[Any] | None = None
        self._opened: float | None = None

    def open(self) -> None:
        """Open the keeper's own connection, before the worker claims anything (it is
        held for the worker's life: no beat waits for a pooled or a fresh connection)."""
        self._conn = self.store.connect(autocommit=True, role=LEASE)
        self._opened = time.monotonic()
        self.connected.set()

    def run(self) -> None:
        conn, opened = self._conn, self._opened
        self._conn = None
        wait = self.interval
        backoff = 0.2
        try:
            while True:
                self.beat_now.wait(wait)
                self.beat_now.clear()
                if self.exiting.is_set():
                    return
                try:
                    if conn is None or conn.closed:
                        conn = self.store.connect(autocommit=True, role=LEASE)
                        opened = time.monotonic()
                    self.beat(conn)
                    self.connected.set()
                    self.outage.reached(opened)
                    wait, backoff = self.interval, 0.2
                except DatabaseUnavailable as error:
                    self.connected.clear()
                    self.outage.failed(error, opened)
                    self._close(conn)
                    conn = opened = None
                    wait, backoff = backoff, min(RECONNECT_BACKOFF_MAX, backoff * 2)
        finally:
            self.connected.clear()
            self._close(conn)

    def beat(self, conn: psycopg.Connection[Any]) -> None:
        held = self.held()
        worker_id = self.worker_id()
        alive = self.store.heartbeat(conn, worker_id=worker_id, ids=list(held),
                                     lease_seconds=self.lease_seconds)
        done = self.take_done()
        if done:
            self.store.count_done(conn, worker_id=worker_id, count=done)
        for job_id, context in held.items():
            if job_id not in alive:
                context.interrupt(LEASE_LOST)
            elif alive[job_id]:
                context.interrupt(CANCELLED)

    @staticmethod
    def _close(conn: psycopg.Connection[Any] | None) -> None:
        if conn is not None:
            try:
                conn.close()
            except psycopg.Error:
                pass
