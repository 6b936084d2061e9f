"""Turn one PDF page into text: its text layer when it has one, otherwise OCR.

A page with a usable text layer is never OCR'd (15 ms against about 2 s a page at
150 dpi). OCR engines sit behind a small protocol and a registry keyed by name, so a
second engine is one class and one registry entry; `DEFAULT_OCR_BACKEND` picks one.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Protocol

from clerk.config import Settings
from clerk.pdf import render_page, text_layer

if TYPE_CHECKING:  # pytesseract and PIL load only in the OCR task, not in every `clerk` command
    from PIL import Image

log = logging.getLogger(__name__)

# A page whose text layer has fewer letters and digits than this is treated as scanned:
# scanned agendas often carry only a stamped page number or a few stray glyphs.
MIN_TEXT_LAYER_CHARS = 16
DEFAULT_OCR_TIMEOUT = 120


class OcrError(Exception):
    """OCR of a page failed (engine missing, crashed or timed out)."""


class OcrBackend(Protocol):
    """An OCR engine: image in, text out."""

    name: str

    def image_to_text(self, image: Image.Image, *, dpi: int) -> str: ...


class TesseractBackend:
    """Tesseract through pytesseract, one thread per process.

    Tesseract's OpenMP threads fight each other when N workers each OCR a page; with
    OMP_THREAD_LIMIT=1, N workers use N cores (pytesseract passes the environment of
    this process on to tesseract, so it is set here, in the worker process).
    """

    name = "tesseract"

    def __init__(
        self, *, lang: str = "eng", timeout: int = DEFAULT_OCR_TIMEOUT, extra_config: str = ""
    ) -> None:
        self.lang = lang
        self.timeout = timeout
        self.extra_config = extra_config
        os.environ.setdefault("OMP_THREAD_LIMIT", "1")

    def image_to_text(self, image: Image.Image, *, dpi: int) -> str:
        import pytesseract

        config = f"--dpi {int(dpi)} {self.extra_config}".strip()
        try:
            text = pytesseract.image_to_string(
                image, lang=self.lang, config=config, timeout=self.timeout
            )
        except pytesseract.TesseractNotFoundError as error:
            raise OcrError("tesseract is not installed (apt install tesseract-ocr)") from error
        except RuntimeError as error:  # pytesseract's timeout
            raise OcrError(f"tesseract: {error} (limit {self.timeout} s)") from error
        except pytesseract.TesseractError as error:
            raise OcrError(f"tesseract failed: {error}") from error
        return str(text)


BACKENDS: dict[str, Callable[[], OcrBackend]] = {"tesseract": TesseractBackend}


def get_backend(name: str) -> OcrBackend:
    """The OCR backend registered under `name`."""
    try:
        factory = BACKENDS[name]
    except KeyError:
        known = ", ".join(sorted(BACKENDS))
        raise OcrError(f"unknown OCR backend {name!r}; known: {known}") from None
    return factory()


@dataclass(frozen=True)
class PageText:
    """The text of one page, how it was obtained, and what went wrong on the way."""

    text: str
    method: Literal["text-layer", "ocr", "blank"]
    warnings: list[str] = field(default_factory=list)


def has_usable_text(text: str, minimum: int = MIN_TEXT_LAYER_CHARS) -> bool:
    """True when the text has at least `minimum` letters or digits (not just form feeds)."""
    count = 0
    for char in text:
        if char.isalnum():
            count += 1
            if count >= minimum:
                return True
    return False


BLANK_DARKEST = 200  # a page with no pixel darker than this (of 255) has nothing to read


def is_blank(image: Image.Image) -> bool:
    """True when no pixel is darker than BLANK_DARKEST: a blank page (a scan's speckles
    are dark enough to count as content, so only truly empty pages are skipped)."""
    gray = image if image.mode == "L" else image.convert("L")
    return gray.point(lambda value: 255 if value < BLANK_DARKEST else 0).getbbox() is None


def read_page(
    pdf_path: Path,
    page: int,
    settings: Settings,
    *,
    backend: OcrBackend | None = None,
) -> PageText:
    """Read one page: the text layer if it has usable text, else render and OCR it (a
    blank rendering is recorded as empty without OCR)."""
    warnings: list[str] = []
    layer = text_layer(pdf_path, page, warnings=warnings)
    if has_usable_text(layer):
        return PageText(layer, "text-layer", warnings)
    engine = backend or get_backend(settings.default_ocr_backend)
    image = render_page(
        pdf_path, page, settings.ocr_dpi, settings.max_page_pixels, warnings=warnings
    )
    try:
        if is_blank(image):  # nothing to read: no Tesseract second spent on it
            return PageText("", "blank", warnings)
        dpi = int(image.info.get("dpi", (settings.ocr_dpi,))[0])
        text = engine.image_to_text(image, dpi=dpi)
    finally:
        image.close()
    if not has_usable_text(text, 1):
        warnings.append(f"OCR found no text on page {page}")
    return PageText(text, "ocr", warnings)


def write_page_text(path: Path, text: str) -> None:
    """Write a page's text atomically (temporary file, fsync, rename).

    Readers such as compile never see a half-written page, and a page OCR'd twice by
    at-least-once execution simply replaces itself.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
