"""Cheap re-runs (issue 21): a re-run of a site whose index page and documents did not
change makes only conditional requests (the index page too: its ETag and Last-Modified are
kept in clerk.index_pages) and hashes nothing; a server that ignores conditional headers
but sends the same validators is taken at its word, and its bodies are not read."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler
from typing import Any

import pytest

from clerk.pipeline import Pipeline
from tests.acceptance.conftest import CitySite, Cli, run_workers
from tests.support.pipeline import LocalServer, PdfFactory, Route, http_date

CONDITIONAL = ("If-None-Match", "If-Modified-Since")


def _publish(city: CitySite, http_server: LocalServer, pdf_factory: PdfFactory) -> list[str]:
    for day in (1, 2):
        city.add(f"agenda-{day}.pdf", f"City Council Agenda 2024-06-0{day}",
                 pdf_factory.text_pdf(f"a{day}.pdf", [f"Item {n} of day {day}."
                                                      for n in range(2)]).read_bytes())
    index = http_server.routes[city.index_path]
    http_server.static(city.index_path, index.body, content_type=index.content_type,
                       etag='"index-1"', last_modified=http_date(1_700_000_000))
    return [city.index_path, city.path("agenda-1.pdf"), city.path("agenda-2.pdf")]


def _count_hashes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Every sha256 started by clerk's fetch, storage and index code from now on."""
    made: list[int] = []
    real = hashlib.sha256

    def counting(*args: Any, **kwargs: Any) -> Any:
        made.append(1)
        return real(*args, **kwargs)

    for module in ("clerk.fetch", "clerk.blobs", "clerk.sources.index"):
        monkeypatch.setattr(f"{module}.hashlib.sha256", counting)
    return made


def _ignoring(route: Route) -> Callable[[BaseHTTPRequestHandler], None]:
    """A server that answers 200 with the whole body whatever the request's conditions,
    and the same validators as before."""
    def answer(request: BaseHTTPRequestHandler) -> None:
        request.send_response(200)
        request.send_header("Content-Type", route.content_type)
        request.send_header("Content-Length", str(len(route.body)))
        if route.etag:
            request.send_header("ETag", route.etag)
        if route.last_modified:
            request.send_header("Last-Modified", route.last_modified)
        request.end_headers()
        request.wfile.write(route.body)
    return answer


def _rerun(cli: Cli, pipeline: Pipeline) -> str:
    cli("enqueue", "springfield")
    run_workers(pipeline, concurrency=1)
    return str(pipeline.fetch_one("get_site", {"subdomain": "springfield"})["last_result"])


@pytest.mark.parametrize("server_kind", ["honours", "ignores"])
def test_a_no_op_rerun_asks_conditionally_and_hashes_nothing(
        city: CitySite, http_server: LocalServer, pdf_factory: PdfFactory, cli: Cli,
        pipeline: Pipeline, monkeypatch: pytest.MonkeyPatch, server_kind: str) -> None:
    paths = _publish(city, http_server, pdf_factory)
    cli("site", "add", "springfield", "--url", city.url)
    cli("enqueue", "springfield")
    run_workers(pipeline, concurrency=1)
    assert http_server.hits(city.index_path) == 1
    if server_kind == "ignores":
        for path in paths:
            http_server.routes[path] = Route(handler=_ignoring(http_server.routes[path]))

    http_server.requests.clear()
    hashes = _count_hashes(monkeypatch)
    result = _rerun(cli, pipeline)
    assert result.startswith("nothing new"), result
    seen = [(request.path, request.headers) for request in http_server.requests]
    assert sorted(path for path, _ in seen) == sorted(paths)  # one request each
    for path, headers in seen:
        assert any(name in headers for name in CONDITIONAL), (path, headers)
    assert hashes == []


def test_a_changed_index_page_is_read_again(
        city: CitySite, http_server: LocalServer, pdf_factory: PdfFactory, cli: Cli,
        pipeline: Pipeline) -> None:
    _publish(city, http_server, pdf_factory)
    cli("site", "add", "springfield", "--url", city.url)
    cli("enqueue", "springfield")
    run_workers(pipeline, concurrency=1)
    city.add("agenda-3.pdf", "City Council Agenda 2024-06-03",
             pdf_factory.text_pdf("a3.pdf", ["A third meeting."]).read_bytes())
    index = http_server.routes[city.index_path]  # a new page: new validators
    http_server.static(city.index_path, index.body, content_type=index.content_type,
                       etag='"index-2"', last_modified=http_date(1_700_000_100))
    result = _rerun(cli, pipeline)
    assert "3 documents listed, 1 new or changed" in result, result
