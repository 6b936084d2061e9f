"""The on-disk layout of a site, the one place that turns a document into paths.

```
STORAGE_DIR/<site>/
    pdfs/<Meeting>/<YYYY-MM-DD>.pdf                 minutes
    pdfs/_agendas/<Meeting>/<YYYY-MM-DD>.pdf        agendas
    txt/<Meeting>/<YYYY-MM-DD>/<page>.txt           one file per page, pages from 1
    txt/_agendas/<Meeting>/<YYYY-MM-DD>/<page>.txt
    meetings.db                                     compiled by clerk.compile
```

This is the layout the existing civic Datasette sites serve, so their tooling reads ours.
Since issue 16 the database holds the documents and page texts (clerk.blobs): the host that
compiles writes this layout from it, and every host keeps its cache of PDFs beside it, in
`STORAGE_DIR/.cache/` (a name no site can take: subdomains start with a letter or digit).
Meeting names come from the web, so they are cleaned into one safe path segment, and every
path is built through `clerk.sites.contained_path`: nothing can leave STORAGE_DIR.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from clerk.sites import contained_path, site_dir, validate_subdomain

Kind = Literal["agenda", "minutes"]
KINDS: tuple[Kind, ...] = ("agenda", "minutes")

AGENDAS_DIR = "_agendas"
PDFS_DIR = "pdfs"
TEXT_DIR = "txt"
DEFAULT_MEETING = "Meeting"
# 100 characters keeps `<Meeting>/<date>/<page>.txt` far below the 255-byte name limit
# of ext4/APFS even when every character takes 4 bytes in UTF-8 (100 * 4 = 400 > 255,
# so the byte length is bounded separately below).
MAX_MEETING_CHARS = 100
MAX_MEETING_BYTES = 200

_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_PAGE_FILE = re.compile(r"([1-9]\d{0,5})\.txt")
_SEPARATORS = re.compile(r"[/\\]+")
_SPACES = re.compile(r"\s+")
_SLUG_DROP = re.compile(r"[^a-z0-9]+")


class StorageError(ValueError):
    """A document identity that cannot be stored safely."""


def safe_meeting_name(name: str) -> str:
    """Turn a meeting name scraped from the web into one safe path segment.

    Spaces and case stay ('City Council'), because the directory name is what people
    see in Datasette. Path separators become '-', '..' and control characters go,
    leading dots and underscores go (a meeting may not hide itself or pose as
    `_agendas`), and the result is bounded in characters and bytes.
    """
    text = unicodedata.normalize("NFC", str(name))
    text = "".join(" " if unicodedata.category(ch)[0] in "CZ" else ch for ch in text)
    text = _SEPARATORS.sub("-", text)
    while ".." in text:
        text = text.replace("..", ".")
    text = _SPACES.sub(" ", text).strip()
    text = text.lstrip("._- ").rstrip(". ")
    text = text[:MAX_MEETING_CHARS]
    while len(text.encode("utf-8")) > MAX_MEETING_BYTES:
        text = text[:-1]
    text = text.rstrip(". ")
    return text or DEFAULT_MEETING


def meeting_slug(meeting: str) -> str:
    """Lowercase ASCII words joined by '-', for page ids ('City Council' -> 'city-council')."""
    ascii_text = unicodedata.normalize("NFKD", meeting).encode("ascii", "ignore").decode()
    return _SLUG_DROP.sub("-", ascii_text.lower()).strip("-") or DEFAULT_MEETING.lower()


def validate_date(date: str) -> str:
    """Return an ISO date (YYYY-MM-DD) if it is one, else raise StorageError."""
    if not isinstance(date, str) or not _DATE.fullmatch(date):
        raise StorageError(f"invalid date {date!r}: expected YYYY-MM-DD")
    try:
        dt.date.fromisoformat(date)
    except ValueError as error:
        raise StorageError(f"invalid date {date!r}: {error}") from error
    return date


def validate_page(page: int) -> int:
    if isinstance(page, bool) or not isinstance(page, int) or page < 1:
        raise StorageError(f"invalid page {page!r}: pages are numbered from 1")
    return page


@dataclass(frozen=True)
class Document:
    """One meeting document of a site: the identity every path and page id derives from.

    The meeting name is cleaned on construction, so two spellings that differ only in
    unsafe characters name the same document.
    """

    site: str
    kind: Kind
    meeting: str
    date: str

    def __post_init__(self) -> None:
        validate_subdomain(self.site)
        if self.kind not in KINDS:
            raise StorageError(f"invalid kind {self.kind!r}: expected 'agenda' or 'minutes'")
        object.__setattr__(self, "meeting", safe_meeting_name(self.meeting))
        validate_date(self.date)

    def _parts(self) -> tuple[str, ...]:
        return (AGENDAS_DIR, self.meeting) if self.kind == "agenda" else (self.meeting,)

    def site_dir(self, storage_dir: Path) -> Path:
        return site_dir(storage_dir, self.site)

    def pdf_path(self, storage_dir: Path) -> Path:
        """Where the downloaded PDF lives."""
        return contained_path(self.site_dir(storage_dir), PDFS_DIR, *self._parts(), f"{self.date}.pdf")

    def text_dir(self, storage_dir: Path) -> Path:
        """The directory holding one `<page>.txt` per page."""
        return contained_path(self.site_dir(storage_dir), TEXT_DIR, *self._parts(), self.date)

    def page_text_path(self, storage_dir: Path, page: int) -> Path:
        validate_page(page)
        return contained_path(self.text_dir(storage_dir), f"{page}.txt")

    def page_id(self, page: int) -> str:
        return page_id(self.kind, self.meeting, self.date, page)

    def as_dict(self) -> dict[str, str]:
        """JSON-friendly form, for job arguments."""
        return {"site": self.site, "kind": self.kind, "meeting": self.meeting, "date": self.date}


def page_id(kind: Kind, meeting: str, date: str, page: int) -> str:
    """The stable text id of a page: `city-council-2024-01-05-3`, agendas prefixed `agenda-`.

    Stable across runs and machines (it derives only from the identity), so links into
    the Datasette site survive a rebuild.
    """
    base = f"{meeting_slug(meeting)}-{date}-{page}"
    return f"agenda-{base}" if kind == "agenda" else base


@dataclass(frozen=True)
class PageRecord:
    """One page found on disk by `iter_site_pages`."""

    kind: Kind
    meeting: str
    date: str
    page: int
    text_path: Path

    @property
    def id(self) -> str:
        return page_id(self.kind, self.meeting, self.date, self.page)

    def read_text(self) -> str:
        return self.text_path.read_text(encoding="utf-8", errors="replace")


def _sorted_dirs(path: Path) -> list[os.DirEntry[str]]:
    """Entries of one directory, sorted; only one directory listing is held at a time."""
    try:
        with os.scandir(path) as entries:
            return sorted(entries, key=lambda entry: entry.name)
    except FileNotFoundError:
        return []


def _iter_kind(root: Path, kind: Kind) -> Iterator[PageRecord]:
    for meeting in _sorted_dirs(root):
        if not meeting.is_dir(follow_symlinks=False) or meeting.name.startswith(("_", ".")):
            continue
        for date in _sorted_dirs(Path(meeting.path)):
            if not date.is_dir(follow_symlinks=False) or not _DATE.fullmatch(date.name):
                continue
            pages: list[tuple[int, str]] = []
            for entry in _sorted_dirs(Path(date.path)):
                match = _PAGE_FILE.fullmatch(entry.name)
                if match and entry.is_file(follow_symlinks=False):
                    pages.append((int(match.group(1)), entry.path))
            for number, path in sorted(pages):
                yield PageRecord(kind, meeting.name, date.name, number, Path(path))


def iter_site_pages(site_path: Path, kinds: tuple[Kind, ...] = ("minutes", "agenda")) -> Iterator[PageRecord]:
    """Yield every page text of a site: minutes first, then agendas, each by meeting, date, page.

    A generator over directory listings, so memory stays flat however big the site is.
    Temporary files (`.3.txt.tmp...`) and symlinks are skipped.
    """
    text_root = Path(site_path) / TEXT_DIR
    for kind in kinds:
        root = text_root / AGENDAS_DIR if kind == "agenda" else text_root
        yield from _iter_kind(root, kind)
