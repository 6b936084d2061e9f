"""PDF pages of the kinds a text-layer triage must tell apart, each with the exact text drawn.

    image_only      a scan and nothing else
    good_layer      a scan under an invisible (render mode 3) layer of its own text
    junk_layer      a scan under an invisible layer of junk (what bad scanner OCR leaves)
    doubtful_layer  a scan under an invisible layer with half its words garbled
    outlines        the text drawn as vector outlines: no text layer, visible ink
    mixed           a born-digital header over a scanned body (an image under no text)
    born_digital    a plain text layer

Pages are small (half letter) and scanned at 150 dpi so Tesseract reads each in well under
a second. The tests and bench.ocr_accuracy both use them: the text drawn is the truth.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

from fontTools.pens.basePen import BasePen
from fontTools.ttLib import TTFont
from fpdf import FPDF
from fpdf.drawing import PaintedPath
from fpdf.enums import TextMode
from PIL import Image, ImageDraw, ImageFont

PAGE_PTS = (306.0, 396.0)  # half letter, 4.25 x 5.5 in
SCAN_DPI = 150
MARGIN_PTS = 24.0
LINE_PTS = 26.0
FONT_PTS = 16.0
OUTLINE_FONT = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")

SCAN_TEXT = "HARBOR COMMISSION\nBudget hearing tonight\nPelican Street repaving\nMotion approved"
HEADER_TEXT = "City of Seabright - Regular Meeting Agenda"

KINDS = ("image_only", "good_layer", "junk_layer", "doubtful_layer", "outlines", "mixed",
         "born_digital")


def junk(text: str, *, share: float = 0.75, seed: int = 7) -> str:
    """The text with `share` of its letters replaced by random ones: a junk OCR layer
    ('HARBOR' -> 'HQRXBZ'); spaces and line breaks stay, so it is shaped like text."""
    rng = random.Random(seed)
    out = []
    for char in text:
        if char.isalpha() and rng.random() < share:
            letter = rng.choice("bcdfghjklmnpqrstvwxz")
            out.append(letter.upper() if char.isupper() else letter)
        else:
            out.append(char)
    return "".join(out)


def garble_some(text: str, seed: int = 3) -> str:
    """Every third word garbled: a layer that is partly right."""
    words = text.split(" ")
    return " ".join(junk(word, share=1.0, seed=seed + i) if i % 3 == 1 else word
                    for i, word in enumerate(words))


def scan_image(text: str, width_pts: float, height_pts: float, *, dpi: int = SCAN_DPI,
               top_pts: float = MARGIN_PTS, font_pts: float = FONT_PTS) -> Image.Image:
    """A grayscale 'scan' of width x height points with the text's lines drawn on it."""
    scale = dpi / 72
    image = Image.new("L", (round(width_pts * scale), round(height_pts * scale)), 255)
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=round(font_pts * scale))
    y = top_pts * scale
    for line in text.splitlines():
        draw.text((MARGIN_PTS * scale, y), line, fill=0, font=font)
        y += font_pts * LINE_PTS / FONT_PTS * scale
    return image


def degrade(image: Image.Image, *, seed: int = 11) -> Image.Image:
    """What a photocopier and a cheap scanner do: a slight skew, blur, speckles and gray
    paper (for bench.ocr_accuracy, where clean synthetic scans are read perfectly)."""
    from PIL import ImageFilter

    rng = random.Random(seed)
    skewed = image.rotate(0.8, resample=Image.Resampling.BICUBIC, fillcolor=255)
    blurred = skewed.filter(ImageFilter.GaussianBlur(radius=image.width / 1275))
    pixels = blurred.load()
    assert pixels is not None
    for _ in range(image.width * image.height // 400):
        x, y = rng.randrange(image.width), rng.randrange(image.height)
        pixels[x, y] = rng.choice((0, 90, 160))
    return blurred.point(lambda value: 40 + value * 185 // 255)


def _pdf() -> FPDF:
    pdf = FPDF(unit="pt", format=PAGE_PTS)
    pdf.set_auto_page_break(False)
    pdf.set_font("helvetica", size=FONT_PTS)
    pdf.add_page()
    return pdf


def _layer(pdf: FPDF, text: str, *, top_pts: float = MARGIN_PTS,
           mode: TextMode = TextMode.INVISIBLE) -> None:
    pdf.text_mode = mode
    y = top_pts + FONT_PTS
    for line in text.splitlines():
        pdf.text(MARGIN_PTS, y, line)
        y += LINE_PTS
    pdf.text_mode = TextMode.FILL


class _PathPen(BasePen):
    """Draws a glyph's outline into an fpdf2 path, from font units to page points."""

    def __init__(self, glyphs: Any, path: PaintedPath, x: float, y: float, scale: float) -> None:
        super().__init__(glyphs)
        self.path, self.x, self.y, self.scale = path, x, y, scale

    def _point(self, point: tuple[float, float]) -> tuple[float, float]:
        return self.x + point[0] * self.scale, self.y - point[1] * self.scale

    def _moveTo(self, pt: tuple[float, float]) -> None:
        self.path.move_to(*self._point(pt))

    def _lineTo(self, pt: tuple[float, float]) -> None:
        self.path.line_to(*self._point(pt))

    def _curveToOne(self, pt1: tuple[float, float], pt2: tuple[float, float],
                    pt3: tuple[float, float]) -> None:
        self.path.curve_to(*self._point(pt1), *self._point(pt2), *self._point(pt3))

    def _closePath(self) -> None:
        self.path.close()


def _outlines(pdf: FPDF, text: str) -> None:
    """The text as filled vector paths (glyph outlines of DejaVu Sans): ink, no text."""
    font = TTFont(str(OUTLINE_FONT))
    glyphs = font.getGlyphSet()
    cmap = font.getBestCmap()
    scale = FONT_PTS / font["head"].unitsPerEm
    with pdf.drawing_context() as context:
        y = MARGIN_PTS + FONT_PTS
        for line in text.splitlines():
            path = PaintedPath()
            path.style.fill_color = "#000000"
            path.style.stroke_color = None
            x = MARGIN_PTS
            for char in line:
                name = cmap.get(ord(char), ".notdef")
                glyphs[name].draw(_PathPen(glyphs, path, x, y, scale))
                x += glyphs[name].width * scale
            context.add_item(path)
            y += LINE_PTS


def make_page(kind: str, path: Path, text: str = SCAN_TEXT, *, dpi: int = SCAN_DPI,
              font_pts: float = FONT_PTS, degraded: bool = False) -> Path:
    """Write a one-page PDF of `kind` (see the module docstring) drawing `text`."""
    pdf = _pdf()
    width, height = PAGE_PTS
    if kind in ("image_only", "good_layer", "junk_layer", "doubtful_layer"):
        scan = scan_image(text, width, height, dpi=dpi, font_pts=font_pts)
        pdf.image(degrade(scan) if degraded else scan, x=0, y=0, w=width, h=height)
        if kind != "image_only":
            layer = {"good_layer": text, "junk_layer": junk(text),
                     "doubtful_layer": garble_some(text)}[kind]
            _layer(pdf, layer)
    elif kind == "outlines":
        _outlines(pdf, text)
    elif kind == "mixed":
        _layer(pdf, HEADER_TEXT.replace(" - ", "\n"), mode=TextMode.FILL)
        body_top = MARGIN_PTS + 2 * LINE_PTS + 8
        body = scan_image(text, width, height - body_top, dpi=dpi, top_pts=8)
        pdf.image(body, x=0, y=body_top, w=width, h=height - body_top)
    elif kind == "born_digital":
        _layer(pdf, text, mode=TextMode.FILL)
    else:
        raise ValueError(f"unknown page kind {kind!r}; known: {', '.join(KINDS)}")
    pdf.output(str(path))
    return path
