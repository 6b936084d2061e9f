"""Issue 17 from the outside: a city publishes a scan under a junk invisible text layer, a
mixed page, text drawn as outlines and a born-digital page; after a run, full-text search
finds the scans' words, and `clerk status --subdomain` says how each page was read."""

from __future__ import annotations

import faulthandler
import json
import os
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest
from fpdf import FPDF
from PIL import Image

from clerk.compile import DATABASE_FILE
from clerk.config import Settings
from clerk.ocr import BACKENDS, TesserocrBackend
from clerk.pipeline import Pipeline
from clerk.storage import Document
from tests.acceptance.conftest import CitySite, Cli, run_workers, search
from tests.support.scans import make_page, scan_image

MET = "\nThe board met at noon\nMotion approved"  # enough words for the triage to judge
DOCUMENTS = {  # kind of page: (link text, what it says, words to search for)
    "junk_layer": ("Harbor Commission Agenda 2024-02-06",
                   "HARBOR COMMISSION\nPelican Street repaving" + MET, "pelican repaving"),
    "mixed": ("Parks Board Agenda 2024-02-07", "PARKS BOARD\nLighthouse garden budget" + MET,
              "lighthouse garden"),
    "outlines": ("Library Board Agenda 2024-02-08", "LIBRARY BOARD\nOrchard branch hours" + MET,
                 "orchard branch"),
    "born_digital": ("Planning Commission Agenda 2024-02-09",
                     "PLANNING COMMISSION\nVariance hearing for the marina" + MET,
                     "variance marina"),
}


def test_each_page_is_read_as_triaged_and_status_says_why(
        city: CitySite, cli: Cli, pipeline: Pipeline, tmp_path: Path) -> None:
    for kind, (link, text, _) in DOCUMENTS.items():
        pdf = make_page(kind, tmp_path / f"{kind}.pdf", text)
        city.add(f"{kind.replace('_', '-')}.pdf", link, pdf.read_bytes())
    cli("site", "add", "seabright", "--url", city.url, "--name", "Seabright")
    cli("enqueue", "seabright")
    run_workers(pipeline)

    database = tmp_path / "storage" / "seabright" / DATABASE_FILE
    for _, _, words in DOCUMENTS.values():
        assert len(search(database, "agendas", words)) == 1, words

    status = json.loads(cli("status", "--subdomain", "seabright", "--json").output)
    reads = status["page_reads"]
    counts = {(row["method"], row["decision"]): row["pages"] for row in reads["counts"]}
    assert counts == {("ocr", "ocr"): 3, ("text-layer", "text-layer"): 1}
    reasons = {row["meeting"]: row["reason"] for row in reads["pages"]}
    assert "invisible text layer over a scan" in reasons["Harbor Commission"]
    assert "is junk" in reasons["Harbor Commission"]
    assert reasons["Parks Board"].startswith("mixed page")
    assert "vector paths" in reasons["Library Board"]

    text = cli("status", "--subdomain", "seabright").output
    assert "pages read: 3 OCR, 1 text layer" in text
    assert "Harbor Commission 2024-02-06 p1: ocr (invisible text layer over a scan" in text


class CrashOnLandscape(TesserocrBackend):
    """The real in-process Tesseract, except that a landscape page aborts the process, as
    a native crash in the engine would (SIGABRT)."""

    name = "crash-on-landscape"

    def image_to_text(self, image: Image.Image, *, dpi: int) -> str:
        if image.width > image.height:
            faulthandler.disable()  # no Python traceback dump: a native crash has none
            os.abort()
        return super().image_to_text(image, dpi=dpi)


def test_a_page_that_crashes_the_engine_fails_alone(
        city: CitySite, cli: Cli, settings: Settings, make_pipeline: Callable[[Settings], Pipeline],
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The engine dies on page 1 (in the job's child process); the page is a failed page with
    the signal in its error, page 2 is read and searchable, the worker lives on."""
    monkeypatch.setitem(BACKENDS, CrashOnLandscape.name, CrashOnLandscape)
    pipeline = make_pipeline(replace(settings, default_ocr_backend=CrashOnLandscape.name))
    pdf = FPDF(unit="pt", format="letter")
    for orientation, text in (("L", "LANDSCAPE SITE PLAN"), ("P", "HERON ROOKERY\nThe board met.")):
        pdf.add_page(orientation=orientation)
        width, height = (792, 612) if orientation == "L" else (612, 792)
        pdf.image(scan_image(text, width, height), x=0, y=0, w=width, h=height)
    city.add("plan.pdf", "Harbor Commission Agenda 2024-03-05", bytes(pdf.output()))
    cli("site", "add", "seabright", "--url", city.url, "--name", "Seabright")
    cli("enqueue", "seabright")
    assert pipeline.queue.work(["fetch", "ocr"], concurrency=1, burst=True, poll_interval=0.2,
                               isolation="process", install_signals=False) in (0, 1)
    pipeline.queue.work(["compilation"], burst=True, poll_interval=0.2, install_signals=False)

    status = json.loads(cli("status", "--subdomain", "seabright", "--json").output)
    [failed] = status["failed_pages"]
    assert failed["page"] == 1 and "signal 6" in failed["error"]
    assert [(row["page"], row["method"]) for row in status["page_reads"]["pages"]] == [(2, "ocr")]
    database = tmp_path / "storage" / "seabright" / DATABASE_FILE
    assert len(search(database, "agendas", "heron rookery")) == 1


def test_a_page_whose_document_is_gone_is_read_without_a_record(
        pipeline: Pipeline, tmp_path: Path) -> None:
    """An OCR job whose document row is gone (its site removed mid-run) still succeeds; the
    page's read is not recorded against a document that does not exist, and a PDF left on
    this host's disk is not read (the database is the truth, issue 16)."""
    pipeline.migrate()
    document = Document("seabright", "agenda", "Harbor Commission", "2024-03-05")
    pdf = document.pdf_path(pipeline.settings.storage_dir)
    pdf.parent.mkdir(parents=True)
    make_page("born_digital", pdf)
    pipeline.ocr_page(document.site, document.kind, document.meeting, document.date, 1)
    assert not document.page_text_path(pipeline.settings.storage_dir, 1).exists()
    assert pipeline.fetch_all("document_urls", {"site": "seabright"}) == []
