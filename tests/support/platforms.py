"""Platform servers on 127.0.0.1 for the source plugins: recorded CivicPlus AgendaCenter
responses replayed with their hosts rewritten, and Legistar and PrimeGov APIs built from
their documented shapes. Each answers by path (the query is the handler's to read) and
records every request, so tests see what a source asked for."""

from __future__ import annotations

import gzip
import hashlib
import json
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import yaml

CIVICPLUS = Path(__file__).resolve().parent.parent / "fixtures" / "platforms" / "civicplus"


@dataclass
class Answer:
    status: int = 200
    body: bytes = b""
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Seen:
    path: str
    query: dict[str, str]
    headers: dict[str, str]


Handler = Callable[[dict[str, str], dict[str, str]], Answer]


class _Quiet(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError | TimeoutError):
            super().handle_error(request, client_address)  # type: ignore[arg-type]


class PlatformServer:
    """Routes by path; PDFs get an ETag from their bytes and answer 304 to it."""

    def __init__(self) -> None:
        self.handlers: dict[str, Handler] = {}
        self.seen: list[Seen] = []
        owner = self

        class Request(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                return

            def do_GET(self) -> None:
                parts = urlsplit(self.path)
                query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
                headers = dict(self.headers.items())
                owner.seen.append(Seen(parts.path, query, headers))
                handler = owner.handlers.get(parts.path.lower())
                answer = handler(query, headers) if handler else Answer(404, b"not found", "text/plain")
                self.send_response(answer.status)
                self.send_header("Content-Type", answer.content_type)
                self.send_header("Content-Length", str(len(answer.body)))
                for name, value in answer.headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(answer.body)

        self.httpd = _Quiet(("127.0.0.1", 0), Request)
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever,
                                       kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def on(self, path: str, handler: Handler) -> str:
        self.handlers[path.lower()] = handler
        return self.base + path

    def pdf(self, path: str, body: bytes) -> str:
        etag = '"' + hashlib.sha256(body).hexdigest()[:16] + '"'

        def answer(query: dict[str, str], headers: dict[str, str]) -> Answer:
            if headers.get("If-None-Match") == etag:
                return Answer(304, b"", "application/pdf", {"ETag": etag})
            return Answer(200, body, "application/pdf", {"ETag": etag})
        return self.on(path, answer)

    def requests_to(self, path: str) -> list[Seen]:
        return [seen for seen in self.seen if seen.path.lower() == path.lower()]

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def json_answer(data: Any, status: int = 200) -> Answer:
    return Answer(status, json.dumps(data).encode(), "application/json; charset=utf-8")


# ------------------------------------------------------------------ CivicPlus replay


def cassette(name: str) -> list[dict[str, Any]]:
    """The interactions of one recorded cassette, bodies decompressed to bytes."""
    data = yaml.safe_load((CIVICPLUS / name).read_text())
    found = []
    for interaction in data["interactions"]:
        response = interaction["response"]
        body = response["body"].get("string", b"")
        if isinstance(body, str):
            body = body.encode()
        if body[:2] == b"\x1f\x8b":
            body = gzip.decompress(body)
        headers = {k: v[0] for k, v in response["headers"].items()}
        found.append({"method": interaction["request"]["method"],
                      "uri": interaction["request"]["uri"],
                      "status": response["status"]["code"], "headers": headers, "body": body})
    return found


def replay_search(server: PlatformServer, name: str, *, hosts: dict[str, str]) -> Answer:
    """Serve the cassette's search reply (the GET with status 200) at
    /AgendaCenter/Search/, whatever dates are asked; `hosts` rewrites recorded origins."""
    reply = next(i for i in cassette(name) if i["method"] == "GET" and i["status"] == 200)
    body = reply["body"]
    for old, new in hosts.items():
        body = body.replace(old.encode(), new.encode())
    answer = Answer(200, body, reply["headers"].get("Content-Type", "text/html"))
    server.on("/AgendaCenter/Search/", lambda query, headers: answer)
    return answer


def civicplus_view_files(name: str) -> list[str]:
    """The ViewFile paths the recorded search links (from the cassette's HEAD requests)."""
    paths: list[str] = []
    for interaction in cassette(name):
        if interaction["method"] == "HEAD" and interaction["status"] == 200:
            path = urlsplit(interaction["uri"]).path
            if path not in paths:
                paths.append(path)
    return paths


# ------------------------------------------------------------------ Legistar


@dataclass
class LegistarClient:
    """One client of the fake Legistar Web API: events, paged at 1,000 rows."""

    name: str
    events: list[dict[str, Any]]
    token: str | None = None
    xml: bool = False
    broken: bool = False  # replies rows that lack EventDate (an API change)

    def page(self, query: dict[str, str], headers: dict[str, str]) -> Answer:
        if self.token is not None and query.get("token") != self.token:
            message = ("Token is required" if "token" not in query
                       else "Invalid token")
            return json_answer({"Message": f"{message} for client {self.name}."}, 403)
        top = min(int(query.get("$top", "1000")), 1000)
        skip = int(query.get("$skip", "0"))
        rows = sorted(self.events, key=lambda e: e["EventId"])[skip:skip + top]
        if self.broken:
            rows = [{"Id": row["EventId"], "Title": row["EventBodyName"]} for row in rows]
        if self.xml:
            return Answer(200, legistar_xml(rows), "application/xml; charset=utf-8")
        return json_answer(rows)


def legistar_event(event_id: int, body: str, date: str, *, agenda: str | None = None,
                   minutes: str | None = None) -> dict[str, Any]:
    """An event as https://webapi.legistar.com/Help documents it."""
    return {"EventId": event_id, "EventGuid": f"guid-{event_id}", "EventBodyId": 1,
            "EventBodyName": body, "EventDate": f"{date}T00:00:00", "EventTime": "5:45 PM",
            "EventAgendaFile": agenda, "EventMinutesFile": minutes,
            "EventAgendaLastPublishedUTC": None, "EventMinutesLastPublishedUTC": None,
            "EventLastModifiedUtc": f"{date}T12:00:00.000", "EventInSiteURL": None,
            "EventItems": []}


def legistar_xml(rows: list[dict[str, Any]]) -> bytes:
    """The same rows as the API's XML (ArrayOfGranicusEvent, i:nil for nulls)."""
    ns = "http://schemas.datacontract.org/2004/07/LegistarWebAPI.Models.v1"
    parts = [f'<ArrayOfGranicusEvent xmlns:i="http://www.w3.org/2001/XMLSchema-instance" '
             f'xmlns="{ns}">']
    for row in rows:
        parts.append("<GranicusEvent>")
        for key, value in row.items():
            if isinstance(value, list):
                parts.append(f"<{key}/>")
            elif value is None:
                parts.append(f'<{key} i:nil="true"/>')
            else:
                text = str(value).replace("&", "&amp;").replace("<", "&lt;")
                parts.append(f"<{key}>{text}</{key}>")
        parts.append("</GranicusEvent>")
    parts.append("</ArrayOfGranicusEvent>")
    return "".join(parts).encode()


def serve_legistar(server: PlatformServer, client: LegistarClient) -> str:
    """Mount a client; returns its API root (what `--url` takes for a legistar site)."""
    server.on(f"/v1/{client.name}/events", client.page)
    return f"{server.base}/v1/{client.name}"


def serve_unknown_legistar_client(server: PlatformServer, name: str) -> str:
    message = f"LegistarConnectionString setting is not set up in InSite for client: {name}"
    server.on(f"/v1/{name}/events", lambda query, headers: json_answer({"Message": message}, 500))
    return f"{server.base}/v1/{name}"


# ------------------------------------------------------------------ PrimeGov


def serve_primegov(server: PlatformServer, archived: dict[int, list[dict[str, Any]]],
                   upcoming: list[dict[str, Any]]) -> str:
    server.on("/api/v2/PublicPortal/ListArchivedMeetings",
              lambda query, headers: json_answer(archived.get(int(query.get("year", "0")), [])))
    server.on("/api/v2/PublicPortal/ListUpcomingMeetings",
              lambda query, headers: json_answer(upcoming))
    return server.base + "/"


def serve_primegov_documents(server: PlatformServer, documents: dict[int, bytes]) -> None:
    """MeetingPreview?compiledMeetingDocumentFileId=ID for each PDF."""
    def preview(query: dict[str, str], headers: dict[str, str]) -> Answer:
        body = documents.get(int(query.get("compiledMeetingDocumentFileId", "0")))
        if body is None:
            return Answer(404, b"no such document", "text/plain")
        etag = '"' + hashlib.sha256(body).hexdigest()[:16] + '"'
        if headers.get("If-None-Match") == etag:
            return Answer(304, b"", "application/pdf", {"ETag": etag})
        return Answer(200, body, "application/pdf", {"ETag": etag})
    server.on("/Portal/MeetingPreview", preview)

