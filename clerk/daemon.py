"""`clerkd`: one supervisor, one worker process per queue, with as many slots as configured.

A worker process holds its connections and its jobs' leases; each job runs in a child of
one of its slots (process isolation), so Tesseract, Poppler or spaCy crashing, hanging or
bloating fails that job alone. `OCR_WORKERS=16` is one worker process of 16 slots, not 16
processes: its connections do not grow with its slots (`pgqueue.connections`), so a
clerkd holds about five per queue, and prints the most it will open at start, beside what
the server allows. The supervisor restarts a crashed worker with backoff, recycles it
after MAX_JOBS_PER_WORKER jobs per slot (a job child after MAX_JOBS_PER_WORKER), and on
SIGTERM lets running jobs finish within SHUTDOWN_GRACE before giving their jobs back.
SIGHUP re-reads the `--env-file` (the file wins over the environment then: under systemd
the environment is the file as it was at start); a queue whose size changed gets a new
worker process once the old one's running jobs finish (a started queue at once). The
workers die with clerkd, even a SIGKILLed one (PR_SET_PDEATHSIG, in
`pgqueue.supervisor`). It also prunes finished jobs on a schedule (one machine at a time).
"""

from __future__ import annotations

import logging
import sys
import threading
from pathlib import Path
from typing import Any

import click
import psycopg

from clerk.config import QUEUES, Settings, load_settings
from clerk.db import explain_database_error
from clerk.doctor import run_checks
from clerk.logs import configure as configure_logging
from clerk.pipeline import Pipeline, build_pipeline
from clerk.sites import sync_refresh
from pgqueue import sdnotify
from pgqueue.connections import worker_budget
from pgqueue.db import describe, first_line, is_connection_error
from pgqueue.errors import ConfigurationError, DatabaseError, DatabaseUnavailable
from pgqueue.http import serve_health_and_metrics
from pgqueue.metrics import Metrics
from pgqueue.supervisor import PoolSpec, Supervisor, SupervisorEvent, WorkerSlot, pools_from_sizes

log = logging.getLogger("clerk.daemon")

PRUNE_INTERVAL_SECONDS = 600.0
SUPERVISOR_GRACE_MARGIN = 10.0  # the supervisor waits a little longer than its workers


def pool_sizes(settings: Settings) -> dict[str, PoolSpec]:
    """One worker process per queue that has slots (its slots are its concurrency)."""
    return pools_from_sizes({name: min(1, settings.workers_for(name)) for name in QUEUES})


def planned_connections(settings: Settings, *, metrics: bool) -> tuple[int, int]:
    """The most connections this clerkd opens: (in all, to PostgreSQL itself). Per queue
    with slots: its worker's own four (work, lease, listen, maintenance; the last held by
    the schema's one maintenance leader only) and its job processes' share; clerkd's own:
    the prune's, and the metrics pool's."""
    total = direct = 1  # the prune, now and then (a session lock: direct)
    for name in QUEUES:
        slots = settings.workers_for(name)
        if slots:
            budget = worker_budget(slots, "process", pool_size=1,
                                   job_connections=settings.job_connections)
            total += budget.total
            direct += budget.direct
    if metrics:
        total += 1
    return total, direct


def connection_check(settings: Settings, pipeline: Pipeline, *, metrics: bool) -> str:
    """One line: what this clerkd will open against what the server allows. Raises
    ConfigurationError when this clerkd alone needs more than the server allows clients
    at all: its workers could never all connect, and each would fail and retry forever
    while starving everyone else (the CLI, psql). Connections already held by others
    only warn: they come and go (a clerkd restarting finds its predecessor's closing)."""
    total, direct = planned_connections(settings, metrics=metrics)
    limits = pipeline.queue.connections()
    allowed = limits["max_connections"] - limits["reserved"]
    in_use = sum(limits["held"].values())
    pooled = bool(settings.listen_database_url)
    # Through a pooler only the direct connections reach the server's slots one for one.
    counted = direct if pooled else total
    line = (f"connections: this clerkd opens at most {total}"
            + (f" ({direct} direct to PostgreSQL, the rest through the pooler)" if pooled else "")
            + f"; the server allows {allowed} (max_connections {limits['max_connections']}"
            f" - {limits['reserved']} reserved), {in_use} in use now")
    if counted > allowed:
        raise ConfigurationError(
            f"{line}: too many; lower OCR_WORKERS and the other *_WORKERS or JOB_CONNECTIONS, "
            "raise max_connections, or put PgBouncer in front (LISTEN_DATABASE_URL)")
    if counted + in_use > allowed:
        log.warning("%s: not enough left for all of them beside the connections in use",
                    line, extra={"action": "connections_short"})
    return line


class Daemon:
    def __init__(self, settings: Settings, env_file: str, burst: bool = False) -> None:
        self.settings = settings
        self.env_file = env_file
        self.burst = burst
        self.pipeline: Pipeline = build_pipeline(settings)
        self.slots = {name: settings.workers_for(name) for name in QUEUES}
        self.metrics = Metrics(fetch=self._snapshot, queues=QUEUES)
        self.stop_maintenance = threading.Event()
        self.server: Any = None
        if settings.metrics_port:
            try:
                self.server = serve_health_and_metrics(
                    health=self.health, registry=self.metrics.registry,
                    host=settings.metrics_host, port=settings.metrics_port)
            except OSError as error:  # the port is taken (or the host is not ours)
                raise ConfigurationError(
                    f"METRICS_PORT: cannot listen on {settings.metrics_host}:"
                    f"{settings.metrics_port}: {error.strerror}; choose another port, "
                    "or 0 to turn the endpoint off") from None
        self.supervisor = Supervisor(
            pool_sizes(settings), self.run_worker,
            grace=settings.shutdown_grace + SUPERVISOR_GRACE_MARGIN,
            on_event=self._on_event, on_reload=self.reload,
            child_setup=self.server.close_in_child if self.server is not None else None)

    def _snapshot(self) -> Any:
        return self.pipeline.queue.metrics_snapshot()

    def _on_event(self, event: SupervisorEvent) -> None:
        """Log what the supervisor does not log itself (it logs ready, stopping, resized,
        crashes, retired and killed workers in its own words), with the fields that apply."""
        extra = {"action": f"supervisor_{event.kind}", "queue": event.pool, "pid": event.pid}
        if event.kind == "started":
            log.info("worker %s/%s started (pid %s)", event.pool, event.index, event.pid,
                     extra=extra)
        elif event.kind == "exited":
            how = (f"signal {-event.exitcode}" if event.exitcode is not None and event.exitcode < 0
                   else f"exit {event.exitcode}")
            log.info("worker %s/%s (pid %s) ended: %s", event.pool, event.index, event.pid, how,
                     extra=extra)
        elif event.kind == "stopped":
            log.info("clerkd stopped", extra=extra)

    def _health(self) -> dict[str, Any]:
        report = dict(self.supervisor.health())
        try:
            with self.pipeline.queue.connect() as conn:
                conn.execute("SELECT 1")
            report["database"] = "reachable"
        except DatabaseUnavailable as error:
            report["database"] = str(error)
            report["status"] = "database_unreachable"
        return report

    def health(self) -> dict[str, Any]:
        """The supervisor's view, with each queue's live slots (not its processes)."""
        report = self._health()
        alive = report.get("workers", {})
        report["workers"] = {name: self.slots.get(name, 0) if alive.get(name) else 0
                             for name in alive}
        return report

    def run_worker(self, slot: WorkerSlot) -> int:
        """In a child process: the queue's worker, with its configured slots."""
        settings = self.settings
        slots = max(1, self.slots.get(slot.pool, 1))
        return self.pipeline.queue.work(
            [slot.pool], concurrency=slots, isolation="process", burst=self.burst,
            max_jobs=settings.max_jobs_per_worker * slots,
            max_jobs_per_child=settings.max_jobs_per_worker,
            shutdown_grace=settings.shutdown_grace, lease_seconds=settings.lease_seconds,
            poll_interval=settings.poll_interval, job_connections=settings.job_connections)

    def reload(self) -> None:
        try:
            fresh = load_settings(self.env_file, file_wins=True)
        except ValueError as error:
            log.error("reload refused: %s", error, extra={"action": "reload_failed"})
            return
        sizes = {n: fresh.workers_for(n) for n in QUEUES}
        log.info("reload: pools %s", sizes, extra={"action": "reload"})
        changed = [n for n in QUEUES if self.slots.get(n) and sizes[n]
                   and sizes[n] != self.slots[n]]
        self.slots = sizes  # read by the workers started from now on
        self.supervisor.resize(pool_sizes(fresh))
        for name in changed:  # a new worker with the new number of slots
            self.supervisor.restart(name)

    def maintenance(self) -> None:
        """Prune history now and then (an advisory lock keeps it to one machine)."""
        while not self.stop_maintenance.wait(PRUNE_INTERVAL_SECONDS):
            try:
                deleted = self.pipeline.queue.prune()
                if deleted:
                    log.info("pruned %s", deleted, extra={"action": "pruned"})
            except Exception as error:  # maintenance must not kill the daemon
                if not is_connection_error(error):
                    log.exception("prune failed", extra={"action": "prune_failed"})

    def run(self) -> int:
        try:
            self.pipeline.migrate()
        except psycopg.Error as error:  # a role without CREATE on an unmigrated database
            raise ConfigurationError(explain_database_error(error, migrating=True)) from None
        # Sites' refresh schedules follow REFRESH as set now (clerk.sites.sync_refresh).
        log.info("refresh schedules: %s", sync_refresh(self.pipeline), extra={"action": "refresh"})
        if not self.settings.total_workers:
            log.warning("no worker pools configured: every *_WORKERS setting is 0, so no job "
                        "will run here", extra={"action": "no_pools"})
        for check in run_checks(self.settings):
            if not check.ok:
                log.warning("doctor: %s: %s (fix: %s)", check.name, check.detail, check.fix,
                            extra={"action": "doctor"})
        try:
            connections = connection_check(self.settings, self.pipeline,
                                           metrics=self.server is not None)
        except DatabaseError as error:  # a statement refused: the check is advice
            connections = f"connections: not checked ({first_line(error)})"
        log.info("clerkd starting: database %s, pools %s; %s", describe(self.pipeline.dsn),
                 {n: self.settings.workers_for(n) for n in QUEUES}, connections,
                 extra={"action": "start"})
        if self.server is not None:
            log.info("health and metrics on %s", self.server.url, extra={"action": "http"})
            sdnotify.status(f"metrics on {self.server.url}")
        thread = threading.Thread(target=self.maintenance, name="clerkd-maintenance", daemon=True)
        thread.start()
        try:
            return self.supervisor.run()
        finally:
            self.stop_maintenance.set()
            if self.server is not None:
                self.server.close()


def env_file_path(env_file: str, named: bool) -> str:
    """The env file as an absolute path (SIGHUP re-reads it whatever the working directory
    is by then). Only the implicit default `.env` may be missing; a file the user named
    must exist, or clerkd would silently run on other settings."""
    path = Path(env_file).expanduser().absolute()
    if named and not path.is_file():
        reason = "is not a file" if path.exists() else "does not exist"
        raise click.ClickException(f"env file {env_file} {reason}")
    return str(path)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="clerk", prog_name="clerkd")
@click.option("--env-file", default=".env", envvar="CLERK_ENV_FILE", show_default=True,
              help="Settings file, re-read on SIGHUP; must exist when given (the default "
                   ".env in the working directory may be absent).")
@click.option("--burst", is_flag=True, envvar="CLERK_BURST",
              help="Workers exit when their queue is empty (tests, cron).")
@click.pass_context
def main(ctx: click.Context, env_file: str, burst: bool) -> None:
    """Run the clerk worker pools (FETCH_WORKERS, OCR_WORKERS, ... from the environment/.env).

    SIGTERM: finish running jobs within SHUTDOWN_GRACE, then exit (a second one: at once).
    SIGHUP: re-read the env file and resize the pools.
    """
    # Named on the command line (as the unit's ExecStart does): it must exist. The default
    # and CLERK_ENV_FILE (what tests set to an absent file) may be missing, as in `clerk`.
    named = ctx.get_parameter_source("env_file") == click.core.ParameterSource.COMMANDLINE
    env_file = env_file_path(env_file, named=named)
    try:
        settings = load_settings(env_file)
    except ValueError as error:
        raise click.ClickException(f"configuration: {error}") from None
    configure_logging(settings.log_format, settings.log_level)
    try:
        daemon = Daemon(settings, env_file, burst=burst)
        sys.exit(daemon.run())
    except (DatabaseUnavailable, ConfigurationError) as error:
        raise click.ClickException(str(error)) from None
