"""Turn one PDF page into text: its text layer when the triage trusts it, otherwise OCR.

A page whose text layer is its text is never OCR'd (a few ms against about a second a
page). `clerk.triage` decides per page (use the layer, OCR, or OCR and keep the better)
and says why; `read_page` carries the decision and reason out with the text, and the OCR
task records them (`clerk status --subdomain` shows them).

OCR engines sit behind a small protocol and a registry keyed by name:

    tesseract    the default: `tesserocr` when installed, else `pytesseract`
    tesserocr    Tesseract's C++ API in this process, one API object per process and
                 thread, reused across pages (no child process, no image file per page)
    pytesseract  the `tesseract` command per page (portable; needs only the binary)

Pages are read and rendered by pdfium in the process when pypdfium2 is installed, else by
Poppler's tools (`clerk.pdf.default_reader`). Under clerkd the OCR task runs in a job
child process, so an engine that crashes kills that child, not the worker; Tesseract's
own time limit (tesserocr) or the command's (pytesseract) bounds a hanging page.
"""

from __future__ import annotations

import glob
import logging
import os
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

from clerk.config import Settings
from clerk.pdf import PageReader, default_reader
from clerk.triage import MIN_TEXT_LAYER_CHARS, Triage, keep_better, triage

if TYPE_CHECKING:  # pytesseract and PIL load only in the OCR task, not in every `clerk` command
    from PIL import Image

log = logging.getLogger(__name__)

DEFAULT_OCR_TIMEOUT = 120
TESSDATA_DIRS = ("/usr/share/tesseract-ocr/*/tessdata", "/usr/share/tessdata",
                 "/usr/local/share/tessdata", "/opt/homebrew/share/tessdata",
                 "/usr/local/share/tesseract-ocr/*/tessdata")


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

    name = "pytesseract"

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


def tessdata_dir(lang: str = "eng") -> str:
    """The folder holding `<lang>.traineddata`: TESSDATA_PREFIX, the usual system
    folders, or the one the `tesseract` command names. The tesserocr wheel carries its
    own Tesseract but no language data, so it is told where the system's is. A
    TESSDATA_PREFIX the user set is the only place looked at, as the `tesseract` command
    does: a folder without the language is an error, not a silent fall back elsewhere."""
    prefix = os.environ.get("TESSDATA_PREFIX")
    if prefix:
        if (Path(prefix) / f"{lang}.traineddata").is_file():
            return prefix.rstrip("/") + "/"
        raise OcrError(f"no Tesseract language data for {lang!r} in TESSDATA_PREFIX={prefix} "
                       f"({lang}.traineddata): fix or unset TESSDATA_PREFIX")
    candidates: list[str] = []
    for pattern in TESSDATA_DIRS:
        candidates.extend(sorted(glob.glob(pattern), reverse=True))
    for folder in candidates:
        if (Path(folder) / f"{lang}.traineddata").is_file():
            return folder.rstrip("/") + "/"
    command = shutil.which("tesseract")
    if command:
        listed = subprocess.run([command, "--list-langs"], capture_output=True, text=True,
                                timeout=30, check=False)
        first = (listed.stdout or listed.stderr).splitlines()[:1]
        if first and '"' in first[0]:
            folder = first[0].split('"')[1]
            if (Path(folder) / f"{lang}.traineddata").is_file():
                return folder.rstrip("/") + "/"
    raise OcrError(f"no Tesseract language data for {lang!r} ({lang}.traineddata): install "
                   "tesseract-ocr-eng, or set TESSDATA_PREFIX to its folder")


_APIS: dict[tuple[int, int, str], Any] = {}  # (pid, thread, lang): tesserocr.PyTessBaseAPI


class TesserocrBackend:
    """Tesseract in this process through tesserocr: one API object per process and thread,
    made on the first page and reused (the language model loads once, not per page).

    A page over `timeout` seconds is cancelled by Tesseract itself (Recognize's limit)
    and raises OcrError; a crash takes the job's child process down (process isolation).
    """

    name = "tesserocr"

    def __init__(self, *, lang: str = "eng", timeout: int = DEFAULT_OCR_TIMEOUT) -> None:
        os.environ.setdefault("OMP_THREAD_LIMIT", "1")  # before libtesseract loads
        try:
            import tesserocr  # noqa: F401
        except ImportError as error:
            raise OcrError("tesserocr is not installed (pip install 'clerk[fast]', or use "
                           "DEFAULT_OCR_BACKEND=pytesseract)") from error
        self.lang = lang
        self.timeout = timeout

    def api(self) -> Any:
        import tesserocr

        key = (os.getpid(), threading.get_ident(), self.lang)
        api = _APIS.get(key)
        if api is None:
            for stale in [k for k in _APIS if k[0] != key[0]]:
                del _APIS[stale]  # a forked child's copy of its parent's objects
            try:
                api = tesserocr.PyTessBaseAPI(path=tessdata_dir(self.lang), lang=self.lang)
            except RuntimeError as error:
                raise OcrError(f"tesserocr could not start Tesseract: {error}") from error
            _APIS[key] = api
        return api

    def image_to_text(self, image: Image.Image, *, dpi: int) -> str:
        api = self.api()
        api.SetImage(image)
        api.SetSourceResolution(int(dpi))
        try:
            if not api.Recognize(timeout=int(self.timeout * 1000)):
                raise OcrError(f"tesseract (in-process) gave up on the page after its limit "
                               f"of {self.timeout} s or failed to read it")
            return str(api.GetUTF8Text())
        finally:
            api.Clear()


def tesserocr_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("tesserocr") is not None


def default_tesseract() -> OcrBackend:
    """In-process Tesseract when tesserocr is installed, else the `tesseract` command."""
    return TesserocrBackend() if tesserocr_available() else TesseractBackend()


BACKENDS: dict[str, Callable[[], OcrBackend]] = {
    "tesseract": default_tesseract,
    "tesserocr": TesserocrBackend,
    "pytesseract": TesseractBackend,
}


def get_backend(name: str) -> OcrBackend:
    """The OCR backend registered under `name`."""
    try:
        factory = BACKENDS[name]
    except KeyError:
        known = ", ".join(sorted(BACKENDS))
        raise OcrError(f"unknown OCR backend {name!r}; known: {known}") from None
    return factory()


Method = Literal["text-layer", "ocr", "blank"]


@dataclass(frozen=True)
class PageText:
    """The text of one page, how it was obtained and why, and what went wrong on the way.

    `method` is where the text came from; `decision` is the triage's (text-layer, ocr or
    compare) and `reason` says why, with the comparison's outcome for `compare`.
    """

    text: str
    method: Method
    warnings: list[str] = field(default_factory=list)
    decision: str = ""
    reason: str = ""
    engine: str = ""  # reader and OCR backend, e.g. "pdfium+tesserocr"


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
    reader: PageReader | None = None,
) -> PageText:
    """Read one page as the triage decides: its text layer, or render and OCR it (a
    blank rendering is recorded as empty without OCR), or both and keep the better."""
    warnings: list[str] = []
    reader = reader or default_reader()
    with reader.open(pdf_path, page) as opened:
        facts = opened.facts(warnings=warnings)
        verdict: Triage = triage(facts)
        if verdict.decision == "text-layer":
            return PageText(facts.text, "text-layer", warnings, verdict.decision, verdict.reason,
                            reader.name)
        engine = backend or get_backend(settings.default_ocr_backend)
        image = opened.render(settings.ocr_dpi, settings.max_page_pixels, warnings=warnings)
    used = f"{reader.name}+{engine.name}"
    try:
        if is_blank(image):  # nothing to read: no Tesseract second spent on it
            if verdict.decision == "compare":  # text that is not drawn, on an empty page
                return PageText(facts.text, "text-layer", warnings, verdict.decision,
                                f"{verdict.reason}; the page is blank: kept the layer", used)
            return PageText("", "blank", warnings, verdict.decision,
                            f"{verdict.reason}; the page renders blank", used)
        dpi = int(image.info.get("dpi", (settings.ocr_dpi,))[0])
        text = engine.image_to_text(image, dpi=dpi)
    finally:
        image.close()
    if verdict.decision == "compare":
        method, why = keep_better(facts.text, text)
        return PageText(facts.text if method == "text-layer" else text, method, warnings,
                        verdict.decision, f"{verdict.reason}; {why}", used)
    if not has_usable_text(text, 1):
        warnings.append(f"OCR found no text on page {page}")
    return PageText(text, "ocr", warnings, verdict.decision, verdict.reason, used)


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


def engines_in_use(name: str) -> str:
    """What backend `name` runs on this machine, for `clerk doctor`."""
    from clerk.pdf import pdfium_available

    pages = "pages read by pdfium" if pdfium_available() else "pages read by Poppler's tools"
    if name == "tesseract":
        name = "tesserocr" if tesserocr_available() else "pytesseract"
    if name == "tesserocr":
        return f"Tesseract in-process through tesserocr, {pages}"
    hint = "" if tesserocr_available() else "; pip install 'clerk[fast]' for in-process OCR"
    return f"the tesseract command per page, {pages}{hint}"
