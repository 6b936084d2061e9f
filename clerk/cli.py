"""The `clerk` command line."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import click
import psycopg

from clerk import db as clerk_db
from clerk.config import QUEUES, Settings, load_settings
from clerk.logs import configure as configure_logging
from clerk.pipeline import PRIORITIES, Pipeline, SiteNotFound, build_pipeline
from clerk.sites import InvalidSubdomain, validate_subdomain
from clerk.sources import SOURCES
from clerk.status import MARKS, overview, site_status
from pgqueue.db import mask_url
from pgqueue.errors import ConfigurationError, DatabaseUnavailable, PgQueueError


class Context:
    def __init__(self, env_file: str) -> None:
        self.env_file = env_file
        self._settings: Settings | None = None
        self._pipeline: Pipeline | None = None

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            try:
                self._settings = load_settings(self.env_file)
            except ValueError as error:
                raise click.ClickException(f"configuration: {error}") from None
        return self._settings

    def pipeline(self, migrate: bool = True) -> Pipeline:
        if self._pipeline is None:
            try:
                self._pipeline = build_pipeline(self.settings)
                if migrate:
                    self._pipeline.migrate()
            except (DatabaseUnavailable, ConfigurationError) as error:
                raise click.ClickException(str(error)) from None
            except psycopg.Error as error:  # e.g. a role without the grants clerk needs
                raise click.ClickException(
                    f"database error: {mask_url(str(error).strip())}") from None
        return self._pipeline

    def close(self) -> None:
        if self._pipeline is not None:
            self._pipeline.close()


pass_context = click.make_pass_decorator(Context)


def _emit_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, default=str))


def _subdomain(value: str) -> str:
    try:
        return validate_subdomain(value)
    except InvalidSubdomain as error:
        raise click.ClickException(str(error)) from None


class ClerkGroup(click.Group):
    """Turns the errors a user can fix (the database is down, the configuration is wrong)
    into one line and exit code 1, from whichever command meets them, not a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (DatabaseUnavailable, ConfigurationError) as error:
            raise click.ClickException(mask_url(str(error))) from None


@click.group(cls=ClerkGroup)
@click.option("--env-file", default=".env", envvar="CLERK_ENV_FILE", show_default=True,
              help="A .env file of settings (the environment wins over it).")
@click.pass_context
def main(ctx: click.Context, env_file: str) -> None:
    """clerk: city meeting documents into searchable SQLite databases, on pgqueue."""
    ctx.obj = Context(env_file)
    ctx.call_on_close(ctx.obj.close)
    settings = ctx.obj.settings
    configure_logging(settings.log_format, settings.log_level)


# -- database ---------------------------------------------------------------------------

@main.group("db")
def db_group() -> None:
    """Schema migrations."""


@db_group.command("upgrade")
@pass_context
def db_upgrade(obj: Context) -> None:
    """Apply pending migrations (safe to run twice, or on two machines at once)."""
    applied = obj.pipeline(migrate=False).migrate()
    click.echo("applied: " + ", ".join(applied) if applied else "already up to date")


@db_group.command("current")
@pass_context
def db_current(obj: Context) -> None:
    """The current migration of each component."""
    pipeline = obj.pipeline(migrate=False)
    for name, migrator in (("pgqueue", pipeline.queue.migrator()),
                           ("clerk", clerk_db.clerk_migrator(pipeline.dsn))):
        version = migrator.current()
        pending = len(migrator.pending())
        click.echo(f"{name}: {'none' if version is None else f'{version:04d}'}"
                   f" ({pending} pending)")


@db_group.command("history")
@pass_context
def db_history(obj: Context) -> None:
    """Applied migrations, oldest first."""
    pipeline = obj.pipeline(migrate=False)
    for name, migrator in (("pgqueue", pipeline.queue.migrator()),
                           ("clerk", clerk_db.clerk_migrator(pipeline.dsn))):
        for item in migrator.history():
            click.echo(f"{name} {item.version:04d}_{item.name}  "
                       f"{item.applied_at.isoformat(timespec='seconds')}  {item.checksum[:12]}")


# -- sites ------------------------------------------------------------------------------

@main.group("site")
def site_group() -> None:
    """Add, list and remove sites."""


@site_group.command("add")
@click.argument("subdomain")
@click.option("--url", required=True, help="The page that lists the documents (http or https).")
@click.option("--name", default=None, help="A display name (default: the subdomain).")
@click.option("--kind", type=click.Choice(sorted(SOURCES)), default="index", show_default=True)
@pass_context
def site_add(obj: Context, subdomain: str, url: str, name: str | None, kind: str) -> None:
    """Add a site, or update it."""
    subdomain = _subdomain(subdomain)
    if not url.lower().startswith(("http://", "https://")):
        raise click.ClickException(f"--url must be an http or https URL, not {url!r}")
    pipeline = obj.pipeline()
    row = pipeline.fetch_all("add_site", {
        "subdomain": subdomain, "name": name or subdomain, "source_url": url,
        "source_kind": kind})
    click.echo(f"{'added' if row and row[0]['created'] else 'updated'} site {subdomain}")


@site_group.command("list")
@click.option("--json", "as_json", is_flag=True)
@pass_context
def site_list(obj: Context, as_json: bool) -> None:
    """The sites, with their last fetch and success."""
    rows = clerk_db.fetch_all(obj.pipeline().dsn, "list_sites")
    if as_json:
        _emit_json(rows)
        return
    if not rows:
        click.echo("no sites: add one with `clerk site add SUBDOMAIN --url URL`")
    for row in rows:
        click.echo(f"{row['subdomain']:<24} {row['source_kind']:<9} {row['source_url']}  "
                   f"last fetch {row['last_fetch_at'] or 'never'}, "
                   f"last success {row['last_success_at'] or 'never'}")


@site_group.command("remove")
@click.argument("subdomain")
@pass_context
def site_remove(obj: Context, subdomain: str) -> None:
    """Remove a site from the database (its files on disk stay)."""
    subdomain = _subdomain(subdomain)
    removed = clerk_db.fetch_all(obj.pipeline().dsn, "remove_site", {"subdomain": subdomain})
    if not removed:
        raise click.ClickException(f"no site {subdomain!r}")
    click.echo(f"removed site {subdomain} (files under STORAGE_DIR are kept)")


# -- runs -------------------------------------------------------------------------------

@main.command("enqueue")
@click.argument("subdomains", nargs=-1, required=True)
@click.option("--priority", type=click.Choice(sorted(PRIORITIES)), default="normal",
              show_default=True, help="high: every job of the run overtakes the backlog.")
@click.option("--wait", is_flag=True, help="Show progress until the runs are done.")
@pass_context
def enqueue(obj: Context, subdomains: tuple[str, ...], priority: str, wait: bool) -> None:
    """Start a run of each site (or join the one in progress)."""
    pipeline = obj.pipeline()
    sites = [_subdomain(s) for s in subdomains]
    for site in sites:
        try:
            result = pipeline.enqueue_site(site, priority)
        except SiteNotFound as error:
            raise click.ClickException(str(error)) from None
        if result["joined"]:
            click.echo(f"{site}: a run is already in progress ({result['live_jobs']} jobs); joined it")
        else:
            click.echo(f"{site}: enqueued (job {result['job_id']}, priority {priority})")
    if wait:
        _wait_for(pipeline, sites)


def _wait_for(pipeline: Pipeline, sites: list[str]) -> None:
    with click.progressbar(length=100, label="waiting", show_percent=True) as bar:
        shown = 0
        while True:
            live = {site: pipeline.live_jobs(site) for site in sites}
            statuses = [site_status(pipeline, site) for site in sites]
            percent = int(sum(s["percent"] for s in statuses) / len(statuses))
            bar.update(max(0, percent - shown))
            shown = max(shown, percent)
            if not any(live.values()):
                bar.update(100 - shown)
                break
            time.sleep(0.5)
    for status in (site_status(pipeline, site) for site in sites):
        _print_site(status)


@main.command("status")
@click.option("--subdomain", default=None, help="One site's stages and failures.")
@click.option("--json", "as_json", is_flag=True)
@pass_context
def status(obj: Context, subdomain: str | None, as_json: bool) -> None:
    """Queues, workers on every machine, and sites in progress."""
    pipeline = obj.pipeline()
    if subdomain is not None:
        try:
            data = site_status(pipeline, _subdomain(subdomain))
        except LookupError as error:
            raise click.ClickException(str(error)) from None
        _emit_json(data) if as_json else _print_site(data)
        return
    data = overview(pipeline)
    if as_json:
        _emit_json(data)
        return
    click.echo(f"database: {data['database']}\n")
    click.echo(f"{'queue':<13}" + "".join(f"{s:>11}" for s in
                                          ("queued", "scheduled", "running", "succeeded", "failed",
                                           "cancelled", "workers")))
    for name, counts in data["queues"].items():
        click.echo(f"{name:<13}" + "".join(f"{counts[s]:>11}" for s in counts)
                   + f"{data['workers_per_queue'].get(name, 0):>11}")
    click.echo(f"\nworkers ({len(data['workers'])}):")
    for worker in data["workers"]:
        click.echo(f"  {worker['host']}:{worker['pid']:<8} {','.join(worker['queues']):<14} "
                   f"jobs {worker['current_jobs'] or '-'}  beat {worker['last_beat']}")
    click.echo(f"\nactive sites ({len(data['sites'])}):")
    for site in data["sites"]:
        click.echo(f"  {site['site']:<24} {site['stage']:<12} {site['pages_done']}/"
                   f"{site['pages_total']} pages ({site['percent']:.0f}%)  "
                   f"failed {site['failed_pages']}  updated {site['updated_at']}")


def _print_site(data: dict[str, Any]) -> None:
    click.echo(f"{data['site']} ({data['name']}): {data['state']}")
    if data["started_at"] is not None:
        click.echo(f"  pages {data['pages_done']}/{data['pages_total']} ({data['percent']:.0f}%), "
                   f"started {data['started_at']}, updated {data['updated_at']}")
    if data["last_result"]:
        click.echo(f"  last fetch: {data['last_result']}")
    for stage in data["stages"]:
        detail = f" ({stage['detail']})" if stage.get("detail") else ""
        click.echo(f"  {MARKS[stage['state']]} {stage['stage']:<17} {stage['state']}{detail}")
    for page in data["failed_pages"]:
        click.echo(f"  failed page: {page.get('kind')} {page.get('meeting')} {page.get('date')} "
                   f"page {page.get('page')}: {page['error']}")
    for job in data["failed_jobs"]:
        click.echo(f"  failed {job['queue']} job {job['job_id']} ({job['task']}, attempt "
                   f"{job['attempt']}): {job['error']}")
    for document in data["document_errors"]:
        click.echo(f"  document problem: {document['kind']} {document['meeting']} "
                   f"{document['date']} ({document['url']}): {document['error']}")
    for link in data["refused_links"]:
        click.echo(f"  refused link: {link['url']}: {link['error']}")


@main.command("purge")
@click.argument("subdomain")
@pass_context
def purge(obj: Context, subdomain: str) -> None:
    """Cancel a site's queued jobs and stop its running ones (files are kept)."""
    result = obj.pipeline().queue.cancel(tag=_subdomain(subdomain))
    click.echo(f"{subdomain}: {result.cancelled} queued jobs cancelled, {result.signalled} "
               f"running jobs told to stop, {result.groups} runs cancelled")


@main.command("purge-queue")
@click.argument("queue_name", metavar="QUEUE")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@pass_context
def purge_queue(obj: Context, queue_name: str, yes: bool) -> None:
    """Cancel every queued job of a queue and stop its running ones."""
    if not yes:
        click.confirm(f"cancel every job of queue {queue_name!r}?", abort=True)
    result = obj.pipeline().queue.purge_queue(queue_name)
    click.echo(f"{queue_name}: {result.cancelled} queued jobs cancelled, "
               f"{result.signalled} running jobs told to stop")


@main.command("failed")
@click.option("--queue", "queue_name", default=None)
@click.option("--subdomain", default=None)
@click.option("--retry", is_flag=True, help="Put the matching failed jobs back in the queue.")
@click.option("--limit", default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True)
@pass_context
def failed(obj: Context, queue_name: str | None, subdomain: str | None, retry: bool,
           limit: int, as_json: bool) -> None:
    """Failed jobs with their errors; --retry re-queues them."""
    pipeline = obj.pipeline()
    queue = pipeline.queue
    tag = _subdomain(subdomain) if subdomain else None
    if retry:  # through the pipeline: a retry re-opens the site's run (clerk.pipeline)
        report = pipeline.retry_failed(queue=queue_name, subdomain=tag)
        if as_json:
            _emit_json(report.as_dict())
        else:
            for line in report.lines():
                click.echo(line)
        return
    rows = queue.failed_jobs(queue=queue_name, tag=tag, limit=limit)
    if as_json:
        _emit_json(rows)
        return
    if not rows:
        click.echo("no failed jobs")
    for row in rows:
        error = (row["last_error"] or "").strip().splitlines()
        click.echo(f"{row['id']:>8} {row['queue']:<12} {row['task']:<16} {row['tag'] or '-':<16} "
                   f"{'failed' if row['final'] else 'retrying'} {row['attempt']}/{row['max_attempts']}"
                   f"  {error[-1] if error else ''}")


@main.command("prune")
@pass_context
def prune(obj: Context) -> None:
    """Delete finished jobs past their retention (successes 1 day, failures 7 days)."""
    result = obj.pipeline().queue.prune()
    click.echo("another machine is pruning" if result is None else json.dumps(result))


# -- workers ----------------------------------------------------------------------------

@main.command("worker")
@click.argument("queue_name", metavar="QUEUE", type=click.Choice(QUEUES))
@click.option("-n", "--concurrency", default=1, show_default=True, help="Jobs at a time.")
@click.option("--burst", is_flag=True, help="Exit when the queue has nothing left to do.")
@pass_context
def worker(obj: Context, queue_name: str, concurrency: int, burst: bool) -> None:
    """Run workers for one queue in the foreground (each job in its own child process)."""
    pipeline = obj.pipeline()
    settings = obj.settings
    code = pipeline.queue.work([queue_name], concurrency=concurrency, burst=burst,
                               isolation="process", shutdown_grace=settings.shutdown_grace,
                               max_jobs_per_child=settings.max_jobs_per_worker,
                               lease_seconds=settings.lease_seconds,
                               poll_interval=settings.poll_interval)
    sys.exit(code)


@main.command("install-workers")
@click.option("--system", is_flag=True, help="A system unit (default: a user unit).")
@click.option("--dry-run", is_flag=True, help="Print what would be written.")
@pass_context
def install_workers(obj: Context, system: bool, dry_run: bool) -> None:
    """Write the clerkd service (systemd unit or launchd plist) for this machine."""
    from clerk.services import install_workers as install
    from clerk.services import service_commands
    paths = install(obj.settings, system=system, dry_run=dry_run,
                    env_file=Path(obj.env_file).resolve())
    for path in paths:
        click.echo(f"{'would write' if dry_run else 'wrote'} {path}")
        for command in service_commands(path, platform=sys.platform, system=system):
            click.echo(f"  then: {command}")


@main.command("uninstall-workers")
@click.option("--system", is_flag=True)
@click.option("--dry-run", is_flag=True)
def uninstall_workers(system: bool, dry_run: bool) -> None:
    """Remove the clerkd service files this machine has."""
    from clerk.services import uninstall_workers as uninstall
    for path in uninstall(system=system, dry_run=dry_run):
        click.echo(f"{'would remove' if dry_run else 'removed'} {path}")


@main.command("doctor")
@pass_context
def doctor(obj: Context) -> None:
    """Check Tesseract, Poppler, the spaCy model and the database."""
    from clerk.doctor import run_checks
    dsn: str | None
    try:
        dsn = obj.pipeline(migrate=False).dsn
    except click.ClickException as error:
        click.echo(f"✗ database: {error.message}")
        dsn = None
    failures = 0
    for check in run_checks(obj.settings, dsn):
        click.echo(f"{'✓' if check.ok else '✗'} {check.name}: {check.detail}")
        if not check.ok:
            failures += 1
            click.echo(f"    fix: {check.fix}")
    sys.exit(1 if failures else 0)


@main.command("demo")
@click.option("--workers", default=max(1, (os.cpu_count() or 1)), show_default=True)
@pass_context
def demo(obj: Context, workers: int) -> None:
    """Run the whole pipeline on a bundled sample site, on the embedded database."""
    from clerk.demo import run_demo
    try:
        run_demo(obj.pipeline(), workers=workers, echo=click.echo)
    except PgQueueError as error:
        raise click.ClickException(mask_url(str(error))) from None
