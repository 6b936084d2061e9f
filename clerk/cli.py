"""The `clerk` command line."""

from __future__ import annotations

import contextlib
import itertools
import json
import re
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import urlsplit

import click
import psycopg

from clerk import blobs
from clerk import db as clerk_db
from clerk.config import QUEUES, ConfigError, Settings, load_settings
from clerk.logs import configure as configure_logging
from clerk.output import about_url, error_line, printable
from clerk.pipeline import PRIORITIES, Pipeline, SiteNotFound, build_pipeline
from clerk.progress import Waiter, outcome_problem, wait_for_runs
from clerk.sites import (
    REFRESH_DEFAULT,
    InvalidRefresh,
    InvalidSubdomain,
    SiteFileError,
    UnknownSite,
    enqueue_sites,
    export_records,
    file_format,
    import_sites,
    next_refresh,
    parse_since,
    purge_site,
    read_site_records,
    refresh_schedule_name,
    refresh_summary,
    site_names,
    sync_refresh,
    validate_refresh,
    validate_subdomain,
    write_site_records,
)
from clerk.sources import SOURCES
from clerk.status import (
    MARKS,
    overview,
    overview_lines,
    plural,
    raise_priority,
    site_status,
    with_failures,
)
from clerk.triage import page_read_lines
from pgqueue.db import mask_url
from pgqueue.embedded import describe_embedded
from pgqueue.errors import ConfigurationError, DatabaseUnavailable


class Context:
    """What a command needs, made on first use: the settings are read only by commands
    that use them, so `--help` and `uninstall-workers` work whatever `.env` holds."""

    def __init__(self, env_file: str, env_file_named: bool = False) -> None:
        self.env_file = env_file
        self.env_file_named = env_file_named  # named by the user: it must exist
        self._settings: Settings | None = None
        self._pipeline: Pipeline | None = None

    @property
    def settings(self) -> Settings:
        """The checked settings; a ConfigError becomes one line in ClerkGroup."""
        if self._settings is None:
            self.use_settings(load_settings(self.env_file, required=self.env_file_named))
        assert self._settings is not None
        return self._settings

    def use_settings(self, settings: Settings) -> None:
        self._settings = settings
        configure_logging(settings.log_format, settings.log_level)

    def pipeline(self, *, migrate: bool = False, check_migrated: bool = True) -> Pipeline:
        """The pipeline on the configured database. Only `migrate=True` (db upgrade, worker,
        demo) writes the schema; every other command refuses an unmigrated database rather
        than creating schemas in whatever database DATABASE_URL happens to name."""
        if self._pipeline is None:
            try:
                self._pipeline = build_pipeline(self.settings)
                if migrate:
                    self._pipeline.migrate()
                elif check_migrated:
                    clerk_db.require_migrated(self._pipeline.queue.migrator(),
                                              clerk_db.clerk_migrator(self._pipeline.dsn))
            except (DatabaseUnavailable, ConfigurationError) as error:
                raise click.ClickException(mask_url(str(error))) from None
            except psycopg.Error as error:  # e.g. a role without the grants clerk needs
                raise click.ClickException(
                    clerk_db.explain_database_error(error, migrating=migrate)) from None
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
        except ConfigError as error:
            raise click.ClickException(f"configuration: {error}") from None
        except (DatabaseUnavailable, ConfigurationError) as error:
            raise click.ClickException(mask_url(str(error))) from None
        except psycopg.Error as error:  # a grant missing for one statement, a lost connection
            raise click.ClickException(
                clerk_db.explain_database_error(error, migrating=False)) from None


@click.group(cls=ClerkGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--env-file", default=".env", envvar="CLERK_ENV_FILE", show_default=True,
              help="A .env file of settings (the environment wins over it). Only the "
              "default .env may be missing.")
@click.version_option(package_name="clerk", prog_name="clerk")
@click.pass_context
def main(ctx: click.Context, env_file: str) -> None:
    """clerk: city meeting documents into searchable SQLite databases, on pgqueue."""
    named = ctx.get_parameter_source("env_file") == click.core.ParameterSource.COMMANDLINE
    ctx.obj = Context(env_file, env_file_named=named)
    ctx.call_on_close(ctx.obj.close)


# -- database ---------------------------------------------------------------------------

@main.group("db")
def db_group() -> None:
    """Schema migrations."""


@db_group.command("upgrade")
@click.option("--print", "print_only", is_flag=True,
              help="Print the pending migrations' SQL (pgqueue's, then clerk's) instead.")
@pass_context
def db_upgrade(obj: Context, print_only: bool) -> None:
    """Apply pending migrations (safe to run twice, or on two machines at once)."""
    pipeline = obj.pipeline(check_migrated=False)
    if print_only:  # the SQL `pgqueue migrate --print` writes, for both components
        from pgqueue.cli import migration_script
        for migrator in (pipeline.queue.migrator(), clerk_db.clerk_migrator(pipeline.dsn)):
            click.echo(migration_script(migrator.pending(), migrator.schema,
                                        migrator.component), nl=False)
        return
    try:
        applied = pipeline.migrate()
    except psycopg.Error as error:  # a role without CREATE: the owner migrates
        raise click.ClickException(
            clerk_db.explain_database_error(error, migrating=True)) from None
    click.echo("applied: " + ", ".join(applied) if applied else "already up to date")


@db_group.command("current")
@pass_context
def db_current(obj: Context) -> None:
    """The current migration of each component."""
    pipeline = obj.pipeline(check_migrated=False)  # a schema behind is shown, not refused
    components = (("pgqueue", pipeline.queue.migrator()),
                  ("clerk", clerk_db.clerk_migrator(pipeline.dsn)))
    versions = [(name, migrator.current(), len(migrator.pending()))
                for name, migrator in components]
    if all(version is None for _, version, _ in versions):
        raise click.ClickException(f"database not migrated: {clerk_db.UPGRADE_HINT}")
    for name, version, pending in versions:
        click.echo(f"{name}: {'none' if version is None else f'{version:04d}'}"
                   f" ({pending} pending)")


@db_group.command("history")
@pass_context
def db_history(obj: Context) -> None:
    """Applied migrations, oldest first."""
    pipeline = obj.pipeline(check_migrated=False)
    components = (("pgqueue", pipeline.queue.migrator()),
                  ("clerk", clerk_db.clerk_migrator(pipeline.dsn)))
    histories = [(name, migrator.history()) for name, migrator in components]
    if not any(history for _, history in histories):
        raise click.ClickException(f"no migrations applied: {clerk_db.UPGRADE_HINT}")
    for name, history in histories:
        for item in history:
            click.echo(f"{name} {item.version:04d}_{item.name}  "
                       f"{item.applied_at.isoformat(timespec='seconds')}  {item.checksum[:12]}")


@db_group.command("stop-embedded")
@pass_context
def db_stop_embedded(obj: Context) -> None:
    """Stop the embedded PostgreSQL (it keeps running after a command, for the next one)."""
    from pgqueue.embedded import stop_embedded
    directory = obj.settings.embedded_dir
    try:
        stopped = stop_embedded(directory)
    except TimeoutError as error:
        raise click.ClickException(str(error)) from None
    click.echo(f"stopped the embedded PostgreSQL in {directory}" if stopped
               else f"no embedded PostgreSQL is running in {directory}")


# -- storage (issue 16) -----------------------------------------------------------------

@main.group("storage")
def storage_group() -> None:
    """Documents and page texts in the database."""


@storage_group.command("import")
@click.argument("subdomains", nargs=-1)
@pass_context
def storage_import(obj: Context, subdomains: tuple[str, ...]) -> None:
    """Load the PDFs and page texts an existing STORAGE_DIR holds into the database (every
    site, or the ones named); safe to run again."""
    pipeline = obj.pipeline()
    names = ([_subdomain(name) for name in subdomains] if subdomains
             else [row["subdomain"] for row in pipeline.fetch_all("list_sites")])
    for name in names:
        if pipeline.fetch_one("get_site", {"subdomain": name}) is None:
            raise click.ClickException(f"no site {name!r}: `clerk site list` shows the sites")
    for name in names:
        result = blobs.import_site(lambda: pipeline.queue.session(atomic=False), name,
                                   obj.settings.storage_dir, max_bytes=obj.settings.max_pdf_bytes)
        click.echo(result.line(name))
        for reason in result.skipped or []:
            click.echo(f"  skipped {printable(reason)}")


def _collect_garbage(pipeline: Pipeline) -> str:
    """Delete the documents no site refers to any more (clerk.blobs' rule); a phrase."""
    with pipeline.queue.session() as conn:
        count, size = blobs.collect_garbage(conn)
    return _garbage_phrase(count, size)


def _garbage_phrase(count: int, size: int) -> str:
    return f"{count} stored {'document' if count == 1 else 'documents'} ({blobs.human_bytes(size)}) deleted"


# -- sites ------------------------------------------------------------------------------

@main.group("site")
def site_group() -> None:
    """Add, list and remove sites."""


def _source_url(url: str) -> str:
    """An http(s) URL with a host and no spaces, or one line saying what is wrong."""
    parts = urlsplit(url)
    if parts.scheme.lower() not in ("http", "https"):
        raise click.ClickException(f"--url must be an http or https URL, not {mask_url(url)!r}")
    if any(char.isspace() for char in url) or not parts.hostname:
        raise click.ClickException(
            f"--url {mask_url(url)!r} is not a valid URL: it needs a host and no spaces")
    return url


def _client_url(kind: str | None, client: str, url: str | None) -> str:
    """The source URL of a platform client (`--kind legistar --client oakland`)."""
    from clerk.sources import SourceError, get_source
    if url is not None:
        raise click.ClickException("give --url or --client, not both")
    source = get_source(kind or "index")
    make = getattr(source, "client_url", None)
    if make is None:
        raise click.ClickException(f"--client is for a platform kind (--kind legistar, civicplus "
                                   f"or primegov), not --kind {kind or 'index'}")
    try:
        return str(make(client))
    except SourceError as error:
        raise click.ClickException(str(error)) from None


@site_group.command("add")
@click.argument("subdomain")
@click.option("--url", default=None,
              help="The page that lists the documents (http or https); needed to add a site.")
@click.option("--name", default=None, help="A display name (default: the subdomain).")
@click.option("--kind", type=click.Choice(sorted(SOURCES)), default=None,
              help="How to read the page  [default: index]")
@click.option("--client", default=None,
              help="For --kind legistar, civicplus or primegov: the platform's name for the "
                   "city (oakland; nc-nashcounty; cityofpaloalto), instead of --url.")
@click.option("--token", default=None,
              help="For --kind legistar: the API token the client requires (stored apart "
                   "from the URL, never shown).")
@click.option("--refresh", default=None,
              help="Re-run the site on a schedule: daily, weekly (both staggered), off, a cron "
                   "expression (UTC; 6 fields for seconds), or default (the REFRESH setting).")
@pass_context
def site_add(obj: Context, subdomain: str, url: str | None, name: str | None,
             kind: str | None, client: str | None, token: str | None,
             refresh: str | None) -> None:
    """Add a site, or update it: on an existing site only the options given change.

    \b
    clerk site add pleasanton --url https://www.pleasanton.gov/meetings/
    clerk site add oakland --kind legistar --client oakland
    clerk site add nash-county.nc --kind civicplus --client nc-nashcounty
    clerk site add paloalto --kind primegov --client cityofpaloalto
    clerk site add pleasanton --refresh daily
    """
    subdomain = _subdomain(subdomain)
    if refresh is not None:
        try:
            refresh = validate_refresh(refresh, allow_default=True)
        except InvalidRefresh as error:
            raise click.ClickException(f"--refresh: {error}") from None
    if url is not None:
        url = _source_url(url)
    if client is not None:
        url = _client_url(kind, client, url)
    pipeline = obj.pipeline()
    current = pipeline.fetch_one("get_site", {"subdomain": subdomain}) or {}
    if not current and url is None:
        raise click.ClickException(f"no site {subdomain!r} yet: --url is needed to add it")
    row = pipeline.fetch_all("add_site", {
        "subdomain": subdomain, "name": name or current.get("name") or subdomain,
        "source_url": url or current["source_url"], "token": token or None,
        "source_kind": kind or current.get("source_kind") or "index"})
    if refresh is not None:
        pipeline.fetch_all("set_site_refresh", {
            "subdomain": subdomain, "refresh": None if refresh == REFRESH_DEFAULT else refresh})
    sync_refresh(pipeline, [subdomain])
    click.echo(f"{'added' if row and row[0]['created'] else 'updated'} site {subdomain}"
               + _refresh_note(pipeline, subdomain))


def _refresh_note(pipeline: Pipeline, subdomain: str) -> str:
    scheduled = next_refresh(pipeline, subdomain)
    if scheduled is None:
        return ""
    return f" (refresh {scheduled['schedule']}, next {_when(scheduled['next_run_at'])})"


def _text_file(path: str, mode: str) -> contextlib.AbstractContextManager[TextIO]:
    """A file, or standard input/output for '-', as text (UTF-8; the csv module's newlines)."""
    if path == "-":
        return contextlib.nullcontext(sys.stdin if mode == "r" else sys.stdout)
    # utf-8-sig: a spreadsheet's CSV often starts with a byte-order mark
    return open(path, mode, encoding="utf-8-sig" if mode == "r" else "utf-8", newline="")


@site_group.command("import")
@click.argument("file", type=click.Path(dir_okay=False, allow_dash=True))
@click.option("--format", "fmt", type=click.Choice(["csv", "jsonl"]), default=None,
              help="Default: by the file's suffix (.csv, .jsonl), else by its first line.")
@pass_context
def site_import(obj: Context, file: str, fmt: str | None) -> None:
    """Add or update many sites from a CSV or JSON-lines file (- for standard input).

    Fields: subdomain, and any of name, url (needed for a new site), kind, refresh
    (off, daily, weekly, a cron, or default). A blank field keeps the stored value. Rows go
    in one transaction per batch of 500; a bad row is reported with its line number and the
    others go in. Importing the same file again changes nothing.
    """
    pipeline = obj.pipeline()
    try:
        with _text_file(file, "r") as stream:
            lines = iter(stream)
            first = next(lines, "")
            report = import_sites(pipeline, read_site_records(
                itertools.chain([first], lines), file_format(file, first, fmt)))
    except SiteFileError as error:
        raise click.ClickException(f"{file}: {error}") from None
    except OSError as error:
        raise click.ClickException(f"{file}: cannot be read: {error.strerror or error}") from None
    except UnicodeDecodeError:
        raise click.ClickException(f"{file}: is not UTF-8 text") from None
    for number, problem in report.errors:
        click.echo(f"{file}:{number}: {printable(problem)}", err=True)
    click.echo(f"{report.added} added, {report.updated} updated, {report.unchanged} unchanged, "
               f"{len(report.errors)} {'row' if len(report.errors) == 1 else 'rows'} refused")
    if report.errors:
        sys.exit(1)


@site_group.command("export")
@click.option("--format", "fmt", type=click.Choice(["csv", "jsonl"]), default="csv",
              show_default=True)
@click.option("-o", "--output", default="-", type=click.Path(dir_okay=False, allow_dash=True),
              help="A file to write (default: standard output).")
@pass_context
def site_export(obj: Context, fmt: str, output: str) -> None:
    """Write every site in the format `site import` reads (no credentials)."""
    pipeline = obj.pipeline()
    records = export_records(pipeline)
    with _text_file(output, "w") as out:
        write_site_records(records, out, fmt)


@site_group.command("list")
@click.option("--json", "as_json", is_flag=True)
@pass_context
def site_list(obj: Context, as_json: bool) -> None:
    """The sites, with their last fetch and success."""
    pipeline = obj.pipeline()
    rows = clerk_db.fetch_all(pipeline.dsn, "list_sites")
    for row in rows:
        row["source_url"] = mask_url(row["source_url"])
        row["last_fetch_failure"] = _fetch_failure(pipeline, row)
        for key, value in row.items():
            if isinstance(value, datetime):
                row[key] = _when(value)
    if as_json:
        _emit_json(rows)
        return
    if not rows:
        click.echo("no sites: add one with `clerk site add SUBDOMAIN --url URL`")
    for row in rows:
        failure = row["last_fetch_failure"]
        fetched = (f"last fetch failed at {failure['at']} ({failure['error']})" if failure
                   else f"last fetch {row['last_fetch_at'] or 'never'}")
        click.echo(f"{row['subdomain']:<24} {row['source_kind']:<9} {row['source_url']}  "
                   f"{fetched}, last success {row['last_success_at'] or 'never'}")


def _when(moment: datetime) -> str:
    """One timestamp format for people, as in the JSON: ISO 8601 to the second."""
    return moment.isoformat(timespec="seconds")


def _fetch_failure(pipeline: Pipeline, site: dict[str, Any]) -> dict[str, str] | None:
    """The site's latest fetch failure when it is newer than its last good fetch: the
    error's last line, without the exception's module path or the site's name."""
    failures = pipeline.queue.failed_jobs(queue="fetch", tag=site["subdomain"], limit=1)
    if not failures:
        return None
    failure = failures[0]
    if site["last_fetch_at"] is not None and failure["failed_at"] <= site["last_fetch_at"]:
        return None
    lines = (failure["last_error"] or "").strip().splitlines()
    error = re.sub(r"^[\w.]+(Error|Failure|Exception): ", "", lines[-1] if lines else "unknown")
    error = error.removeprefix(f"site {site['subdomain']}: ")
    return {"at": _when(failure["failed_at"]), "error": printable(mask_url(error))}


@site_group.command("remove")
@click.argument("subdomain")
@pass_context
def site_remove(obj: Context, subdomain: str) -> None:
    """Remove a site from the database and cancel its run: its documents and page texts
    in the database go (files under STORAGE_DIR stay)."""
    subdomain = _subdomain(subdomain)
    pipeline = obj.pipeline()
    if pipeline.fetch_one("get_site", {"subdomain": subdomain}) is None:
        raise click.ClickException(f"no site {subdomain!r}")
    # The run goes first: a run left behind would keep fetching a site nobody lists, and
    # status would show it as active while `status --subdomain` says "no site".
    stopped = pipeline.queue.cancel(tag=subdomain)
    clerk_db.fetch_all(pipeline.dsn, "remove_site", {"subdomain": subdomain})
    pipeline.queue.unschedule(refresh_schedule_name(subdomain))
    collected = _collect_garbage(pipeline)  # its documents go from the database (issue 16)
    run = (f"; {stopped.cancelled} queued {_jobs(stopped.cancelled)} cancelled, "
           f"{stopped.signalled} running told to stop"
           if stopped.cancelled or stopped.signalled else "")
    click.echo(f"removed site {subdomain}{run}; {collected} (files under STORAGE_DIR are "
               "kept)")


def _jobs(count: int) -> str:
    return "job" if count == 1 else "jobs"


# -- runs -------------------------------------------------------------------------------

def require_sites(pipeline: Pipeline, names: tuple[str, ...] | list[str]) -> list[str]:
    """Every name, checked as a subdomain and as a known site, before anything is enqueued:
    `enqueue a nosuch c` must not leave `a` running and `c` untried."""
    sites = [_subdomain(name) for name in names]
    missing = [site for site in dict.fromkeys(sites)
               if pipeline.fetch_one("get_site", {"subdomain": site}) is None]
    if missing:
        listed = ", ".join(repr(site) for site in missing)
        raise click.ClickException(f"no site {listed}: add it with `clerk site add` "
                                   "(nothing was enqueued)")
    return sites


@main.command("enqueue")
@click.argument("subdomains", nargs=-1)
@click.option("--priority", type=click.Choice(sorted(PRIORITIES)), default="normal",
              show_default=True, help="high: every job of the run overtakes the backlog.")
@click.option("--wait", is_flag=True, help="Show progress until the runs are done.")
@click.option("--all", "all_sites", is_flag=True, help="Every site.")
@click.option("--stale", "stale", default=None, metavar="SINCE",
              help="Every site not refreshed (no successful run) since SINCE: a date "
                   "(2026-11-01), a date and time, or a duration (12h, 7d, 2w).")
@pass_context
def enqueue(obj: Context, subdomains: tuple[str, ...], priority: str, wait: bool,
            all_sites: bool, stale: str | None) -> None:
    """Start a run of each site (or join the one in progress).

    \b
    clerk enqueue pleasanton oakland
    clerk enqueue --all
    clerk enqueue --stale 7d
    """
    if all_sites or stale is not None:
        _enqueue_many(obj, subdomains, priority, wait, stale)
        return
    if not subdomains:
        raise click.ClickException("name the sites to enqueue, or use --all or --stale SINCE")
    pipeline = obj.pipeline()
    require_sites(pipeline, subdomains)
    sites = [_subdomain(s) for s in subdomains]
    for site in sites:
        try:
            result = pipeline.enqueue_site(site, priority)
        except SiteNotFound as error:
            raise click.ClickException(str(error)) from None
        if result["joined"]:
            explicit = click.get_current_context().get_parameter_source("priority") \
                == click.core.ParameterSource.COMMANDLINE
            click.echo(f"{site}: {_joined(pipeline, site, result['live_jobs'], priority, explicit)}")
        else:
            click.echo(f"{site}: enqueued (job {result['job_id']}, priority {priority})")
    if wait:
        _wait_for(pipeline, sites)


def _enqueue_many(obj: Context, subdomains: tuple[str, ...], priority: str, wait: bool,
                  stale: str | None) -> None:
    """--all and --stale: the sites chosen in the database, enqueued in batches."""
    if subdomains:
        raise click.ClickException("give site names, or --all / --stale, not both")
    pipeline = obj.pipeline()
    since = None
    if stale is not None:
        try:
            since = parse_since(stale, datetime.now(UTC))
        except ValueError as error:
            raise click.ClickException(str(error)) from None
    sites = site_names(pipeline, stale_before=since)
    result = enqueue_sites(pipeline, sites, PRIORITIES[priority])
    chosen = plural(len(sites), "site") + (
        f" not refreshed since {_when(since)}" if since is not None else "")
    click.echo(f"{chosen}: {result['enqueued']} runs started (priority {priority}), "
               f"{result['joined']} joined the run in progress")
    if wait and sites:
        _wait_for(pipeline, sites)


def _priority_name(level: int | None) -> str:
    names = {value: name for name, value in PRIORITIES.items()}
    return names.get(level or 0, str(level))


def _joined(pipeline: Pipeline, site: str, live_jobs: int, priority: str, explicit: bool) -> str:
    """What joining a run in progress did: with --priority above the run's, raise the run."""
    joined = f"a run is already in progress ({plural(live_jobs, 'job')})"
    if not explicit:
        return f"{joined}; joined it"
    raised = raise_priority(pipeline, site, PRIORITIES[priority])
    before = raised["priority_before"]
    if raised["queued"] or raised["running"] or raised["groups"]:
        what = ", ".join(plural(raised[key], f"{key} job") for key in ("queued", "running")
                         if raised[key]) or "its page group"
        return f"{joined}; joined it and raised it to priority {priority} ({what})"
    if not raised["live"]:
        return f"{joined}; it finished before its priority could be raised"
    if before is not None and before >= PRIORITIES[priority]:
        note = "" if before == PRIORITIES[priority] else \
            f"; --priority {priority} ignored: a run's priority is only ever raised"
        return f"{joined} at priority {_priority_name(before)}; joined it{note}"
    return (f"{joined}; joined it, but its priority stays {_priority_name(before)}: "
            "its jobs are being claimed or finishing")


def _wait_for(pipeline: Pipeline, sites: list[str]) -> None:
    """Follow the runs (clerk/progress.py), print each site's end state, and exit 1 naming
    the sites that failed or were cancelled."""
    waiter = Waiter(echo=click.echo, tty=sys.stdout.isatty(),
                    write=lambda text: click.echo(text, nl=False))
    try:
        runs = wait_for_runs(pipeline, sites, waiter)
    except KeyboardInterrupt:
        click.echo("stopped waiting; the runs go on (`clerk status` shows them)", err=True)
        sys.exit(130)
    for run in runs:
        _print_site(with_failures(pipeline, run))
    problems = [problem for problem in map(outcome_problem, runs) if problem]
    if problems:
        raise click.ClickException("not every run completed: " + "; ".join(problems))


@main.command("status")
@click.option("--subdomain", default=None, help="One site's stages and failures.")
@click.option("--all", "all_sites", is_flag=True,
              help="List every active site (by default, beyond 20, a summary).")
@click.option("--json", "as_json", is_flag=True)
@pass_context
def status(obj: Context, subdomain: str | None, all_sites: bool, as_json: bool) -> None:
    """Queues, workers on every machine, and sites in progress."""
    pipeline = obj.pipeline()
    if subdomain is not None:
        try:
            data = site_status(pipeline, _subdomain(subdomain))
        except LookupError as error:
            raise click.ClickException(str(error)) from None
        data["next_refresh"] = next_refresh(pipeline, subdomain)  # its schedule, if any
        _emit_json(data) if as_json else _print_site(data)
        return
    data = overview(pipeline)
    data["refresh"] = refresh_summary(pipeline)  # sites re-run on a schedule
    if as_json:
        _emit_json(data)
        return
    data["all_sites"] = all_sites
    for line in overview_lines(data):  # clerk/status.py: one section per concern
        click.echo(line)


def _print_site(data: dict[str, Any]) -> None:
    """One site's latest run: its state, its stages, and what went wrong, one line each.
    Everything a city web site wrote (names, URLs, errors) goes through printable()."""
    state = data["state"]
    if data["waiting_for_worker"]:
        state += f", waiting for a worker (none on queue {', '.join(data['waiting_for_worker'])})"
    click.echo(f"{printable(data['site'])} ({printable(data['name'])}): {state}")
    if data["started_at"] is not None:
        click.echo(f"  run started {data['started_at']}, updated {data['updated_at'] or '-'}")
    if data["last_result"]:
        click.echo(f"  this run's fetch: {printable(data['last_result'])}")
    if data.get("next_refresh"):
        click.echo(f"  next scheduled run: {_when(data['next_refresh']['next_run_at'])} "
                   f"(refresh {printable(data['next_refresh']['schedule'])})")
    previous = data["previous_run"]
    if previous is not None:
        deployed = f", deployed {previous['deployed_at']}" if previous["deployed_at"] else ""
        click.echo(f"  previous run: {printable(previous['result'])} "
                   f"(fetched {previous['fetched_at']}{deployed})")
    for stage in data["stages"]:
        detail = f" ({stage['detail']})" if stage.get("detail") else ""
        error = f": {printable(stage['error'])}" if stage.get("error") else ""
        click.echo(f"  {MARKS[stage['state']]} {stage['stage']:<17} {stage['state']}{detail}"
                   f"{error}")
    for page in data["failed_pages"]:
        click.echo(f"  failed page: {printable(page.get('kind'))} {printable(page.get('meeting'))} "
                   f"{printable(page.get('date'))} page {printable(page.get('page'))}: "
                   f"{printable(page['error'])}")
    for job in data["failed_jobs"]:
        attempt = f", attempt {job['attempt']}" if job.get("attempt") else ""
        click.echo(f"  failed {job['queue']} job {job['job_id']} ({job['task']}{attempt}): "
                   f"{printable(job['error'])}")
    for document in data["document_errors"]:
        click.echo(f"  document problem: {printable(document['kind'])} "
                   f"{printable(document['meeting'])} {document['date']} "
                   f"({printable(document['url'])}): {about_url(document['error'], document['url'])}")
    for link in data["refused_links"]:
        click.echo(f"  refused link: {printable(link['url'])}: "
                   f"{about_url(link['error'], link['url'])}")
    if data.get("storage"):  # what the site holds in the database (issue 16)
        click.echo(f"  {blobs.storage_line(data['storage'])}")
    for line in page_read_lines(data.get("page_reads") or {"counts": []}):  # issue 17
        click.echo(f"  {printable(line)}")


@main.command("dashboard")
@click.option("--host", default="127.0.0.1", show_default=True, envvar="CLERK_DASHBOARD_HOST",
              help="The address to bind: any other than loopback needs DASHBOARD_PASSWORD.")
@click.option("--port", default=8080, show_default=True, type=click.IntRange(1, 65535),
              envvar="CLERK_DASHBOARD_PORT")
@click.option("--read-only", is_flag=True, envvar="CLERK_DASHBOARD_READ_ONLY",
              help="Pages only: no retry, cancel, pause, enqueue or purge.")
@pass_context
def dashboard(obj: Context, host: str, port: int, read_only: bool) -> None:
    """The web dashboard: queues, jobs, workers, groups and sites.

    Off loopback it needs DASHBOARD_PASSWORD (HTTP Basic, user DASHBOARD_USER or clerk).
    """
    try:  # here, not at the top: `clerk --help` does not load Starlette and Jinja
        from clerk.web import create_dashboard
        from pgqueue.web import bind_check, serve
    except ImportError as error:
        raise click.ClickException(f"the dashboard needs the web extra ({error.name} is not "
                                   "installed): pip install 'clerk[web]'") from None
    try:
        credentials = bind_check(host)  # before anything else: one line, no database needed
    except ConfigurationError as error:
        raise click.ClickException(str(error)) from None
    _check_port_free(host, port)
    pipeline = obj.pipeline()
    app = create_dashboard(pipeline, read_only=read_only)
    database = describe_embedded(pipeline.dsn) or mask_url(pipeline.dsn)
    address = f"[{host}]" if ":" in host else host
    click.echo(f"clerk dashboard{' (read-only)' if read_only else ''} of {database}: "
               f"http://{address}:{port}/"
               + (f" (HTTP Basic, user {credentials[0]})" if credentials else ""))
    serve(app, host, port)


def _check_port_free(host: str, port: int) -> None:
    """One line for an address in use or not on this machine, before uvicorn logs its own."""
    import socket
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        with socket.socket(infos[0][0], socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(infos[0][4])
    except OSError as error:
        raise click.ClickException(f"cannot serve the dashboard on {host}:{port}: "
                                   f"{error.strerror or error}") from None


@main.command("purge")
@click.argument("subdomain")
@pass_context
def purge(obj: Context, subdomain: str) -> None:
    """Cancel a site's queued jobs and stop its running ones (files are kept)."""
    pipeline = obj.pipeline()
    subdomain = _subdomain(subdomain)
    try:  # a removed site may still have jobs: purge them; an unknown name with none is a typo
        result = purge_site(pipeline, subdomain)
    except UnknownSite as error:
        raise click.ClickException(str(error)) from None
    click.echo(f"{subdomain}: {result['cancelled']} queued jobs cancelled, {result['signalled']} "
               f"running jobs told to stop, {result['groups']} runs cancelled; "
               f"{_garbage_phrase(result['documents_deleted'], result['bytes_deleted'])}")


@main.command("purge-queue")
@click.argument("queue_name", metavar="QUEUE", type=click.Choice(QUEUES))
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@pass_context
def purge_queue(obj: Context, queue_name: str, yes: bool) -> None:
    """Cancel every queued job of a queue and stop its running ones."""
    if not yes:
        click.confirm(f"cancel every job of queue {queue_name!r}?", abort=True)
    result = obj.pipeline().queue.purge_queue(queue_name)
    click.echo(f"{queue_name}: {result.cancelled} queued jobs cancelled, "
               f"{result.signalled} running jobs told to stop")


@main.command("pause")
@click.argument("queue_name", metavar="QUEUE", type=click.Choice(QUEUES))
@click.option("--reason", default=None, help="Why (shown by status).")
@pass_context
def pause_queue(obj: Context, queue_name: str, reason: str | None) -> None:
    """Stop every worker on every machine from claiming a queue's jobs (running ones
    finish; enqueueing goes on) until `clerk resume`."""
    newly = obj.pipeline().queue.pause(queue_name, reason=reason)
    click.echo(f"{queue_name}: paused" if newly else f"{queue_name}: was paused already")


@main.command("resume")
@click.argument("queue_name", metavar="QUEUE", type=click.Choice(QUEUES))
@pass_context
def resume_queue(obj: Context, queue_name: str) -> None:
    """Let workers claim a paused queue's jobs again (they are woken at once)."""
    resumed = obj.pipeline().queue.resume(queue_name)
    click.echo(f"{queue_name}: resumed" if resumed else f"{queue_name}: was not paused")


@main.command("failed")
@click.option("--queue", "queue_name", default=None)
@click.option("--subdomain", default=None)
@click.option("--retry", is_flag=True, help="Put the matching failed jobs back in the queue.")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(min=1))
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
        return
    click.echo(f"{'job':>8} {'queue':<12} {'task':<16} {'site':<16} {'state':<14} error")
    for row in rows:
        state = f"{'failed' if row['final'] else 'retrying'} {row['attempt']}/{row['max_attempts']}"
        click.echo(f"{row['id']:>8} {row['queue']:<12} {row['task']:<16} "
                   f"{printable(row['tag'] or '-'):<16} {state:<14} {error_line(row['last_error'])}")


@main.command("prune")
@pass_context
def prune(obj: Context) -> None:
    """Delete finished jobs past their retention (successes 1 day, failures 7 days), and
    the stored documents no site refers to any more."""
    pipeline = obj.pipeline()
    result = pipeline.queue.prune()
    click.echo("another machine is pruning" if result is None else json.dumps(result))
    click.echo(_collect_garbage(pipeline))


# -- workers ----------------------------------------------------------------------------

@main.command("worker")
@click.argument("queue_name", metavar="QUEUE", type=click.Choice(QUEUES))
@click.option("-n", "--concurrency", default=1, show_default=True, type=click.IntRange(min=1),
              help="Jobs at a time.")
@click.option("--burst", is_flag=True, help="Exit when the queue has nothing left to do.")
@pass_context
def worker(obj: Context, queue_name: str, concurrency: int, burst: bool) -> None:
    """Run workers for one queue in the foreground (each job in its own child process)."""
    pipeline = obj.pipeline(migrate=True)
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
    from clerk.services import render_service, service_commands, write_service
    # a named --env-file goes into the unit (EnvironmentFile= and clerkd --env-file); the
    # default is the .env of this directory, when there is one
    named = Path(obj.env_file).resolve() if obj.env_file_named else None
    try:
        service = render_service(obj.settings, system=system, env_file=named)
    except (ValueError, FileNotFoundError) as error:
        raise click.ClickException(str(error)) from None
    if dry_run:
        click.echo(service.content.decode(), nl=False)
        click.echo(f"# would write {service.path}", err=True)
        return
    write_service(service)
    click.echo(f"wrote {service.path}")
    if service.env_file is None:
        click.echo("note: no .env here, so the unit has no EnvironmentFile=; clerkd will "
                   "use the embedded database unless you pass --env-file")
    for command in service_commands(service.path, platform=sys.platform, system=system):
        click.echo(f"  then: {command}")


@main.command("uninstall-workers")
@click.option("--system", is_flag=True, help="The system unit (default: the user unit).")
@click.option("--dry-run", is_flag=True, help="Say what would be removed.")
def uninstall_workers(system: bool, dry_run: bool) -> None:
    """Remove the clerkd service file this machine has (stop and disable it first)."""
    from clerk.services import service_commands, service_enabled, service_path
    from clerk.services import uninstall_workers as uninstall
    path = service_path(system=system)
    stop, *after = service_commands(path, platform=sys.platform, system=system,
                                    action="uninstall")
    if not path.exists():
        click.echo(f"nothing to remove: no {path}")
        return
    if service_enabled(path, system=system):
        # removing the file of an enabled unit leaves clerkd running, unmanageable
        raise click.ClickException(f"clerkd is enabled: first run `{stop}`, then "
                                   "`clerk uninstall-workers` again")
    for removed in uninstall(system=system, dry_run=dry_run):
        click.echo(f"{'would remove' if dry_run else 'removed'} {removed}")
    click.echo(f"  if clerkd still runs, first: {stop}" if dry_run else
               f"  then: {' && '.join(after)}" if after else f"  if clerkd still runs: {stop}")


@main.command("doctor")
@pass_context
def doctor(obj: Context) -> None:
    """Check the settings, Tesseract, Poppler, the spaCy model, the directories and the
    database (reachable and migrated)."""
    from clerk.doctor import Check, run_checks
    checks: list[Check] = []
    settings: Settings | None
    try:
        settings = obj.settings
    except ConfigError as error:  # report it, and check the rest with the valid settings
        checks += [Check("configuration", False, problem,
                         f"correct it in {obj.env_file} or the environment")
                   for problem in error.problems]
        settings = error.partial
        if settings is not None:
            obj.use_settings(settings)
    dsn: str | None = None
    if settings is not None:
        try:
            dsn = obj.pipeline(check_migrated=False).dsn
        except click.ClickException as error:
            checks.append(Check("database", False, error.message,
                                "start PostgreSQL or fix DATABASE_URL"))
    checks += run_checks(settings or Settings(), dsn)
    failures = 0
    for check in checks:
        click.echo(f"{'✓' if check.ok else '✗'} {check.name}: {check.detail}")
        if not check.ok:
            failures += 1
            click.echo(f"    fix: {check.fix}")
    sys.exit(1 if failures else 0)


@main.command("demo")
@click.option("--workers", type=click.IntRange(1), default=None,
              help="Jobs at a time.  [default: CPU count]")
@pass_context
def demo(obj: Context, workers: int | None) -> None:
    """Run the whole pipeline on a bundled sample site, on an embedded PostgreSQL.

    The demo always uses the embedded server, in a database of its own (clerk_demo):
    DATABASE_URL, from the environment or .env, is ignored. It exits 1 and names what
    failed when a page or a stage fails.
    """
    from clerk.demo import DemoError, run_demo
    try:
        sys.exit(run_demo(obj.settings, workers=workers, echo=click.echo))
    except DemoError as error:
        raise click.ClickException(mask_url(str(error))) from None
