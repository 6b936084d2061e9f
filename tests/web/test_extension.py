"""The contract an extension (clerk's site pages) codes against: its nav, routes, templates
(found before pgqueue's), overview panels and action routes (not routed when read-only);
`render` answering HTML or the context as JSON in the documented encoding; `check_post`."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path, PurePosixPath

import pytest
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.testclient import TestClient

from pgqueue import Queue
from pgqueue.web import Extension, check_post, create_app, json_dumps, render, wants_json
from tests.web.conftest import SCRIPT, token


def _extension(tmp_path: Path) -> Extension:
    (tmp_path / "demo").mkdir(parents=True)
    (tmp_path / "demo" / "things.html").write_text(
        '{% extends "pgqueue/base.html" %}{% block title %}Things{% endblock %}'
        '{% block content %}<h1>Things</h1><p id="name">{{ name }}</p>'
        '<p id="when">{{ when | when }}</p>'
        '{% if not read_only %}<form method="post" action="{{ url(\'/things/poke\') }}">'
        '{{ csrf_field() }}<button>poke</button></form>{% endif %}{% endblock %}')
    (tmp_path / "demo" / "panel.html").write_text(
        '<section id="demo-panel">{{ failures_last_hour }} failures, seen by the panel</section>')

    def things(request: Request) -> Response:
        return render(request, "demo/things.html", {
            "name": request.query_params.get("name", "x"), "when": datetime(2026, 1, 2, tzinfo=UTC),
            "share": Decimal("12.50"), "count": Decimal("3"), "queue": request.app.state.queue.schema,
            "read_only": request.app.state.read_only})

    async def poke(request: Request) -> Response:
        await check_post(request)
        return render(request, "pgqueue/done.html", {"message": "poked", "back": "/things"})

    return Extension(name="demo", nav=[("Things", "/things")], routes=[Route("/things", things)],
                     templates_dir=tmp_path, overview_panels=["demo/panel.html"],
                     action_routes=[Route("/things/poke", poke, methods=["POST"])])


def test_an_extension_adds_nav_pages_panels_and_actions(wq: Queue, tmp_path: Path) -> None:
    with TestClient(create_app(wq, extensions=[_extension(tmp_path)], title="City ops")) as web:
        overview = web.get("/").text
        assert 'href="/things">Things</a>' in overview and "<title>Overview · City ops" in overview
        assert 'id="demo-panel">0 failures, seen by the panel' in overview
        page = web.get("/things", params={"name": SCRIPT})
        assert page.status_code == 200 and '<p id="when">2026-01-02 00:00:00Z</p>' in page.text
        assert SCRIPT not in page.text and "&lt;script&gt;" in page.text  # autoescape on
        as_json = web.get("/things", params={"name": "n", "format": "json"}).json()
        assert as_json == {"name": "n", "when": "2026-01-02T00:00:00+00:00", "share": 12.5,
                           "count": 3, "queue": "pgqueue", "read_only": False}
        assert web.post("/things/poke", data={}).status_code == 403
        assert web.post("/things/poke", data={"csrf_token": token(web, "/things")}).text.count(
            "poked") == 1
    with TestClient(create_app(wq, extensions=[_extension(tmp_path / "ro")], read_only=True)) as ro:
        assert ro.get("/things").status_code == 200 and "<form" not in ro.get("/things").text
        assert ro.post("/things/poke", data={}).status_code in (404, 405)


def test_extension_names_are_unique(wq: Queue, tmp_path: Path) -> None:
    ext = _extension(tmp_path)
    with pytest.raises(ValueError, match="unique"):
        create_app(wq, extensions=[ext, ext])


def test_the_json_encoding_is_the_documented_one() -> None:
    value = {"at": datetime(2026, 12, 7, 10, 0, tzinfo=UTC), "day": date(2026, 12, 7),
             "took": timedelta(seconds=90), "whole": Decimal("4"), "part": Decimal("0.25"),
             "id": uuid.UUID(int=1), "path": PurePosixPath("/a/b"), "tags": ("a",),
             "text": SCRIPT}
    assert json.loads(json_dumps(value)) == {
        "at": "2026-12-07T10:00:00+00:00", "day": "2026-12-07", "took": 90.0, "whole": 4,
        "part": 0.25, "id": "00000000-0000-0000-0000-000000000001", "path": "/a/b",
        "tags": ["a"], "text": SCRIPT}
    assert isinstance(json.loads(json_dumps({"n": Decimal("4")}))["n"], int)
    with pytest.raises(TypeError, match="bytes"):
        json_dumps({"raw": b"x"})


@pytest.mark.parametrize("query, accept, expected", [
    ("", "text/html,application/xhtml+xml,*/*;q=0.8", False),
    ("", "application/json", True),
    ("", "application/json;q=0.5, text/html", False),
    ("", "text/html;q=0.1, application/json", True),
    ("", "*/*", False),
    ("", "", False),
    ("format=json", "text/html", True),
    ("format=html", "application/json", False),
])
def test_wants_json(query: str, accept: str, expected: bool) -> None:
    scope = {"type": "http", "method": "GET", "path": "/", "query_string": query.encode(),
             "headers": [(b"accept", accept.encode())] if accept else []}
    assert wants_json(Request(scope)) is expected
