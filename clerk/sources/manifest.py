"""The `manifest` source: a JSON list of documents someone has already curated.

```json
[{"url": "https://city.gov/a.pdf", "meeting": "City Council", "date": "2024-01-05",
  "kind": "agenda"}]
```

For sites whose pages no scraper reads well. The manifest is fetched over http(s) (or read
from a local path given by the operator); every entry is checked and all problems are
reported at once, each naming the entry, so a bad manifest is fixed in one pass.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

import requests

from clerk.config import Settings
from clerk.fetch import UnsupportedScheme, check_scheme, redact_url
from clerk.network import BlockedAddress
from clerk.sources import DocumentRef, SourceError

MAX_MANIFEST_BYTES = 20 * 1024 * 1024
MAX_REPORTED_ERRORS = 20
KINDS = ("agenda", "minutes")
FIELDS = ("url", "meeting", "date", "kind")


class ManifestError(SourceError):
    """A manifest that is not a valid list of documents; `errors` lists every problem."""

    def __init__(self, source: str, errors: list[str]) -> None:
        self.errors = errors
        shown = "\n  ".join(errors[:MAX_REPORTED_ERRORS])
        more = len(errors) - MAX_REPORTED_ERRORS
        tail = f"\n  ... and {more} more" if more > 0 else ""
        super().__init__(f"invalid manifest {source}:\n  {shown}{tail}")


def _entry_errors(index: int, entry: Any, base_url: str) -> tuple[list[str], DocumentRef | None]:
    where = f"entry {index}"
    if not isinstance(entry, dict):
        got = type(entry).__name__
        return [f"{where}: expected an object with {', '.join(FIELDS)}, got {got}"], None
    errors: list[str] = []
    for name in FIELDS:
        value = entry.get(name)
        if not isinstance(value, str) or not value.strip():
            errors.append(f"{where}: {name!r} is required and must be a non-empty string")
    unknown = sorted(set(entry) - set(FIELDS))
    if unknown:
        errors.append(f"{where}: unknown field(s) {', '.join(map(repr, unknown))}")
    if errors:
        return errors, None
    url = urljoin(base_url, entry["url"].strip()) if base_url else entry["url"].strip()
    try:
        check_scheme(url)
    except UnsupportedScheme as error:
        errors.append(f"{where}: 'url' {error}")
    date = entry["date"].strip()
    try:
        if len(date) != 10:
            raise ValueError("not YYYY-MM-DD")
        dt.date.fromisoformat(date)
    except ValueError:
        errors.append(f"{where}: 'date' {date!r} is not a date in YYYY-MM-DD form")
    kind = entry["kind"].strip().lower()
    if kind not in KINDS:
        errors.append(f"{where}: 'kind' {entry['kind']!r} must be 'agenda' or 'minutes'")
    if errors:
        return errors, None
    return [], DocumentRef(url=url, meeting=entry["meeting"].strip(), date=date, kind=kind)  # type: ignore[arg-type]


def parse_manifest(
    data: str | bytes, *, source: str = "manifest", base_url: str = ""
) -> list[DocumentRef]:
    """Validate a manifest's JSON text; relative URLs resolve against `base_url`."""
    try:
        entries = json.loads(data)
    except (ValueError, UnicodeDecodeError) as error:
        raise ManifestError(source, [f"not valid JSON: {error}"]) from error
    if not isinstance(entries, list):
        raise ManifestError(source, [f"expected a JSON list, got {type(entries).__name__}"])
    errors: list[str] = []
    documents: list[DocumentRef] = []
    seen: dict[str, int] = {}
    for index, entry in enumerate(entries):
        problems, document = _entry_errors(index, entry, base_url)
        errors.extend(problems)
        if document is None:
            continue
        if document.url in seen:
            errors.append(f"entry {index}: url repeats entry {seen[document.url]}")
            continue
        seen[document.url] = index
        documents.append(document)
    if errors:
        raise ManifestError(source, errors)
    return documents


def _read(source_url: str, session: requests.Session, settings: Settings) -> bytes:
    if not urlsplit(source_url).scheme:
        path = Path(source_url).expanduser()
        if not path.is_file():
            raise SourceError(f"manifest {source_url}: no such file")
        if path.stat().st_size > MAX_MANIFEST_BYTES:
            raise SourceError(f"manifest {source_url}: larger than {MAX_MANIFEST_BYTES} bytes")
        return path.read_bytes()
    check_scheme(source_url)
    name = redact_url(source_url)
    try:
        with session.get(source_url, timeout=settings.http_timeout, stream=True) as response:
            if response.status_code != 200:
                raise SourceError(f"manifest {name}: HTTP {response.status_code}")
            body = bytearray()
            for chunk in response.iter_content(64 * 1024):
                body += chunk
                if len(body) > MAX_MANIFEST_BYTES:
                    raise SourceError(f"manifest {name}: larger than {MAX_MANIFEST_BYTES} bytes")
    except BlockedAddress as error:  # the manifest, or a redirect, to a non-public address
        raise SourceError(f"manifest {name}: {error}") from None
    except requests.RequestException as error:
        raise SourceError(f"manifest {name}: {type(error).__name__}: {error}") from error
    return bytes(body)


def discover(source_url: str, session: requests.Session, settings: Settings) -> list[DocumentRef]:
    """The documents a manifest lists (URL, or a local path), validated."""
    data = _read(source_url, session, settings)
    base = source_url if urlsplit(source_url).scheme else ""
    return parse_manifest(data, source=redact_url(source_url), base_url=base)
