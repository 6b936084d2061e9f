"""Issue 23, item 14: a blank page (no text layer, a blank rendering) is recorded as empty
without running Tesseract; a scanned page with text still is OCR'd. Real PDFs, real
Poppler and Tesseract; the backend is the real one, wrapped to count its calls."""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from clerk.config import Settings
from clerk.ocr import TesseractBackend, read_page
from tests.support.pipeline import PdfFactory


class CountingTesseract(TesseractBackend):
    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def image_to_text(self, image: Image.Image, *, dpi: int) -> str:
        self.calls += 1
        return super().image_to_text(image, dpi=dpi)


def test_blank_pages_skip_tesseract(pdf_factory: PdfFactory, tmp_path: Path) -> None:
    blank = pdf_factory.text_pdf("blank.pdf", ["", ""])
    scanned = pdf_factory.scanned_pdf("scan.pdf", ["HERON ROOKERY\nThe board met."])
    settings = Settings(storage_dir=tmp_path)
    engine = CountingTesseract()
    for page in (1, 2):
        result = read_page(blank, page, settings, backend=engine)
        assert (result.text, result.method) == ("", "blank")
    assert engine.calls == 0
    result = read_page(scanned, 1, settings, backend=engine)
    assert result.method == "ocr" and "HERON" in result.text.upper()
    assert engine.calls == 1
