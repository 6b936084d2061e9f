"""OCR speed and accuracy per engine and DPI: `python -m bench.ocr_accuracy [--pages N]`.

Engines: `pdfium+tesserocr` (pages rendered by pdfium and read by Tesseract's API in this
process, the default when installed) and `poppler+pytesseract` (pdftoppm and a tesseract
process per page, the portable path). DPI: 150, 200, 300.

Ground truth, so accuracy is measured rather than asserted:
- the born-digital pages of tests/fixtures/civic/: rendered to an image and OCR'd, their
  text layer (read by pdfium) is the truth;
- generated scans (tests/support/scans.py) whose exact text we drew in 9-point type,
  scanned at 300 dpi and degraded (skew, blur, speckles, gray paper).

Per engine and DPI it prints pages per second on one core (render + OCR, one process,
OMP_THREAD_LIMIT=1) and the character and word error rates: edit distance over the
truth's length, on whitespace-collapsed, case-kept text (words: over word sequences).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_THREAD_LIMIT", "1")

from rapidfuzz.distance import Levenshtein

from clerk.ocr import OcrBackend, TesseractBackend, TesserocrBackend
from clerk.pdf import PageReader, PdfiumReader, PopplerReader, page_count
from tests.support.pipeline import CIVIC
from tests.support.scans import make_page

DPIS = (150, 200, 300)
MAX_PIXELS = 60_000_000
SCANS = [
    "CITY COUNCIL REGULAR MEETING\nCall to order and roll call\nConsent calendar items 1-4\n"
    "Public hearing on the budget\nAdjournment at 9:15 p.m.",
    "PLANNING COMMISSION MINUTES\nCommissioner Ortiz moved to approve\nthe variance; seconded "
    "by Chen.\nAyes: 4  Noes: 1  Absent: 0",
    "NOTICE OF SPECIAL MEETING\nThe Board of Directors will meet\non Tuesday, March 5, 2024\n"
    "in the Library Community Room",
]


def normal(text: str) -> str:
    return " ".join(text.split())


def error_rates(truth: str, text: str) -> tuple[float, float, float]:
    """CER, WER, and the share of the truth's words that OCR did not find anywhere on the
    page (order-free: what full-text search misses; a different reading order of columns
    counts against CER and WER but not here)."""
    truth, text = normal(truth), normal(text)
    cer = Levenshtein.distance(truth, text) / max(1, len(truth))
    words = truth.split()
    wer = Levenshtein.distance(words, text.split()) / max(1, len(words))
    found = Counter(word.lower().strip(".,;:()") for word in text.split())
    missed = 0
    for word in (word.lower().strip(".,;:()") for word in words):
        if found[word] > 0:
            found[word] -= 1
        else:
            missed += 1
    return cer, wer, missed / max(1, len(words))


def ground_truth(folder: Path, limit: int | None) -> list[tuple[str, Path, int, str]]:
    """(label, pdf, page, truth): civic born-digital pages, then generated scans."""
    pages: list[tuple[str, Path, int, str]] = []
    for path in sorted(CIVIC.glob("*/*.pdf")):
        if path.parent.name == "scanned":
            continue
        for number in range(1, page_count(path) + 1):
            with PdfiumReader().open(path, number) as page:
                pages.append(("born-digital", path, number, page.facts(warnings=[]).text))
    pages = pages[:limit] if limit else pages
    for index, text in enumerate(SCANS):
        pdf = make_page("image_only", folder / f"scan{index}.pdf", text, dpi=300, font_pts=9,
                        degraded=True)
        pages.append(("generated scan", pdf, 1, text))
    return pages


def measure(reader: PageReader, engine: OcrBackend, dpi: int,
            pages: list[tuple[str, Path, int, str]]) -> dict[str, Any]:
    """Render and OCR every page once (the first page's time includes making the engine)."""
    render_s = ocr_s = 0.0
    rates: dict[str, list[tuple[float, float, float]]] = {}
    for label, pdf, number, truth in pages:
        start = time.perf_counter()
        with reader.open(pdf, number) as page:
            image = page.render(dpi, MAX_PIXELS, warnings=[])
        rendered = time.perf_counter()
        text = engine.image_to_text(image, dpi=dpi)
        ocr_s += time.perf_counter() - rendered
        render_s += rendered - start
        rates.setdefault(label, []).append(error_rates(truth, text))
    result: dict[str, Any] = {"pages_per_s": len(pages) / (render_s + ocr_s),
                              "render_ms": render_s / len(pages) * 1000,
                              "ocr_ms": ocr_s / len(pages) * 1000}
    for label, values in rates.items():
        result[label] = tuple(sum(v[i] for v in values) / len(values) for i in range(3))
    return result


def command_alone(folder: Path, dpi: int, pages: list[tuple[str, Path, int, str]]) -> float:
    """ms per page of the `tesseract` command on images already rendered to PNG files."""
    files = []
    for index, (_, pdf, number, _) in enumerate(pages):
        with PdfiumReader().open(pdf, number) as page:
            image = page.render(dpi, MAX_PIXELS, warnings=[])
        files.append(folder / f"page{index}-{dpi}.png")
        image.save(files[-1], dpi=(dpi, dpi))
    start = time.perf_counter()
    for file in files:
        subprocess.run(["tesseract", str(file), "-", "--dpi", str(dpi)], capture_output=True,
                       check=True)
    return (time.perf_counter() - start) / len(files) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pages", type=int, default=None,
                        help="born-digital civic pages to use (default: all 18)")
    args = parser.parse_args()
    engines: list[tuple[str, PageReader, OcrBackend]] = [
        ("pdfium+tesserocr", PdfiumReader(), TesserocrBackend()),
        ("poppler+pytesseract", PopplerReader(), TesseractBackend())]
    with tempfile.TemporaryDirectory() as folder:
        pages = ground_truth(Path(folder), args.pages)
        digital = sum(1 for page in pages if page[0] == "born-digital")
        print(f"{digital} born-digital civic pages, {len(pages) - digital} generated scans; "
              "CER/WER = character/word error rate, missed = share of the true words found "
              "nowhere in the OCR text (lower is better)\n")
        print("| engine | dpi | pages/s per core | render ms | OCR ms | civic CER | WER | missed "
              "| scans CER | WER | missed |\n|---|---|---|---|---|---|---|---|---|---|---|")
        for name, reader, engine in engines:
            for dpi in DPIS:
                row = measure(reader, engine, dpi, pages)
                civic, scans = row["born-digital"], row["generated scan"]
                print(f"| {name} | {dpi} | {row['pages_per_s']:.2f} | {row['render_ms']:.0f} | "
                      f"{row['ocr_ms']:.0f} | {civic[0]:.3f} | {civic[1]:.3f} | {civic[2]:.3f} | "
                      f"{scans[0]:.3f} | {scans[1]:.3f} | {scans[2]:.3f} |", flush=True)
        print("\n`tesseract` command alone on pre-rendered PNGs: " + ", ".join(
            f"{dpi} dpi {command_alone(Path(folder), dpi, pages):.0f} ms/page" for dpi in DPIS))


if __name__ == "__main__":
    main()
