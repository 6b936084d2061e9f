"""Sites: a city named by its subdomain, which becomes a path, so it is validated everywhere;
their refresh schedules, and the bulk operations (import, export, enqueue of many)."""

from __future__ import annotations

import csv
import json
import logging
import re
import zlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO
from urllib.parse import urlsplit

import psycopg

from pgqueue.enqueue import RowBatch, insert_batch
from pgqueue.periodic import Schedule
from pgqueue.periodic import summary as periodic_summary

if TYPE_CHECKING:
    from clerk.pipeline import Pipeline
    from pgqueue import Task

log = logging.getLogger("clerk.sites")

# Lowercase labels of letters, digits and hyphens, joined by single dots
# (`alameda.ca`, `lenox.mi`); a label neither starts nor ends with a hyphen.
_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
SUBDOMAIN_PATTERN = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")
MAX_SUBDOMAIN_LENGTH = 253


class InvalidSubdomain(ValueError):
    """A subdomain that could not safely name a site or a directory."""


def validate_subdomain(subdomain: str) -> str:
    """Return the subdomain if it is safe to use as a name and a path, else raise."""
    if not isinstance(subdomain, str) or not subdomain:
        raise InvalidSubdomain("a subdomain is required")
    if len(subdomain) > MAX_SUBDOMAIN_LENGTH or not SUBDOMAIN_PATTERN.fullmatch(subdomain):
        raise InvalidSubdomain(
            f"invalid subdomain {subdomain!r}: use lowercase letters, digits and hyphens, "
            "in labels joined by single dots (e.g. 'pleasanton' or 'alameda.ca')"
        )
    return subdomain


def contained_path(root: Path, *parts: str) -> Path:
    """Join `parts` under `root` and refuse any result that leaves `root`."""
    base = root.resolve()
    candidate = base.joinpath(*parts).resolve()
    if candidate != base and base not in candidate.parents:
        raise ValueError(f"path {'/'.join(parts)!r} leaves {base}")
    return candidate


def site_dir(storage_dir: Path, subdomain: str) -> Path:
    return contained_path(storage_dir, validate_subdomain(subdomain))


# -- refresh schedules ------------------------------------------------------------------
#
# A site's refresh is 'off', 'daily', 'weekly' or a cron expression (5 fields, or 6 with
# seconds first, UTC); NULL in its row follows the REFRESH setting. Each refreshed site has
# one pgqueue periodic schedule, 'clerk.refresh:<subdomain>', whose job (clerk.refresh)
# starts a run as `clerk enqueue` does (or joins the one in progress).
#
# Staggering: 'daily' is not 03:00 for everyone. A site's time of day is a stable hash of
# its subdomain (CRC-32, the same on every machine and every run) spread over a window of
# four hours from 02:00 UTC, to the second: a thousand daily sites start about one every
# 14 seconds, not all at once, and a site keeps its time from day to day. 'weekly' takes
# its day of the week from the same hash. A cron given by the user is taken as written.

REFRESH_KEYWORDS = ("off", "daily", "weekly")
REFRESH_DEFAULT = "default"  # import/export and --refresh: follow the REFRESH setting
REFRESH_WINDOW_START = 2 * 3600  # 02:00 UTC
REFRESH_WINDOW_SECONDS = 4 * 3600
REFRESH_SCHEDULE_PREFIX = "clerk.refresh:"
REFRESH_TASK = "clerk.refresh"


class InvalidRefresh(ValueError):
    """A refresh that is neither a keyword nor a cron expression."""


def validate_refresh(value: str, *, allow_default: bool = False) -> str:
    """'off', 'daily', 'weekly', a cron expression (or 'default' where allowed), normalised."""
    from pgqueue.errors import ConfigurationError
    from pgqueue.periodic import check_cron
    text = " ".join(str(value).split())
    if text.lower() in REFRESH_KEYWORDS or (allow_default and text.lower() == REFRESH_DEFAULT):
        return text.lower()
    try:
        return check_cron(text)
    except ConfigurationError:
        keywords = ", ".join(REFRESH_KEYWORDS + ((REFRESH_DEFAULT,) if allow_default else ()))
        raise InvalidRefresh(f"refresh {value!r} is not one of {keywords}, nor a cron "
                             "expression (5 fields, or 6 with seconds first; UTC)") from None


def refresh_cron(subdomain: str, refresh: str) -> str | None:
    """The cron expression of a site's refresh (None: off); daily and weekly staggered."""
    if refresh == "off":
        return None
    if refresh not in ("daily", "weekly"):
        return refresh
    spread = zlib.crc32(subdomain.encode())
    moment = REFRESH_WINDOW_START + spread % REFRESH_WINDOW_SECONDS
    hour, minute, second = moment // 3600 % 24, moment // 60 % 60, moment % 60
    day = "*" if refresh == "daily" else str(spread // REFRESH_WINDOW_SECONDS % 7)
    return f"{second} {minute} {hour} * * {day}"


def refresh_schedule_name(subdomain: str) -> str:
    return f"{REFRESH_SCHEDULE_PREFIX}{subdomain}"


def register_refresh(pipeline: Pipeline) -> Task:
    """The `clerk.refresh` task: a site's scheduled run. It has no tag, so the run it
    starts does not see it as the run in progress; a removed site is a no-op."""
    def refresh(site: str) -> None:
        from clerk.pipeline import SiteNotFound
        try:
            result = pipeline.enqueue_site(site)
        except SiteNotFound:
            log.info("scheduled refresh of %s skipped: the site was removed", site,
                     extra={"action": "refresh_skipped", "site": site})
            return
        log.info("scheduled refresh of %s: %s", site,
                 "joined the run in progress" if result["joined"] else "run started",
                 extra={"action": "refresh", "site": site})
    task: Task = pipeline.queue.task(refresh, name=REFRESH_TASK, queue="fetch", max_attempts=3)
    return task


def sync_refresh(pipeline: Pipeline, subdomains: Sequence[str] | None = None,
                 conn: psycopg.Connection[Any] | None = None) -> dict[str, int]:
    """Make the sites' periodic schedules match their refresh (and the REFRESH default):
    every site (clerkd at start, so a changed default applies) or those named. One
    statement to write the schedules, one to remove those turned off."""
    from clerk import db as clerk_db
    default = pipeline.settings.refresh
    with pipeline.queue.session(conn) as db:
        rows = clerk_db.fetch_all(db, "site_refreshes", {
            "subdomains": None if subdomains is None else list(subdomains)})
        wanted: list[Schedule] = []
        off: list[str] = []
        for row in rows:
            cron = refresh_cron(row["subdomain"], row["refresh"] or default)
            if cron is None:
                off.append(refresh_schedule_name(row["subdomain"]))
                continue
            wanted.append(Schedule(
                name=refresh_schedule_name(row["subdomain"]), task=REFRESH_TASK,
                queue=pipeline.refresh_task.queue, cron=cron, args={"site": row["subdomain"]},
                max_attempts=pipeline.refresh_task.max_attempts, missed="run_once",
                grace=REFRESH_GRACE_SECONDS))
        if subdomains is None:  # schedules of sites removed since
            known = {refresh_schedule_name(row["subdomain"]) for row in rows}
            off += [row["name"] for row in pipeline.queue.schedules()
                    if row["name"].startswith(REFRESH_SCHEDULE_PREFIX) and row["name"] not in known]
        pipeline.queue.schedule_many(wanted, conn=db)
        removed = pipeline.queue.unschedule(*off, conn=db) if off else 0
    return {"scheduled": len(wanted), "removed": removed}


# A refresh found late (every clerkd was down at its time) still runs once when one starts
# (missed="run_once"); within the hour it counts as on time.
REFRESH_GRACE_SECONDS = 3600.0


def next_refresh(pipeline: Pipeline, subdomain: str) -> dict[str, Any] | None:
    """A site's refresh schedule and next run, or None if it has none."""
    rows = pipeline.queue.schedules([refresh_schedule_name(subdomain)])
    if not rows:
        return None
    return {"schedule": rows[0]["schedule"], "next_run_at": rows[0]["next_run_at"]}


def refresh_summary(pipeline: Pipeline) -> dict[str, Any]:
    """How many sites refresh on a schedule, and the next one due."""
    found = periodic_summary(pipeline.queue.store, REFRESH_SCHEDULE_PREFIX)
    first = found["next_name"]
    return {"sites": found["schedules"],
            "next_site": first.removeprefix(REFRESH_SCHEDULE_PREFIX) if first else None,
            "next_run_at": found["next_run_at"]}


# -- bulk operations: import, export, enqueue --------------------------------------------

SITE_FIELDS = ("subdomain", "name", "url", "kind", "refresh")
IMPORT_BATCH = 500  # rows per transaction
ENQUEUE_BATCH = 200  # sites per transaction: one advisory lock each, held to its commit
MAX_NAME_LENGTH = 500


class SiteFileError(ValueError):
    """A file `site import` cannot read at all (its header, its encoding)."""


@dataclass
class ImportReport:
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    errors: list[tuple[int, str]] = field(default_factory=list)  # (line number, problem)


def file_format(path: str, first_line: str, given: str | None) -> str:
    """csv or jsonl: as given, else by the file's suffix, else by its first line."""
    if given:
        return given
    suffix = Path(path).suffix.lower()
    if suffix == ".csv":
        return "csv"
    if suffix in (".jsonl", ".ndjson", ".json"):
        return "jsonl"
    return "jsonl" if first_line.lstrip().startswith("{") else "csv"


def read_site_records(lines: Iterable[str], fmt: str
                      ) -> Iterator[tuple[int, dict[str, str] | str]]:
    """(line number, the row's fields) or (line number, what is wrong with it)."""
    if fmt == "csv":
        reader = csv.DictReader(lines)
        header = reader.fieldnames or []
        unknown = [name for name in header if name not in SITE_FIELDS]
        if "subdomain" not in header or unknown:
            raise SiteFileError(
                f"the CSV header must name the columns: subdomain and any of "
                f"{', '.join(SITE_FIELDS[1:])}"
                + (f" (unknown: {', '.join(map(repr, unknown))})" if unknown else ""))
        for record in reader:
            if None in record:
                yield reader.line_num, f"more values than the header has columns ({len(header)})"
                continue
            yield reader.line_num, {key: value or "" for key, value in record.items()}
        return
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError as error:
            yield number, f"not JSON: {error}"
            continue
        if not isinstance(record, dict):
            yield number, "not a JSON object"
            continue
        unknown = [key for key in record if key not in SITE_FIELDS]
        if unknown:
            yield number, f"unknown field {unknown[0]!r} (fields: {', '.join(SITE_FIELDS)})"
            continue
        if any(value is not None and not isinstance(value, str) for value in record.values()):
            yield number, "every field is a string"
            continue
        yield number, {key: value or "" for key, value in record.items()}


def check_site_record(record: dict[str, str]) -> dict[str, str]:
    """The row with its fields checked and trimmed; blank fields stay blank (kept from
    the stored site, or defaulted for a new one). Raises ValueError saying what is wrong."""
    from clerk.sources import SOURCES
    row = {name: (record.get(name) or "").strip() for name in SITE_FIELDS}
    validate_subdomain(row["subdomain"])
    if row["url"]:
        parts = urlsplit(row["url"])
        if parts.scheme.lower() not in ("http", "https"):
            raise ValueError("url must be an http or https URL")
        if any(char.isspace() for char in row["url"]) or not parts.hostname:
            raise ValueError("url is not a valid URL: it needs a host and no spaces")
    if row["kind"] and row["kind"] not in SOURCES:
        raise ValueError(f"kind {row['kind']!r} is not one of {', '.join(sorted(SOURCES))}")
    if len(row["name"]) > MAX_NAME_LENGTH or any(ord(char) < 32 for char in row["name"]):
        raise ValueError(f"name is over {MAX_NAME_LENGTH} characters or has control characters")
    if row["refresh"]:
        row["refresh"] = validate_refresh(row["refresh"], allow_default=True)
    return row


def import_sites(pipeline: Pipeline, records: Iterable[tuple[int, dict[str, str] | str]], *,
                 batch: int = IMPORT_BATCH) -> ImportReport:
    """Add or update sites from `read_site_records`, a transaction per batch of rows (one
    upsert statement, the refresh schedules beside it). A bad row is reported with its line
    number and the rest go on; a row equal to the stored site is left alone."""
    report = ImportReport()
    seen: dict[str, int] = {}
    pending: list[tuple[int, dict[str, str]]] = []
    for number, record in records:
        if isinstance(record, str):
            report.errors.append((number, record))
            continue
        try:
            row = check_site_record(record)
        except ValueError as error:
            report.errors.append((number, str(error)))
            continue
        if row["subdomain"] in seen:
            report.errors.append((number, f"site {row['subdomain']!r} is already on line "
                                          f"{seen[row['subdomain']]}"))
            continue
        seen[row["subdomain"]] = number
        pending.append((number, row))
        if len(pending) >= batch:
            _import_batch(pipeline, pending, report)
            pending = []
    if pending:
        _import_batch(pipeline, pending, report)
    report.errors.sort()
    return report


def _import_batch(pipeline: Pipeline, rows: list[tuple[int, dict[str, str]]],
                  report: ImportReport) -> None:
    try:
        _write_batch(pipeline, rows, report)
    except (psycopg.DataError, psycopg.IntegrityError):
        # A row the database refused despite the checks: find it, row by row, and let the
        # others in (each row its own transaction, only in this unusual case).
        for row in rows:
            try:
                _write_batch(pipeline, [row], report)
            except (psycopg.DataError, psycopg.IntegrityError) as error:
                report.errors.append((row[0], f"refused by the database: "
                                              f"{str(error).splitlines()[0]}"))


def _write_batch(pipeline: Pipeline, rows: list[tuple[int, dict[str, str]]],
                 report: ImportReport) -> None:
    from clerk import db as clerk_db
    counts = ImportReport()
    with pipeline.queue.session() as conn:
        stored = {row["subdomain"]: row for row in clerk_db.fetch_all(
            conn, "sites_for_import", {"subdomains": [row["subdomain"] for _, row in rows]})}
        ready: list[dict[str, Any]] = []
        for number, row in rows:
            current = stored.get(row["subdomain"])
            if current is None and not row["url"]:
                counts.errors.append((number, f"site {row['subdomain']!r} is new: url is needed"))
                continue
            refresh = row["refresh"] or (current["refresh"] if current else REFRESH_DEFAULT)
            ready.append({
                "subdomain": row["subdomain"],
                "name": row["name"] or (current["name"] if current else row["subdomain"]),
                "url": row["url"] or (current["source_url"] if current else ""),
                "kind": row["kind"] or (current["source_kind"] if current else "index"),
                "refresh": None if refresh == REFRESH_DEFAULT else refresh})
        if not ready:
            report.errors += counts.errors
            return
        written = clerk_db.fetch_all(conn, "import_sites", {
            "subdomains": [r["subdomain"] for r in ready], "names": [r["name"] for r in ready],
            "urls": [r["url"] for r in ready], "kinds": [r["kind"] for r in ready],
            "refreshes": [r["refresh"] for r in ready]})
        counts.added = sum(1 for row in written if row["created"])
        counts.updated = len(written) - counts.added
        counts.unchanged = len(ready) - len(written)
        sync_refresh(pipeline, [r["subdomain"] for r in ready], conn=conn)
    report.added += counts.added
    report.updated += counts.updated
    report.unchanged += counts.unchanged
    report.errors += counts.errors


def export_records(pipeline: Pipeline) -> list[dict[str, str]]:
    """Every site as `import_sites` reads it (never a credential)."""
    from clerk import db as clerk_db
    with pipeline.queue.session(atomic=False) as conn:
        rows = clerk_db.fetch_all(conn, "export_sites")
    return [{"subdomain": row["subdomain"], "name": row["name"], "url": row["source_url"],
             "kind": row["source_kind"], "refresh": row["refresh"] or REFRESH_DEFAULT}
            for row in rows]


def write_site_records(records: Iterable[dict[str, str]], out: TextIO, fmt: str) -> int:
    count = 0
    if fmt == "csv":
        writer = csv.DictWriter(out, fieldnames=SITE_FIELDS, lineterminator="\n")
        writer.writeheader()
        for record in records:
            writer.writerow(record)
            count += 1
        return count
    for record in records:
        out.write(json.dumps(record, ensure_ascii=False) + "\n")
        count += 1
    return count


_DURATION = re.compile(r"(\d+)\s*(s|m|h|d|w)")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_since(text: str, now: datetime) -> datetime:
    """`--stale SINCE`: a date (2026-11-01, midnight UTC), a date and time (ISO 8601, UTC
    unless it says), or a duration back from now (90m, 12h, 7d, 2w)."""
    value = text.strip()
    match = _DURATION.fullmatch(value)
    if match:
        return now - timedelta(seconds=int(match.group(1)) * _UNITS[match.group(2)])
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"--stale {text!r}: give a date (2026-11-01), a date and time "
                         "(2026-11-01T06:00), or a duration (12h, 7d, 2w)") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def site_names(pipeline: Pipeline, *, stale_before: datetime | None = None) -> list[str]:
    """Every site, or those whose last successful run is older than `stale_before`."""
    from clerk import db as clerk_db
    with pipeline.queue.session(atomic=False) as conn:
        rows = clerk_db.fetch_all(conn, "site_names", {"stale_before": stale_before})
    return [row["subdomain"] for row in rows]


def enqueue_sites(pipeline: Pipeline, sites: Sequence[str], priority: int, *,
                  batch: int = ENQUEUE_BATCH) -> dict[str, int]:
    """Start a run of each site, or let it join the one in progress: what `enqueue_site`
    does, for a batch of sites per transaction (their advisory locks, one query for the
    runs in progress, one insert of the fetch jobs), so thousands take seconds."""
    from clerk import db as clerk_db
    from clerk.pipeline import fetch_args
    enqueued = joined = 0
    for start in range(0, len(sites), batch):
        chunk = list(dict.fromkeys(sites[start:start + batch]))
        with pipeline.queue.session() as conn:
            clerk_db.execute(conn, "lock_sites", {"subdomains": chunk})
            live = {row["tag"] for row in conn.execute(
                pipeline.queue.statements.live_tags_among, {"tags": chunk}).fetchall()}
            sources = {row["subdomain"]: row["source_url"] for row in clerk_db.fetch_all(
                conn, "site_source_urls", {"subdomains": chunk})}  # the fetch limits' key
            rows = RowBatch()
            now = datetime.now(UTC)
            for site in chunk:
                if site not in live:
                    rows.add(pipeline.fetch_task, fetch_args(site, sources.get(site, "")),
                             priority=priority, run_at=now,
                             group_id=None, tag=site, dedupe_key=f"clerk:fetch:{site}",
                             on_success=None)
            # A fetch enqueued outside clerk's lock holds its dedupe key: that site joins.
            ids = insert_batch(conn, pipeline.queue.statements, rows)
        enqueued += len(ids)
        joined += len(chunk) - len(ids)
    return {"enqueued": enqueued, "joined": joined}


class UnknownSite(LookupError):
    """A name that is neither a site nor the tag of any job: a typo."""


def purge_site(pipeline: Pipeline, subdomain: str) -> dict[str, int]:
    """What `clerk purge` (and the dashboard's purge button) does: cancel the site's queued
    jobs, tell its running ones to stop, cancel its open runs, then delete the stored
    documents no site refers to any more (files under STORAGE_DIR stay). A removed site may
    still have jobs, so those are purged too; a name with neither is refused (UnknownSite)."""
    from clerk import blobs
    validate_subdomain(subdomain)
    if pipeline.fetch_one("get_site", {"subdomain": subdomain}) is None \
            and not pipeline.live_jobs(subdomain):
        raise UnknownSite(f"no site {subdomain!r} (and no jobs tagged with it); "
                          "`clerk site list` shows the sites")
    result = pipeline.queue.cancel(tag=subdomain)
    with pipeline.queue.session() as conn:
        documents, size = blobs.collect_garbage(conn)
    return {"cancelled": result.cancelled, "signalled": result.signalled,
            "groups": result.groups, "documents_deleted": documents, "bytes_deleted": size}
