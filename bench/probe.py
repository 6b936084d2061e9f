"""The latency probe: a job that reports its start time to the bench by UDP datagram.

A datagram costs the job a few microseconds and no database work, so the probe measures
the queue's enqueue-to-start delay and nothing of its own. Both clocks are `time.time()`
on the same machine.
"""

from __future__ import annotations

import os
import socket
import struct
import time

ADDRESS_ENV = "BENCH_PROBE_PORT"
_FORMAT = "!qd"  # job number, start time

_sock: socket.socket | None = None


def stamp(i: int) -> None:
    """Called at the start of a latency job, in the worker process."""
    global _sock
    now = time.time()
    if _sock is None:
        _sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    port = int(os.environ[ADDRESS_ENV])
    _sock.sendto(struct.pack(_FORMAT, i, now), ("127.0.0.1", port))


def noop(i: int) -> None:
    """The throughput job: nothing, so the figures measure the queue alone."""


def decode(datagram: bytes) -> tuple[int, float]:
    i, started = struct.unpack(_FORMAT, datagram)
    return int(i), float(started)
