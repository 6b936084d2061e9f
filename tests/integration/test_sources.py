"""Source plugins over real HTTP: an index page and a JSON manifest."""

import json
from pathlib import Path

import pytest
import requests

from clerk.config import Settings
from clerk.sources import SourceError, get_source
from clerk.sources.index import discover_index
from clerk.sources.manifest import ManifestError
from tests.support.pipeline import LocalServer

SETTINGS = Settings(http_timeout=5)


def test_index_page(http_server: LocalServer) -> None:
    page = (
        b'<a href="cc/2024-01-05.pdf">City Council Agenda January 5, 2024</a>'
        b'<a href="file:///etc/passwd.pdf">Minutes 1/1/2024</a>'
        b'<a href="/minutes/Planning_Commission_Minutes_12-1-23.PDF">Download (PDF)</a>'
    )
    url = http_server.static("/meetings/", page, content_type="text/html; charset=utf-8")
    with requests.Session() as session:
        result = discover_index(url, session, SETTINGS)
        documents = get_source("index").discover(url, session, SETTINGS)
    assert documents == result.documents
    assert [(d.url, d.meeting, d.date, d.kind) for d in documents] == [
        (http_server.url("/meetings/cc/2024-01-05.pdf"), "City Council", "2024-01-05", "agenda"),
        (
            http_server.url("/minutes/Planning_Commission_Minutes_12-1-23.PDF"),
            "Planning Commission",
            "2023-12-01",
            "minutes",
        ),
    ]
    assert [r.url for r in result.rejected] == ["file:///etc/passwd.pdf"]
    assert not any("passwd" in seen.path for seen in http_server.requests)


def test_index_page_errors(http_server: LocalServer) -> None:
    url = http_server.status("/missing/", 404)
    with requests.Session() as session, pytest.raises(SourceError, match="HTTP 404"):
        get_source("index").discover(url, session, SETTINGS)


def test_manifest_over_http_and_from_a_file(http_server: LocalServer, tmp_path: Path) -> None:
    entries = [{"url": "a.pdf", "meeting": "City Council", "date": "2024-01-05", "kind": "minutes"}]
    url = http_server.static(
        "/docs/manifest.json", json.dumps(entries).encode(), content_type="application/json"
    )
    local = tmp_path / "manifest.json"
    local.write_text(json.dumps([{**entries[0], "url": "https://c.gov/a.pdf"}]))
    with requests.Session() as session:
        documents = get_source("manifest").discover(url, session, SETTINGS)
        assert documents[0].url == http_server.url("/docs/a.pdf")
        assert get_source("manifest").discover(str(local), session, SETTINGS)[0].kind == "minutes"
        http_server.static("/docs/bad.json", b'[{"url": "x.pdf"}]')
        with pytest.raises(ManifestError, match="entry 0: 'meeting' is required"):
            get_source("manifest").discover(http_server.url("/docs/bad.json"), session, SETTINGS)
