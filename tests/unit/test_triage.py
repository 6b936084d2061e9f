"""The triage's rules on page facts, without a PDF: what each kind of page is decided."""

from __future__ import annotations

import pytest

from clerk.pdf import PageFacts
from clerk.triage import keep_better, triage, word_score

AGENDA = ("The City Council will hold a regular meeting on Tuesday to consider the budget, "
          "approve the minutes of the previous meeting and hear public comment.")
MOJIBAKE = ("Ĳ¼ ÇÌÜÐ Ç÷ÝÒàÜ ßÌÜÜ Ì÷Üß Ò ØàÔÝÜÒØ ÞààÜÌÞÔ ÷Þ ÜÝàÐßÒÐ ÜÌ ÇÝÔÐß "
            "ÒÝÝØ÷àà ÜÞÝ ÞÌÞÝÜàÐ ÷Ò ÜÌà ÝØàÓÌ÷Ý ÞààÜÌÞÔ ÒÞÐ ÌàÒØ ÝÜÚØÌÇ ÇÝÞÞàÞÜ")
LETTER = (612.0, 792.0)


def facts(text: str, coverage: float = 0.0, *, invisible: int | None = 0,
          over: int | None = 0, paths: int | None = 0) -> PageFacts:
    return PageFacts(text, *LETTER, coverage, invisible, over, paths)


@pytest.mark.parametrize(
    ("page", "decision", "says"),
    [
        (facts(""), "ocr", "no text layer"),
        (facts("- 3 -", paths=120), "ocr", "120 vector paths drawn"),
        (facts("", 1.0), "ocr", "no text layer; an image covers 100% of the page"),
        (facts(AGENDA), "text-layer", "text layer: 100% of"),
        (facts(MOJIBAKE), "ocr", "text layer is junk"),
        (facts(AGENDA, 1.0, invisible=len(AGENDA)), "text-layer", "invisible text layer over a scan"),
        (facts(AGENDA, 0.0, invisible=len(AGENDA)), "text-layer", "invisible text layer with no scan"),
        (facts("Regular meeting agenda", 1.0, invisible=20), "compare", "too few to judge"),
        (facts(AGENDA, 0.7, over=0), "ocr", "mixed page: an image covers 70% of the page"),
        (facts(AGENDA * 8, 1.0, over=900), "text-layer", "text layer: "),  # background image
        (facts(AGENDA, 1.0, invisible=None, over=None, paths=None), "text-layer",
         "text layer over a scan"),  # Poppler: cannot tell where the text lies
    ],
)
def test_decisions(page: PageFacts, decision: str, says: str) -> None:
    verdict = triage(page)
    assert verdict.decision == decision, verdict.reason
    assert says in verdict.reason


def test_keep_better_prefers_more_words_and_the_layer_on_a_tie() -> None:
    assert keep_better(MOJIBAKE, AGENDA)[0] == "ocr"
    assert keep_better(AGENDA, AGENDA)[0] == "text-layer"
    method, why = keep_better("Reguler meetng agenda of the Counsil", "Regular meeting agenda of the Council")
    assert method == "ocr" and why.startswith("kept OCR (")


def test_word_score_counts_only_letter_words_of_two_or_more() -> None:
    score = word_score("1. A  council-approved 2024 budget; e-mail clerk@city.example.gov")
    assert (score.words, score.known) == (4, 4)  # council, approved, budget, mail
    assert word_score("").ratio == 0.0
