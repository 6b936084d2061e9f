"""Bulk site operations at scale: `clerk site import` of N sites, again (nothing to write),
`site export`, `enqueue --all`, each a `clerk` process timed from the outside; then the
periodic scheduler's catch-up when every refresh schedule missed a slot.

    python -m bench.bulk_sites                 # 3,000 sites
    python -m bench.bulk_sites --sites 10000

Against a throwaway PostgreSQL on 127.0.0.1 (fsync off, as the tests run it). Every fourth
site refreshes daily, so the import also writes ~750 periodic schedules.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg

from pgqueue import Queue
from pgqueue.localserver import LocalServer

CLERK = Path(sys.executable).with_name("clerk")


def sites_csv(path: Path, count: int) -> None:
    lines = ["subdomain,name,url,kind,refresh"]
    lines += [f"city-{n}.st,City {n},https://city{n}.example.org/meetings/,index,"
              f"{'daily' if n % 4 == 0 else ''}" for n in range(count)]
    path.write_text("\n".join(lines) + "\n")


def timed(env: dict[str, str], *args: str) -> tuple[float, str]:
    started = time.perf_counter()
    done = subprocess.run([str(CLERK), *args], env=env, capture_output=True, text=True,
                          check=True)
    return time.perf_counter() - started, (done.stdout.strip().splitlines() or ["-"])[-1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sites", type=int, default=3000)
    options = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as work, LocalServer() as server:
        url = server.url()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("CLERK_", "PGQUEUE_"))}
        env.update({"DATABASE_URL": url, "CLERK_ENV_FILE": str(Path(work) / "none.env"),
                    "HOME": work})
        subprocess.run([str(CLERK), "db", "upgrade"], env=env, check=True, capture_output=True)
        path = Path(work) / "sites.csv"
        sites_csv(path, options.sites)
        startup, _ = timed(env, "db", "current")  # a command's own start-up cost
        for label, args in [("import", ("site", "import", str(path))),
                            ("import again", ("site", "import", str(path))),
                            ("export", ("site", "export", "-o", str(Path(work) / "out.csv"))),
                            ("enqueue --all", ("enqueue", "--all"))]:
            seconds, last = timed(env, *args)
            print(f"{label:<14} {options.sites} sites: {seconds:6.2f} s  ({last})")
        with psycopg.connect(url) as conn:
            jobs = conn.execute("SELECT count(*) FROM pgqueue.jobs").fetchone()
            schedules = conn.execute("SELECT count(*) FROM pgqueue.periodic").fetchone()
            # every clerkd was down for a day: each schedule has a missed slot (run_once)
            conn.execute("UPDATE pgqueue.periodic SET next_run_at = now() - interval '1 day'")
        queue = Queue(url)
        started = time.perf_counter()
        caught_up = queue.enqueue_due()
        seconds = time.perf_counter() - started
        queue.close()
        print(f"catch-up after a day down: {caught_up} refresh jobs enqueued and their "
              f"schedules advanced in {seconds:.2f} s (Queue.enqueue_due, batches of 500)")
        print(f"fetch jobs {jobs[0] if jobs else 0}, refresh schedules "
              f"{schedules[0] if schedules else 0}; a clerk command's start-up "
              f"(`clerk db current`) {startup:.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
