"""The contenders, by name. Each module imports its queue library only when used."""

from __future__ import annotations

from bench.contenders.base import Contender

NAMES = ("pgqueue", "pgqueue_async", "procrastinate", "pgqueuer", "raw", "raw_batched")
PEERS = NAMES[2:]  # pgqueue_async is pgqueue with async def tasks, not a peer


def get(name: str) -> Contender:
    if name == "pgqueue":
        from bench.contenders.pgqueue_c import PgQueue
        return PgQueue()
    if name == "pgqueue_async":
        from bench.contenders.pgqueue_async_c import PgQueueAsync
        return PgQueueAsync()
    if name == "procrastinate":
        from bench.contenders.procrastinate_c import Procrastinate
        return Procrastinate()
    if name == "pgqueuer":
        from bench.contenders.pgqueuer_c import PgQueuer
        return PgQueuer()
    if name == "raw":
        from bench.contenders.raw import RawSingle
        return RawSingle()
    if name == "raw_batched":
        from bench.contenders.raw import RawBatched
        return RawBatched()
    if name.startswith("pgqueue_tags") and name[len("pgqueue_tags"):].isdigit():
        # Not in NAMES (not run by default): the cost of fair order, keys = the number
        from bench.contenders.pgqueue_fair_c import PgQueueTagged
        return PgQueueTagged(int(name[len("pgqueue_tags"):]))
    raise KeyError(f"unknown contender {name!r}; choose from {', '.join(NAMES)}")
