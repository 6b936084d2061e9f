"""Decide, page by page, whether a PDF's text layer can be trusted or the page must be OCR'd.

A text layer is not always the page's text. Scanners and "searchable PDF" tools put an
invisible OCR layer (render mode 3) over the scanned image, often junk; a born-digital
header can sit over a scanned body; text drawn as vector outlines has no layer at all;
a broken font encoding gives a layer of symbols. Each page gets one of three decisions,
with the reason recorded beside it (`clerk status --subdomain` shows them):

    text-layer   the layer is the text (no OCR: 15 ms instead of about a second)
    ocr          the page is read by OCR (no layer, a junk layer, a mixed page, outlines)
    compare      OCR it too and keep whichever text reads more like English

"Reads like English" is measured on the words: the share of a text's letter-words of
two or more letters that are in an English word list (`clerk/data/english_words.txt`,
44,419 lowercase words that occur at least 100 times in the English frequency list of
pyspellchecker 0.9.1, MIT licence, github.com/barrust/pyspellchecker). Agendas have
names and abbreviations, so a good layer scores about 0.8-0.95; junk OCR layers score
well under 0.5.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from importlib import resources
from typing import Any, Literal

from clerk.pdf import PageFacts

Decision = Literal["text-layer", "ocr", "compare"]

MIN_TEXT_LAYER_CHARS = 16  # fewer letters/digits than this is no layer (a stamped page number)
GOOD_WORDS = 0.70  # at least this share of dictionary words: the layer is text
JUNK_WORDS = 0.45  # below this the layer is junk: OCR; in between, OCR and compare
MIN_SCORED_WORDS = 8  # too few words to judge: the score is not used alone
SCAN_COVERAGE = 0.5  # images over at least half the page: a scan
MIXED_COVERAGE = 0.3  # an image over 30% of the page with no text on it: a scanned body
TEXT_ON_IMAGE_PER_SQ_IN = 5.0  # visible characters per square inch of image that make it
#                                a background under text rather than a scanned body
WHOLE_PAGE = 0.95  # an image this large leaves no room for text beside it
INVISIBLE_SHARE = 0.5  # most of the layer is invisible: an OCR layer over a scan

_WORD = re.compile(r"[^\W\d_]+", re.UNICODE)
_URL = re.compile(r"\S+://\S+|www\.\S+|\S+@\S+\.\w+")
_NAME = re.compile(r"[A-Z][a-z]*[aeiouy][a-z]*")  # Gussow, Durbin: a name, not a word
# Titles and units of meeting documents that a word list of running English lacks.
ABBREVIATIONS = frozenset({"mr", "mrs", "ms", "dr", "jr", "sr", "st", "ave", "blvd", "rd",
                           "pm", "am", "no", "nos", "etc", "vs", "inc", "llc", "dept"})


@functools.cache
def english_words() -> frozenset[str]:
    text = resources.files("clerk").joinpath("data/english_words.txt").read_text("utf-8")
    return frozenset(text.split())


@dataclass(frozen=True)
class WordScore:
    """How much of a text is words: `known` of `words` letter-words are English words."""

    words: int
    known: int

    @property
    def ratio(self) -> float:
        return self.known / self.words if self.words else 0.0

    def __str__(self) -> str:
        return f"{self.ratio:.0%} of {self.words} words in the dictionary"


def word_score(text: str) -> WordScore:
    """Score a text by its letter-words of two letters or more (case folded; a word
    written with an apostrophe counts by its parts, 'council's' as 'council').

    Addresses (URLs, e-mail) are left out, and so is a capitalised word that is not in
    the list but is shaped like a name (Durbin, Messerlian): agendas are full of them.
    Junk reads as neither: 'Tlie Citv Counc1l' has no name-shaped word outside the list
    but 'Citv', and its other words are not words.
    """
    vocabulary = english_words()
    words = known = 0
    for match in _WORD.finditer(_URL.sub(" ", text)):
        token = match.group()
        word = token.lower()
        if len(word) < 2:
            continue
        if word in vocabulary or word in ABBREVIATIONS:
            words += 1
            known += 1
        elif not _NAME.fullmatch(token):
            words += 1
    return WordScore(words, known)


def alnum_count(text: str) -> int:
    return sum(1 for char in text if char.isalnum())


@dataclass(frozen=True)
class Triage:
    decision: Decision
    reason: str


def triage(facts: PageFacts) -> Triage:
    """The decision for one page from what it is made of (see the module docstring)."""
    chars = alnum_count(facts.text)
    coverage = facts.image_coverage
    covered = f"an image covers {coverage:.0%} of the page"
    if chars < MIN_TEXT_LAYER_CHARS:
        if coverage >= MIXED_COVERAGE:
            return Triage("ocr", f"no text layer; {covered}")
        if facts.vector_paths:
            return Triage("ocr", f"no text layer; {facts.vector_paths} vector paths drawn "
                                 "(text as outlines, or a drawing)")
        return Triage("ocr", "no text layer")
    invisible = facts.invisible_chars or 0
    score = word_score(facts.text)
    if invisible >= INVISIBLE_SHARE * chars:
        where = f"over a scan ({covered})" if coverage >= SCAN_COVERAGE else "with no scan under it"
        return _by_score(score, f"invisible text layer {where}")
    if facts.chars_over_images is None and coverage >= WHOLE_PAGE:
        # Poppler cannot tell where the text lies nor whether it is drawn: over a scan
        # of the whole page it is the scan's layer, invisible or not.
        return _by_score(score, f"text layer over a scan ({covered})")
    if coverage >= MIXED_COVERAGE:
        # The text that lies on the images, or (Poppler cannot say where) all of it.
        on_images = facts.chars_over_images if facts.chars_over_images is not None else chars
        density = on_images / max(coverage * facts.area_sq_in, 1e-9)
        if density < TEXT_ON_IMAGE_PER_SQ_IN:
            return Triage("ocr", f"mixed page: {covered} with no text on it "
                                 f"(a text layer of {chars} characters beside it)")
    if score.words < MIN_SCORED_WORDS and coverage < MIXED_COVERAGE:
        # A short visible layer with no scan under it (a cover page, "EXHIBIT A"): OCR
        # could only read back what the layer draws.
        return Triage("text-layer", f"text layer: {score}, no scan on the page")
    return _by_score(score, "text layer")


def _by_score(score: WordScore, what: str) -> Triage:
    if score.words < MIN_SCORED_WORDS:
        return Triage("compare", f"{what}: only {score.words} words, too few to judge")
    if score.ratio >= GOOD_WORDS:
        return Triage("text-layer", f"{what}: {score}")
    if score.ratio < JUNK_WORDS:
        return Triage("ocr", f"{what} is junk: {score}")
    return Triage("compare", f"{what} is doubtful: {score}")


def keep_better(layer: str, ocr: str) -> tuple[Literal["text-layer", "ocr"], str]:
    """Of a page's text layer and its OCR text, the one with more dictionary words (the
    layer on a tie: it is exact where it is right), and why."""
    layer_score, ocr_score = word_score(layer), word_score(ocr)
    if ocr_score.known > layer_score.known:
        return "ocr", f"kept OCR ({ocr_score}) over the layer ({layer_score})"
    return "text-layer", f"kept the layer ({layer_score}) over OCR ({ocr_score})"


# ---------------------------------------------------------------- the record of each page

@functools.cache
def _statements() -> Any:
    """sql/clerk/pages.sql for clerk's schema (loaded on first use)."""
    from clerk.db import CLERK_SCHEMA
    from pgqueue.sql import Statements, sql_root

    return Statements(CLERK_SCHEMA, sql_root() / "clerk" / "pages.sql")


def record_page_read(conn: Any, document: Any, page: int, result: Any) -> None:
    """Store how a page was read (a clerk.ocr.PageText) beside its document's row."""
    conn.execute(_statements().save_page_read, {
        "site": document.site, "kind": document.kind, "meeting": document.meeting,
        "date": document.date, "page": page, "method": result.method,
        "decision": result.decision or "text-layer", "reason": result.reason,
        "engine": result.engine, "chars": alnum_count(result.text)})


def page_reads(conn: Any, site: str, *, limit: int = 20) -> dict[str, Any]:
    """How a site's pages were read: counts by method and decision, and the first `limit`
    pages not taken from their layer as it was, with the reason (for status)."""
    statements = _statements()
    summary = conn.execute(statements.page_reads_summary, {"site": site}).fetchall()
    pages = conn.execute(statements.page_reads_not_layer, {"site": site, "limit": limit}).fetchall()
    return {"counts": [dict(row) for row in summary], "pages": [dict(row) for row in pages]}


def page_read_lines(report: dict[str, Any]) -> list[str]:
    """`status --subdomain`'s lines for `page_reads`: one line of counts, then a page a line."""
    if not report["counts"]:
        return []
    how = {("text-layer", "text-layer"): "text layer", ("ocr", "ocr"): "OCR",
           ("blank", "ocr"): "blank", ("ocr", "compare"): "OCR (better than the layer)",
           ("text-layer", "compare"): "text layer (better than OCR)"}
    parts = [f"{row['pages']} {how.get((row['method'], row['decision']), row['method'])}"
             for row in report["counts"]]
    lines = [f"pages read: {', '.join(parts)}"]
    for row in report["pages"]:
        lines.append(f"  {row['kind']} {row['meeting']} {row['date']} p{row['page']}: "
                     f"{row['method']} ({row['reason']})")
    return lines


def site_page_reads(pipeline: Any, site: str, *, limit: int = 20) -> dict[str, Any]:
    """`page_reads` through a clerk Pipeline's pooled connections."""
    with pipeline.queue.session(atomic=False) as conn:
        return page_reads(conn, site, limit=limit)
