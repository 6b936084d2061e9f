"""Documents and page texts travel through PostgreSQL (issue 16): each stage on a "host" of
its own (its own STORAGE_DIR, nothing shared but the database), the cache's bound, a
truncated download, `clerk storage import`, and removal of a site's stored documents.

The multi-machine test (tests/chaos/test_multiple_machines.py) runs the same in real
processes in network and mount namespaces; these run in-process, on any machine.
"""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Callable
from dataclasses import replace
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

from clerk.blobs import CACHE_DIR
from clerk.compile import DATABASE_FILE
from clerk.config import Settings
from clerk.pipeline import Pipeline
from pgqueue.db import connect
from tests.acceptance.conftest import CitySite, Cli, pages, search
from tests.support.pipeline import PdfFactory, Route


def work(pipeline: Pipeline, *queues: str) -> None:
    """Run `queues` on this "host" until they are empty."""
    assert pipeline.queue.work(list(queues), concurrency=2, burst=True, poll_interval=0.2,
                               install_signals=False) == 0


def rows(db_url: str, statement: str, params: Any = None) -> list[dict[str, Any]]:
    with connect(db_url, autocommit=True) as conn:
        return conn.execute(statement, params).fetchall()


def host(settings: Settings, make_pipeline: Callable[[Settings], Pipeline], root: Path,
         **changes: Any) -> Pipeline:
    return make_pipeline(replace(settings, storage_dir=root, **changes))


def files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()) \
        if root.exists() else []


def publish_two(city: CitySite, pdf_factory: PdfFactory) -> dict[str, bytes]:
    born = pdf_factory.text_pdf("minutes.pdf", [
        "Minutes: the heron count was approved",
        "Adjourned at nine after the council thanked the marsh volunteers"]).read_bytes()
    scanned = pdf_factory.scanned_pdf("agenda.pdf", ["Budget hearing on the marsh"]).read_bytes()
    city.add("minutes.pdf", "City Council Minutes 2024-05-07", born)
    city.add("agenda.pdf", "City Council Agenda 2024-05-07", scanned)
    return {"minutes": born, "agenda": scanned}


def test_each_stage_runs_on_its_own_host_with_nothing_shared_but_the_database(
        city: CitySite, cli: Cli, settings: Settings, pdf_factory: PdfFactory,
        make_pipeline: Callable[[Settings], Pipeline], db_url: str, tmp_path: Path) -> None:
    bodies = publish_two(city, pdf_factory)
    a = host(settings, make_pipeline, tmp_path / "host-a")
    b = host(settings, make_pipeline, tmp_path / "host-b")
    c = host(settings, make_pipeline, tmp_path / "host-c")
    cli("site", "add", "springfield", "--url", city.url)
    cli("enqueue", "springfield")

    work(a, "fetch")
    stored = rows(db_url, "SELECT sha256, size, chunks FROM clerk.blobs ORDER BY size")
    assert sorted(r["sha256"] for r in stored) == sorted(
        hashlib.sha256(body).hexdigest() for body in bodies.values())
    # host A keeps its downloads in its cache only: no layout, no page text
    assert all(name.startswith(CACHE_DIR) for name in files(tmp_path / "host-a"))

    work(b, "ocr")
    assert not (tmp_path / "host-b" / "springfield").exists()  # texts went to the database
    assert len([n for n in files(tmp_path / "host-b") if n.endswith(".pdf")]) == 2  # its cache
    reads = rows(db_url, "SELECT kind, page, method, dpi, seconds, text FROM clerk.page_reads "
                         "ORDER BY kind, page")
    assert [(r["kind"], r["page"], r["method"]) for r in reads] == [
        ("agenda", 1, "ocr"), ("minutes", 1, "text-layer"), ("minutes", 2, "text-layer")]
    assert reads[0]["dpi"] == settings.ocr_dpi and reads[0]["seconds"] > 0
    assert "marsh" in reads[0]["text"].lower()

    work(c, "extraction", "compilation", "deploy")
    site_c = tmp_path / "host-c" / "springfield"
    database = site_c / DATABASE_FILE
    assert search(database, "agendas", "marsh")  # B's OCR, searched on C
    assert search(database, "minutes", "heron")
    assert len(pages(database, "minutes")) == 2
    # The layout Datasette users know, written on C from the database
    assert (site_c / "pdfs" / "City Council" / "2024-05-07.pdf").read_bytes() == bodies["minutes"]
    assert (site_c / "pdfs" / "_agendas" / "City Council" / "2024-05-07.pdf").read_bytes() \
        == bodies["agenda"]
    assert (site_c / "txt" / "City Council" / "2024-05-07" / "2.txt").read_text() \
        .startswith("Adjourned")
    assert not (tmp_path / "host-a" / "springfield" / DATABASE_FILE).exists()
    assert (tmp_path / "deploy").exists()

    # The next run asks the city with the stored version's validators, from a host whose
    # cache is empty, and finds nothing new.
    cli("enqueue", "springfield")
    work(host(settings, make_pipeline, tmp_path / "host-d"), "fetch")
    assert city.hits("minutes.pdf")[-1].get("If-None-Match")
    assert rows(db_url, "SELECT last_result FROM clerk.sites")[0]["last_result"] \
        .startswith("nothing new")


def test_a_document_larger_than_the_cache_is_still_read(
        city: CitySite, cli: Cli, settings: Settings, pdf_factory: PdfFactory,
        make_pipeline: Callable[[Settings], Pipeline], db_url: str, tmp_path: Path) -> None:
    publish_two(city, pdf_factory)
    cli("site", "add", "springfield", "--url", city.url)
    cli("enqueue", "springfield")
    work(host(settings, make_pipeline, tmp_path / "host-a", cache_max_bytes=100), "fetch")
    small = host(settings, make_pipeline, tmp_path / "host-b", cache_max_bytes=100)
    work(small, "ocr")
    assert rows(db_url, "SELECT count(*) AS n FROM clerk.page_reads WHERE text <> ''")[0]["n"] == 3
    assert files(tmp_path / "host-b" / CACHE_DIR) == []  # evicted, no temporary file left
    assert files(tmp_path / "host-a" / CACHE_DIR) == []


def truncated(body: bytes) -> Route:
    def handler(request: BaseHTTPRequestHandler) -> None:
        request.send_response(200)
        request.send_header("Content-Type", "application/pdf")
        request.send_header("Content-Length", str(len(body)))
        request.end_headers()
        request.wfile.write(body[: len(body) // 2])
        request.wfile.flush()
        request.close_connection = True
    return Route(handler=handler)


def test_a_truncated_download_is_recorded_and_loses_nothing(
        city: CitySite, cli: Cli, settings: Settings, pdf_factory: PdfFactory, db_url: str,
        make_pipeline: Callable[[Settings], Pipeline], tmp_path: Path) -> None:
    bodies = publish_two(city, pdf_factory)
    cli("site", "add", "springfield", "--url", city.url)
    cli("enqueue", "springfield")
    work(host(settings, make_pipeline, tmp_path / "one"), "fetch", "ocr", "extraction",
         "compilation", "deploy")
    before = rows(db_url, "SELECT sha256 FROM clerk.blobs ORDER BY sha256")

    changed = pdf_factory.text_pdf("minutes2.pdf", ["Minutes: a new version"]).read_bytes()
    city.server.routes[city.path("minutes.pdf")] = truncated(changed)
    cli("enqueue", "springfield")
    other = host(settings, make_pipeline, tmp_path / "two")
    work(other, "fetch", "ocr", "extraction", "compilation", "deploy")
    [document] = rows(db_url, "SELECT error, sha256 FROM clerk.documents WHERE kind = 'minutes'")
    assert "reading body" in document["error"] or "IncompleteRead" in document["error"], document
    assert document["sha256"] == hashlib.sha256(bodies["minutes"]).hexdigest()  # kept
    assert rows(db_url, "SELECT sha256 FROM clerk.blobs ORDER BY sha256") == before
    cli("prune")  # the stored version is still referred to: not collected
    assert rows(db_url, "SELECT sha256 FROM clerk.blobs ORDER BY sha256") == before
    other.compile("springfield", entities=False)  # another host compiles from the database
    database = tmp_path / "two" / "springfield" / DATABASE_FILE
    assert search(database, "minutes", "heron")  # the pages read before are still there
    assert not [n for n in files(tmp_path / "two" / CACHE_DIR) if n.endswith(".part")]


def test_storage_import_loads_an_existing_storage_dir(
        city: CitySite, cli: Cli, pipeline: Pipeline, pdf_factory: PdfFactory, db_url: str,
        tmp_path: Path) -> None:
    publish_two(city, pdf_factory)
    cli("site", "add", "springfield", "--url", city.url)
    cli("enqueue", "springfield")
    work(pipeline, "fetch", "ocr", "extraction", "compilation", "deploy")
    texts = rows(db_url, "SELECT kind, page, text FROM clerk.page_reads ORDER BY kind, page")
    # An installation from before issue 16: PDFs and page texts on disk only.
    with connect(db_url, autocommit=True) as conn:
        conn.execute("DELETE FROM clerk.blobs")
        conn.execute("UPDATE clerk.page_reads SET text = NULL, sha256 = NULL")
        conn.execute("DELETE FROM clerk.page_reads WHERE kind = 'minutes' AND page = 2")

    out = cli("storage", "import").output
    assert "springfield: 2 documents" in out and "3 page texts loaded" in out, out
    assert rows(db_url, "SELECT kind, page, text FROM clerk.page_reads ORDER BY kind, page") \
        == texts
    assert "0 page texts loaded" in cli("storage", "import").output  # again: nothing to do
    assert rows(db_url, "SELECT count(*) AS n FROM clerk.blobs")[0]["n"] == 2

    cli("enqueue", "springfield")
    work(pipeline, "fetch", "ocr", "extraction", "compilation", "deploy")
    assert rows(db_url, "SELECT last_result FROM clerk.sites")[0]["last_result"] \
        .startswith("nothing new")
    assert "no site 'nowhere'" in cli("storage", "import", "nowhere", ok=False).output


def test_a_removed_sites_documents_leave_the_database(
        city: CitySite, cli: Cli, pipeline: Pipeline, pdf_factory: PdfFactory,
        db_url: str) -> None:
    publish_two(city, pdf_factory)
    cli("site", "add", "springfield", "--url", city.url)
    cli("site", "add", "shelbyville", "--url", city.url)  # the same documents: stored once
    cli("enqueue", "springfield", "shelbyville")
    work(pipeline, "fetch", "ocr", "extraction", "compilation", "deploy")
    assert rows(db_url, "SELECT count(*) AS n FROM clerk.blobs")[0]["n"] == 2
    status = cli("status", "--subdomain", "springfield").output
    assert "storage: 2 documents" in status and "3 page texts" in status, status

    out = cli("site", "remove", "springfield").output
    assert "0 stored documents" in out, out  # shelbyville still refers to them
    assert rows(db_url, "SELECT count(*) AS n FROM clerk.blobs")[0]["n"] == 2
    out = cli("site", "remove", "shelbyville").output
    assert "2 stored documents" in out, out
    assert rows(db_url, "SELECT count(*) AS n FROM clerk.blobs")[0]["n"] == 0
    assert rows(db_url, "SELECT count(*) AS n FROM clerk.blob_chunks")[0]["n"] == 0
    assert rows(db_url, "SELECT count(*) AS n FROM clerk.page_reads")[0]["n"] == 0


def test_a_document_the_database_lost_is_stored_again_and_its_pages_kept(
        city: CitySite, cli: Cli, pipeline: Pipeline, pdf_factory: PdfFactory,
        db_url: str) -> None:
    """Its stored bytes gone (an installation not yet imported, a restore without the
    blobs): the next run downloads it whole, stores it, and reads none of its pages again."""
    publish_two(city, pdf_factory)
    cli("site", "add", "springfield", "--url", city.url)
    cli("enqueue", "springfield")
    work(pipeline, "fetch", "ocr", "extraction", "compilation", "deploy")
    with connect(db_url, autocommit=True) as conn:
        conn.execute("DELETE FROM clerk.blobs")
    cli("enqueue", "springfield")
    work(pipeline, "fetch", "ocr", "extraction", "compilation", "deploy")
    assert "If-None-Match" not in city.hits("minutes.pdf")[-1]  # nothing stored to compare
    assert rows(db_url, "SELECT count(*) AS n FROM clerk.blobs")[0]["n"] == 2
    assert rows(db_url, "SELECT count(*) AS n FROM pgqueue.job_history "
                        "WHERE task = 'clerk.ocr_page'")[0]["n"] == 3  # the first run's only
    assert rows(db_url, "SELECT count(*) AS n FROM clerk.page_reads WHERE text IS NOT NULL"
                )[0]["n"] == 3


ROLL_CALL = ("Present: Mayor Patricia Alvarez, Councilmembers Grace Lindqvist, Helen Tran\n"
             "Moved by Councilmember Lindqvist, seconded by Councilmember Tran, to approve the "
             "consent calendar as presented.\nAYES: Alvarez, Lindqvist, Tran\nNOES: None\n"
             "Motion carried 3-0.")


def test_extraction_compile_and_deploy_each_on_another_host(
        city: CitySite, cli: Cli, settings: Settings, pdf_factory: PdfFactory,
        make_pipeline: Callable[[Settings], Pipeline], db_url: str, tmp_path: Path) -> None:
    """The full path's three steps on three hosts: the compiling host lacks the entities
    the extraction host cached (a host's own), so it extracts them; the deploying host
    has compiled nothing, so it compiles the run before it publishes. The published
    database has the run's pages and people, as on one host."""
    city.add("minutes.pdf", "City Council Minutes 2024-05-07",
             pdf_factory.text_pdf("minutes.pdf", [ROLL_CALL]).read_bytes())
    cli("site", "add", "springfield", "--url", city.url)
    cli("enqueue", "springfield")
    work(host(settings, make_pipeline, tmp_path / "a"), "fetch", "ocr")
    work(host(settings, make_pipeline, tmp_path / "x"), "extraction")
    work(host(settings, make_pipeline, tmp_path / "y"), "compilation")
    assert not (tmp_path / "z").exists()
    work(host(settings, make_pipeline, tmp_path / "z"), "deploy")
    with sqlite3.connect(tmp_path / "deploy" / "springfield.db") as db:
        people = {row[0] for row in db.execute("SELECT name FROM people")}
        votes = db.execute("SELECT count(*) FROM votes").fetchone()[0]
    assert {"Patricia Alvarez", "Grace Lindqvist", "Helen Tran"} <= people, people
    assert votes == 3
    assert (tmp_path / "y" / "springfield" / "entities.sqlite").exists()  # extracted there too
    assert rows(db_url, "SELECT last_success_at FROM clerk.sites")[0]["last_success_at"]
