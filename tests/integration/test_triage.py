"""The per-page text-layer triage on real PDFs, read by pdfium and by Poppler, OCR'd by real
Tesseract in-process (tesserocr) and through the command (pytesseract).

Each kind of page a scanner or a city's PDF tool produces gets its decision (use the layer,
OCR, or OCR and keep the better) with a reason that names what was seen, and the words of
the scan end up in the page's text."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from fpdf import FPDF

from clerk.config import Settings
from clerk.ocr import OcrError, TesseractBackend, TesserocrBackend, get_backend, read_page
from clerk.pdf import PdfiumReader, PopplerReader, page_count
from clerk.triage import triage, word_score
from tests.support.pipeline import CIVIC
from tests.support.scans import HEADER_TEXT, SCAN_TEXT, junk, make_page

SETTINGS = Settings(ocr_dpi=150)
READERS = {"pdfium": PdfiumReader, "poppler": PopplerReader}
SCAN_WORDS = {"HARBOR", "COMMISSION", "BUDGET", "PELICAN", "REPAVING", "MOTION", "APPROVED"}

# kind: (decision, what the reason says with pdfium, with Poppler)
EXPECTED = {
    "image_only": ("ocr", "no text layer; an image covers 100%", "no text layer; an image covers"),
    "good_layer": ("text-layer", "invisible text layer over a scan", "text layer over a scan"),
    "junk_layer": ("ocr", "invisible text layer over a scan (an image covers 100% of the page) "
                          "is junk", "is junk"),
    "doubtful_layer": ("compare", "invisible text layer over a scan", "is doubtful"),
    "outlines": ("ocr", "vector paths drawn", "no text layer"),
    "mixed": ("ocr", "mixed page: an image covers", "mixed page: an image covers"),
    "born_digital": ("text-layer", "text layer: ", "text layer: "),
}


@pytest.fixture(scope="module")
def pages(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("triage")
    return {kind: make_page(kind, folder / f"{kind}.pdf") for kind in EXPECTED}


@pytest.mark.parametrize("reader", READERS)
@pytest.mark.parametrize("kind", EXPECTED)
def test_each_kind_of_page_gets_its_decision(pages: dict[str, Path], kind: str, reader: str) -> None:
    with READERS[reader]().open(pages[kind], 1) as page:
        verdict = triage(page.facts(warnings=[]))
    decision, pdfium_reason, poppler_reason = EXPECTED[kind]
    assert verdict.decision == decision, verdict.reason
    assert (pdfium_reason if reader == "pdfium" else poppler_reason) in verdict.reason


def _words(text: str) -> set[str]:
    return set(re.findall(r"[A-Z]+", text.upper()))


# kind: (method the text comes from, what the reason says)
READ = {
    "image_only": ("ocr", "covers 100% of the page"),
    "good_layer": ("text-layer", "in the dictionary"),
    "junk_layer": ("ocr", "is junk: 0% of 8 words in the dictionary"),
    "doubtful_layer": ("ocr", "kept OCR"),
    "outlines": ("ocr", "(text as outlines, or a drawing)"),
    "mixed": ("ocr", "beside it)"),
}


@pytest.mark.parametrize("backend", ["tesserocr", "pytesseract"])
@pytest.mark.parametrize("kind", READ)
def test_the_words_of_the_scan_are_read(pages: dict[str, Path], kind: str, backend: str) -> None:
    result = read_page(pages[kind], 1, SETTINGS, backend=get_backend(backend), reader=PdfiumReader())
    method, reason = READ[kind]
    assert (result.method, result.decision) == (method, EXPECTED[kind][0]), result.reason
    assert reason in result.reason, result.reason
    assert SCAN_WORDS <= _words(result.text), result.text
    if kind == "mixed":  # the header is read too, by the OCR of the whole page
        assert {"SEABRIGHT", "AGENDA"} <= _words(result.text)
    assert result.engine == ("pdfium" if method == "text-layer" else f"pdfium+{backend}")


def test_poppler_reader_reads_a_junk_layer_scan_by_ocr(pages: dict[str, Path]) -> None:
    result = read_page(pages["junk_layer"], 1, SETTINGS, reader=PopplerReader())
    assert result.method == "ocr" and "is junk" in result.reason
    assert SCAN_WORDS <= _words(result.text)
    assert result.engine.startswith("poppler+")


def test_civic_fixtures_born_digital_pages_keep_their_layer_and_the_scan_is_ocrd() -> None:
    for path in sorted(CIVIC.glob("*/*.pdf")):
        for number in range(1, page_count(path) + 1):
            with PdfiumReader().open(path, number) as page:
                verdict = triage(page.facts(warnings=[]))
            if path.parent.name == "scanned":
                assert verdict.decision == "ocr" and "vector paths" in verdict.reason, path
            else:
                assert verdict.decision == "text-layer", (path.name, number, verdict.reason)
                assert word_score(page_text(path, number)).ratio >= 0.9


def page_text(path: Path, number: int) -> str:
    with PdfiumReader().open(path, number) as page:
        return page.facts(warnings=[]).text


def test_word_score_tells_a_junk_layer_from_text() -> None:
    assert word_score(SCAN_TEXT + "\n" + HEADER_TEXT).ratio >= 0.9
    assert word_score(junk(SCAN_TEXT)).ratio < 0.2
    # Names are neither words nor junk: left out of the score; URLs too.
    assert word_score("Ms. Durbin and Mr. Messerlian, see https://x.example/Agenda.php").ratio == 1


@pytest.mark.parametrize("engine", [TesserocrBackend, TesseractBackend])
def test_an_engine_over_its_limit_is_a_clear_error(pages: dict[str, Path], engine: type) -> None:
    """A page Tesseract cannot finish within the limit fails with one line, not a hang."""
    backend = engine(timeout=0.001)
    with pytest.raises(OcrError, match="limit"):
        read_page(pages["image_only"], 1, Settings(ocr_dpi=300), backend=backend)


def test_one_tesserocr_api_object_serves_every_page(pages: dict[str, Path]) -> None:
    backend = TesserocrBackend()
    first = backend.api()
    for kind in ("image_only", "outlines"):
        read_page(pages[kind], 1, SETTINGS, backend=backend)
    assert backend.api() is first


@pytest.mark.parametrize("reader", READERS)
def test_a_short_born_digital_page_keeps_its_layer(tmp_path: Path, reader: str) -> None:
    """Too few words to score, but no scan on the page: OCR would only read the layer back."""
    pdf = FPDF(unit="pt", format="letter")
    pdf.add_page()
    pdf.set_font("helvetica", size=28)
    pdf.text(72, 120, "EXHIBIT A: Budget Summary 2024")
    pdf.output(str(tmp_path / "cover.pdf"))
    with READERS[reader]().open(tmp_path / "cover.pdf", 1) as page:
        verdict = triage(page.facts(warnings=[]))
    assert (verdict.decision, verdict.reason) == (
        "text-layer", "text layer: 100% of 3 words in the dictionary, no scan on the page")
