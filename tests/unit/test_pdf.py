"""Pure parts of pdf: fitting a page into the pixel budget."""

import pytest

from clerk.pdf import MIN_RENDER_DPI, PdfError, fit_dpi


def test_letter_page_keeps_its_dpi() -> None:
    assert fit_dpi(612, 792, 150, 60_000_000) == 150


def test_oversized_page_gets_a_lower_dpi_within_budget() -> None:
    # 36 x 48 inch plan: 150 dpi would be 38.9 Mpx
    dpi = fit_dpi(36 * 72, 48 * 72, 150, 20_000_000)
    assert MIN_RENDER_DPI <= dpi < 150
    assert (36 * dpi) * (48 * dpi) <= 20_000_000


def test_page_too_big_even_at_minimum_dpi_is_refused() -> None:
    with pytest.raises(PdfError, match="below the minimum"):
        fit_dpi(200 * 72, 200 * 72, 150, 1_000_000)
