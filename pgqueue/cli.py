"""The `pgqueue` command: migrate, status, worker, retry, cancel.

    pgqueue migrate [--dsn URL] [--schema NAME] [--print]
    pgqueue status  [--json]
    pgqueue worker  myapp.jobs:q -q QUEUE [-q QUEUE...] -c N [--burst] [--isolation process]
    pgqueue retry   [--queue Q] [--tag T] [--id N...]
    pgqueue cancel  (--tag T | --group N | --id N...)

Every command takes `--dsn` (or DATABASE_URL) and `--schema` (or PGQUEUE_SCHEMA, default
pgqueue). Output never shows a password: URLs are printed as host:port/dbname, and any
error is one line (`pgqueue.db.mask_url`), never a traceback. `migrate --print` writes the
SQL instead of running it, for those who apply migrations with their own tool: the same
statements, in one transaction, recording themselves in `<schema>.migrations` as
`pgqueue migrate` does, so the two ways can be mixed.

clerk's own commands (`clerk db upgrade`, `clerk worker`, `clerk failed --retry`) are the
same operations on clerk's configuration; they reuse `migration_script` and
`print_status` from here.
"""

from __future__ import annotations

import importlib
import json
import logging
import sys
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import click
import psycopg
from psycopg import sql

from pgqueue.aioloop import DEFAULT_ASYNC_CONCURRENCY
from pgqueue.db import describe, first_line, mask_url
from pgqueue.errors import PgQueueError
from pgqueue.migrate import Migration, Migrator, discover
from pgqueue.queue import Queue
from pgqueue.sql import compose, validate_schema

F = TypeVar("F", bound=Callable[..., Any])

_BOOKKEEPING = (
    "CREATE SCHEMA IF NOT EXISTS {schema};\n"
    "CREATE TABLE IF NOT EXISTS {schema}.migrations (component text NOT NULL, "
    "version integer NOT NULL, name text NOT NULL, checksum text NOT NULL, "
    "applied_at timestamptz NOT NULL DEFAULT now(), PRIMARY KEY (component, version));\n")


def migration_script(migrations: Sequence[Migration], schema: str,
                     component: str = "pgqueue") -> str:
    """The SQL of `migrations` for `schema`, as `Migrator.upgrade` runs it, recording each
    in `<schema>.migrations`, in one transaction."""
    schema = validate_schema(schema)
    parts = ["BEGIN;", compose(_BOOKKEEPING, schema).as_string(None)]
    for migration in migrations:
        parts.append(f"-- {component} {migration.version:04d}_{migration.name}")
        parts.append(compose(migration.path.read_text(), schema).as_string(None).rstrip()
                     + "\n")
        parts.append(sql.SQL(
            "INSERT INTO {}.migrations (component, version, name, checksum) VALUES ({}, {}, {}, {});"
        ).format(sql.Identifier(schema), sql.Literal(component), sql.Literal(migration.version),
                 sql.Literal(migration.name), sql.Literal(migration.checksum)).as_string(None))
    parts.append("COMMIT;")
    return "\n".join(parts) + "\n"


def print_status(queue: Queue, *, as_json: bool = False) -> None:
    """Jobs by queue and state, and the live workers."""
    depth: dict[str, dict[str, int]] = {}
    for row in queue.queue_depth():
        depth.setdefault(row["queue"], {})[row["state"]] = int(row["jobs"])
    workers = queue.active_workers()
    if as_json:
        click.echo(json.dumps({"queues": depth, "workers": [
            {"id": w["id"], "host": w["host"], "pid": w["pid"], "queues": w["queues"],
             "concurrency": w["concurrency"], "jobs_done": w["jobs_done"],
             "current_jobs": list(w["current_jobs"])} for w in workers]}, indent=2))
        return
    states = ["queued", "scheduled", "running", "succeeded", "failed", "cancelled"]
    click.echo(f"{'queue':<20}" + "".join(f"{state:>11}" for state in states))
    for name in sorted(depth):
        click.echo(f"{name:<20}" + "".join(f"{depth[name].get(s, 0):>11}" for s in states))
    if not depth:
        click.echo("(no jobs)")
    click.echo(f"workers: {len(workers)}")
    for w in workers:
        click.echo(f"  {w['host']} pid {w['pid']}: {','.join(w['queues'])} x{w['concurrency']}, "
                   f"{w['jobs_done']} done, running {len(w['current_jobs'])}")


def connection_options(func: F) -> F:
    func = click.option("--schema", envvar="PGQUEUE_SCHEMA", default="pgqueue", show_default=True,
                        help="The schema of the queue's tables.")(func)
    return click.option("--dsn", envvar="DATABASE_URL", metavar="URL",
                        help="PostgreSQL URL (default: $DATABASE_URL).")(func)


def _require(dsn: str | None) -> str:
    if not dsn:
        raise click.ClickException("no database: pass --dsn URL or set DATABASE_URL")
    return dsn


class PgQueueGroup(click.Group):
    """Errors become one line (passwords masked), never a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (PgQueueError, psycopg.Error, ValueError) as error:
            raise click.ClickException(mask_url(first_line(error))) from None


@click.group(cls=PgQueueGroup, context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """pgqueue: a job queue that lives in PostgreSQL."""
    # The pool's retries would print each failed connection (with libpq's two-line text);
    # the command says it once, as its error.
    logging.getLogger("psycopg.pool").setLevel(logging.CRITICAL)


@main.command("migrate")
@connection_options
@click.option("--print", "print_only", is_flag=True,
              help="Print the SQL (pending migrations with --dsn, else all) instead of running it.")
def migrate(dsn: str | None, schema: str, print_only: bool) -> None:
    """Create or upgrade pgqueue's tables (safe twice, or from two machines at once)."""
    schema = validate_schema(schema)
    if print_only:
        migrations = (Migrator(dsn, schema).pending() if dsn
                      else discover(Migrator("", schema).directory))
        click.echo(migration_script(migrations, schema), nl=False)
        return
    url = _require(dsn)
    applied = Migrator(url, schema).upgrade()
    where = f"{describe(url)} schema {schema}"
    click.echo(f"{where}: applied " + ", ".join(f"{m.version:04d}_{m.name}" for m in applied)
               if applied else f"{where}: already up to date")


@main.command("status")
@connection_options
@click.option("--json", "as_json", is_flag=True)
def status(dsn: str | None, schema: str, as_json: bool) -> None:
    """Jobs by queue and state, and the workers alive."""
    queue = Queue(_require(dsn), schema=schema)
    try:
        queue.queue_depth()  # reachable and migrated, before any output
        if not as_json:
            click.echo(f"{describe(queue.dsn)} schema {schema}")
        print_status(queue, as_json=as_json)
    finally:
        queue.close()


def load_queue(target: str) -> Queue:
    """`package.module:name`: the Queue object an application defines (its tasks with it)."""
    module_name, _, attribute = target.partition(":")
    if not module_name or not attribute:
        raise click.BadParameter("expected module:queue_object, as myapp.jobs:q",
                                 param_hint="TARGET")
    sys.path.insert(0, "")  # the current directory, as `python -m` would
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise click.BadParameter(f"cannot import {module_name!r}: {error}",
                                 param_hint="TARGET") from None
    found: Any = module
    for part in attribute.split("."):
        found = getattr(found, part, None)
    if not isinstance(found, Queue):
        raise click.BadParameter(f"{target} is not a pgqueue.Queue", param_hint="TARGET")
    return found


@main.command("worker")
@click.argument("target", metavar="TARGET")
@connection_options
@click.option("-q", "--queue", "queues", multiple=True,
              help="A queue to work (repeat; default: every queue with a task).")
@click.option("-c", "--concurrency", default=1, show_default=True, type=click.IntRange(min=1),
              help="Jobs at a time.")
@click.option("--isolation", type=click.Choice(["thread", "process"]), default="thread",
              show_default=True, help="process: each job in a child the worker can kill.")
@click.option("--async-concurrency", default=DEFAULT_ASYNC_CONCURRENCY, show_default=True,
              type=click.IntRange(min=1),
              help="Jobs of async def tasks at a time, on the worker's event loop.")
@click.option("--burst", is_flag=True, help="Exit when nothing is left to do.")
def worker(target: str, dsn: str | None, schema: str, queues: tuple[str, ...],
           concurrency: int, isolation: str, async_concurrency: int, burst: bool) -> None:
    """Run a worker for the tasks of TARGET (module:queue_object, as myapp.jobs:q)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    queue = load_queue(target)
    if dsn:
        queue.dsn = dsn
    explicit = click.get_current_context().get_parameter_source("schema")
    if schema != queue.schema and explicit is not click.core.ParameterSource.DEFAULT:
        raise click.BadParameter(f"{target} uses schema {queue.schema!r}", param_hint="--schema")
    sys.exit(queue.work(list(queues) or None, concurrency=concurrency, isolation=isolation,
                        burst=burst, async_concurrency=async_concurrency))


@main.command("retry")
@connection_options
@click.option("--queue", "queue_name", default=None, help="Only this queue's failed jobs.")
@click.option("--tag", default=None, help="Only jobs with this tag.")
@click.option("--id", "ids", multiple=True, type=int, help="A job id (repeat).")
def retry(dsn: str | None, schema: str, queue_name: str | None, tag: str | None,
          ids: tuple[int, ...]) -> None:
    """Put failed jobs back in their queue, with fresh attempts."""
    queue = Queue(_require(dsn), schema=schema)
    try:
        count = queue.retry_failed(ids=list(ids) or None, queue=queue_name, tag=tag)
    finally:
        queue.close()
    click.echo(f"{count} job{'s' if count != 1 else ''} queued again")


@main.command("cancel")
@connection_options
@click.option("--tag", default=None, help="The jobs with this tag.")
@click.option("--group", "group_id", type=int, default=None, help="The jobs of this group.")
@click.option("--id", "ids", multiple=True, type=int, help="A job id (repeat).")
def cancel(dsn: str | None, schema: str, tag: str | None, group_id: int | None,
           ids: tuple[int, ...]) -> None:
    """Cancel queued jobs and stop running ones (by tag, group or ids)."""
    if tag is None and group_id is None and not ids:
        raise click.UsageError("say which jobs: --tag, --group or --id")
    queue = Queue(_require(dsn), schema=schema)
    try:
        result = queue.cancel(tag=tag, group_id=group_id, ids=list(ids) or None)
    finally:
        queue.close()
    click.echo(f"cancelled {result.cancelled} queued, asked {result.signalled} running to stop")
