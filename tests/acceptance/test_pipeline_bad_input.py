"""Bad input, each on its own: the error is clear, recorded, shown, and the site goes on.

Every test publishes one good agenda beside the bad thing, runs the whole pipeline, and
checks that the good agenda still ends up in meetings.db and the deployed copy, that the
failure is recorded (documents.error or a failed job) and that `clerk status --subdomain`
names the document and says what went wrong.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest

from clerk.compile import DATABASE_FILE
from clerk.config import Settings, load_settings
from clerk.pipeline import Pipeline
from tests.acceptance.conftest import CitySite, Cli, history, pages, run_workers, search
from tests.support.pipeline import PdfFactory

GOOD = "City Council Agenda 2024-05-07"
GOOD_TEXT = "Regular meeting agenda: the cormorant habitat study and the budget."
BAD = "City Council Minutes 2024-05-07"

ZERO_PAGES = (b"%PDF-1.4\n1 0 obj\n<< /Type /Catalog /Pages 2 0 R >>\nendobj\n"
              b"2 0 obj\n<< /Type /Pages /Kids [] /Count 0 >>\nendobj\n"
              b"trailer\n<< /Root 1 0 R /Size 3 >>\n%%EOF\n")


def publish_good(city: CitySite, pdf_factory: PdfFactory) -> None:
    city.add("agenda.pdf", GOOD, pdf_factory.text_pdf("good.pdf", [GOOD_TEXT]).read_bytes())


def run_site(city: CitySite, cli: Cli, pipeline: Pipeline) -> dict:
    cli("site", "add", "springfield", "--url", city.url)
    cli("enqueue", "springfield")
    run_workers(pipeline)
    return json.loads(cli("status", "--subdomain", "springfield", "--json").output)


def assert_good_agenda_deployed(tmp_path: Path) -> None:
    database = tmp_path / "storage" / "springfield" / DATABASE_FILE
    assert [p["text"].strip() for p in pages(database, "agendas")] == [GOOD_TEXT]
    assert search(database, "agendas", "cormorant")
    assert (tmp_path / "deploy" / "springfield.db").read_bytes() == database.read_bytes()


def document_errors(db_url: str) -> list[dict]:
    with psycopg.connect(db_url, row_factory=psycopg.rows.dict_row) as conn:
        return conn.execute("SELECT kind, meeting, date::text AS date, url, error, pages"
                            " FROM clerk.documents WHERE error IS NOT NULL").fetchall()


def corrupt(factory: PdfFactory) -> tuple[bytes, str]:
    return factory.garbage("corrupt.pdf").read_bytes(), "application/pdf"


def truncated(factory: PdfFactory) -> tuple[bytes, str]:
    return factory.truncated_pdf("truncated.pdf").read_bytes(), "application/pdf"


def encrypted(factory: PdfFactory) -> tuple[bytes, str]:
    return factory.encrypted_pdf("encrypted.pdf").read_bytes(), "application/pdf"


def zero_pages(factory: PdfFactory) -> tuple[bytes, str]:
    return ZERO_PAGES, "application/pdf"


def html_error_page(factory: PdfFactory) -> tuple[bytes, str]:
    return factory.html("error.pdf").read_bytes(), "application/pdf"


def empty(factory: PdfFactory) -> tuple[bytes, str]:
    return b"", "application/pdf"


@pytest.mark.parametrize(("make", "expected"), [
    (corrupt, "not a PDF"),
    (truncated, "not a readable PDF"),
    (encrypted, "password"),
    (zero_pages, "zero pages"),
    (html_error_page, "not a PDF"),
    (empty, "empty body"),
], ids=lambda value: getattr(value, "__name__", None))
def test_bad_pdf(make, expected: str, city: CitySite, pdf_factory: PdfFactory, cli: Cli,
                 pipeline: Pipeline, db_url: str, tmp_path: Path,
                 caplog: pytest.LogCaptureFixture) -> None:
    publish_good(city, pdf_factory)
    body, content_type = make(pdf_factory)
    city.add("bad.pdf", BAD, body, content_type=content_type)
    caplog.set_level(logging.WARNING, logger="clerk.pipeline")

    status = run_site(city, cli, pipeline)

    assert_good_agenda_deployed(tmp_path)
    [error] = document_errors(db_url)
    assert (error["kind"], error["meeting"], error["date"]) == ("minutes", "City Council", "2024-05-07")
    assert error["url"] == city.server.url(city.path("bad.pdf"))
    assert expected.lower() in error["error"].lower()
    assert status["complete"] is True
    assert [d["url"] for d in status["document_errors"]] == [error["url"]]
    text = cli("status", "--subdomain", "springfield").output
    assert f"{city.path('bad.pdf')}" in text and expected.lower() in text.lower()
    assert "1 failed" in status["last_result"]
    logged = [r.getMessage() for r in caplog.records if r.name == "clerk.pipeline"]
    assert any("springfield" in m and "bad.pdf" in m for m in logged), logged


@pytest.mark.parametrize(("route", "expected"), [
    ("404", "HTTP 404"),
    ("500", "HTTP 500"),
    ("timeout", "timed out"),
])
def test_document_http_failure(route: str, expected: str, city: CitySite, pdf_factory: PdfFactory,
                               cli: Cli, pipeline: Pipeline, db_url: str, tmp_path: Path,
                               clerk_env: dict[str, str],
                               make_pipeline: Callable[[Settings], Pipeline]) -> None:
    publish_good(city, pdf_factory)
    path = city.path("bad.pdf")
    if route == "timeout":
        city.server.slow_drip(path, interval=60)  # the header, then nothing
        pipeline = make_pipeline(load_settings(None, {**clerk_env, "CLERK_HTTP_TIMEOUT": "0.5"}))
    elif route == "500":
        city.server.status(path, 500)
    # "404": no route at all
    city.link("bad.pdf", BAD)

    status = run_site(city, cli, pipeline)

    assert_good_agenda_deployed(tmp_path)
    [error] = document_errors(db_url)
    assert expected.lower() in error["error"].lower(), error
    assert status["complete"] is True
    assert "bad.pdf" in cli("status", "--subdomain", "springfield").output
    if route != "404":  # retried, within the one fetch job
        assert city.server.hits(path) > 1


@pytest.mark.parametrize("route", ["404", "500", "timeout"])
def test_index_page_failure(route: str, city: CitySite, cli: Cli, pipeline: Pipeline,
                            db_url: str) -> None:
    """The site's own page fails: the fetch fails for good, and says so everywhere."""
    if route == "404":
        del city.server.routes[city.index_path]
    elif route == "500":
        city.server.status(city.index_path, 500)
    else:
        city.server.slow_drip(city.index_path, interval=60)

    status = run_site(city, cli, pipeline)

    [fetch] = history(db_url)
    assert fetch["state"] == "failed"
    assert "springfield" in fetch["last_error"] and city.index_path in fetch["last_error"]
    assert (status["complete"], status["state"]) == (False, "failed")
    assert {s["stage"]: s["state"] for s in status["stages"]}["fetch"] == "failed"
    [job] = status["failed_jobs"]
    assert job["task"] == "clerk.fetch" and city.index_path in job["error"]
    text = cli("status", "--subdomain", "springfield").output
    assert "springfield (springfield): failed" in text
    assert "✗ fetch" in text and f"failed fetch job {job['job_id']}" in text
    failed = cli("failed", "--subdomain", "springfield").output
    assert "clerk.fetch" in failed and "cannot read its source" in failed


def test_link_outside_http(city: CitySite, pdf_factory: PdfFactory, cli: Cli, pipeline: Pipeline,
                           tmp_path: Path) -> None:
    publish_good(city, pdf_factory)
    city.link("file:///etc/passwd.pdf", "City Council Minutes 2024-05-07")
    city.link("ftp://example.org/minutes-2024-05-14.pdf", "City Council Minutes 2024-05-14")
    city.link("javascript:alert(1)//.pdf", "City Council Minutes 2024-05-21")

    status = run_site(city, cli, pipeline)

    assert_good_agenda_deployed(tmp_path)
    assert status["complete"] is True
    refused = {link["url"]: link["error"] for link in status["refused_links"]}
    assert set(refused) == {"file:///etc/passwd.pdf", "ftp://example.org/minutes-2024-05-14.pdf",
                            "javascript:alert(1)//.pdf"}
    assert all("only http and https" in error for error in refused.values())
    text = cli("status", "--subdomain", "springfield").output
    assert "refused link: file:///etc/passwd.pdf" in text
    assert not (tmp_path / "storage" / "springfield" / "pdfs" / "Meeting").exists()


def test_huge_page_is_bounded(city: CitySite, pdf_factory: PdfFactory, cli: Cli, db_url: str,
                              clerk_env: dict[str, str], tmp_path: Path,
                              caplog: pytest.LogCaptureFixture,
                              make_pipeline: Callable[[Settings], Pipeline]) -> None:
    """A poster-sized page is rendered at a lower dpi; one too big to read fails alone."""
    env = {**clerk_env, "CLERK_MAX_PAGE_PIXELS": "8000000"}
    cli.env = env
    pipeline = make_pipeline(load_settings(None, env))
    publish_good(city, pdf_factory)
    city.add("plan.pdf", "Planning Commission Agenda 2024-05-08",
             pdf_factory.huge_page_pdf("plan.pdf", 30 * 72, 30 * 72).read_bytes())
    city.add("map.pdf", "Planning Commission Minutes 2024-05-09",
             pdf_factory.huge_page_pdf("map.pdf", 14_400, 14_400).read_bytes())
    caplog.set_level(logging.WARNING, logger="clerk.pdf")

    status = run_site(city, cli, pipeline)

    database = tmp_path / "storage" / "springfield" / DATABASE_FILE
    agendas = {p["meeting"]: p["text"] for p in pages(database, "agendas")}
    assert agendas["City Council"].strip() == GOOD_TEXT
    assert "Site plan" in agendas["Planning Commission"]  # OCR'd at a bounded size
    assert any("rendered at 94 dpi instead of 150" in r.getMessage() for r in caplog.records)
    assert pages(database, "minutes") == []
    [failure] = status["failed_pages"]
    assert (failure["kind"], failure["meeting"], failure["page"]) == ("minutes", "Planning Commission", 1)
    assert "springfield" in failure["error"] and "dpi" in failure["error"]
    assert status["complete"] is True  # a page that fails for good still lets the site finish
    text = cli("status", "--subdomain", "springfield").output
    assert "failed page: minutes Planning Commission 2024-05-09 page 1" in text
    failed = json.loads(cli("failed", "--subdomain", "springfield", "--json").output)
    assert [row["task"] for row in failed] == ["clerk.ocr_page"]


@pytest.mark.parametrize("subdomain", ["../etc", "A B", "x'; drop table sites;--", "", ".hidden",
                                       "lead-", "a..b", "a/b"])
def test_bad_subdomain_is_refused(subdomain: str, cli: Cli, db_url: str, city: CitySite) -> None:
    result = cli("site", "add", subdomain, "--url", city.url, ok=False)
    assert "invalid subdomain" in result.output or "subdomain is required" in result.output
    for command in (["enqueue", subdomain], ["status", "--subdomain", subdomain],
                    ["purge", subdomain], ["site", "remove", subdomain]):
        result = cli(*command, ok=False)
        assert "subdomain" in result.output, result.output
    with psycopg.connect(db_url) as conn:
        assert conn.execute("SELECT count(*) FROM clerk.sites").fetchone()[0] == 0
        assert conn.execute("SELECT count(*) FROM pgqueue.all_jobs").fetchone()[0] == 0


def test_bad_url_is_refused(cli: Cli, db_url: str) -> None:
    result = cli("site", "add", "springfield", "--url", "file:///etc/passwd", ok=False)
    assert "http or https" in result.output
    with psycopg.connect(db_url) as conn:
        assert conn.execute("SELECT count(*) FROM clerk.sites").fetchone()[0] == 0
