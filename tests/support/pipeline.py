"""Fixtures for the pipeline tests: a PDF factory and a local HTTP server on 127.0.0.1.

The PDF factory makes born-digital pages (a real text layer), scanned pages (an image
only, so the pipeline must OCR them) and broken files. The HTTP server serves routes a
test sets, with real ETag/Last-Modified handling, errors, slow drips and redirects, so
fetch is tested against sockets rather than a mocked `requests`.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from fpdf import FPDF
from PIL import Image, ImageDraw, ImageFont

CIVIC = Path(__file__).resolve().parent.parent / "fixtures" / "civic"
SCAN_DPI = 150
LETTER_POINTS = (612, 792)


# ---------------------------------------------------------------- PDF factory


class PdfFactory:
    """Writes test PDFs into one directory; every method returns the path it wrote."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.directory.mkdir(parents=True, exist_ok=True)

    def _path(self, name: str) -> Path:
        return self.directory / name

    def text_pdf(self, name: str, pages: list[str]) -> Path:
        """Born-digital: each string becomes one page with a text layer."""
        pdf = FPDF(unit="pt", format="letter")
        pdf.set_font("helvetica", size=12)
        for text in pages:
            pdf.add_page()
            pdf.multi_cell(0, 16, text)
        path = self._path(name)
        pdf.output(str(path))
        return path

    def scanned_image(self, text: str, *, dpi: int = SCAN_DPI) -> Image.Image:
        """A page-sized grayscale image with `text` drawn on it in a large, clear font."""
        width = int(LETTER_POINTS[0] / 72 * dpi)
        height = int(LETTER_POINTS[1] / 72 * dpi)
        image = Image.new("L", (width, height), 255)
        draw = ImageDraw.Draw(image)
        font = ImageFont.load_default(size=int(dpi / 4))  # about 18 pt
        y = int(dpi * 0.75)
        for line in text.splitlines():
            draw.text((int(dpi * 0.75), y), line, fill=0, font=font)
            y += int(dpi / 2.5)
        return image

    def scanned_pdf(self, name: str, pages: list[str], *, dpi: int = SCAN_DPI) -> Path:
        """Image-only pages: no text layer at all, as a scanner produces."""
        pdf = FPDF(unit="pt", format="letter")
        for text in pages:
            pdf.add_page()
            pdf.image(self.scanned_image(text, dpi=dpi), x=0, y=0, w=pdf.w, h=pdf.h)
        path = self._path(name)
        pdf.output(str(path))
        return path

    def mixed_pdf(self, name: str, pages: list[tuple[str, str]]) -> Path:
        """Pages given as ("text" | "scan", content), in order."""
        pdf = FPDF(unit="pt", format="letter")
        pdf.set_font("helvetica", size=12)
        for kind, content in pages:
            pdf.add_page()
            if kind == "scan":
                pdf.image(self.scanned_image(content), x=0, y=0, w=pdf.w, h=pdf.h)
            else:
                pdf.multi_cell(0, 16, content)
        path = self._path(name)
        pdf.output(str(path))
        return path

    def huge_page_pdf(self, name: str, width_pts: float, height_pts: float) -> Path:
        pdf = FPDF(unit="pt", format=(width_pts, height_pts))
        pdf.set_font("helvetica", size=48)
        pdf.add_page()
        pdf.text(72, 144, "Site plan")
        path = self._path(name)
        pdf.output(str(path))
        return path

    def encrypted_pdf(self, name: str, text: str = "Secret agenda") -> Path:
        """Needs a user password to open."""
        pdf = FPDF(unit="pt", format="letter")
        pdf.set_encryption(owner_password="owner-pw", user_password="user-pw")
        pdf.set_font("helvetica", size=12)
        pdf.add_page()
        pdf.multi_cell(0, 16, text)
        path = self._path(name)
        pdf.output(str(path))
        return path

    def truncated_pdf(self, name: str, keep: int = 120) -> Path:
        source = self.text_pdf(f"full-{name}", ["City Council agenda " * 40])
        path = self._path(name)
        path.write_bytes(source.read_bytes()[:keep])
        return path

    def garbage(self, name: str) -> Path:
        path = self._path(name)
        path.write_bytes(bytes(range(256)) * 64)
        return path

    def empty(self, name: str) -> Path:
        path = self._path(name)
        path.write_bytes(b"")
        return path

    def html(self, name: str) -> Path:
        path = self._path(name)
        path.write_bytes(b"<!doctype html><html><body><h1>404 Not Found</h1></body></html>")
        return path


@pytest.fixture
def pdf_factory(tmp_path: Path) -> PdfFactory:
    return PdfFactory(tmp_path / "pdfs")


@pytest.fixture(scope="session")
def civic_fixtures() -> Path:
    return CIVIC


# ---------------------------------------------------------------- HTTP server


@dataclass
class Route:
    """What the server answers on one path. `handler` overrides everything else."""

    body: bytes = b""
    status: int = 200
    content_type: str = "application/pdf"
    etag: str | None = None
    last_modified: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    handler: Callable[[BaseHTTPRequestHandler], None] | None = None


@dataclass
class SeenRequest:
    path: str
    headers: dict[str, str]


class _QuietServer(ThreadingHTTPServer):
    """Clients that hang up early (size limits, deadlines) are expected, not errors."""

    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        error = sys.exc_info()[1]
        if not isinstance(error, ConnectionError | TimeoutError):
            super().handle_error(request, client_address)  # type: ignore[arg-type]


class LocalServer:
    """A ThreadingHTTPServer on 127.0.0.1 with routes a test sets."""

    def __init__(self) -> None:
        self.routes: dict[str, Route] = {}
        self.requests: list[SeenRequest] = []
        self._stop = threading.Event()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                return

            def do_GET(self) -> None:
                server.requests.append(SeenRequest(self.path, dict(self.headers.items())))
                route = server.routes.get(self.path.split("#")[0])
                if route is None:
                    self._send(404, b"not found", "text/plain")
                    return
                if route.handler is not None:
                    route.handler(self)
                    return
                if route.status == 200 and self._not_modified(route):
                    self.send_response(304)
                    if route.etag:
                        self.send_header("ETag", route.etag)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                extra = dict(route.headers)
                if route.etag:
                    extra["ETag"] = route.etag
                if route.last_modified:
                    extra["Last-Modified"] = route.last_modified
                self._send(route.status, route.body, route.content_type, extra)

            def _not_modified(self, route: Route) -> bool:
                match = self.headers.get("If-None-Match")
                if match is not None and route.etag is not None:
                    return match == route.etag
                since = self.headers.get("If-Modified-Since")
                return since is not None and since == route.last_modified

            def _send(
                self,
                status: int,
                body: bytes,
                content_type: str,
                headers: dict[str, str] | None = None,
            ) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(body)

        self.httpd = _QuietServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.base = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def url(self, path: str) -> str:
        return self.base + path

    # Route helpers -------------------------------------------------------

    def static(
        self,
        path: str,
        body: bytes,
        *,
        content_type: str = "application/pdf",
        etag: str | None = None,
        last_modified: str | None = None,
    ) -> str:
        self.routes[path] = Route(
            body=body, content_type=content_type, etag=etag, last_modified=last_modified
        )
        return self.url(path)

    def status(self, path: str, status: int, body: bytes = b"error") -> str:
        self.routes[path] = Route(body=body, status=status, content_type="text/plain")
        return self.url(path)

    def redirect(self, path: str, location: str, status: int = 302) -> str:
        self.routes[path] = Route(status=status, headers={"Location": location})
        return self.url(path)

    def slow_drip(self, path: str, *, interval: float = 0.1, total: int = 10_000) -> str:
        """Sends a PDF header, then one byte every `interval` seconds, never fast enough."""
        stop = self._stop

        def drip(handler: BaseHTTPRequestHandler) -> None:
            handler.send_response(200)
            handler.send_header("Content-Type", "application/pdf")
            handler.send_header("Content-Length", str(total))
            handler.end_headers()
            try:
                handler.wfile.write(b"%PDF-1.4\n")
                handler.wfile.flush()
                for _ in range(total):
                    if stop.wait(interval):
                        return
                    handler.wfile.write(b"x")
                    handler.wfile.flush()
            except OSError:
                return

        self.routes[path] = Route(handler=drip)
        return self.url(path)

    def flaky(self, path: str, body: bytes, *, failures: int, status: int = 503) -> str:
        """Answers `status` for the first `failures` requests, then the body."""
        count = {"n": 0}

        def handler(request: BaseHTTPRequestHandler) -> None:
            count["n"] += 1
            ok = count["n"] > failures
            payload = body if ok else b"unavailable"
            request.send_response(200 if ok else status)
            request.send_header("Content-Type", "application/pdf" if ok else "text/plain")
            request.send_header("Content-Length", str(len(payload)))
            request.end_headers()
            request.wfile.write(payload)

        self.routes[path] = Route(handler=handler)
        return self.url(path)

    def hits(self, path: str) -> int:
        return sum(1 for seen in self.requests if seen.path == path)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self._stop.set()
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


def http_date(when: float | None = None) -> str:
    return formatdate(time.time() if when is None else when, usegmt=True)


@pytest.fixture
def http_server() -> Iterator[LocalServer]:
    server = LocalServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()
