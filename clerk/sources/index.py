"""The `index` source: an HTML page that links to meeting PDFs.

Most small cities publish a plain page of links ("City Council Agenda - January 5, 2024").
Each link to a PDF becomes a DocumentRef:

- date: from the link text, else from the file name (see clerk.sources.dates);
  a link with no date is rejected, since a document without a date has no place on disk;
- kind: 'minutes' if the text or file name says minutes, 'agenda' if it says agenda or
  packet, otherwise 'agenda' (unlabelled meeting PDFs are far more often agendas and
  agenda packets, published before the meeting, than minutes);
- meeting: the words left after removing the date, the kind and filler words
  ("City Council", "Planning Commission"), else "Meeting".

Links to anything but http(s) (file:, javascript:, ftp:, data:) are never fetched; they
are returned in `IndexResult.rejected` and logged.
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass, field
from html.parser import HTMLParser
from typing import Protocol
from urllib.parse import unquote, urldefrag, urljoin, urlsplit

import requests

from clerk.config import Settings
from clerk.fetch import UnsupportedScheme, check_scheme, redact_url, unchanged_by_validators
from clerk.network import BlockedAddress
from clerk.sources import DocumentRef, Kind, SourceError, TransientSourceError
from clerk.sources.dates import find_date

log = logging.getLogger(__name__)

MAX_INDEX_BYTES = 10 * 1024 * 1024
DEFAULT_KIND: Kind = "agenda"
DEFAULT_MEETING = "Meeting"

_MINUTES = re.compile(r"\bminutes?\b", re.IGNORECASE)
_AGENDA = re.compile(r"\b(?:agendas?|packets?)\b", re.IGNORECASE)
_FILLER = re.compile(
    r"\b(?:agendas?|minutes?|packets?|meetings?|mtg|pdf|download|view|draft|final|approved|"
    r"monday|tuesday|wednesday|thursday|friday|saturday|sunday|"
    r"mon|tue|tues|wed|thu|thur|thurs|fri|sat|sun|kb|mb)\b",
    re.IGNORECASE,
)
_SIZE = re.compile(r"\(\s*[\d.,]+\s*[kKmM]?[bB]\s*\)")
_TIME = re.compile(r"\b\d{1,2}(?::\d{2})?\s*[ap]\.?m\.?\b", re.IGNORECASE)
_CAMEL = re.compile(r"(?<=[a-z])(?=[A-Z])")
# Run after punctuation is gone, so only words need trimming at the edges.
_EDGE_WORDS = re.compile(
    r"^(?:(?:the|of|for|and|at|on)\s+)+|(?:\s+(?:the|of|for|and|at|on))+$", re.IGNORECASE
)
_NON_WORD = re.compile(r"[^\w&'\u2019]+")


@dataclass(frozen=True)
class RejectedLink:
    """A link that was not turned into a document, and why."""

    url: str
    reason: str


@dataclass
class IndexResult:
    documents: list[DocumentRef] = field(default_factory=list)
    rejected: list[RejectedLink] = field(default_factory=list)


class _LinkParser(HTMLParser):
    """Collects (href, text) for every <a>, and the <base href> if any."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.base: str | None = None
        self.links: list[tuple[str, str]] = []
        self._href: str | None = None
        self._text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "base" and values.get("href") and self.base is None:
            self.base = values["href"]
        elif tag == "a":
            self._finish()
            self._href = (values.get("href") or "").strip()
            self._text = [values.get("title") or ""] if values.get("title") else []
        elif tag == "img" and self._href is not None and values.get("alt"):
            self._text.append(values["alt"] or "")

    def handle_data(self, data: str) -> None:
        if self._href is not None:
            self._text.append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag == "a":
            self._finish()

    def _finish(self) -> None:
        if self._href:
            self.links.append((self._href, " ".join(" ".join(self._text).split())))
        self._href = None
        self._text = []

    def close(self) -> None:
        super().close()
        self._finish()


def is_pdf_link(url: str) -> bool:
    """True for a URL whose path ends in .pdf (any case), with or without a query."""
    path = urlsplit(url).path.lower()
    return path.endswith(".pdf") or ".pdf?" in url.lower()


def _file_words(url: str) -> str:
    name = unquote(urlsplit(url).path.rsplit("/", 1)[-1])
    name = re.sub(r"\.pdf$", "", name, flags=re.IGNORECASE)
    return name


def guess_kind(*texts: str) -> Kind:
    """'minutes' or 'agenda' from the words of the link text and file name."""
    for text in texts:
        words = _CAMEL.sub(" ", text).replace("_", " ")
        if _MINUTES.search(words):
            return "minutes"
        if _AGENDA.search(words):
            return "agenda"
    return DEFAULT_KIND


def guess_meeting(text: str, date_span: tuple[int, int] | None = None) -> str | None:
    """The meeting name left in `text` once the date, kind and filler words are gone."""
    if date_span:
        text = text[: date_span[0]] + " " + text[date_span[1] :]
    text = _SIZE.sub(" ", text)
    text = _TIME.sub(" ", text)
    text = _CAMEL.sub(" ", text).replace("_", " ")
    text = _FILLER.sub(" ", text)
    text = _NON_WORD.sub(" ", text)
    words = [word for word in text.split() if not word.isdigit()]
    text = _EDGE_WORDS.sub("", " ".join(words)).strip()
    if not any(char.isalpha() for char in text):
        return None
    if text.islower():
        text = text.title()
    return text


def document_from_link(url: str, text: str) -> DocumentRef | RejectedLink:
    """Turn one resolved PDF link and its text into a DocumentRef, or say why not."""
    file_words = _file_words(url)
    in_text = find_date(text)
    in_file = find_date(file_words)
    if in_text is None and in_file is None:
        return RejectedLink(url, "no date in link text or file name")
    kind = guess_kind(text, file_words)
    meeting = None
    if in_text is not None:
        meeting = guess_meeting(text, in_text[1])
    else:
        meeting = guess_meeting(text) if text else None
    if meeting is None:
        meeting = guess_meeting(file_words, in_file[1] if in_file else None)
    date = in_text[0] if in_text else in_file[0]  # type: ignore[index]
    return DocumentRef(url=url, meeting=meeting or DEFAULT_MEETING, date=date, kind=kind)


def parse_index(html: str, base_url: str) -> IndexResult:
    """Every PDF link of an HTML page as a DocumentRef, plus the links refused and why."""
    parser = _LinkParser()
    parser.feed(html)
    parser.close()
    base = urljoin(base_url, parser.base) if parser.base else base_url
    result = IndexResult()
    seen: set[str] = set()
    for href, text in parser.links:
        url = urldefrag(urljoin(base, href)).url
        if url in seen:
            continue
        seen.add(url)
        try:
            check_scheme(url)
        except UnsupportedScheme as error:
            if is_pdf_link(url) or not url.lower().startswith(("mailto:", "tel:")):
                result.rejected.append(RejectedLink(redact_url(url), str(error)))
            continue
        if not is_pdf_link(url):
            continue
        found = document_from_link(url, text)
        if isinstance(found, RejectedLink):
            result.rejected.append(found)
        else:
            result.documents.append(found)
    for rejected in result.rejected:
        log.info(
            "index link skipped: %s (%s)",
            rejected.url,
            rejected.reason,
            extra={"action": "source.index.rejected"},
        )
    return result


@dataclass(frozen=True)
class IndexPage:
    """What the last read of an index page learnt: its validators, its body's sha256, and
    what was parsed from it (reused as is while the page does not change)."""

    url: str
    etag: str | None
    last_modified: str | None
    sha256: str
    result: IndexResult

    def result_json(self) -> dict[str, list[dict[str, str]]]:
        return {"documents": [ref.as_dict() for ref in self.result.documents],
                "rejected": [{"url": r.url, "reason": r.reason} for r in self.result.rejected]}

    @staticmethod
    def result_from_json(data: dict[str, list[dict[str, str]]]) -> IndexResult:
        return IndexResult([DocumentRef(d["url"], d["meeting"], d["date"],
                                        "minutes" if d["kind"] == "minutes" else "agenda")
                            for d in data.get("documents", [])],
                           [RejectedLink(r["url"], r["reason"]) for r in data.get("rejected", [])])


class PageMemory(Protocol):
    """Where a site's index pages are remembered between runs (clerk.sources.memory)."""

    def load(self, url: str) -> IndexPage | None: ...

    def save(self, page: IndexPage) -> None: ...


@dataclass(frozen=True)
class IndexResponse:
    html: str | None  # None: not modified (304, or the same validators)
    etag: str | None
    last_modified: str | None


def fetch_index_conditional(
    source_url: str,
    session: requests.Session,
    settings: Settings,
    previous: IndexPage | None = None,
    *,
    max_bytes: int = MAX_INDEX_BYTES,
) -> IndexResponse:
    """The index page, asked with If-None-Match / If-Modified-Since when `previous` holds
    validators; `html` None when the server says (or shows) it did not change."""
    check_scheme(source_url)
    headers = {}
    if previous is not None and previous.etag:
        headers["If-None-Match"] = previous.etag
    if previous is not None and previous.last_modified:
        headers["If-Modified-Since"] = previous.last_modified
    try:
        with session.get(source_url, timeout=settings.http_timeout, stream=True,
                         headers=headers) as response:
            etag = _validator(response, "ETag")
            modified = _validator(response, "Last-Modified")
            if previous is not None and (response.status_code == 304 or (
                    response.status_code == 200 and unchanged_by_validators(
                        response, previous.etag, previous.last_modified))):
                return IndexResponse(None, etag, modified)
            if response.status_code != 200:
                kind = (TransientSourceError if response.status_code >= 500
                        or response.status_code == 429 else SourceError)
                raise kind(f"{redact_url(source_url)}: HTTP {response.status_code}")
            check_scheme(response.url or source_url)
            body = bytearray()
            for chunk in response.iter_content(64 * 1024):
                body += chunk
                if len(body) > max_bytes:
                    raise SourceError(
                        f"{redact_url(source_url)}: page larger than {max_bytes} bytes"
                    )
            encoding = response.encoding or response.apparent_encoding or "utf-8"
    except BlockedAddress as error:  # the page, or a redirect, to a non-public address
        raise SourceError(f"{redact_url(source_url)}: {error}") from None
    except requests.RequestException as error:
        raise TransientSourceError(
            f"{redact_url(source_url)}: {type(error).__name__}: {error}") from error
    return IndexResponse(bytes(body).decode(encoding, errors="replace"), etag, modified)


def _validator(response: requests.Response, name: str) -> str | None:
    value = response.headers.get(name)
    # A validator with a control character cannot be stored or sent back: dropped.
    return value if value and value.isprintable() and len(value) <= 1000 else None


def fetch_index(
    source_url: str,
    session: requests.Session,
    settings: Settings,
    *,
    max_bytes: int = MAX_INDEX_BYTES,
) -> str:
    """The HTML of the index page, bounded in size; SourceError on any failure."""
    html = fetch_index_conditional(source_url, session, settings, max_bytes=max_bytes).html
    assert html is not None  # nothing to compare with: never "not modified"
    return html


def discover_index(source_url: str, session: requests.Session, settings: Settings, *,
                   memory: PageMemory | None = None) -> IndexResult:
    """Fetch the index page and parse it, keeping the rejected links. With `memory`, the
    request is conditional, and an unchanged page (304, the same validators, or the same
    body) gives what was parsed from it last time."""
    previous = memory.load(source_url) if memory is not None else None
    page = fetch_index_conditional(source_url, session, settings, previous)
    if page.html is None:
        assert previous is not None
        log.info("index page not modified: %s", redact_url(source_url),
                 extra={"action": "source.index.not_modified"})
        result, digest = previous.result, previous.sha256
    else:
        digest = hashlib.sha256(page.html.encode()).hexdigest()
        result = (previous.result if previous is not None and previous.sha256 == digest
                  else parse_index(page.html, source_url))
    if memory is not None:
        memory.save(IndexPage(source_url, page.etag, page.last_modified, digest, result))
    return result


def discover(source_url: str, session: requests.Session, settings: Settings) -> list[DocumentRef]:
    """The documents an index page links to (rejected links are logged)."""
    return discover_index(source_url, session, settings).documents
