"""What the platform sources (Legistar, CivicPlus AgendaCenter, PrimeGov) share.

A platform source is a module with `discover_platform(request: SourceRequest) -> Discovery`
(and the plain `discover` every source has). Beyond the page URL it is given the site's
credential (a Legistar token) and the time of the site's last successful run, so a source
whose platform can filter by date asks only for what changed since then (less a
back-window: published files change for days after a meeting). Its answer says how many
meetings the platform listed, so "0 meetings found" is a result and "the adapter could not
read the reply" is a `SourceError` naming what it expected: a changed page layout or API
never passes for an empty site.

Politeness is by construction: one request at a time per fetch job (and the fetch queue's
per-host limits across machines), a User-Agent naming clerk and the operator's `CONTACT`,
bounded replies, and conditional requests where the platform supports them.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from typing import Any

import requests

from clerk.config import Settings
from clerk.fetch import USER_AGENT, UnsupportedScheme, check_scheme, redact_url
from clerk.network import BlockedAddress
from clerk.sources import DocumentRef, Kind, SourceError, TransientSourceError
from clerk.sources.index import RejectedLink

MAX_REPLY_BYTES = 20 * 1024 * 1024  # one API page or search page; real ones are < 1 MB


@dataclass(frozen=True)
class SourceRequest:
    """One discovery: where, with what, and since when."""

    url: str
    session: requests.Session
    settings: Settings
    since: dt.datetime | None = None  # the site's last successful run (None: first run)
    token: str | None = None  # the site's credential, for platforms that take a token
    today: dt.date = field(default_factory=dt.date.today)

    def window(self) -> tuple[dt.date, dt.date]:
        """The meeting dates to ask for: from the history bound (or the last success less
        the back-window) to the look-ahead bound, so upcoming agendas are included."""
        settings = self.settings
        start = self.today - dt.timedelta(days=settings.source_history_days)
        if self.since is not None:
            start = max(start, self.since.date() - dt.timedelta(days=settings.source_back_window_days))
        return start, self.today + dt.timedelta(days=settings.source_lookahead_days)

    def changed_since(self) -> dt.datetime | None:
        """For platforms that can filter by modification time: the last success less the
        back-window, or None on a first run."""
        if self.since is None:
            return None
        return self.since - dt.timedelta(days=self.settings.source_back_window_days)


@dataclass
class Discovery:
    """What a platform listed: its documents, what was refused, how many meetings it
    listed (a meeting may have no file yet) and whether the listing is complete or only
    what changed since the last run."""

    documents: list[DocumentRef] = field(default_factory=list)
    rejected: list[RejectedLink] = field(default_factory=list)
    meetings: int = 0
    complete: bool = True
    _seen: set[str] = field(default_factory=set, repr=False)

    def add(self, url: str, *, meeting: str, date: str, kind: Kind) -> None:
        """List a document once; a URL that is not http(s) is refused, with the reason."""
        if url in self._seen:
            return
        self._seen.add(url)
        try:
            check_scheme(url)
        except UnsupportedScheme as error:
            self.rejected.append(RejectedLink(redact_url(url), str(error)))
            return
        self.documents.append(DocumentRef(url=url, meeting=meeting, date=date, kind=kind))

    def refuse(self, url: str, reason: str) -> None:
        if url not in self._seen:
            self._seen.add(url)
            self.rejected.append(RejectedLink(redact_url(url), reason))


def user_agent(settings: Settings) -> str:
    """clerk's User-Agent, with the operator's contact when set, as polite crawlers do."""
    contact = settings.contact.strip()
    return f"{USER_AGENT[:-1]}; +{contact})" if contact else USER_AGENT


@dataclass(frozen=True)
class Reply:
    url: str  # after redirects
    status: int
    content_type: str
    body: bytes
    headers: dict[str, str]

    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")


def get(request: SourceRequest, url: str, *, what: str, accept: str,
        params: dict[str, str] | None = None, headers: dict[str, str] | None = None,
        ok: tuple[int, ...] = (200,)) -> Reply:
    """GET one page of a platform, bounded in size and time; any failure is a SourceError
    naming `what` and the URL (with its credential removed), transient ones retryable. A
    status in `ok` is returned for the caller to read (an API's error reply explains itself)."""
    check_scheme(url)
    name = f"{what} {redact_url(url)}"
    sent = {"User-Agent": user_agent(request.settings), "Accept": accept, **(headers or {})}
    try:
        with request.session.get(url, params=params, headers=sent, stream=True,
                                 timeout=request.settings.http_timeout) as response:
            if response.status_code not in ok:
                body = _read(response, 64 * 1024, name, truncate=True)
                raise http_error(name, response.status_code, body)
            check_scheme(response.url or url)
            body = _read(response, MAX_REPLY_BYTES, name)
            return Reply(response.url or url, response.status_code,
                         response.headers.get("Content-Type", ""), body, dict(response.headers))
    except BlockedAddress as error:  # the page, or a redirect, to a non-public address
        raise SourceError(f"{name}: {error}") from None
    except requests.RequestException as error:
        raise TransientSourceError(f"{name}: {type(error).__name__}: {error}") from error


def http_error(name: str, status: int, body: bytes) -> SourceError:
    """A non-success reply as an error: 429 and 5xx may pass (retried), the rest do not."""
    detail = body.decode("utf-8", errors="replace").strip().replace("\n", " ")[:200]
    message = f"{name}: HTTP {status}" + (f" ({detail})" if detail else "")
    transient = status == 429 or status >= 500
    return (TransientSourceError if transient else SourceError)(message)


def _read(response: requests.Response, limit: int, name: str, *, truncate: bool = False) -> bytes:
    body = bytearray()
    for chunk in response.iter_content(64 * 1024):
        body += chunk
        if len(body) > limit:
            if truncate:
                return bytes(body[:limit])
            raise SourceError(f"{name}: reply larger than {limit} bytes")
    return bytes(body)


def parse_json(reply: Reply, name: str) -> Any:
    """The reply's JSON, or a SourceError saying the platform answered something else."""
    try:
        return json.loads(reply.body)
    except (ValueError, UnicodeDecodeError):
        kind = reply.content_type.split(";")[0].strip() or "no content type"
        start = reply.text().lstrip()[:60].replace("\n", " ")
        raise SourceError(f"{name}: expected JSON, got {kind} ({start!r}...)") from None


def date_of(value: object, name: str) -> dt.date:
    """A platform's date or date-time ("2024-01-09T00:00:00", "2024-01-09T18:00:00Z")."""
    if not isinstance(value, str) or len(value) < 10:
        raise SourceError(f"{name}: expected a date, got {value!r}")
    try:
        return dt.date.fromisoformat(value[:10])
    except ValueError:
        raise SourceError(f"{name}: expected a date, got {value!r}") from None


def odata_datetime(moment: dt.datetime | dt.date) -> str:
    """A date or time as OData v3 wants it in a $filter: datetime'2024-01-09T00:00:00'."""
    if isinstance(moment, dt.datetime):
        if moment.tzinfo is not None:
            moment = moment.astimezone(dt.UTC).replace(tzinfo=None)
        return f"datetime'{moment.replace(microsecond=0).isoformat()}'"
    return f"datetime'{moment.isoformat()}T00:00:00'"


__all__ = ["MAX_REPLY_BYTES", "Discovery", "Reply", "SourceRequest", "date_of", "get",
           "http_error", "odata_datetime", "parse_json", "user_agent"]
