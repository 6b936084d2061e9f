"""The `civicplus` source: CivicPlus AgendaCenter, the platform of about 1,500 US sites.

    clerk site add nash-county.nc --kind civicplus --client nc-nashcounty
    clerk site add columbus.wi --kind civicplus --url https://www.cityofcolumbuswi.com/

reads the AgendaCenter search for a date range,
`/AgendaCenter/Search/?term=&CIDs=all&startDate=MM/DD/YYYY&endDate=MM/DD/YYYY&...`. Its
answer lists meetings as rows (`tr.catAgendaRow`) under one heading per body (`div.listing`
> `h2`: "Board of Commissioners"), each row linking its agenda as
`/AgendaCenter/ViewFile/Agenda/_MMDDYYYY-ID` and, once published, its minutes as
`/ViewFile/Minutes/_MMDDYYYY-ID`. The meeting is the body's heading, the date the one in
the link. The `?html=true` and packet variants and `PreviousVersions` are left out: the
current PDF of each is what the archive keeps. Many sites redirect from
`{st}-{city}.civicplus.com` to the city's own domain: the links are resolved against
where the search really answered, so each download is not redirected again.

A search that finds nothing says "No results found"; a page with neither rows nor that
sentence is not an AgendaCenter search (a layout change, or the wrong URL) and is an error.
"""

from __future__ import annotations

import re
from html.parser import HTMLParser
from urllib.parse import urljoin, urlsplit

import requests

from clerk.config import Settings
from clerk.fetch import redact_url
from clerk.sources import DocumentRef, Kind, SourceError
from clerk.sources.platform import Discovery, SourceRequest, get

SEARCH_PATH = "/AgendaCenter/Search/"
_CLIENT = re.compile(r"^[a-z]{2}-[a-z0-9-]{1,60}$")
# /AgendaCenter/ViewFile/Agenda/_05052020-382 (no query: ?html=true and ?packet=true are variants)
_VIEW_FILE = re.compile(r"/AgendaCenter/ViewFile/(Agenda|Minutes)/_(\d{2})(\d{2})(\d{4})-(\d+)$",
                        re.IGNORECASE)
_NO_RESULTS = re.compile(r"No results found", re.IGNORECASE)
_LEADING_SYMBOLS = re.compile(r"^[^\w(]+")


def client_url(client: str) -> str:
    """The AgendaCenter host of a CivicPlus client name (`nc-nashcounty`)."""
    if not _CLIENT.match(client):
        raise SourceError(f"{client!r} is not a CivicPlus site name (like nc-nashcounty: "
                          "the state, a hyphen, the place)")
    return f"https://{client}.civicplus.com/"


def search_url(site_url: str) -> str:
    """The search page of the site at `site_url` (its root, or any AgendaCenter page)."""
    parts = urlsplit(site_url)
    root = f"{parts.scheme}://{parts.netloc}"
    path = parts.path
    at = path.lower().find("/agendacenter")
    prefix = path[:at] if at >= 0 else path.rstrip("/")
    return root + prefix + SEARCH_PATH


def discover_platform(request: SourceRequest) -> Discovery:
    start, end = request.window()
    url = search_url(request.url)
    params = {"term": "", "CIDs": "all", "startDate": start.strftime("%m/%d/%Y"),
              "endDate": end.strftime("%m/%d/%Y"), "dateRange": "", "dateSelector": ""}
    reply = get(request, url, what="AgendaCenter search", accept="text/html", params=params)
    found = parse_search(reply.text(), reply.url)
    found.complete = request.since is None  # later runs search from the last success only
    return found


def discover(source_url: str, session: requests.Session, settings: Settings) -> list[DocumentRef]:
    return discover_platform(SourceRequest(source_url, session, settings)).documents


def parse_search(html: str, page_url: str) -> Discovery:
    """The documents of one AgendaCenter search page."""
    parser = _SearchParser()
    parser.feed(html)
    parser.close()
    if not parser.rows and not _NO_RESULTS.search(html):
        raise SourceError(f"AgendaCenter search {redact_url(page_url)}: no meeting rows and no "
                          "'No results found': not an AgendaCenter search page (has the layout "
                          "changed, or is the URL wrong?)")
    discovery = Discovery(meetings=len(parser.rows))
    for body, links in parser.rows:
        for href in links:
            url = urljoin(page_url, href)
            parts = urlsplit(url)
            found = None if parts.query else _VIEW_FILE.search(parts.path)
            if found is None:
                continue
            word, month, day, year, _ = found.groups()
            kind: Kind = "minutes" if word.lower() == "minutes" else "agenda"
            discovery.add(url, meeting=body or "Meeting", date=f"{year}-{month}-{day}", kind=kind)
    if parser.rows and not discovery.documents and not discovery.rejected:
        raise SourceError(f"AgendaCenter search {redact_url(page_url)}: {len(parser.rows)} "
                          "meeting rows but no ViewFile links (has the layout changed?)")
    return discovery


class _SearchParser(HTMLParser):
    """Collects, per `tr.catAgendaRow`, the heading of the listing it is in and its links."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.rows: list[tuple[str, list[str]]] = []
        self._body = ""
        self._in_heading = False
        self._heading: list[str] = []
        self._in_listing = False
        self._row: list[str] | None = None
        self._row_depth = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        classes = (values.get("class") or "").split()
        if tag == "div" and "listing" in classes:
            self._in_listing = True
            self._body = ""
        elif tag == "h2" and self._in_listing and self._row is None:
            self._in_heading = True
            self._heading = []
        elif tag == "tr" and "catAgendaRow" in classes:
            self._row = []
            self.rows.append((self._body, self._row))
        elif tag == "a" and self._row is not None and values.get("href"):
            self._row.append(values["href"] or "")

    def handle_endtag(self, tag: str) -> None:
        if tag == "h2" and self._in_heading:
            self._in_heading = False
            # the heading starts with a disclosure triangle (&#9660;): words only
            self._body = _LEADING_SYMBOLS.sub("", " ".join("".join(self._heading).split()))
        elif tag == "tr":
            self._row = None

    def handle_data(self, data: str) -> None:
        if self._in_heading:
            self._heading.append(data)
