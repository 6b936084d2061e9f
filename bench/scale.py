"""Many sites through one clerkd (issue 21): N generated city sites on 127.0.0.1, each an
index page and born-digital 2-page PDFs, registered, enqueued with `clerk enqueue --all`
and run by a real `clerkd` until every site is deployed; then the same again with nothing
changed (the no-op re-run).

    python -m bench.scale                  # 200 sites, 2 documents each
    python -m bench.scale --sites 1000

Reports sites per minute per core (wall clock from the enqueue to the last deploy), CPU
per site by pool (each clerkd worker process with its job children, from /proc; the
PostgreSQL server's CPU is shown apart), the most connections the database held, the
latency of `clerk status`'s overview (in process, sampled during the run), and the no-op
re-run's requests per site (and how many were conditional) from the HTTP server's count.
A throwaway PostgreSQL on 127.0.0.1; Linux only (/proc). All the sites share one host, so
FETCH_PER_HOST and FETCH_RATE_PER_HOST are lifted (with the defaults, 2 and 30 a minute,
200 sites take 7 minutes to fetch whatever clerk does).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import psycopg

from bench.pipeline import write_pdf
from pgqueue.localserver import LocalServer

CLERK = Path(sys.executable).with_name("clerk")
CLERKD = Path(sys.executable).with_name("clerkd")
TICKS = os.sysconf("SC_CLK_TCK")
DEADLINE = 3600.0  # seconds for a run before the bench gives up


class Sites:
    """The generated sites' files in memory, served with ETag and Last-Modified (and 304s),
    every request counted by site and by whether it was conditional."""

    def __init__(self, count: int, documents: int, work: Path) -> None:
        self.files: dict[str, tuple[bytes, str, str]] = {}  # path -> body, type, etag
        self.requests: dict[str, int] = {}
        self.conditional = 0
        self.lock = threading.Lock()
        self.modified = formatdate(1_700_000_000, usegmt=True)
        template = work / "pdf"
        for n in range(count):
            site = f"city-{n:04d}"
            links = []
            for d in range(documents):
                day = f"2024-{1 + d % 12:02d}-{1 + n % 28:02d}"
                pdf = write_pdf(template / f"{site}-{d}.pdf", [
                    ("text", f"City {n} council agenda {day}. Item {p}: the budget of "
                             f"the parks department, ordinance {n}-{d}-{p}.")
                    for p in (1, 2)])
                self._add(f"/{site}/agenda-{d}.pdf", pdf.read_bytes(), "application/pdf")
                links.append(f'<li><a href="agenda-{d}.pdf">City Council Agenda {day}</a></li>')
            self._add(f"/{site}/index.html",
                      (f"<!doctype html><html><body><h1>City {n}</h1><ul>"
                       + "".join(links) + "</ul></body></html>").encode(), "text/html")

    def _add(self, path: str, body: bytes, kind: str) -> None:
        self.files[path] = (body, kind, '"' + hashlib.sha256(body).hexdigest()[:20] + '"')

    def reset(self) -> None:
        with self.lock:
            self.requests.clear()
            self.conditional = 0

    def serve(self) -> ThreadingHTTPServer:
        sites = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                return

            def do_GET(self) -> None:
                found = sites.files.get(self.path)
                match = self.headers.get("If-None-Match")
                with sites.lock:
                    site = self.path.split("/")[1]
                    sites.requests[site] = sites.requests.get(site, 0) + 1
                    sites.conditional += bool(match or self.headers.get("If-Modified-Since"))
                if found is None:
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                body, kind, etag = found
                if match == etag:
                    self.send_response(304)
                    self.send_header("ETag", etag)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("ETag", etag)
                self.send_header("Last-Modified", sites.modified)
                self.end_headers()
                self.wfile.write(body)

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return server


def cpu_seconds(pid: int) -> float:
    """A process's CPU with that of its children it reaped (utime, stime, cutime, cstime)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return sum(int(value) for value in fields[11:15]) / TICKS


def descendants_cpu(pid: int) -> float:
    """A process and every live descendant (job children not reaped yet)."""
    total = cpu_seconds(pid)
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return total
    return total + sum(descendants_cpu(int(child)) for child in children)


def clerk(env: dict[str, str], *args: str) -> str:
    done = subprocess.run([str(CLERK), *args], env=env, capture_output=True, text=True,
                          check=True)
    return done.stdout


def run_until_done(dsn: str, env: dict[str, str], count: int, pipeline: Any,
                   column: str) -> dict[str, Any]:
    """`clerk enqueue --all`, then wait until every site's `column` moved past the start;
    samples the connections held and the status overview's latency meanwhile."""
    from clerk.status import overview
    with psycopg.connect(dsn, autocommit=True) as conn:
        (origin,), = conn.execute("SELECT clock_timestamp()").fetchall()
        started = time.perf_counter()
        clerk(env, "enqueue", "--all")
        connections, latencies = 0, []
        while time.perf_counter() - started < DEADLINE:
            (done,), = conn.execute(f"SELECT count(*) FROM clerk.sites WHERE {column} >= %s",
                                    (origin,)).fetchall()
            (held,), = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = "
                                    "current_database() AND backend_type = 'client backend'"
                                    ).fetchall()
            connections = max(connections, int(held))
            before = time.perf_counter()
            overview(pipeline)
            latencies.append((time.perf_counter() - before) * 1000)
            if done >= count:
                break
            time.sleep(1.0)
        else:
            raise RuntimeError(f"only {done} of {count} sites finished within {DEADLINE} s")
        wall = time.perf_counter() - started
    return {"wall": wall, "connections": connections,
            "status_ms_median": statistics.median(latencies),
            "status_ms_max": max(latencies)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sites", type=int, default=200)
    parser.add_argument("--documents", type=int, default=2, help="PDFs per site")
    options = parser.parse_args(argv)
    from clerk.config import Settings
    from clerk.pipeline import build_pipeline
    with tempfile.TemporaryDirectory() as tmp, LocalServer() as server:
        work = Path(tmp)
        print(f"generating {options.sites} sites of {options.documents} 2-page PDFs...",
              file=sys.stderr)
        sites = Sites(options.sites, options.documents, work)
        http = sites.serve()
        base = f"http://127.0.0.1:{http.server_address[1]}"
        dsn = server.url()
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("CLERK_", "PGQUEUE_")) and k != "DATABASE_URL"}
        env.update({"DATABASE_URL": dsn, "CLERK_STORAGE_DIR": str(work / "storage"),
                    "CLERK_DEPLOY_DIR": str(work / "deploy"),
                    "CLERK_ENV_FILE": str(work / "none.env"), "HOME": tmp,
                    "CLERK_ALLOW_PRIVATE_HOSTS": "127.0.0.1", "CLERK_LOG_LEVEL": "WARNING",
                    # Every generated city is on 127.0.0.1: the per-host politeness limits
                    # (2 at once, 30 a minute) would measure themselves, not clerk.
                    "FETCH_PER_HOST": "64", "FETCH_RATE_PER_HOST": "0"})
        clerk(env, "db", "upgrade")
        csv = work / "sites.csv"
        csv.write_text("subdomain,name,url,kind\n" + "".join(
            f"city-{n:04d},City {n},{base}/city-{n:04d}/index.html,index\n"
            for n in range(options.sites)))
        clerk(env, "site", "import", str(csv))
        pipeline = build_pipeline(Settings(database_url=dsn, storage_dir=work / "status"), dsn)
        clerkd = subprocess.Popen([str(CLERKD)], env=env, stdout=subprocess.DEVNULL,
                                  stderr=open(work / "clerkd.log", "w"))
        try:
            with psycopg.connect(dsn, autocommit=True) as conn:
                postgres_before = _postgres_cpu(conn)
            first = run_until_done(dsn, env, options.sites, pipeline, "last_success_at")
            with psycopg.connect(dsn, autocommit=True) as conn:
                pools = conn.execute("SELECT pid, queues FROM pgqueue.workers "
                                     "WHERE stopped_at IS NULL").fetchall()
                postgres_cpu = _postgres_cpu(conn) - postgres_before
                failed = conn.execute("SELECT count(*) FROM pgqueue.job_history "
                                      "WHERE state = 'failed'").fetchone()[0]
            by_pool = {",".join(queues): descendants_cpu(pid) for pid, queues in pools}
            sites.reset()
            again = run_until_done(dsn, env, options.sites, pipeline, "last_fetch_at")
            requests = sum(sites.requests.values())
        finally:
            clerkd.send_signal(signal.SIGTERM)
            try:
                clerkd.wait(60)
            except subprocess.TimeoutExpired:
                clerkd.kill()
            pipeline.close()
            http.shutdown()
    cores = os.cpu_count() or 1
    n = options.sites
    print(f"\n{n} sites x {options.documents} born-digital 2-page PDFs, one clerkd, "
          f"{cores} cores")
    print(f"  first run: {first['wall']:.0f} s, {n / first['wall'] * 60 / cores:.1f} sites/min "
          f"per core, {failed} failed jobs")
    print("  CPU per site by pool (clerkd's worker processes with their job children):")
    for pool, seconds in sorted(by_pool.items()):
        print(f"    {pool:<12} {seconds / n * 1000:8.0f} ms")
    print(f"    {'all pools':<12} {sum(by_pool.values()) / n * 1000:8.0f} ms"
          f"   (PostgreSQL: {postgres_cpu / n * 1000:.0f} ms)")
    print(f"  connections held at most: {first['connections']} (re-run: {again['connections']})")
    print(f"  clerk status overview: median {first['status_ms_median']:.0f} ms, "
          f"max {first['status_ms_max']:.0f} ms during the run")
    print(f"  no-op re-run: {again['wall']:.0f} s, {requests / n:.2f} requests per site "
          f"({sites.conditional} of {requests} conditional)")
    return 0


def _postgres_cpu(conn: psycopg.Connection[Any]) -> float:
    """CPU of the PostgreSQL server (the postmaster and its backends), from /proc."""
    (pid,), = conn.execute("SELECT pg_backend_pid()").fetchall()
    parent = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    return descendants_cpu(parent)


if __name__ == "__main__":
    sys.exit(main())
