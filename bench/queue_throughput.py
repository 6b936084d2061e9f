"""pgqueue alone: enqueue rate (one by one and bulk), drain rate with W worker processes,
and enqueue-to-start latency p50/p95/p99 to idle workers. Prints a table; no assertions.

    python -m bench.queue_throughput [--quick] [--drain N] ...

The same figures as `python -m bench --contenders pgqueue --figures ...`; run `python -m
bench` for the comparison against Procrastinate, PgQueuer and raw SKIP LOCKED loops.
"""

from __future__ import annotations

import sys

from bench.run import main as run_bench

QUEUE_FIGURES = "enqueue_one,enqueue_bulk,drain_default,drain_2x8,drain_1,drain_4,latency"


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    return int(run_bench(["--contenders", "pgqueue", "--figures", QUEUE_FIGURES, *args]) or 0)


if __name__ == "__main__":
    sys.exit(main())
