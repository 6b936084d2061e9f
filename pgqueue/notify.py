"""The listener: LISTEN on a worker's queue channels and wake its claim loop.

One autocommit connection of its own, to PostgreSQL itself (`listen_dsn`: a transaction
pooler would drop the LISTEN). A NOTIFY on `<schema>.<queue>` (sent by enqueue, at
most once per transaction and queue) wakes the claim loop; one on `<schema>.cancel` wakes
the lease keeper, which learns which job to stop. An idle socket can die silently, so a
trivial query probes it every `PROBE_SECONDS`; a lost connection is reopened with backoff.

`listening` is set once the LISTENs are in place (and cleared while reconnecting), so a
test, or anything that must not miss a wake-up, can wait for it instead of sleeping.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence

from psycopg import sql

from pgqueue.connections import LISTEN
from pgqueue.db import Outage, translate_errors
from pgqueue.errors import DatabaseUnavailable
from pgqueue.store import JobStore

PROBE_SECONDS = 10.0
RECONNECT_BACKOFF_MAX = 5.0
RECEIVE_SECONDS = 0.25  # how long one wait for notifications lasts, so a stop is seen soon


class Listener:
    def __init__(self, store: JobStore, queues: Sequence[str], *, on_job: Callable[[], None],
                 on_cancel: Callable[[], None], stop: threading.Event, outage: Outage,
                 on_listening: Callable[[], None] | None = None) -> None:
        self.store = store
        self.channels = [f"{store.schema}.{name}" for name in queues]
        self.cancel_channel = f"{store.schema}.cancel"
        self.on_job = on_job
        self.on_cancel = on_cancel
        self.on_listening = on_listening
        self.stop = stop
        self.outage = outage
        self.listening = threading.Event()

    def run(self) -> None:
        delay = 0.2
        while not self.stop.is_set():
            opened: float | None = None
            try:
                with self.store.connect(autocommit=True, role=LISTEN, direct=True) as conn, \
                        translate_errors():
                    opened = time.monotonic()
                    for channel in [*self.channels, self.cancel_channel]:
                        conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
                    self.listening.set()
                    self.outage.reached(opened)
                    if self.on_listening is not None:
                        self.on_listening()
                    self.on_job()  # anything sent while we were not listening: look now
                    delay = 0.2
                    probe_at = time.monotonic() + PROBE_SECONDS
                    while not self.stop.is_set():
                        for notice in conn.notifies(timeout=RECEIVE_SECONDS):
                            if notice.channel == self.cancel_channel:
                                self.on_cancel()
                            else:
                                self.on_job()
                        if time.monotonic() > probe_at:
                            conn.execute("SELECT 1")
                            probe_at = time.monotonic() + PROBE_SECONDS
            except DatabaseUnavailable as error:
                self.listening.clear()
                self.outage.failed(error, opened)
                self.stop.wait(delay)
                delay = min(RECONNECT_BACKOFF_MAX, delay * 2)
        self.listening.clear()
