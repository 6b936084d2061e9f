"""Poppler through child processes, on the real civic PDFs and on broken files."""

from pathlib import Path

import pytest

import clerk.pdf as pdf_module
from clerk.pdf import (
    PdfError,
    PdfiumReader,
    PopplerReader,
    page_count,
    page_size,
    pdf_info,
    render_page,
    text_layer,
)
from tests.support.pipeline import CIVIC, PdfFactory

AGENDAS = {
    "beverlyhills_agenda_1.pdf": 4,
    "burbank_agenda_1.pdf": 5,
    "cuya_community_college_agenda.pdf": 2,
    "lapuente_agenda_1.pdf": 2,
    "manhattanbeach_agenda_1.pdf": 2,
}
MALFORMED = CIVIC / "malformed" / "Notice-and-Agenda-001-2023-06-06.pdf"
MINUTES = CIVIC / "minutes" / "SSA21_MeetingMinutes_1.29.18.pdf"
SCANNED = CIVIC / "scanned" / "duarte_agenda_1.pdf"


@pytest.mark.parametrize(("name", "pages"), AGENDAS.items())
def test_civic_agendas_page_counts(name: str, pages: int) -> None:
    info = pdf_info(CIVIC / "agendas" / name)
    assert (info.pages, info.warnings) == (pages, [])


def test_malformed_xref_is_read_with_a_warning() -> None:
    info = pdf_info(MALFORMED)
    assert info.pages == 1
    assert any("trailer" in warning for warning in info.warnings)
    warnings: list[str] = []
    assert len(text_layer(MALFORMED, 1, warnings=warnings).strip()) > 100
    assert warnings


def test_text_layer_of_minutes_and_empty_layer_of_a_scan() -> None:
    assert page_count(MINUTES) == 2
    assert "Commissioners Present" in text_layer(MINUTES, 1)
    assert "Meeting adjourned" in text_layer(MINUTES, 2)
    assert text_layer(SCANNED, 1).strip() == ""


def test_page_out_of_range_is_an_error() -> None:
    with pytest.raises(PdfError):
        page_size(MINUTES, 3)
    with pytest.raises(PdfError, match="numbered from 1"):
        text_layer(MINUTES, 0)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda f: f.encrypted_pdf("locked.pdf"), "encrypted"),
        (lambda f: f.truncated_pdf("cut.pdf"), "not a readable PDF"),
        (lambda f: f.garbage("noise.pdf"), "not a readable PDF"),
        (lambda f: f.empty("empty.pdf"), "empty file"),
        (lambda f: f.html("page.pdf"), "not a readable PDF"),
    ],
)
def test_broken_pdfs_fail_clearly(pdf_factory: PdfFactory, make, message: str) -> None:
    path = make(pdf_factory)
    with pytest.raises(PdfError, match=message) as caught:
        page_count(path)
    assert str(path) in str(caught.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(PdfError, match="no such file"):
        page_count(tmp_path / "nope.pdf")


def test_page_limit(pdf_factory: PdfFactory) -> None:
    path = pdf_factory.text_pdf("three.pdf", ["a", "b", "c"])
    assert page_count(path) == 3
    with pytest.raises(PdfError, match="more than the limit of 2"):
        page_count(path, max_pages=2)


def test_render_page_within_pixel_budget(pdf_factory: PdfFactory) -> None:
    image = render_page(SCANNED, 1, 100, 60_000_000)
    assert image.size == (850, 1100)
    plan = pdf_factory.huge_page_pdf("plan.pdf", 36 * 72, 48 * 72)
    warnings: list[str] = []
    big = render_page(plan, 1, 150, 10_000_000, warnings=warnings)
    assert big.size[0] * big.size[1] <= 10_000_000
    assert "instead of 150" in warnings[0]
    with pytest.raises(PdfError, match="below the minimum"):
        render_page(plan, 1, 150, 1_000_000)


# ---------------------------------------------------------------- pdfium in the process


def test_pdfium_renders_within_the_pixel_budget(pdf_factory: PdfFactory) -> None:
    with PdfiumReader().open(SCANNED, 1) as page:
        image = page.render(100, 60_000_000, warnings=[])
    assert image.size == (850, 1100) and image.mode == "L" and image.info["dpi"] == (100, 100)
    plan = pdf_factory.huge_page_pdf("plan.pdf", 36 * 72, 48 * 72)
    warnings: list[str] = []
    with PdfiumReader().open(plan, 1) as page:
        big = page.render(150, 10_000_000, warnings=warnings)
        assert big.size[0] * big.size[1] <= 10_000_000
        assert "instead of 150" in warnings[0]
        with pytest.raises(PdfError, match="below the minimum"):
            page.render(150, 1_000_000, warnings=[])


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda f: f.encrypted_pdf("locked.pdf"), "encrypted"),
        (lambda f: f.truncated_pdf("cut.pdf"), "not a readable PDF"),
        (lambda f: f.garbage("noise.pdf"), "not a readable PDF"),
        (lambda f: f.empty("empty.pdf"), "not a readable PDF"),
        (lambda f: f.html("page.pdf"), "not a readable PDF"),
    ],
)
def test_pdfium_refuses_broken_pdfs_with_one_line(pdf_factory: PdfFactory, make, message: str) -> None:
    path = make(pdf_factory)
    with pytest.raises(PdfError, match=message) as caught, PdfiumReader().open(path, 1):
        pass
    assert str(path) in str(caught.value) and "\n" not in str(caught.value)


def test_pdfium_page_out_of_range_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(PdfError, match="page 3 does not exist"), PdfiumReader().open(MINUTES, 3):
        pass
    with pytest.raises(PdfError, match="no such file"), PdfiumReader().open(tmp_path / "x.pdf", 1):
        pass


def test_both_readers_see_the_same_page() -> None:
    """The minutes' second page: its text, and three photos over about a sixth of it
    (pdfium from where they are drawn, Poppler from their pixels and resolution)."""
    coverage = []
    for reader in (PdfiumReader(), PopplerReader()):
        with reader.open(MINUTES, 2) as page:
            facts = page.facts(warnings=[])
        assert "Meeting adjourned" in facts.text
        coverage.append(facts.image_coverage)
    assert 0.12 < min(coverage) <= max(coverage) < 0.22


def test_pdfium_leaves_a_huge_embedded_image_to_a_limited_poppler_child(
        monkeypatch: pytest.MonkeyPatch, pdf_factory: PdfFactory) -> None:
    """An image bigger than IMAGE_PIXELS_IN_PROCESS is decoded by pdftoppm under its memory
    limit, not by pdfium in the worker (the limit is lowered so a small scan exceeds it)."""
    scan = pdf_factory.scanned_pdf("scan.pdf", ["HERON ROOKERY"])
    monkeypatch.setattr(pdf_module, "IMAGE_PIXELS_IN_PROCESS", 1_000_000)
    warnings: list[str] = []
    with PdfiumReader().open(scan, 1) as page:
        image = page.render(100, 60_000_000, warnings=warnings)
    assert image.size == (850, 1100)
    assert warnings == ["page 1 has an image of 2,103,750 pixels: rendered by Poppler in a "
                        "child process with a memory limit"]
    monkeypatch.setattr(pdf_module, "IMAGE_PIXELS_IN_PROCESS", 100_000_000)
    with PdfiumReader().open(scan, 1) as page:
        page.render(100, 60_000_000, warnings=(quiet := []))
    assert quiet == []
