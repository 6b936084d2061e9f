"""The `legistar` source: Granicus Legistar's documented Web API (OData v3).

    clerk site add oakland --kind legistar --client oakland [--token TOKEN]

reads `https://webapi.legistar.com/v1/oakland/events`. An event is one meeting of one body:
`EventBodyName` and `EventDate` name it, and `EventAgendaFile` / `EventMinutesFile` are the
URLs of its agenda and minutes PDFs (null until published). Replies are capped at 1,000
rows, so events are read in pages (`$top`/`$skip`, ordered by `EventId` so that pages do
not shift). A first run asks for the meetings dated within SOURCE_HISTORY_DAYS (and
SOURCE_LOOKAHEAD_DAYS ahead); a later run asks only for events modified or published
since the last successful run less SOURCE_BACK_WINDOW_DAYS.

The API answers JSON when asked (`Accept: application/json`); a client that answers XML
anyway is read as XML. A client that needs a token, an unknown client, and a reply that
is neither are each a one-line error naming the client.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from typing import Any
from urllib.parse import urlsplit

import requests

from clerk.config import Settings
from clerk.sources import DocumentRef, Kind, SourceError
from clerk.sources.platform import (
    Discovery,
    Reply,
    SourceRequest,
    date_of,
    get,
    http_error,
    odata_datetime,
    parse_json,
)

# XML replies are parsed by ElementTree: the expat under it (>= 2.4.1) refuses entity-
# expansion bombs, and it never fetches a DTD or an external entity.
API_ROOT = "https://webapi.legistar.com/v1/"
PAGE_ROWS = 1000  # the API's cap on one reply
MAX_PAGES = 500  # 500,000 events: a bound on a misbehaving server, far above any client
CREDENTIAL = "token"  # the site's credential is an API token, sent as ?token=
FILES: tuple[tuple[str, Kind], ...] = (("EventAgendaFile", "agenda"), ("EventMinutesFile", "minutes"))
_CLIENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$")


def client_url(client: str) -> str:
    """The API root of a Legistar client (`oakland` -> https://webapi.legistar.com/v1/oakland)."""
    if not _CLIENT.match(client):
        raise SourceError(f"{client!r} is not a Legistar client name (letters, digits, - and _)")
    return API_ROOT + client


def client_of(url: str) -> str:
    """The client name in an API URL (its last path segment)."""
    return urlsplit(url).path.rstrip("/").rsplit("/", 1)[-1] or url


def discover_platform(request: SourceRequest) -> Discovery:
    """Every agenda and minutes PDF of the events asked for, page after page."""
    base = request.url.rstrip("/")
    if base.endswith("/events"):
        base = base[: -len("/events")]
    client = client_of(base)
    changed = request.changed_since()
    if changed is None:
        start, end = request.window()
        where = f"EventDate ge {odata_datetime(start)} and EventDate le {odata_datetime(end)}"
    else:
        moment = odata_datetime(changed)
        where = (f"EventLastModifiedUtc ge {moment} or EventAgendaLastPublishedUTC ge {moment}"
                 f" or EventMinutesLastPublishedUTC ge {moment}")
    discovery = Discovery(complete=changed is None)
    for page in range(MAX_PAGES):
        params = {"$filter": where, "$orderby": "EventId", "$top": str(PAGE_ROWS),
                  "$skip": str(page * PAGE_ROWS)}
        if request.token:
            params["token"] = request.token
        events = _events(request, f"{base}/events", client, params)
        for event in events:
            discovery.meetings += 1
            _add_files(event, client, discovery)
        if len(events) < PAGE_ROWS:
            return discovery
    raise SourceError(f"Legistar client {client!r}: more than {MAX_PAGES * PAGE_ROWS} events; "
                      "narrow SOURCE_HISTORY_DAYS")


def discover(source_url: str, session: requests.Session, settings: Settings) -> list[DocumentRef]:
    """The documents of a first run (no token, no last run): `discover_platform` is what
    the pipeline calls."""
    return discover_platform(SourceRequest(source_url, session, settings)).documents


def _events(request: SourceRequest, url: str, client: str, params: dict[str, str]) -> list[dict[str, Any]]:
    name = f"Legistar client {client!r}"
    reply = get(request, url, what=name, accept="application/json", params=params,
                ok=(200, 400, 401, 403, 404, 500))
    if reply.status != 200:
        raise _refusal(reply, name, had_token=bool(request.token))
    body = reply.body.lstrip()
    rows = _xml_rows(reply, name) if body.startswith(b"<") else parse_json(reply, name)
    if not isinstance(rows, list) or not all(isinstance(row, dict) for row in rows):
        raise SourceError(f"{name}: expected a list of events, got {type(rows).__name__}; "
                          "has the API changed?")
    for row in rows:
        if "EventDate" not in row or "EventBodyName" not in row:
            keys = ", ".join(sorted(row)[:8])
            raise SourceError(f"{name}: an event without EventDate/EventBodyName (keys: {keys}); "
                              "has the API changed?")
    return rows


def _refusal(reply: Reply, name: str, *, had_token: bool) -> SourceError:
    """An error reply as one line: a token needed or refused, an unknown client (both for
    good), or the status (a 500 that says nothing may pass: retried)."""
    message = _message(reply)
    lowered = (message or "").lower()
    if "token" in lowered:
        if had_token:
            return SourceError(f"{name}: the token was refused ({message})")
        return SourceError(f"{name} requires an API token: clerk site add SITE --token TOKEN "
                           f"({message})")
    if any(word in lowered for word in ("not set up", "client", "agency")):
        return SourceError(f"{name}: no such Legistar client ({message})")
    return http_error(name, reply.status, reply.body)


def _message(reply: Reply) -> str | None:
    """The message of an API error reply ({"Message": ...} or <Error><Message>), if any."""
    text = reply.text().strip()
    if text.startswith("{"):
        try:
            data = parse_json(reply, "")
        except SourceError:
            return None
        if isinstance(data, dict):
            message = data.get("Message") or data.get("message") or data.get("ExceptionMessage")
            return str(message or data)[:300]
    if text.startswith("<") and "<html" not in text[:500].lower():
        try:
            root = ET.fromstring(reply.body)  # noqa: S314 - see the import
        except ET.ParseError:
            return None
        return " ".join("".join(root.itertext()).split())[:300] or None
    return None


def _xml_rows(reply: Reply, name: str) -> list[dict[str, Any]]:
    """An XML reply (`ArrayOfGranicusEvent`) as the rows JSON would have given."""
    if b"<!DOCTYPE" in reply.body[:2048].upper() and b"<HTML" in reply.body[:4096].upper():
        raise SourceError(f"{name}: expected events, got an HTML page")
    try:
        root = ET.fromstring(reply.body)  # noqa: S314 - see the import
    except ET.ParseError as error:
        raise SourceError(f"{name}: the XML reply does not parse: {error}") from None
    if _local(root.tag) == "Error":
        message = " ".join("".join(root.itertext()).split())[:300]
        raise SourceError(f"{name}: the API answered an error: {message}")
    rows: list[dict[str, Any]] = []
    for element in root:
        row: dict[str, Any] = {}
        for child in element:
            nil = any(_local(k) == "nil" and v == "true" for k, v in child.attrib.items())
            row[_local(child.tag)] = None if nil else (child.text or "")
        rows.append(row)
    return rows


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _add_files(event: dict[str, Any], client: str, discovery: Discovery) -> None:
    where = f"Legistar client {client!r} event {event.get('EventId')}"
    date = date_of(event.get("EventDate"), where).isoformat()
    meeting = str(event.get("EventBodyName") or "").strip() or "Meeting"
    for field_name, kind in FILES:
        url = event.get(field_name)
        if url:  # null until published
            discovery.add(str(url).strip(), meeting=meeting, date=date, kind=kind)
