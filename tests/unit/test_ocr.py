"""Pure parts of ocr: when a text layer is usable, the backend registry, atomic writes."""

from pathlib import Path

import pytest

from clerk.ocr import (
    OcrError,
    TesseractBackend,
    engines_in_use,
    get_backend,
    has_usable_text,
    write_page_text,
)


@pytest.mark.parametrize(
    ("text", "usable"),
    [
        ("", False),
        ("\f", False),
        ("  \n\f  \n", False),
        ("- 1 -\f", False),
        ("CITY COUNCIL REGULAR MEETING AGENDA", True),
    ],
)
def test_usable_text_layer(text: str, usable: bool) -> None:
    assert has_usable_text(text) is usable


def test_backend_registry() -> None:
    assert isinstance(get_backend("pytesseract"), TesseractBackend)
    assert get_backend("tesseract").name in {"tesserocr", "pytesseract"}  # in-process if installed
    with pytest.raises(OcrError, match="unknown OCR backend 'nope'"):
        get_backend("nope")


def test_write_page_text_is_atomic_and_leaves_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "txt" / "City Council" / "2024-01-05" / "1.txt"
    write_page_text(target, "first")
    write_page_text(target, "second é")
    assert target.read_text(encoding="utf-8") == "second é"
    assert [p.name for p in target.parent.iterdir()] == ["1.txt"]


def test_doctor_names_the_engines_behind_a_backend() -> None:
    # tesserocr and pypdfium2 are installed by .ci/setup (the 'fast' extra).
    assert engines_in_use("tesseract") == "Tesseract in-process through tesserocr, pages read by pdfium"
    assert engines_in_use("pytesseract").startswith("the tesseract command per page")
