"""`clerkd`: one supervisor, one pool of worker processes per queue, sized from configuration.

A worker process holds its connection and its jobs' leases; each job runs in a child of
it (process isolation), so Tesseract, Poppler or spaCy crashing, hanging or bloating fails
that job alone. The supervisor restarts crashed workers with backoff, recycles them after
MAX_JOBS_PER_WORKER jobs, and on SIGTERM lets running jobs finish within SHUTDOWN_GRACE
before giving their jobs back. SIGHUP re-reads the `--env-file` (the file wins over the
environment then: under systemd the environment is the file as it was at start) and
resizes the pools. The workers die with clerkd, even a SIGKILLed one (PR_SET_PDEATHSIG, in
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
from pgqueue import sdnotify
from pgqueue.db import describe, is_connection_error
from pgqueue.errors import ConfigurationError, DatabaseUnavailable
from pgqueue.http import serve_health_and_metrics
from pgqueue.metrics import Metrics
from pgqueue.supervisor import PoolSpec, Supervisor, SupervisorEvent, WorkerSlot, pools_from_sizes

log = logging.getLogger("clerk.daemon")

PRUNE_INTERVAL_SECONDS = 600.0
SUPERVISOR_GRACE_MARGIN = 10.0  # the supervisor waits a little longer than its workers


def pool_sizes(settings: Settings) -> dict[str, PoolSpec]:
    return pools_from_sizes({name: settings.workers_for(name) for name in QUEUES})


class Daemon:
    def __init__(self, settings: Settings, env_file: str, burst: bool = False) -> None:
        self.settings = settings
        self.env_file = env_file
        self.burst = burst
        self.pipeline: Pipeline = build_pipeline(settings)
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

    def health(self) -> dict[str, Any]:
        report = dict(self.supervisor.health())
        try:
            with self.pipeline.queue.connect() as conn:
                conn.execute("SELECT 1")
            report["database"] = "reachable"
        except DatabaseUnavailable as error:
            report["database"] = str(error)
            report["status"] = "database_unreachable"
        return report

    def run_worker(self, slot: WorkerSlot) -> int:
        """In a child process: one worker for the slot's queue."""
        settings = self.settings
        return self.pipeline.queue.work(
            [slot.pool], concurrency=1, isolation="process", burst=self.burst,
            max_jobs=settings.max_jobs_per_worker, max_jobs_per_child=settings.max_jobs_per_worker,
            shutdown_grace=settings.shutdown_grace, lease_seconds=settings.lease_seconds,
            poll_interval=settings.poll_interval)

    def reload(self) -> None:
        try:
            fresh = load_settings(self.env_file, file_wins=True)
        except ValueError as error:
            log.error("reload refused: %s", error, extra={"action": "reload_failed"})
            return
        log.info("reload: pools %s", {n: fresh.workers_for(n) for n in QUEUES},
                 extra={"action": "reload"})
        self.supervisor.resize(pool_sizes(fresh))

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
        if not self.settings.total_workers:
            log.warning("no worker pools configured: every *_WORKERS setting is 0, so no job "
                        "will run here", extra={"action": "no_pools"})
        for check in run_checks(self.settings):
            if not check.ok:
                log.warning("doctor: %s: %s (fix: %s)", check.name, check.detail, check.fix,
                            extra={"action": "doctor"})
        log.info("clerkd starting: database %s, pools %s", describe(self.pipeline.dsn),
                 {n: self.settings.workers_for(n) for n in QUEUES}, extra={"action": "start"})
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
