"""How long the `clerk` command takes to answer: `clerk --help` and `clerk status`.

    python -m bench.cli_startup              # 10 runs of each, medians
    python -m bench.cli_startup --runs 20 --database-url postgresql://...

Each command runs as a fresh process (the installed `clerk` script next to this Python),
as a user types it, so the figure includes the interpreter's start and every import.
`clerk status` needs a database: by default a throwaway PostgreSQL on 127.0.0.1
(`pgqueue.localserver.LocalServer`), migrated once before the timing. The load average is
printed with the figures, since on a busy machine every start is slower.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

CLERK = Path(sys.executable).with_name("clerk")


def time_command(argv: Sequence[str], env: dict[str, str], runs: int) -> list[float]:
    """Wall-clock seconds of `runs` runs of argv; a failing run stops the benchmark."""
    seconds = []
    for _ in range(runs):
        start = time.perf_counter()
        result = subprocess.run(argv, env=env, capture_output=True, text=True)
        seconds.append(time.perf_counter() - start)
        if result.returncode != 0:
            raise SystemExit(f"{' '.join(argv)} failed ({result.returncode}): {result.stderr}")
    return seconds


def report(label: str, seconds: list[float]) -> str:
    return (f"{label:<16} median {statistics.median(seconds) * 1000:6.0f} ms   "
            f"min {min(seconds) * 1000:6.0f} ms   max {max(seconds) * 1000:6.0f} ms   "
            f"({len(seconds)} runs)")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--database-url", help="time `clerk status` against this database "
                        "(default: a throwaway local PostgreSQL)")
    args = parser.parse_args(argv)
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("CLERK_", "PGQUEUE_")) and k != "DATABASE_URL"}
    workdir = tempfile.mkdtemp(prefix="clerk-startup-")
    env["CLERK_ENV_FILE"] = str(Path(workdir) / "no.env")
    env["CLERK_STORAGE_DIR"] = str(Path(workdir) / "storage")
    env["CLERK_LOG_LEVEL"] = "WARNING"
    server = None
    if args.database_url:
        env["DATABASE_URL"] = args.database_url
    else:
        from pgqueue.localserver import LocalServer
        server = LocalServer().start()
        env["DATABASE_URL"] = server.url()
    try:
        subprocess.run([str(CLERK), "db", "upgrade"], env=env, check=True, capture_output=True)
        print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        print(report("clerk --help", time_command([str(CLERK), "--help"], env, args.runs)))
        print(report("clerk status", time_command([str(CLERK), "status"], env, args.runs)))
        print(report("python -c pass", time_command([sys.executable, "-c", "pass"], env,
                                                    args.runs)))
        print(f"load average after:  {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    finally:
        if server is not None:
            server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
