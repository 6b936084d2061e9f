"""The pipeline as pgqueue tasks.

    fetch(site)                              queue fetch
      -> ocr_page(site, doc, page) x N        queue ocr          one group per site run
    when the group's last member finishes (fan-in, exactly once):
      -> compile_site(site, entities=False)   queue compilation  fast path
      -> extract(site)                        queue extraction   full path, a chain:
         -> compile_site(site, entities=True) queue compilation
            -> deploy(site)                   queue deploy

Every job of a run carries the site as its tag and the run's priority.
"""

from __future__ import annotations

import json
import logging
import re
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

import requests

from clerk import blobs
from clerk import db as clerk_db
from clerk.compile import DATABASE_FILE, MARKER_FILE, compile_site
from clerk.config import Settings
from clerk.deploy import deploy as deploy_database
from clerk.extract import extract_site
from clerk.fetch import FetchError, OriginAuth, download, redact_url
from clerk.network import AddressPolicy, guarded_session
from clerk.ocr import read_page
from clerk.pdf import PdfError, pdf_info
from clerk.sites import register_refresh, site_dir, validate_subdomain
from clerk.sources import DocumentRef, SourceError, TransientSourceError, get_source
from clerk.sources.index import PageMemory, RejectedLink
from clerk.sources.memory import SiteMemory
from clerk.storage import (
    DEFAULT_MEETING,
    MAX_MEETING_CHARS,
    Document,
    StorageError,
    meeting_slug,
    safe_meeting_name,
)
from pgqueue import (
    DuplicateJob,
    GroupExists,
    Limit,
    PermanentFailure,
    Queue,
    Task,
    current_job,
)
from pgqueue.db import remember_secrets
from pgqueue.errors import ConfigurationError

log = logging.getLogger("clerk.pipeline")

PRIORITIES = {"high": 100, "normal": 0, "low": -100}


CLERK_TASKS = frozenset({"clerk.fetch", "clerk.ocr_page", "clerk.extract", "clerk.compile",
                         "clerk.deploy"})
RETRY_SCAN_LIMIT = 100_000


class SiteNotFound(ValueError):
    pass


class TooManyPages(ValueError):
    """A document longer than MAX_PAGES_PER_DOCUMENT: recorded with its error, not read."""


@dataclass
class RetryReport:
    """What `Pipeline.retry_failed` did, site by site."""

    runs: dict[str, tuple[int, int]] = field(default_factory=dict)  # site: (failed, fetch job)
    left: dict[str, tuple[int, int]] = field(default_factory=dict)  # site: (failed, live jobs)
    requeued: int = 0  # failed jobs of no site, re-queued as they were
    not_requeued: int = 0  # of those, jobs whose dedupe key is taken by a live job

    def add(self, site: str, failed: list[dict[str, Any]], result: dict[str, Any]) -> None:
        if result["joined"]:
            self.left[site] = (len(failed), result["live_jobs"])
        else:
            self.runs[site] = (len(failed), result["job_id"])

    def as_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "requeued": self.requeued + sum(count for count, _ in self.runs.values())}
        if self.runs:
            data["runs"] = {site: {"failed": count, "fetch_job": job}
                            for site, (count, job) in self.runs.items()}
        if self.left:
            data["left_for_run_in_progress"] = {site: {"failed": count, "live_jobs": live}
                                                for site, (count, live) in self.left.items()}
        if self.not_requeued:
            data["not_requeued"] = self.not_requeued
        return data

    def lines(self) -> list[str]:
        out = [f"{site}: {count} failed jobs re-queued (the site's run re-opened, fetch job "
               f"{job})" for site, (count, job) in self.runs.items()]
        out += [f"{site}: {count} failed jobs not re-queued: a run is "
                f"in progress ({live} jobs) and no second run is started; its fetch reads the "
                f"missing pages if it has not run yet, else retry once it ends"
                for site, (count, live) in self.left.items()]
        if self.requeued or self.not_requeued or not out:
            out.append(f"{self.requeued} failed jobs re-queued"
                       + (f", {self.not_requeued} not (a live job has the same dedupe key)"
                          if self.not_requeued else ""))
        return out


def resolve_dsn(settings: Settings) -> str:
    """DATABASE_URL, or the embedded PostgreSQL when none is configured."""
    if settings.database_url:
        return settings.database_url
    from pgqueue.embedded import embedded_url
    return embedded_url(settings.embedded_dir)


@dataclass
class Pipeline:
    """clerk's queue with its tasks registered, bound to one configuration."""

    settings: Settings
    queue: Queue
    # Which addresses a site's fetch may connect to: public ones and ALLOW_PRIVATE_HOSTS.
    network: AddressPolicy = field(default_factory=AddressPolicy)
    fetch_task: Task = field(init=False)
    ocr_task: Task = field(init=False)
    extract_task: Task = field(init=False)
    compile_task: Task = field(init=False)
    deploy_task: Task = field(init=False)
    refresh_task: Task = field(init=False)  # a site's scheduled run (clerk.sites)

    @property
    def dsn(self) -> str:
        return self.queue.dsn

    @property
    def cache(self) -> blobs.BlobCache:
        """This host's cache of documents (STORAGE_DIR/.cache, CACHE_MAX_BYTES)."""
        return blobs.BlobCache(self.settings.storage_dir, self.settings.cache_max_bytes)

    def fetch_all(self, name: str, params: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        # Through the queue's pool: a fetch touches the database a few times per document.
        with self.queue.session(atomic=False) as conn:
            return clerk_db.fetch_all(conn, name, params)

    def fetch_one(self, name: str, params: dict[str, Any] | None = None) -> dict[str, Any] | None:
        rows = self.fetch_all(name, params)
        return rows[0] if rows else None

    def close(self) -> None:
        """Close the pooled connections."""
        self.queue.close()

    def allow_url(self, url: str) -> None:
        """Let fetches reach exactly `url`'s address and port (the demo's own server on
        127.0.0.1), whatever ALLOW_PRIVATE_HOSTS says. Workers of this process only."""
        self.network = self.network.allowing_url(url)

    def migrate(self) -> list[str]:
        return self.queue.migrate() + clerk_db.migrate_clerk(self.dsn)

    # -- enqueueing -----------------------------------------------------------------------

    def enqueue_site(self, subdomain: str, priority: str | int = "normal") -> dict[str, Any]:
        """Start a run of a site, or join the one in progress (one run per site at a time).

        The "run in progress?" check and the insert of the fetch job are one step: both
        happen in one transaction holding the site's advisory lock, so two enqueues of a
        site (two CLIs, clerkd's schedule and a retry) cannot both see no run and both
        start one.
        """
        validate_subdomain(subdomain)
        site = self.fetch_one("get_site", {"subdomain": subdomain})
        if site is None:
            raise SiteNotFound(f"no site {subdomain!r}: add it with `clerk site add`")
        level = PRIORITIES[priority] if isinstance(priority, str) else int(priority)
        with self.queue.session() as conn:
            clerk_db.execute(conn, "lock_site", {"subdomain": subdomain})
            live = self._live_jobs(conn, subdomain)
            if live:
                return {"site": subdomain, "joined": True, "live_jobs": sum(live.values())}
            try:
                job_id = self.queue.enqueue(self.fetch_task,
                                            fetch_args(subdomain, site["source_url"]),
                                            priority=level, tag=subdomain,
                                            dedupe_key=f"clerk:fetch:{subdomain}", conn=conn)
            except DuplicateJob:  # a fetch enqueued outside clerk's lock: join its run
                return {"site": subdomain, "joined": True,
                        "live_jobs": sum(self._live_jobs(conn, subdomain).values())}
        return {"site": subdomain, "joined": False, "job_id": job_id, "priority": level}

    def retry_failed(self, *, queue: str | None = None, subdomain: str | None = None
                     ) -> RetryReport:
        """Retry failed jobs by re-opening their site's run, never by re-queueing them bare.

        A failed page job put back on its own would belong to no group, so no compile would
        follow it, and a fetch put back while the site's next fetch is queued would collide
        with it. So a site with failed clerk jobs gets a new run (or joins the one in
        progress; never a second one): its fetch finds the pages whose text is missing and
        reads them in a new group with the compile, extract and deploy follow-ups, with the
        tasks' current settings (timeouts, attempts), and it redoes the later stages of a
        run that did not finish. The failed jobs' records stay in the history.
        Failed jobs that belong to no site (other tasks) are re-queued as they were.
        """
        failures = [row for row in self.queue.failed_jobs(queue=queue, tag=subdomain,
                                                          limit=RETRY_SCAN_LIMIT)
                    if row["final"]]
        report = RetryReport()
        by_site: dict[str, list[dict[str, Any]]] = {}
        others: list[int] = []
        is_site: dict[str, bool] = {}
        for row in failures:
            tag = row["tag"]
            if tag and tag not in is_site:
                is_site[tag] = self.fetch_one("get_site", {"subdomain": tag}) is not None
            if row["task"] in CLERK_TASKS and tag and is_site[tag]:
                by_site.setdefault(tag, []).append(row)
            else:
                others.append(row["id"])
        for site, failed in sorted(by_site.items()):
            report.add(site, failed, self._retry_site(site, failed))
        if others:
            report.requeued = self.queue.retry_failed(ids=others)
            report.not_requeued = len(others) - report.requeued
        return report

    def _retry_site(self, site: str, failed: list[dict[str, Any]]) -> dict[str, Any]:
        """Re-open a site's run under its lock: join the run in progress, or put its latest
        failed fetch back (its record moves back to the queue, so `clerk failed` no longer
        lists it), or start a new run."""
        fetches = sorted((row for row in failed if row["task"] == "clerk.fetch"),
                         key=lambda row: row["failed_at"])
        with self.queue.session() as conn:
            clerk_db.execute(conn, "lock_site", {"subdomain": site})
            live = self._live_jobs(conn, site)
            if live:
                return {"joined": True, "live_jobs": sum(live.values())}
            # Under the lock no enqueue of this site can take the fetch's dedupe key, so
            # moving the failed fetch back cannot collide (and lose its record).
            if fetches and self.queue.retry_failed(ids=[fetches[-1]["id"]]) == 1:
                return {"joined": False, "job_id": fetches[-1]["id"]}
        return self.enqueue_site(site)

    def _live_jobs(self, conn: Any, subdomain: str) -> dict[str, int]:
        rows = conn.execute(self.queue.statements.live_by_tag, {"tag": subdomain}).fetchall()
        return {f"{r['queue']}:{r['state']}": r["jobs"] for r in rows}

    def live_jobs(self, subdomain: str) -> dict[str, int]:
        with self.queue.session() as conn:
            rows = conn.execute(self.queue.statements.live_by_tag, {"tag": subdomain}).fetchall()
        return {f"{r['queue']}:{r['state']}": r["jobs"] for r in rows}

    # -- tasks ----------------------------------------------------------------------------

    def fetch(self, site: str, host: str | None = None) -> None:
        """`host` (the source URL's) is the key of the fetch limits (`fetch_limit`)."""
        settings = self.settings
        row = self.fetch_one("get_site", {"subdomain": validate_subdomain(site)})
        if row is None:
            raise PermanentFailure(f"site {site!r} no longer exists")
        job = current_job()
        run_key = f"site:{site}:run:{job.id if job else 'manual'}"
        # The credential of `--url http://user:pass@host/`, stored apart from the URL, is sent
        # to that origin only (the index page and the PDFs it serves).
        secret = self.fetch_one("site_auth", {"subdomain": site}) or {}
        # A platform's API token (Legistar) is given to its source; any other credential is
        # a user:password for HTTP basic auth.
        try:
            source = get_source(row["source_kind"])
        except SourceError as error:
            raise PermanentFailure(f"site {site}: {error}") from error
        token = (secret.get("source_auth")
                 if getattr(source, "CREDENTIAL", "basic") == "token" else None)
        auth = (OriginAuth(row["source_url"], secret["source_auth"])
                if secret.get("source_auth") and token is None else None)
        session = guarded_session(self.network)
        session.auth = auth
        try:
            refs, refused, meetings_listed = discover(
                row["source_kind"], row["source_url"], session, settings,
                since=row.get("last_success_at"), token=token,
                memory=SiteMemory(self.queue, site))  # conditional index reads (issue 21)
        except TransientSourceError as error:  # retried with backoff, then fails for good
            raise RuntimeError(f"site {site}: cannot read its source now: {error}") from error
        except (SourceError, FetchError) as error:
            raise PermanentFailure(f"site {site}: cannot read its source: {error}") from error
        finally:
            session.close()
        self._record_refused(site, refused)
        changed: list[tuple[Document, list[int], str]] = []
        problems = 0
        budget = settings.max_pages_per_run  # pages this run may queue, whatever is listed
        deferred = 0
        meetings = document_meetings(refs, self.fetch_all("document_urls", {"site": site}))
        with guarded_session(self.network) as downloads:
            downloads.auth = auth
            for ref, meeting in zip(refs, meetings, strict=True):
                try:
                    outcome = self._fetch_document(site, ref, meeting, downloads)
                except (FetchError, PdfError, StorageError, TooManyPages) as error:
                    problems += 1
                    log.warning("site %s: document %s failed: %s", site, redact_url(ref.url), error,
                                extra={"action": "document_failed", "site": site})
                    continue
                if outcome is None:
                    continue
                # A page left out is missing its text, so the next run reads it.
                document, numbers, sha256 = outcome
                taken = numbers[:max(0, budget)]
                budget -= len(taken)
                deferred += len(numbers) - len(taken)
                if taken:
                    changed.append((document, taken, sha256))
        if deferred:
            log.warning("site %s: %s pages left for the next run: MAX_PAGES_PER_RUN=%s reached",
                        site, deferred, settings.max_pages_per_run,
                        extra={"action": "run_bounded", "site": site})
        summary = ((f"{meetings_listed} meetings, " if meetings_listed is not None else "")
                   + f"{len(refs)} documents listed, {len(changed)} new or changed, "
                   f"{sum(len(p) for _, p, _ in changed)} pages to read, {problems} failed"
                   + (f", {len(refused)} links refused" if refused else "")
                   + (f", {deferred} pages left for the next run (MAX_PAGES_PER_RUN="
                      f"{settings.max_pages_per_run})" if deferred else ""))
        # Compiled before (on whichever host compiles: the fetch host may have no meetings.db)
        compiled = row.get("last_success_at") is not None or (
            site_dir(settings.storage_dir, site) / DATABASE_FILE).exists()
        if not changed and compiled and not _unfinished(row):
            self._record_fetch(site, run_key, f"nothing new: {summary}")
            log.info("site %s: nothing new (%s)", site, summary,
                     extra={"action": "nothing_new", "site": site})
            return
        self._fan_out(site, run_key, changed, job.priority if job else 0, summary)

    def _fetch_document(self, site: str, ref: DocumentRef, meeting: str,
                        session: requests.Session) -> tuple[Document, list[int], str] | None:
        """Download a document if it changed and store it in the database; return it with
        the pages to read, if any, and the version (sha256) they are read from.

        The conditional GET needs no local copy: the version stored in the database is
        the one compared with. A changed document's bytes, its row and the removal of the
        pages read from its old version commit in one transaction. An unchanged document
        still has pages to read when some of its page texts are missing from the database:
        a fetch that failed between the download and the fan-out, or a page that failed for
        good in an earlier run. A download that fails keeps the stored version: nothing is
        lost, and the error is recorded on the document's row.
        """
        settings = self.settings
        document = Document(site, ref.kind, meeting, ref.date)
        key = {"site": site, "kind": document.kind, "meeting": document.meeting,
               "date": document.date}
        previous = self.fetch_one("get_document", key)
        known = previous["sha256"] if previous is not None and previous["pages"] else None
        if known is not None:
            with self.queue.session(atomic=False) as conn:
                known = known if blobs.blob_exists(conn, known) else None
        record: dict[str, Any] = {**key, "url": redact_url(ref.url), "etag": None,
                                  "last_modified": None, "sha256": None, "pages": None,
                                  "error": None}
        validators = previous if known is not None and previous is not None else {}
        incoming = self.cache.incoming()
        try:
            try:
                result = download(ref.url, incoming,
                                  etag=validators.get("etag"),
                                  last_modified=validators.get("last_modified"),
                                  max_bytes=settings.max_pdf_bytes, timeout=settings.http_timeout,
                                  deadline=settings.download_deadline, session=session,
                                  policy=self.network, known_sha256=known)
                record.update(etag=result.etag, last_modified=result.last_modified,
                              sha256=result.sha256)
                if not result.changed and known is not None and previous is not None:
                    record.update(pages=previous["pages"], error=previous["error"])
                    self._save_document(record)
                    self._check_pages(previous["pages"], record)
                    with self.queue.session(atomic=False) as conn:
                        have = blobs.pages_with_text(conn, document)
                    missing = [page for page in range(1, previous["pages"] + 1)
                               if page not in have]
                    return (document, missing, known) if missing else None
                info = pdf_info(incoming)
                record["pages"] = info.pages
                if info.warnings:
                    record["error"] = f"read with warnings: {info.warnings[0]}"
            except (FetchError, PdfError) as error:
                # The stored version stays this document's (so it is not collected).
                record.update(error=f"{type(error).__name__}: {error}", pages=None,
                              sha256=(previous or {}).get("sha256"))
                self._save_document(record)
                raise
            # A document over MAX_PAGES_PER_DOCUMENT is stored with its error, so the next
            # run asks the city whether it changed instead of downloading it again, and a
            # raised bound reads it without a download.
            too_long = self._too_many_pages(info.pages)
            if too_long is not None:
                record["error"] = f"{type(too_long).__name__}: {too_long}"
            sha256 = str(result.sha256)
            # The same bytes as recorded, downloaded again because the database had lost
            # them (or never had them: an installation not yet imported): the pages read
            # from them stay.
            same = previous is not None and previous["sha256"] == sha256
            with self.queue.session() as conn:
                blobs.store_file(conn, incoming, sha256=sha256, max_bytes=settings.max_pdf_bytes)
                clerk_db.execute(conn, "save_document", record)
                if not same:  # the document changed: the pages read from its old version go
                    blobs.clear_page_texts(conn, document)
                have = blobs.pages_with_text(conn, document) if same else set()
            self.cache.adopt(incoming, sha256)
        finally:
            incoming.unlink(missing_ok=True)
        if too_long is not None:
            raise too_long
        return document, [page for page in range(1, info.pages + 1) if page not in have], sha256

    def _too_many_pages(self, pages: int) -> TooManyPages | None:
        """A document longer than MAX_PAGES_PER_DOCUMENT is refused (a 5,000-page blank PDF
        linked twenty times would otherwise queue 100,000 OCR jobs ahead of every site)."""
        bound = self.settings.max_pages_per_document
        if pages > bound:
            return TooManyPages(f"{pages} pages, more than MAX_PAGES_PER_DOCUMENT={bound}: "
                                "not read (raise the setting to read it)")
        return None

    def _check_pages(self, pages: int, record: dict[str, Any]) -> None:
        """Raise TooManyPages for a document over the bound, recorded on its row."""
        error = self._too_many_pages(pages)
        if error is not None:
            record["error"] = f"{type(error).__name__}: {error}"
            self._save_document(record)
            raise error

    def _record_refused(self, site: str, refused: list[RejectedLink]) -> None:
        """Replace the site's refused links with this fetch's (status shows them)."""
        for link in refused:
            log.warning("site %s: link %s refused: %s", site, link.url, link.reason,
                        extra={"action": "link_refused", "site": site})
        with self.queue.session() as conn:
            clerk_db.execute(conn, "clear_refused_links", {"site": site})
            if refused:
                clerk_db.execute(conn, "save_refused_links", {
                    "site": site, "urls": [link.url for link in refused],
                    "reasons": [link.reason for link in refused]})

    def _save_document(self, record: dict[str, Any]) -> None:
        with self.queue.session() as conn:
            clerk_db.execute(conn, "save_document", record)

    def _record_fetch(self, site: str, run_key: str, result: str, conn: Any = None) -> None:
        params = {"subdomain": site, "run_key": run_key, "result": result}
        if conn is not None:
            clerk_db.execute(conn, "site_fetched", params)
            return
        with self.queue.session() as own:
            clerk_db.execute(own, "site_fetched", params)

    def _fan_out(self, site: str, run_key: str, changed: list[tuple[Document, list[int], str]],
                 priority: int, summary: str) -> None:
        """One group of page jobs and the follow-ups, in one transaction."""
        compile_fast = self.compile_task.spec(site=site, entities=False, run=run_key)
        full_path = self.extract_task.spec(site=site).then(
            self.compile_task.spec(site=site, entities=True, run=run_key).then(
                self.deploy_task.spec(site=site)))
        pages = [{"site": site, "kind": doc.kind, "meeting": doc.meeting, "date": doc.date,
                  "page": page, "sha256": sha256}
                 for doc, numbers, sha256 in changed for page in numbers]
        with self.queue.session() as conn:
            try:
                with self.queue.group(run_key, tag=site, priority=priority, conn=conn,
                                      on_complete=[compile_fast, full_path]) as group:
                    group.enqueue_many(self.ocr_task, pages)
            except GroupExists:
                log.info("site %s: run %s was already fanned out (a retried fetch)", site,
                         run_key, extra={"action": "fan_out_exists", "site": site})
                return
            self._record_fetch(site, run_key, summary, conn)
        log.info("site %s: %s", site, summary, extra={"action": "fanned_out", "site": site})

    def ocr_page(self, site: str, kind: str, meeting: str, date: str, page: int,
                 sha256: str | None = None) -> None:
        """Read one page of the document version `sha256` (its current one if not given):
        from this host's cache, streamed in from the database when the host lacks it, and
        store its text and how it was read. A page of a version that has since changed
        writes nothing (the run that stored the new version reads its pages)."""
        settings = self.settings
        try:
            document = Document(site, kind, meeting, date)  # type: ignore[arg-type]
        except StorageError as error:
            raise PermanentFailure(f"site {site}, {kind} {meeting} {date}, page {page}: "
                                   f"{error}") from error
        row = self.fetch_one("get_document", {"site": site, "kind": document.kind,
                                              "meeting": document.meeting, "date": document.date})
        current = row["sha256"] if row is not None else None
        if current is None or (sha256 is not None and sha256 != current):
            log.info("site %s: %s %s %s changed or went since page %s was queued: skipped",
                     site, kind, meeting, date, page, extra={"action": "page_stale", "site": site})
            return
        loader = blobs.database_loader(lambda: self.queue.session(atomic=False), current)
        try:
            with self.cache.use(current, loader) as pdf:
                started = time.monotonic()
                text = read_page(pdf, page, settings)
                seconds = time.monotonic() - started
        except (PdfError, StorageError, blobs.BlobMissing) as error:
            raise PermanentFailure(f"site {site}, {kind} {meeting} {date}, page {page}: "
                                   f"{error}") from error
        dpi = settings.ocr_dpi if text.decision not in ("", "text-layer") else None
        with self.queue.session() as conn:  # the text and how it was read (issues 16, 17)
            blobs.save_page_text(conn, document, page, text, sha256=current, dpi=dpi,
                                 seconds=seconds)

    def export(self, site: str, *, pdfs: bool = True) -> blobs.ExportResult:
        """Write the site's `txt/` and `pdfs/` under this host's STORAGE_DIR from the
        database (what compile and extraction then read, and Datasette users know)."""
        with self.queue.session(atomic=False) as conn:
            return blobs.export_site(conn, site, self.settings.storage_dir, self.cache,
                                     pdfs=pdfs)

    def extract(self, site: str) -> None:
        self.export(site, pdfs=False)
        stats = extract_site(site_dir(self.settings.storage_dir, site), self.settings)
        log.info("site %s: entities from %s pages (%s extracted, %s cached)", site, stats.pages,
                 stats.extracted, stats.cached, extra={"action": "extracted", "site": site})

    def compile(self, site: str, entities: bool, run: str | None = None) -> None:
        """Compile on this host from the database. A full compile whose pages have no
        entities in this host's extraction cache (the extraction ran on another host:
        the cache is a host's own) extracts them here and compiles again, so any host can
        run it; on the host that extracted, nothing is missing and nothing runs twice."""
        self.export(site)
        root = site_dir(self.settings.storage_dir, site)
        urls = {f"{r['kind']}/{r['meeting']}/{r['date']}": r["url"]
                for r in self.fetch_all("document_urls", {"site": site})}
        # compile_site keeps a fast compile from replacing this run's full one (its marker).
        result = compile_site(root, entities=entities, document_urls=urls, run=run)
        if entities and not result.skipped and result.missing_entities:
            stats = extract_site(root, self.settings)
            log.info("site %s: %s pages had no entities on this host: extracted here (%s)",
                     site, result.missing_entities, stats.extracted,
                     extra={"action": "extracted_for_compile", "site": site})
            result = compile_site(root, entities=entities, document_urls=urls, run=run)
        if result.skipped:
            log.info("site %s: fast compile skipped, the full one is done", site,
                     extra={"action": "compile_skipped", "site": site})
            return
        log.info("site %s: compiled %s (entities=%s)", site, result.path, entities,
                 extra={"action": "compiled", "site": site})

    def deploy(self, site: str) -> None:
        """Publish the site's database through the deploy plugin, from a host that compiled
        the site's current run in full: a deploy job on another host (which has no
        meetings.db, or an older run's) compiles it here first, never publishing a stale
        file."""
        root = site_dir(self.settings.storage_dir, site)
        database = root / DATABASE_FILE
        row = self.fetch_one("get_site", {"subdomain": site}) or {}
        try:
            compiled = json.loads((root / MARKER_FILE).read_text())
        except (OSError, ValueError):
            compiled = {}
        if row.get("last_run_key") and (compiled.get("run") != row["last_run_key"]
                                        or not compiled.get("entities")):
            log.info("site %s: this host had not compiled run %s in full: compiling it here",
                     site, row["last_run_key"], extra={"action": "compile_for_deploy", "site": site})
            self.compile(site, entities=True, run=row["last_run_key"])
        target = deploy_database(site, database, self.settings)
        with self.queue.session() as conn:
            clerk_db.execute(conn, "site_succeeded", {"subdomain": site})
        log.info("site %s: deployed to %s", site, target, extra={"action": "deployed", "site": site})


def document_meetings(refs: list[DocumentRef], known: list[dict[str, Any]]) -> list[str]:
    """The meeting name each listed document is stored under, distinct and stable.

    Two documents of one kind and date whose meeting names are the same once folded
    ("Agenda" and "Agenda Packet" both become "City Council"; "City Council" and
    "CITY COUNCIL" share a page id and, on a case-insensitive disk, a directory) would
    overwrite each other. So a document keeps the name it was stored under before (found
    by its URL), and a new one whose name is taken by another listed document gets the
    first free "<meeting> (2)", "(3)", ... A URL that is no longer listed frees its name:
    a city that republishes a document at a new address replaces it, as before.
    """
    listed = {redact_url(ref.url) for ref in refs}
    previous = {(row["url"], row["kind"], str(row["date"])): row["meeting"] for row in known
                if row["url"] in listed}
    taken: dict[tuple[str, str, str], str] = {}
    chosen: list[str | None] = []
    for ref in refs:  # first, the documents that keep the name they have
        url = redact_url(ref.url)
        base = safe_meeting_name(ref.meeting)
        name = previous.get((url, ref.kind, ref.date))
        key = (ref.kind, meeting_slug(name or ""), ref.date)
        if name is None or not _same_meeting(name, base) or taken.setdefault(key, url) != url:
            chosen.append(None)
        else:
            chosen.append(name)
    for index, ref in enumerate(refs):  # then the new ones, in the order they are listed
        if chosen[index] is not None:
            continue
        url = redact_url(ref.url)
        base = safe_meeting_name(ref.meeting)
        name, number = base, 2
        while taken.setdefault((ref.kind, meeting_slug(name), ref.date), url) != url:
            name = safe_meeting_name(f"{base[:MAX_MEETING_CHARS - 12]} ({number})")
            number += 1
        chosen[index] = name
    return [name or DEFAULT_MEETING for name in chosen]


def _same_meeting(stored: str, base: str) -> bool:
    """Is `stored` the meeting `base`, or one of its numbered variants ("Council (2)")?"""
    return stored == base or re.fullmatch(re.escape(base[:MAX_MEETING_CHARS - 12])
                                          + r" \(\d+\)", stored) is not None


def _unfinished(site: dict[str, Any]) -> bool:
    """Did the site's last run fan out and never deploy? (a stage failed, or was retried)

    Then a fetch with nothing new still fans out, so compile, extract and deploy run again:
    a retried run finishes, and a run whose deploy failed is not reported "nothing new".
    """
    result = site.get("last_result") or ""
    if site.get("last_fetch_at") is None or result.startswith("nothing new"):
        return False
    return site.get("last_success_at") is None or site["last_success_at"] < site["last_fetch_at"]


def discover(kind: str, source_url: str, session: requests.Session, settings: Settings, *,
             since: datetime | None = None, token: str | None = None,
             memory: PageMemory | None = None
             ) -> tuple[list[DocumentRef], list[RejectedLink], int | None]:
    """The documents a site's source lists, the links it refused to turn into one, and
    the number of meetings it listed when the source counts them (platforms do).

    A source that can say what it refused (the index page: other schemes, undated PDFs)
    provides `discover_index`; a platform source (clerk.sources.platform) provides
    `discover_platform`, given the site's token and last successful run; for the others
    every problem is an error of the whole source.
    """
    source = get_source(kind)
    platform = getattr(source, "discover_platform", None)
    if platform is not None:
        from clerk.sources.platform import SourceRequest
        found = platform(SourceRequest(source_url, session, settings, since=since, token=token))
        log.info("%s source listed %s meetings, %s documents%s", kind, found.meetings,
                 len(found.documents), "" if found.complete else " (changed since the last run)",
                 extra={"action": "source.listed", "meetings": found.meetings})
        return list(found.documents), list(found.rejected), found.meetings
    detailed = getattr(source, "discover_index", None)
    if detailed is None:
        return source.discover(source_url, session, settings), [], None
    result = detailed(source_url, session, settings, memory=memory)
    return list(result.documents), list(result.rejected), None


def fetch_args(site: str, source_url: str) -> dict[str, str]:
    """A fetch job's arguments: the site, and its source's host, the key of its limits."""
    return {"site": site, "host": (urlsplit(source_url).hostname or "").lower()}


def fetch_limit(settings: Settings) -> Limit:
    """Fetches of one source host, on every machine: FETCH_PER_HOST at once, and
    FETCH_RATE_PER_HOST started per minute (0: no rate)."""
    return Limit(key="host", concurrency=settings.fetch_per_host,
                 rate=settings.fetch_rate_per_host or None, per=60.0)


def build_pipeline(settings: Settings, dsn: str | None = None) -> Pipeline:
    """A Pipeline whose queue has clerk's five tasks registered."""
    try:
        network = AddressPolicy.parse(settings.allow_private_hosts)
    except ValueError as error:
        raise ConfigurationError(str(error)) from None
    dsn = dsn or resolve_dsn(settings)
    remember_secrets(dsn)  # masked in every message, even a parse error quoting a piece
    queue = Queue(dsn, schema=settings.queue_schema, listen_dsn=settings.listen_database_url)
    pipeline = Pipeline(settings, queue, network)
    pipeline.fetch_task = queue.task(pipeline.fetch, name="clerk.fetch", queue="fetch",
                                     max_attempts=3, timeout=settings.fetch_timeout,
                                     retry_backoff=settings.retry_backoff,
                                     limit=fetch_limit(settings))
    pipeline.ocr_task = queue.task(pipeline.ocr_page, name="clerk.ocr_page", queue="ocr",
                                   max_attempts=3, timeout=settings.ocr_timeout,
                                   retry_backoff=settings.retry_backoff)
    pipeline.extract_task = queue.task(pipeline.extract, name="clerk.extract", queue="extraction",
                                       max_attempts=3, timeout=settings.extraction_timeout)
    pipeline.compile_task = queue.task(pipeline.compile, name="clerk.compile", queue="compilation",
                                       max_attempts=3, timeout=settings.compilation_timeout)
    pipeline.deploy_task = queue.task(pipeline.deploy, name="clerk.deploy", queue="deploy",
                                      max_attempts=5, timeout=settings.deploy_timeout)
    pipeline.refresh_task = register_refresh(pipeline)
    return pipeline

