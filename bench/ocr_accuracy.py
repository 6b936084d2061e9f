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
from dataclasses import dataclass, field
from pathlib import Path

os.environ.setdefault("OMP_THREAD_LIMIT", "1")

from PIL import Image
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


@dataclass
class Tally:
    """One engine at one DPI: seconds spent and error rates per kind of page."""

    render_s: float = 0.0
    ocr_s: float = 0.0
    pages: int = 0
    rates: dict[str, list[tuple[float, float, float]]] = field(default_factory=dict)

    def mean(self, label: str) -> tuple[float, ...]:
        values = self.rates[label]
        return tuple(sum(v[i] for v in values) / len(values) for i in range(3))


def read_one(reader: PageReader, engine: OcrBackend, dpi: int, pdf: Path, number: int,
             tally: Tally) -> str:
    start = time.perf_counter()
    with reader.open(pdf, number) as page:
        image = page.render(dpi, MAX_PIXELS, warnings=[])
    rendered = time.perf_counter()
    text = engine.image_to_text(image, dpi=dpi)
    tally.ocr_s += time.perf_counter() - rendered
    tally.render_s += rendered - start
    tally.pages += 1
    return text


def command_alone(png: Path, dpi: int, tally: Tally) -> None:
    """The `tesseract` command on an image already rendered to a PNG file."""
    start = time.perf_counter()
    subprocess.run(["tesseract", str(png), "-", "--dpi", str(dpi)], capture_output=True,
                   check=True)
    tally.ocr_s += time.perf_counter() - start
    tally.pages += 1


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
        engines[0][2].image_to_text(Image.new("L", (200, 100), 255), dpi=150)  # the API object
        digital = sum(1 for page in pages if page[0] == "born-digital")
        print(f"{digital} born-digital civic pages, {len(pages) - digital} generated scans; "
              "CER/WER = character/word error rate, missed = share of the true words found "
              "nowhere in the OCR text (lower is better). The engines take turns page by "
              "page, so a busy machine slows both alike.\n")
        print("| engine | dpi | pages/s per core | render ms | OCR ms | civic CER | WER | missed "
              "| scans CER | WER | missed |\n|---|---|---|---|---|---|---|---|---|---|---|")
        alone: dict[int, Tally] = {}
        for dpi in DPIS:
            tallies = {name: Tally() for name, _, _ in engines}
            alone[dpi] = Tally()
            for index, (label, pdf, number, truth) in enumerate(pages):
                for name, reader, engine in engines:
                    text = read_one(reader, engine, dpi, pdf, number, tallies[name])
                    tallies[name].rates.setdefault(label, []).append(error_rates(truth, text))
                png = Path(folder) / f"page{index}.png"
                with PdfiumReader().open(pdf, number) as page:
                    page.render(dpi, MAX_PIXELS, warnings=[]).save(png, dpi=(dpi, dpi))
                command_alone(png, dpi, alone[dpi])
            for name, tally in tallies.items():
                civic, scans = tally.mean("born-digital"), tally.mean("generated scan")
                print(f"| {name} | {dpi} | {tally.pages / (tally.render_s + tally.ocr_s):.2f} | "
                      f"{tally.render_s / tally.pages * 1000:.0f} | "
                      f"{tally.ocr_s / tally.pages * 1000:.0f} | {civic[0]:.3f} | {civic[1]:.3f} | "
                      f"{civic[2]:.3f} | {scans[0]:.3f} | {scans[1]:.3f} | {scans[2]:.3f} |",
                      flush=True)
            fast, portable = tallies["pdfium+tesserocr"], tallies["poppler+pytesseract"]
            print(f"|   | {dpi} | per page, pdfium+tesserocr is "
                  f"{(portable.render_s + portable.ocr_s) / (fast.render_s + fast.ocr_s):.2f}x "
                  f"poppler+pytesseract and "
                  f"{alone[dpi].ocr_s / (fast.render_s + fast.ocr_s):.2f}x the tesseract command "
                  f"alone on a pre-rendered PNG ({alone[dpi].ocr_s / alone[dpi].pages * 1000:.0f} "
                  "ms) | | | | | | | | |", flush=True)


if __name__ == "__main__":
    main()
