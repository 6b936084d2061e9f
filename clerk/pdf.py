"""Read PDFs: Poppler's command-line tools (each call a child process with limits), or
pdfium in the process (pypdfium2) for the per-page work of the OCR task.

PDF libraries crash and run away on bad files; the seeds' pipeline lost workers to them.
Here every call (`pdfinfo`, `pdftotext`, `pdftoppm`) is a separate process with a time
limit, and the ones we spawn ourselves also get an address-space and CPU limit, so a
bad page fails alone with a `PdfError` and the worker lives on.

Reading a page for the OCR task goes through a `PageReader`: `PdfiumReader` (no child
process and no image file per page; used when pypdfium2 is installed) or `PopplerReader`
(the portable one). Both give a page's `PageFacts` (text layer, image coverage, and with
pdfium the render mode of its text) and render it to a grayscale image within a pixel
budget.
"""

from __future__ import annotations

import logging
import math
import re
import resource
import subprocess
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:  # pdf2image and PIL load only when a page is rendered
    from PIL import Image

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 60.0
DEFAULT_RENDER_TIMEOUT = 120
DEFAULT_MAX_PAGES = 5000  # a 5000-page PDF is a scanned archive, not a meeting document
DEFAULT_MEMORY_LIMIT = 2 * 1024**3  # bytes of address space for one Poppler child
MIN_RENDER_DPI = 72  # below this Tesseract's accuracy collapses; refuse rather than guess
POINTS_PER_INCH = 72.0

_PAGES = re.compile(r"^Pages:\s+(\d+)\s*$", re.MULTILINE)
_ENCRYPTED = re.compile(r"^Encrypted:\s+yes", re.MULTILINE)
_PAGE_SIZE = re.compile(r"^Page\s+\d+\s+size:\s+([\d.]+)\s+x\s+([\d.]+)\s+pts", re.MULTILINE)
_PAGE_ROT = re.compile(r"^Page\s+\d+\s+rot:\s+(\d+)", re.MULTILINE)


class PdfError(Exception):
    """A PDF (or one of its pages) that could not be read; the message says why."""


@dataclass(frozen=True)
class PdfInfo:
    """Page count plus what Poppler complained about while reading it."""

    pages: int
    warnings: list[str] = field(default_factory=list)
    encrypted: bool = False


def _limits(memory_bytes: int, cpu_seconds: int) -> Callable[[], None]:
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
        resource.setrlimit(resource.RLIMIT_CPU, (cpu_seconds, cpu_seconds + 5))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))

    return apply


def run_limited(
    command: list[str], *, timeout: float, memory_bytes: int = DEFAULT_MEMORY_LIMIT
) -> subprocess.CompletedProcess[bytes]:
    """Run a Poppler tool with a wall-clock, CPU and memory limit; raise PdfError on timeout."""
    try:
        return subprocess.run(
            command,
            capture_output=True,
            timeout=timeout,
            check=False,
            preexec_fn=_limits(memory_bytes, max(1, math.ceil(timeout))),
        )
    except subprocess.TimeoutExpired as error:
        arguments = " ".join(command[1:])
        raise PdfError(f"{command[0]} timed out after {timeout:g} s: {arguments}") from error
    except FileNotFoundError as error:
        raise PdfError(f"{command[0]} is not installed (apt install poppler-utils)") from error


def _warnings(stderr: bytes) -> list[str]:
    lines = stderr.decode("utf-8", "replace").splitlines()
    unique: list[str] = []
    for line in (line.strip() for line in lines):
        if line and line not in unique:
            unique.append(line)
    return unique


def _describe_failure(path: Path, stderr: bytes, code: int) -> str:
    text = stderr.decode("utf-8", "replace")
    if "Incorrect password" in text:
        return f"encrypted PDF (needs a password): {path}"
    if code < 0:
        return f"Poppler was killed by signal {-code} reading {path}"
    if "Wrong page range" in text:  # what pdfinfo says of a document with no pages
        return f"PDF has zero pages: {path}"
    first = text.strip().splitlines()[-1] if text.strip() else f"exit code {code}"
    return f"not a readable PDF ({first}): {path}"


def pdf_info(
    path: Path, *, timeout: float = DEFAULT_TIMEOUT, max_pages: int = DEFAULT_MAX_PAGES
) -> PdfInfo:
    """Count the pages of a PDF and collect Poppler's warnings.

    A broken cross-reference table that Poppler repairs is a warning, not an error: such
    files are common and readable. A PDF that needs a password to open is refused (one
    with only an owner password, i.e. copy/print restrictions, is read normally).
    """
    path = Path(path)
    if not path.is_file():
        raise PdfError(f"no such file: {path}")
    if path.stat().st_size == 0:
        raise PdfError(f"empty file (0 bytes), not a PDF: {path}")
    result = run_limited(["pdfinfo", str(path)], timeout=timeout)
    warnings = _warnings(result.stderr)
    if result.returncode != 0:
        raise PdfError(_describe_failure(path, result.stderr, result.returncode))
    stdout = result.stdout.decode("utf-8", "replace")
    match = _PAGES.search(stdout)
    if not match:
        raise PdfError(f"not a readable PDF (pdfinfo found no page count): {path}")
    pages = int(match.group(1))
    if pages == 0:
        raise PdfError(f"PDF has zero pages: {path}")
    if pages > max_pages:
        raise PdfError(f"PDF has {pages} pages, more than the limit of {max_pages}: {path}")
    if warnings:
        log.warning(
            "%s read with %d warning(s): %s",
            path,
            len(warnings),
            warnings[0],
            extra={"action": "pdf.warning"},
        )
    return PdfInfo(pages, warnings, bool(_ENCRYPTED.search(stdout)))


def page_count(
    path: Path, *, timeout: float = DEFAULT_TIMEOUT, max_pages: int = DEFAULT_MAX_PAGES
) -> int:
    """The number of pages; see `pdf_info` for the warnings."""
    return pdf_info(path, timeout=timeout, max_pages=max_pages).pages


def _check_page(page: int) -> None:
    if isinstance(page, bool) or not isinstance(page, int) or page < 1:
        raise PdfError(f"invalid page {page!r}: pages are numbered from 1")


def page_size(path: Path, page: int, *, timeout: float = DEFAULT_TIMEOUT) -> tuple[float, float]:
    """Width and height of one page in points, as displayed (rotation applied)."""
    _check_page(page)
    result = run_limited(["pdfinfo", "-f", str(page), "-l", str(page), str(path)], timeout=timeout)
    if result.returncode != 0:
        raise PdfError(_describe_failure(Path(path), result.stderr, result.returncode))
    stdout = result.stdout.decode("utf-8", "replace")
    match = _PAGE_SIZE.search(stdout)
    if not match:
        raise PdfError(f"page {page} does not exist or has no size: {path}")
    width, height = float(match.group(1)), float(match.group(2))
    rotation = _PAGE_ROT.search(stdout)
    if rotation and int(rotation.group(1)) % 180 == 90:
        width, height = height, width
    return width, height


def text_layer(
    path: Path,
    page: int,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    warnings: list[str] | None = None,
) -> str:
    """The text layer of one page (`pdftotext -layout`), '' or form feeds if it has none.

    Poppler's complaints are appended to `warnings` when a list is given.
    """
    _check_page(page)
    result = run_limited(
        ["pdftotext", "-f", str(page), "-l", str(page), "-layout", "-enc", "UTF-8", str(path), "-"],
        timeout=timeout,
    )
    if result.returncode != 0:
        raise PdfError(
            f"page {page}: " + _describe_failure(Path(path), result.stderr, result.returncode)
        )
    if warnings is not None:
        warnings.extend(_warnings(result.stderr))
    return result.stdout.decode("utf-8", "replace")


def fit_dpi(width_pts: float, height_pts: float, dpi: int, max_pixels: int) -> int:
    """The highest dpi not above `dpi` at which the page has at most `max_pixels` pixels.

    Lowering the dpi (rather than refusing) keeps an oversized page such as a site plan
    searchable; below MIN_RENDER_DPI the OCR would be noise, so that raises PdfError.
    """
    inches = (width_pts / POINTS_PER_INCH) * (height_pts / POINTS_PER_INCH)
    if inches <= 0:
        raise PdfError(f"page has no area ({width_pts} x {height_pts} pts)")
    if inches * dpi * dpi <= max_pixels:
        return dpi
    fitted = math.floor(math.sqrt(max_pixels / inches))
    if fitted < MIN_RENDER_DPI:
        raise PdfError(
            f"page of {width_pts:g} x {height_pts:g} pts needs {fitted} dpi to stay within "
            f"{max_pixels} pixels, below the minimum of {MIN_RENDER_DPI} dpi"
        )
    return fitted


def render_page(
    path: Path,
    page: int,
    dpi: int,
    max_pixels: int,
    *,
    timeout: int = DEFAULT_RENDER_TIMEOUT,
    warnings: list[str] | None = None,
) -> Image.Image:
    """Render one page to a grayscale image for OCR, never larger than `max_pixels`.

    The page size is read first; an oversized page is rendered at a lower dpi (noted in
    `warnings`). The image's `info["dpi"]` holds the dpi actually used.
    """
    from pdf2image import convert_from_path
    from pdf2image.exceptions import (
        PDFInfoNotInstalledError,
        PDFPageCountError,
        PDFSyntaxError,
    )

    width, height = page_size(path, page)
    used = fit_dpi(width, height, dpi, max_pixels)
    if used != dpi:
        message = f"page {page} rendered at {used} dpi instead of {dpi} to fit {max_pixels} px"
        log.warning("%s: %s", path, message, extra={"action": "pdf.lower_dpi"})
        if warnings is not None:
            warnings.append(message)
    try:
        images = convert_from_path(
            path, dpi=used, first_page=page, last_page=page, grayscale=True, timeout=timeout
        )
    except subprocess.TimeoutExpired as error:
        raise PdfError(f"rendering page {page} timed out after {timeout} s: {path}") from error
    except (PDFInfoNotInstalledError, PDFPageCountError, PDFSyntaxError) as error:
        raise PdfError(f"could not render page {page} of {path}: {error}") from error
    if not images:
        raise PdfError(f"pdftoppm produced no image for page {page} of {path}")
    image = images[0]
    image.info["dpi"] = (used, used)
    return image


# ---------------------------------------------------------------- what a page is made of

COVERAGE_GRID_PTS = 6.0  # image coverage is measured on a grid of 6-point cells


@dataclass(frozen=True)
class PageFacts:
    """What the triage needs to know of one page: its text layer and what is drawn.

    Fields a reader cannot see are None (Poppler's command-line tools do not tell the
    render mode of text nor where an image sits, pdfium does).
    """

    text: str
    width_pts: float
    height_pts: float
    image_coverage: float  # fraction of the page's area under images, 0..1
    invisible_chars: int | None = None  # letters/digits drawn in render mode 3 (invisible)
    chars_over_images: int | None = None  # visible letters/digits lying on an image
    vector_paths: int | None = None  # path objects drawn (lines, boxes, text as outlines)
    warnings: list[str] = field(default_factory=list)

    @property
    def area_sq_in(self) -> float:
        return (self.width_pts / POINTS_PER_INCH) * (self.height_pts / POINTS_PER_INCH)


def _coverage(boxes: list[tuple[float, float, float, float]], width: float, height: float) -> float:
    """The fraction of a width x height page under the union of boxes (left, bottom,
    right, top in points), measured on a grid so overlapping images count once."""
    if not boxes or width <= 0 or height <= 0:
        return 0.0
    columns = max(1, math.ceil(width / COVERAGE_GRID_PTS))
    rows = max(1, math.ceil(height / COVERAGE_GRID_PTS))
    covered: set[tuple[int, int]] = set()
    for left, bottom, right, top in boxes:
        x0 = max(0, math.floor(max(left, 0.0) / COVERAGE_GRID_PTS))
        x1 = min(columns, math.ceil(min(right, width) / COVERAGE_GRID_PTS))
        y0 = max(0, math.floor(max(bottom, 0.0) / COVERAGE_GRID_PTS))
        y1 = min(rows, math.ceil(min(top, height) / COVERAGE_GRID_PTS))
        covered.update((x, y) for x in range(x0, x1) for y in range(y0, y1))
    return len(covered) / (columns * rows)


class PageReader(Protocol):
    """Reads one page's facts and renders it; `open` is a context manager per page."""

    name: str

    def open(self, path: Path, page: int) -> AbstractContextManager[OpenPage]: ...


class OpenPage(Protocol):
    def facts(self, *, warnings: list[str]) -> PageFacts: ...

    def render(self, dpi: int, max_pixels: int, *, warnings: list[str]) -> Image.Image: ...


_PDFIMAGES_ROW = re.compile(r"^\s*\d+\s+\d+\s+\w+\s+(\d+)\s+(\d+)\s+.*?\s(\d+)\s+(\d+)\s+\S+\s+\S+\s*$")


class _PopplerPage:
    def __init__(self, path: Path, page: int) -> None:
        self.path = Path(path)
        self.page = page

    def facts(self, *, warnings: list[str]) -> PageFacts:
        text = text_layer(self.path, self.page, warnings=warnings)
        width, height = page_size(self.path, self.page)
        return PageFacts(text, width, height, self._image_coverage(width, height), warnings=warnings)

    def _image_coverage(self, width: float, height: float) -> float:
        """From `pdfimages -list`: each image's size in pixels and its resolution give its
        area on the page (not its place, so overlapping images are summed, capped at 1)."""
        result = run_limited(["pdfimages", "-list", "-f", str(self.page), "-l", str(self.page),
                              str(self.path)], timeout=DEFAULT_TIMEOUT)
        if result.returncode != 0:
            return 0.0
        area = 0.0
        for line in result.stdout.decode("utf-8", "replace").splitlines()[2:]:
            match = _PDFIMAGES_ROW.match(line)
            if not match:
                continue
            pixels_x, pixels_y, ppi_x, ppi_y = (int(group) for group in match.groups())
            if ppi_x > 0 and ppi_y > 0:
                area += (pixels_x / ppi_x * POINTS_PER_INCH) * (pixels_y / ppi_y * POINTS_PER_INCH)
        return min(1.0, area / (width * height)) if width * height > 0 else 0.0

    def render(self, dpi: int, max_pixels: int, *, warnings: list[str]) -> Image.Image:
        return render_page(self.path, self.page, dpi, max_pixels, warnings=warnings)


class PopplerReader:
    """Poppler's command-line tools, one child process per call (the portable reader)."""

    name = "poppler"

    @contextmanager
    def open(self, path: Path, page: int) -> Iterator[_PopplerPage]:
        _check_page(page)
        yield _PopplerPage(path, page)


class _PdfiumPage:
    def __init__(self, path: Path, page: int, document: Any, handle: Any) -> None:
        self.path = path
        self.page = page
        self.document = document
        self.handle = handle

    def facts(self, *, warnings: list[str]) -> PageFacts:
        import pypdfium2.raw as raw

        width, height = self.handle.get_size()
        images: list[tuple[float, float, float, float]] = []
        paths = 0
        hidden_text = False
        for item in self.handle.get_objects(max_depth=4):
            if item.type == raw.FPDF_PAGEOBJ_IMAGE:
                images.append(item.get_bounds())
            elif item.type == raw.FPDF_PAGEOBJ_PATH:
                paths += 1
            elif item.type == raw.FPDF_PAGEOBJ_TEXT and not hidden_text:
                mode = raw.FPDFTextObj_GetTextRenderMode(item.raw)
                hidden_text = mode == raw.FPDF_TEXTRENDERMODE_INVISIBLE
        textpage = self.handle.get_textpage()
        try:
            text = textpage.get_text_range().replace("\r\n", "\n").replace("\r", "\n")
            invisible = over_images = 0
            # Character by character only where it can matter (an invisible run, or an
            # image text may lie on): most born-digital pages skip this loop.
            chars = textpage.count_chars() if hidden_text or images else 0
            for index in range(chars):
                if not text_char_is_alnum(textpage, index):
                    continue
                obj = raw.FPDFText_GetTextObject(textpage.raw, index)
                if obj and raw.FPDFTextObj_GetTextRenderMode(obj) == raw.FPDF_TEXTRENDERMODE_INVISIBLE:
                    invisible += 1
                    continue
                left, bottom, right, top = textpage.get_charbox(index)
                x, y = (left + right) / 2, (bottom + top) / 2
                if any(b[0] <= x <= b[2] and b[1] <= y <= b[3] for b in images):
                    over_images += 1
        finally:
            textpage.close()
        return PageFacts(text, width, height, _coverage(images, width, height), invisible,
                         over_images, paths, warnings)

    def largest_image_pixels(self) -> int:
        """The pixel count of the page's largest embedded image (from its dictionary, not
        decoded)."""
        import pypdfium2.raw as raw

        largest = 0
        for item in self.handle.get_objects(filter=[raw.FPDF_PAGEOBJ_IMAGE], max_depth=4):
            width, height = item.get_px_size()
            largest = max(largest, width * height)
        return largest

    def render(self, dpi: int, max_pixels: int, *, warnings: list[str]) -> Image.Image:
        largest = self.largest_image_pixels()
        if largest > IMAGE_PIXELS_IN_PROCESS:
            # Decoding it could take gigabytes in this process: Poppler decodes it in a
            # child process with a memory limit instead.
            message = (f"page {self.page} has an image of {largest:,} pixels: rendered by "
                       f"Poppler in a child process with a memory limit")
            log.warning("%s: %s", self.path, message, extra={"action": "pdf.big_image"})
            warnings.append(message)
            return render_page(self.path, self.page, dpi, max_pixels, warnings=warnings)
        width, height = self.handle.get_size()
        rotation = self.handle.get_rotation()
        if rotation % 180 == 90:
            width, height = height, width
        used = fit_dpi(width, height, dpi, max_pixels)
        if used != dpi:
            message = f"page {self.page} rendered at {used} dpi instead of {dpi} to fit {max_pixels} px"
            log.warning("%s: %s", self.path, message, extra={"action": "pdf.lower_dpi"})
            warnings.append(message)
        bitmap = self.handle.render(scale=used / POINTS_PER_INCH, grayscale=True)
        try:
            image: Image.Image = bitmap.to_pil()
            image = image.convert("L") if image.mode != "L" else image.copy()
        finally:
            bitmap.close()
        image.info["dpi"] = (used, used)
        return image


def text_char_is_alnum(textpage: Any, index: int) -> bool:
    import pypdfium2.raw as raw

    code = raw.FPDFText_GetUnicode(textpage.raw, index)
    return 0 < code < 0x110000 and chr(code).isalnum()


class PdfiumReader:
    """pdfium in this process (pypdfium2): no child process, no temporary image file.

    Under clerkd the OCR task runs in a job child process (pgqueue's process isolation),
    so a crash inside pdfium kills that child and is recorded as the job's error; the
    worker lives on. pdfium is not thread-safe, so one page at a time per process holds
    `_PDFIUM_LOCK` (facts and rendering only; OCR runs outside it).
    """

    name = "pdfium"

    @contextmanager
    def open(self, path: Path, page: int) -> Iterator[_PdfiumPage]:
        import pypdfium2 as pdfium

        _check_page(page)
        path = Path(path)
        if not path.is_file():
            raise PdfError(f"no such file: {path}")
        with _PDFIUM_LOCK, self._document(pdfium, path) as document:
            if page > len(document):
                raise PdfError(f"page {page} does not exist ({len(document)} pages): {path}")
            handle = document[page - 1]
            try:
                yield _PdfiumPage(path, page, document, handle)
            finally:
                handle.close()

    @staticmethod
    @contextmanager
    def _document(pdfium: Any, path: Path) -> Iterator[Any]:
        try:
            document = pdfium.PdfDocument(str(path))
        except pdfium.PdfiumError as error:
            if "password" in str(error).lower():
                raise PdfError(f"encrypted PDF (needs a password): {path}") from error
            raise PdfError(f"not a readable PDF ({error}): {path}") from error
        try:
            yield document
        finally:
            document.close()


_PDFIUM_LOCK = threading.Lock()
# An embedded image larger than this (a 10,000 x 10,000 pixel scan) is not decoded in the
# worker's process: pdfium has no memory limit of its own, Poppler's children have one.
IMAGE_PIXELS_IN_PROCESS = 100_000_000


def pdfium_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("pypdfium2") is not None


READERS: dict[str, Callable[[], PageReader]] = {"pdfium": PdfiumReader, "poppler": PopplerReader}


def default_reader() -> PageReader:
    """pdfium in-process when pypdfium2 is installed, else Poppler's tools."""
    return PdfiumReader() if pdfium_available() else PopplerReader()
