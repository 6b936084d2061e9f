"""The `primegov` source: Granicus PrimeGov's public portal API (undocumented JSON).

    clerk site add paloalto --kind primegov --client cityofpaloalto

reads `https://cityofpaloalto.primegov.com/api/v2/PublicPortal/ListArchivedMeetings?year=YYYY`
for each year of the window and `.../ListUpcomingMeetings`. A meeting is
`{id, title, dateTime, documentList: [...]}` or, in other versions,
`{..., templates: [{title, compiledMeetingDocumentFiles: [{id, compileOutputType}]}]}`;
each compiled document is served at `/Portal/MeetingPreview?compiledMeetingDocumentFileId=ID`.
Output type 1 is the PDF and 3 the HTML rendering: only PDFs are taken. A template whose
name says minutes is minutes; one that says agenda or packet is an agenda; others (action
summaries, notices) are listed as refused, with their name.

The portal sends no validators for these lists, so every run asks for the window's years;
the documents themselves are fetched conditionally like every other source's.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

import requests

from clerk.config import Settings
from clerk.sources import DocumentRef, Kind, SourceError
from clerk.sources.platform import Discovery, SourceRequest, date_of, get, parse_json

PDF_OUTPUT = 1
ARCHIVED = "/api/v2/PublicPortal/ListArchivedMeetings"
UPCOMING = "/api/v2/PublicPortal/ListUpcomingMeetings"
DOCUMENT = "/Portal/MeetingPreview?compiledMeetingDocumentFileId={id}"
_CLIENT = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
_MINUTES = re.compile(r"\bminutes?\b", re.IGNORECASE)
_AGENDA = re.compile(r"\b(?:agendas?|packets?)\b", re.IGNORECASE)


def client_url(client: str) -> str:
    """The portal of a PrimeGov client name (`cityofpaloalto`)."""
    if not _CLIENT.match(client):
        raise SourceError(f"{client!r} is not a PrimeGov portal name (lowercase letters, "
                          "digits and hyphens)")
    return f"https://{client}.primegov.com/"


def discover_platform(request: SourceRequest) -> Discovery:
    parts = urlsplit(request.url)
    root = f"{parts.scheme}://{parts.netloc}"
    start, end = request.window()
    discovery = Discovery(complete=request.since is None)  # later runs: recent years only
    meetings: dict[Any, dict[str, Any]] = {}
    for year in range(start.year, min(end.year, request.today.year) + 1):
        for meeting in _meetings(request, f"{root}{ARCHIVED}", {"year": str(year)}):
            meetings.setdefault(meeting["id"], meeting)
    for meeting in _meetings(request, f"{root}{UPCOMING}", None):
        meetings.setdefault(meeting["id"], meeting)
    for meeting in meetings.values():
        where = f"PrimeGov meeting {meeting['id']}"
        day = date_of(meeting.get("dateTime"), where)
        if not start <= day <= end:
            continue
        discovery.meetings += 1
        title = " ".join(str(meeting.get("title") or "").split()) or "Meeting"
        for document_id, template, output in _documents(meeting):
            if output != PDF_OUTPUT:
                continue
            url = root + DOCUMENT.format(id=document_id)
            kind = _kind(template)
            if kind is None:
                discovery.refuse(url, f"template {template!r} is neither an agenda nor minutes")
            else:
                discovery.add(url, meeting=title, date=day.isoformat(), kind=kind)
    return discovery


def discover(source_url: str, session: requests.Session, settings: Settings) -> list[DocumentRef]:
    return discover_platform(SourceRequest(source_url, session, settings)).documents


def _meetings(request: SourceRequest, url: str, params: dict[str, str] | None) -> list[dict[str, Any]]:
    name = f"PrimeGov {urlsplit(url).netloc}"
    reply = get(request, url, what=name, accept="application/json", params=params)
    data = parse_json(reply, name)
    if not isinstance(data, list):
        raise SourceError(f"{name}: expected a list of meetings, got {type(data).__name__}; "
                          "has the portal changed?")
    for meeting in data:
        if not isinstance(meeting, dict) or "id" not in meeting or "dateTime" not in meeting:
            shown = sorted(meeting)[:8] if isinstance(meeting, dict) else type(meeting).__name__
            raise SourceError(f"{name}: a meeting without id/dateTime ({shown}); "
                              "has the portal changed?")
    return data


def _documents(meeting: dict[str, Any]) -> list[tuple[Any, str, Any]]:
    """(document id, template name, output type) of both shapes a meeting comes in."""
    found: list[tuple[Any, str, Any]] = []
    for document in meeting.get("documentList") or []:
        if isinstance(document, dict) and "id" in document:
            template = str(document.get("templateName") or document.get("title") or "")
            found.append((document["id"], template, document.get("compileOutputType")))
    for template in meeting.get("templates") or []:
        if not isinstance(template, dict):
            continue
        for document in template.get("compiledMeetingDocumentFiles") or []:
            if isinstance(document, dict) and "id" in document:
                found.append((document["id"], str(template.get("title") or ""),
                              document.get("compileOutputType")))
    return found


def _kind(template: str) -> Kind | None:
    if _MINUTES.search(template):
        return "minutes"
    if _AGENDA.search(template):
        return "agenda"
    return None


__all__ = ["client_url", "discover", "discover_platform"]
