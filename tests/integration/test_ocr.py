"""read_page with real PDF readers and Tesseract: text layers are used, scans are OCR'd.

The OCR tests run with both backends (tesserocr in-process, the tesseract command through
pytesseract) and both readers (pdfium in-process, Poppler's tools)."""

from pathlib import Path

import pytest

from clerk.config import Settings
from clerk.ocr import get_backend, read_page
from clerk.pdf import PdfiumReader, PopplerReader
from tests.support.pipeline import CIVIC, PdfFactory

SETTINGS = Settings(ocr_dpi=150)
ENGINES = [("tesserocr", PdfiumReader), ("pytesseract", PopplerReader),
           ("tesserocr", PopplerReader), ("pytesseract", PdfiumReader)]
engines = pytest.mark.parametrize(("backend", "reader"), ENGINES,
                                  ids=[f"{b}-{r.name}" for b, r in ENGINES])


@pytest.mark.parametrize("reader", [PdfiumReader, PopplerReader])
def test_text_layer_is_used_without_ocr(reader: type) -> None:
    result = read_page(CIVIC / "minutes" / "SSA21_MeetingMinutes_1.29.18.pdf", 1, SETTINGS,
                       reader=reader())
    assert result.method == "text-layer"
    assert "Commissioners Present" in result.text


def test_malformed_pdf_text_comes_with_warnings() -> None:
    # Poppler's complaints are the warnings; pdfium repairs the file without a word.
    result = read_page(CIVIC / "malformed" / "Notice-and-Agenda-001-2023-06-06.pdf", 1, SETTINGS,
                       reader=PopplerReader())
    assert result.method == "text-layer"
    assert any("trailer" in warning for warning in result.warnings)


@engines
def test_real_scanned_agenda_is_ocrd(backend: str, reader: type) -> None:
    result = read_page(CIVIC / "scanned" / "duarte_agenda_1.pdf", 1, SETTINGS,
                       backend=get_backend(backend), reader=reader())
    assert result.method == "ocr"
    text = result.text.upper()
    assert "PLANNING COMMISSION" in text
    assert "DUARTE" in text


@engines
def test_generated_scan_is_ocrd_and_text_page_is_not(pdf_factory: PdfFactory, tmp_path: Path,
                                                     backend: str, reader: type) -> None:
    path = pdf_factory.mixed_pdf(
        "mixed.pdf",
        [
            ("scan", "REGULAR MEETING AGENDA\nCity Council Chambers\nRoll Call"),
            ("text", "Consent calendar: approve the warrant register."),
        ],
    )
    scanned = read_page(path, 1, SETTINGS, backend=get_backend(backend), reader=reader())
    assert scanned.method == "ocr"
    assert "AGENDA" in scanned.text and "Council" in scanned.text
    typed = read_page(path, 2, SETTINGS, backend=get_backend(backend), reader=reader())
    assert typed.method == "text-layer" and "warrant register" in typed.text
