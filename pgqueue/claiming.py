"""How many jobs a worker claims: its free slots, plus a buffer sized from measurements.

A worker that claims only for free slots pays a round trip (and a commit) for every job or
two: no-op jobs drain at a fifth of what PostgreSQL can give. A worker that keeps a fixed
buffer of claimed jobs (the old `prefetch=100`) is fast on short jobs and unfair on long
ones: it hoards 100 one-minute OCR pages while other machines sit idle. So the buffer is
sized from what the worker measures, with no knob:

- the round-trip time of its claims (an exponential moving average), and
- the recent run time of a job, per queue (the slowest queue served decides),

so that the waiting jobs cover about `HORIZON_SECONDS` of the slots' work, or four round
trips if that is longer. No-op jobs (0.1 ms) are claimed hundreds at a time; one-second
jobs one per free slot. Before the first job of a queue has finished nothing is known, and
the worker claims that queue's jobs only for its free slots (`buffered_queues`): a burst
of long jobs is never hoarded, even by a worker whose other queue runs short ones.

Priority beats the buffer (the claim statement sees to it, given what the worker holds):
waiting jobs are only of the best priority found and of none below the jobs the worker
holds, so a backlog never runs ahead of a higher-priority run's next step.

`prefetch=N` is an explicit cap on the buffer (and, before anything is measured, its
size); `prefetch=0` claims for free slots only.
"""

from __future__ import annotations

EWMA_WEIGHT = 0.2  # weight of the newest sample: smooth, yet a change shows in ~10 samples
HORIZON_SECONDS = 0.05  # work each slot keeps waiting: 50 ms
ROUND_TRIPS_COVERED = 4  # ... or four claim round trips, if that is longer
MAX_BUFFER = 500  # claimed jobs waiting at most, per worker process
MIN_JOB_SECONDS = 1e-5  # a floor, so a job measured at 0 s does not divide by zero
# A job refused by a full key (pgqueue.limits) waits at most this long before the claim
# looks at it again. A holder's end wakes a waiter at once; this bound covers the waiter
# parked by a claim that committed just after a holder's end had looked for waiters.
CONCURRENCY_PARK_SECONDS = 15.0


class ClaimSizer:
    """The buffer a worker keeps: claimed jobs waiting for a slot."""

    def __init__(self, concurrency: int, prefetch: int | None = None) -> None:
        self.concurrency = concurrency
        self.prefetch = prefetch
        self.round_trip = 0.0
        self.job_seconds: dict[str, float] = {}

    def observe_round_trip(self, seconds: float) -> None:
        self.round_trip = (seconds if self.round_trip == 0.0
                           else self.round_trip + EWMA_WEIGHT * (seconds - self.round_trip))

    def observe_job(self, queue: str, seconds: float) -> None:
        last = self.job_seconds.get(queue)
        self.job_seconds[queue] = seconds if last is None else last + EWMA_WEIGHT * (seconds - last)

    def buffer(self) -> int:
        """How many claimed jobs to keep waiting beyond the slots."""
        cap = MAX_BUFFER if self.prefetch is None else self.prefetch
        if cap <= 0:
            return 0
        if not self.job_seconds:
            return 0 if self.prefetch is None else cap
        per_job = max(MIN_JOB_SECONDS, max(self.job_seconds.values()))
        horizon = max(HORIZON_SECONDS, ROUND_TRIPS_COVERED * self.round_trip)
        return min(cap, int(self.concurrency * horizon / per_job))

    def buffered_queues(self) -> list[str] | None:
        """The queues whose jobs may wait in the buffer: those measured (None: any, when
        an explicit `prefetch` says so)."""
        return None if self.prefetch is not None else sorted(self.job_seconds)

    def target(self) -> int:
        """Jobs to hold in all: one per slot, plus the buffer."""
        return self.concurrency + self.buffer()
