"""read_page with real pdftotext and Tesseract: text layers are used, scans are OCR'd."""

from pathlib import Path

from clerk.config import Settings
from clerk.ocr import read_page
from clerk.pdf import PopplerReader
from tests.support.pipeline import CIVIC, PdfFactory

SETTINGS = Settings(ocr_dpi=150)


def test_text_layer_is_used_without_ocr() -> None:
    result = read_page(CIVIC / "minutes" / "SSA21_MeetingMinutes_1.29.18.pdf", 1, SETTINGS)
    assert result.method == "text-layer"
    assert "Commissioners Present" in result.text


def test_malformed_pdf_text_comes_with_warnings() -> None:
    # Poppler's complaints are the warnings; pdfium repairs the file without a word.
    result = read_page(CIVIC / "malformed" / "Notice-and-Agenda-001-2023-06-06.pdf", 1, SETTINGS,
                       reader=PopplerReader())
    assert result.method == "text-layer"
    assert any("trailer" in warning for warning in result.warnings)


def test_real_scanned_agenda_is_ocrd() -> None:
    result = read_page(CIVIC / "scanned" / "duarte_agenda_1.pdf", 1, SETTINGS)
    assert result.method == "ocr"
    text = result.text.upper()
    assert "PLANNING COMMISSION" in text
    assert "DUARTE" in text


def test_generated_scan_is_ocrd_and_text_page_is_not(pdf_factory: PdfFactory, tmp_path: Path) -> None:
    path = pdf_factory.mixed_pdf(
        "mixed.pdf",
        [
            ("scan", "REGULAR MEETING AGENDA\nCity Council Chambers\nRoll Call"),
            ("text", "Consent calendar: approve the warrant register."),
        ],
    )
    scanned = read_page(path, 1, SETTINGS)
    assert scanned.method == "ocr"
    assert "AGENDA" in scanned.text and "Council" in scanned.text
    typed = read_page(path, 2, SETTINGS)
    assert typed.method == "text-layer" and "warrant register" in typed.text
