"""Pipeline figures: clerk on pgqueue, with real PDFs, Poppler and Tesseract.

- **OCR scaling**: scanned pages through `clerk.ocr_page` jobs on the `ocr` queue, with 1
  and 2 workers (`isolation="process"`, as clerkd runs them), against one `tesseract`
  process run directly on the same pages, already rendered at the same dpi, one after
  another with `OMP_THREAD_LIMIT=1`. Ideal = workers x direct rate; achieved / ideal is
  what the queue, Poppler (pdftotext, pdfinfo, pdftoppm) and the page's PNG cost.
- **Engines**: `clerk.ocr.read_page` per scanned page with the default engines (pdfium and
  tesserocr in the process, when installed) against the portable ones (Poppler's tools and
  a tesseract process per page), and against the tesseract command alone; the queue's
  rate over read_page's alone. Accuracy per engine and DPI: `python -m bench.ocr_accuracy`.
- **Text layer vs scan**: `clerk.ocr.read_page` per page on a born-digital PDF and on a
  scanned PDF of the same pages (the first never reaches Tesseract).
- **Fan-in overhead**: N no-op jobs drained as members of one group (each completion
  counts down the group's row; the last fires a follow-up) against N ungrouped jobs, with
  the same worker processes as the queue bench's drain.
- **Documents through the database** (issue 16): the OCR queue again with 1 worker, its
  cache bounded to 0 bytes, so every page job streams its PDF from PostgreSQL into the
  cache (what a host that lacks the document does), against a warm cache (a local file);
  and the store's rates on a 50 MB PDF: into the database, and back into an empty cache.
- **End to end**: a generated site served over HTTP on 127.0.0.1 (documents of 10 pages,
  9 born-digital and 1 scanned), added as a site, `enqueue_site`, workers for every queue
  until idle; the clock runs from the enqueue to the deploy job's commit.

    python -m bench.pipeline [--quick]
    python -m bench                      # includes these (--no-pipeline to skip them)
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import psycopg

from bench.harness import Cluster, Workers
from bench.report import median_run

SITE = "bench-city"
SCAN_DPI = 150  # the scanner's resolution for the generated image-only pages
LETTER_POINTS = (612, 792)
FANIN_CAP = 180.0  # seconds; a drain still running by then is reported as capped
POLL = 0.02

_counter = itertools.count()


@dataclass
class PipelineSizes:
    ocr_pages: int = 12  # scanned pages for the OCR scaling and text-layer figures
    fanin: int = 10_000  # no-op jobs per fan-in drain
    fanin_processes: int = 4  # worker processes for both fan-in drains (as drain_4)
    site_documents: int = 20  # end to end: documents of `pages_per_document` pages
    pages_per_document: int = 10  # the last page of each is a scan
    e2e_concurrency: int = 2  # slots of the one worker that serves every queue

    @classmethod
    def quick(cls) -> PipelineSizes:
        return cls(ocr_pages=6, fanin=5_000, site_documents=3)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


# ---------------------------------------------------------------- documents

_BODIES = ("Garcia", "Lee", "Okafor", "Novak", "Brennan", "Castillo", "Huang", "Moreau")
_ITEMS = (
    "Approval of the minutes of the regular meeting",
    "Public comment on items not on the agenda",
    "Consent calendar: warrant register No. {n}",
    "Award of contract to Acme Paving for streets",
    "Second reading of Ordinance No. {n} on parking",
    "Resolution No. {n} amending the budget",
    "Motion by {a}, seconded by {b}; carried 4-1",
    "Report of the City Manager on water rates",
    "Appointment to the Planning Commission",
    "Public hearing: zoning variance at {n} Main St",
    "Closed session: conference with legal counsel",
    "Roll call: {a}, {b}, Mayor Patel present",
)


def page_text(document: int, page: int, lines: int = 20) -> str:
    """An agenda page: numbered items, deterministic per (document, page)."""
    rng = random.Random(document * 1000 + page)
    out = [f"CITY COUNCIL AGENDA - ITEM LIST {document}.{page}"]
    for n in range(1, lines):
        item = rng.choice(_ITEMS).format(n=rng.randint(100, 9999), a=rng.choice(_BODIES),
                                         b=rng.choice(_BODIES))
        out.append(f"{n}. {item}")
    return "\n".join(out)


def scanned_image(text: str, dpi: int = SCAN_DPI) -> Any:
    """A letter page as a grayscale image with `text` in about 18 pt (as
    tests/support/pipeline.py's PdfFactory draws it)."""
    from PIL import Image, ImageDraw, ImageFont
    width = int(LETTER_POINTS[0] / 72 * dpi)
    height = int(LETTER_POINTS[1] / 72 * dpi)
    image = Image.new("L", (width, height), 255)
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=int(dpi / 4))
    y = int(dpi * 0.75)
    for line in text.splitlines():
        draw.text((int(dpi * 0.75), y), line, fill=0, font=font)
        y += int(dpi / 2.5)
    return image


def write_pdf(path: Path, pages: list[tuple[str, str]]) -> Path:
    """Pages given as ("text" | "scan", content): a text layer, or an image and nothing else."""
    from fpdf import FPDF
    pdf = FPDF(unit="pt", format="letter")
    pdf.set_font("helvetica", size=12)
    for kind, content in pages:
        pdf.add_page()
        if kind == "scan":
            pdf.image(scanned_image(content), x=0, y=0, w=pdf.w, h=pdf.h)
        else:
            pdf.multi_cell(0, 16, content)
    path.parent.mkdir(parents=True, exist_ok=True)
    pdf.output(str(path))
    return path


def meeting_date(document: int) -> date:
    return date(2023, 1, 2) + timedelta(days=7 * document)


def build_site(directory: Path, documents: int, pages: int) -> int:
    """index.html and `documents` PDFs; the last page of each is scanned. Returns pages."""
    links = []
    for d in range(documents):
        name = f"agenda-{d:03d}.pdf"
        content = [("text", page_text(d, p)) for p in range(1, pages)]
        content.append(("scan", page_text(d, pages)))
        write_pdf(directory / name, content)
        links.append(f'<li><a href="{name}">City Council Agenda '
                     f'{meeting_date(d).isoformat()}</a></li>')
    (directory / "index.html").write_text(
        "<!doctype html><html><body><h1>Bench City: agendas</h1><ul>\n"
        + "\n".join(links) + "\n</ul></body></html>\n")
    return documents * pages


# ---------------------------------------------------------------- set-up


@contextlib.contextmanager
def clerk_database(cluster: Cluster, label: str, tmp: Path) -> Iterator[Any]:
    """A fresh database with clerk's schema, and a Pipeline on it with its own storage."""
    from clerk.config import Settings
    from clerk.pipeline import build_pipeline
    name = f"p{next(_counter)}_{label}"[:63]
    with cluster.admin() as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    dsn = cluster.server.url(name)
    root = tmp / name
    try:
        settings = Settings(database_url=dsn, storage_dir=root / "storage",
                            deploy_dir=root / "deploy")
        pipeline = build_pipeline(settings, dsn)
        pipeline.migrate()
        _analyze(dsn)
        yield pipeline
    finally:
        with cluster.admin() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        shutil.rmtree(root, ignore_errors=True)


def _analyze(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("ANALYZE")
        conn.execute("CHECKPOINT")


def _rows(dsn: str, sql: str, params: Any = None) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return conn.execute(sql, params).fetchall()


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


# ---------------------------------------------------------------- OCR


def render_pages(pdf: Path, pages: int, dpi: int, max_pixels: int, out: Path
                 ) -> tuple[list[Path], float]:
    """The pages as PNGs rendered by clerk's own renderer; returns them and s/page."""
    from clerk.pdf import render_page
    out.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    started = time.perf_counter()
    for page in range(1, pages + 1):
        image = render_page(pdf, page, dpi, max_pixels)
        path = out / f"page-{page:03d}.png"
        image.save(path, dpi=(dpi, dpi))
        image.close()
        paths.append(path)
    return paths, (time.perf_counter() - started) / pages


def ocr_direct(images: list[Path], dpi: int) -> dict[str, Any]:
    """One tesseract process per page, one after another, one thread each."""
    env = {**os.environ, "OMP_THREAD_LIMIT": "1"}
    def run(image: Path) -> None:
        subprocess.run(["tesseract", str(image), "stdout", "--dpi", str(dpi)], env=env,
                       check=True, capture_output=True)
    run(images[0])  # warm-up: the traineddata into the page cache
    started = time.perf_counter()
    for image in images:
        run(image)
    seconds = time.perf_counter() - started
    return {"value": len(images) / seconds, "pages": len(images), "seconds": seconds,
            "seconds_per_page": seconds / len(images)}


def _ocr_args(pages: int) -> tuple[Any, list[dict[str, Any]]]:
    from clerk.storage import Document
    document = Document(SITE, "agenda", "City Council", "2024-01-08")
    return document, [{"site": SITE, "kind": "agenda", "meeting": document.meeting,
                       "date": document.date, "page": p} for p in range(1, pages + 1)]


def store_document(pipeline: Any, document: Any, pdf: Path, pages: int) -> str:
    """The site, the document's row and its PDF in the database, as a fetch leaves them."""
    from clerk import blobs
    with pipeline.queue.session() as conn:
        sha = blobs.store_file(conn, pdf).sha256
        conn.execute("INSERT INTO clerk.sites (subdomain, name, source_url) VALUES (%s, %s, "
                     "'http://127.0.0.1/') ON CONFLICT DO NOTHING", (document.site, document.site))
        conn.execute("INSERT INTO clerk.documents (site, kind, meeting, date, url, sha256, pages) "
                     "VALUES (%s, %s, %s, %s, 'http://127.0.0.1/a.pdf', %s, %s)",
                     (document.site, document.kind, document.meeting, document.date, sha, pages))
    return sha


def ocr_queue(cluster: Cluster, tmp: Path, scanned: Path, pages: int, workers: int,
              cache_bytes: int | None = None) -> dict[str, Any]:
    """`pages` ocr_page jobs drained by one worker with `workers` process-isolated slots.
    The PDF is in the database and in the worker's cache (a local file), or, with
    `cache_bytes=0`, streamed from the database by every page job."""
    from dataclasses import replace

    from clerk import blobs
    with clerk_database(cluster, f"ocr{workers}{'db' if cache_bytes == 0 else ''}",
                        tmp) as pipeline:
        document, args = _ocr_args(pages)
        sha = store_document(pipeline, document, scanned, pages)
        if cache_bytes is not None:
            pipeline.settings = replace(pipeline.settings, cache_max_bytes=cache_bytes)
        else:  # warm: the host has the file
            pipeline.cache.load(sha, blobs.database_loader(
                lambda: pipeline.queue.session(atomic=False), sha))
        pipeline.queue.enqueue_many(pipeline.ocr_task, args)
        started = time.perf_counter()
        pipeline.queue.work(["ocr"], concurrency=workers, isolation="process", burst=True,
                            poll_interval=0.5)
        seconds = time.perf_counter() - started
        (done, span, busy), = _rows(pipeline.dsn, """
            SELECT count(*) FILTER (WHERE state = 'succeeded'),
                   extract(epoch FROM max(finished_at) - min(started_at)),
                   extract(epoch FROM avg(finished_at - started_at))
            FROM pgqueue.job_history WHERE task = 'clerk.ocr_page'""")
        (written,), = _rows(pipeline.dsn, "SELECT count(*) FROM clerk.page_reads "
                                          "WHERE text IS NOT NULL")
    if done != pages or written != pages:
        raise RuntimeError(f"OCR with {workers} workers: {done} jobs succeeded, {written} "
                           f"page texts written, of {pages}")
    return {"value": pages / seconds, "pages": pages, "workers": workers, "seconds": seconds,
            "job_span_seconds": float(span), "job_seconds_mean": float(busy)}


def text_layer_skip(text_pdf: Path, scanned_pdf: Path, pages: int, settings: Any
                    ) -> dict[str, Any]:
    from clerk.ocr import read_page
    def per_page(pdf: Path, method: str) -> float:
        started = time.perf_counter()
        for page in range(1, pages + 1):
            result = read_page(pdf, page, settings)
            if result.method != method:
                raise RuntimeError(f"{pdf.name} page {page} was read by {result.method}")
        return (time.perf_counter() - started) / pages
    read_page(text_pdf, 1, settings)  # warm-up
    text_s = per_page(text_pdf, "text-layer")
    scan_s = per_page(scanned_pdf, "ocr")
    return {"value": scan_s / text_s, "text_layer_ms_per_page": text_s * 1000,
            "scanned_ms_per_page": scan_s * 1000, "pages": pages}


def backends_per_page(scanned_pdf: Path, pages: int, settings: Any) -> dict[str, Any]:
    """`read_page` per scanned page with the default engines (pdfium + tesserocr when
    installed) and with the portable ones (Poppler's tools + the tesseract command), taking
    turns page by page so a busy machine slows both alike."""
    from clerk.ocr import TesseractBackend, get_backend, read_page
    from clerk.pdf import PopplerReader, default_reader
    default = (default_reader(), get_backend(settings.default_ocr_backend))
    portable = (PopplerReader(), TesseractBackend())
    read_page(scanned_pdf, 1, settings, reader=default[0], backend=default[1])  # warm-up
    seconds = {"default": 0.0, "portable": 0.0}
    for page in range(1, pages + 1):
        for name, (reader, backend) in (("default", default), ("portable", portable)):
            started = time.perf_counter()
            result = read_page(scanned_pdf, page, settings, reader=reader, backend=backend)
            seconds[name] += time.perf_counter() - started
            if result.method != "ocr":
                raise RuntimeError(f"scanned page {page} was read by {result.method}")
    return {"default_engine": f"{default[0].name}+{default[1].name}",
            "default_seconds_per_page": seconds["default"] / pages,
            "portable_seconds_per_page": seconds["portable"] / pages,
            "default_over_portable": seconds["portable"] / seconds["default"], "pages": pages}


def ocr_figures(cluster: Cluster, sizes: PipelineSizes, tmp: Path) -> dict[str, Any]:
    from clerk.config import Settings
    settings = Settings(storage_dir=tmp / "unused", deploy_dir=tmp / "unused")
    texts = [page_text(0, p) for p in range(1, sizes.ocr_pages + 1)]
    scanned = write_pdf(tmp / "scanned.pdf", [("scan", t) for t in texts])
    born_digital = write_pdf(tmp / "text.pdf", [("text", t) for t in texts])
    images, render_s = render_pages(scanned, sizes.ocr_pages, settings.ocr_dpi,
                                    settings.max_page_pixels, tmp / "rendered")
    direct = ocr_direct(images, settings.ocr_dpi)
    direct["render_seconds_per_page"] = render_s
    _say(f"  pipeline: tesseract direct {direct['value']:.2f} pages/s "
         f"({direct['seconds_per_page'] * 1000:.0f} ms/page; pdftoppm {render_s * 1000:.0f} ms)")
    out: dict[str, Any] = {"dpi": settings.ocr_dpi, "direct": direct}
    engines = backends_per_page(scanned, sizes.ocr_pages, settings)
    engines["default_over_direct"] = (direct["seconds_per_page"]
                                      / engines["default_seconds_per_page"])
    out["engines"] = engines
    _say(f"  pipeline: read_page per scanned page, {engines['default_engine']} "
         f"{engines['default_seconds_per_page'] * 1000:.0f} ms vs Poppler + tesseract command "
         f"{engines['portable_seconds_per_page'] * 1000:.0f} ms "
         f"({engines['default_over_portable']:.2f}x; {engines['default_over_direct']:.2f}x the "
         "tesseract command alone on a rendered image)")
    backend_rate = 1 / engines["default_seconds_per_page"]
    for workers in (1, 2):
        entry = ocr_queue(cluster, tmp, scanned, sizes.ocr_pages, workers)
        entry["ideal"] = workers * direct["value"]
        entry["achieved_over_ideal"] = entry["value"] / entry["ideal"]
        entry["over_backend_alone"] = entry["value"] / (workers * backend_rate)
        out[f"queue_{workers}"] = entry
        _say(f"  pipeline: OCR through the queue, {workers} worker(s) {entry['value']:.2f} "
             f"pages/s = {entry['achieved_over_ideal']:.2f} of ideal, "
             f"{entry['over_backend_alone']:.2f} of read_page alone x {workers}")
    out["scaling_2_over_1"] = out["queue_2"]["value"] / out["queue_1"]["value"]
    through = ocr_queue(cluster, tmp, scanned, sizes.ocr_pages, 1, cache_bytes=0)
    through["over_local"] = through["value"] / out["queue_1"]["value"]
    through["ms_per_page_added"] = (1 / through["value"] - 1 / out["queue_1"]["value"]) * 1000
    through["pdf_bytes"] = scanned.stat().st_size
    through["store"] = store_rates(cluster, tmp)
    through["per_page"] = cache_overhead(cluster, tmp, scanned)
    out["through_database"] = through
    _say(f"  pipeline: every page's PDF from the database {through['value']:.2f} pages/s = "
         f"{through['over_local']:.2f} of a local file ({through['ms_per_page_added']:+.0f} ms "
         f"a page for {through['pdf_bytes'] / 1e6:.1f} MB); store "
         f"{through['store']['store_mb_s']:.0f} MB/s, read back {through['store']['read_mb_s']:.0f} MB/s"
         f"; a page's PDF from the database {through['per_page']['cold_ms']:.1f} ms vs from the "
         f"cache {through['per_page']['warm_ms']:.2f} ms")
    skip = text_layer_skip(born_digital, scanned, sizes.ocr_pages, settings)
    out["text_layer"] = skip
    _say(f"  pipeline: read_page {skip['text_layer_ms_per_page']:.0f} ms (text layer) vs "
         f"{skip['scanned_ms_per_page']:.0f} ms (scan)")
    return out


def store_rates(cluster: Cluster, tmp: Path, megabytes: int = 50) -> dict[str, Any]:
    """A `megabytes` PDF into the database (one transaction, 1 MiB chunks) and back into
    an empty cache (checked, renamed into place): MB/s each way."""
    from clerk import blobs
    from tests.support.big_pdf import padded_pdf
    base = write_pdf(tmp / "base.pdf", [("text", page_text(0, 1))]).read_bytes()
    pdf = padded_pdf(base, tmp / "store.pdf", megabytes * 1000 * 1000)
    size = pdf.stat().st_size
    with clerk_database(cluster, "store", tmp) as pipeline:
        started = time.perf_counter()
        with pipeline.queue.session() as conn:
            sha = blobs.store_file(conn, pdf).sha256
        stored = time.perf_counter() - started
        started = time.perf_counter()
        pipeline.cache.load(sha, blobs.database_loader(
            lambda: pipeline.queue.session(atomic=False), sha))
        read = time.perf_counter() - started
    pdf.unlink()
    return {"bytes": size, "store_mb_s": size / 1e6 / stored, "read_mb_s": size / 1e6 / read,
            "store_seconds": stored, "read_seconds": read}


def cache_overhead(cluster: Cluster, tmp: Path, pdf: Path, repeat: int = 25) -> dict[str, Any]:
    """What a page job pays to get its PDF, without OCR's noise: `BlobCache.use` on a host
    that lacks the document (streamed from the database into the cache, checked, renamed)
    against one that has it (a hard link), medians of `repeat`; and storing it once."""
    import statistics

    from clerk import blobs
    from clerk.storage import Document
    document = Document(SITE, "agenda", "City Council", "2024-01-08")
    with clerk_database(cluster, "cache", tmp) as pipeline:
        started = time.perf_counter()
        sha = store_document(pipeline, document, pdf, 1)
        store_ms = (time.perf_counter() - started) * 1000
        loader = blobs.database_loader(lambda: pipeline.queue.session(atomic=False), sha)
        cache = pipeline.cache
        cold: list[float] = []
        warm: list[float] = []
        for _ in range(repeat):
            cache.path(sha).unlink(missing_ok=True)
            for timings in (cold, warm):
                started = time.perf_counter()
                with cache.use(sha, loader) as path:
                    path.stat()
                timings.append((time.perf_counter() - started) * 1000)
    return {"pdf_bytes": pdf.stat().st_size, "store_ms": store_ms,
            "cold_ms": statistics.median(cold), "warm_ms": statistics.median(warm)}


# ---------------------------------------------------------------- fan-in


def fanin_drain(cluster: Cluster, sizes: PipelineSizes, grouped: bool) -> dict[str, Any]:
    """N no-op jobs, grouped or not, drained by the queue bench's pgqueue worker layout."""
    from bench.contenders import get
    from bench.contenders.pgqueue_c import make_queue
    contender = get("pgqueue")
    layout = contender.layout(sizes.fanin_processes)
    n = sizes.fanin
    with cluster.database(contender, "fanin" if grouped else "flat") as dsn:
        q = make_queue(dsn)
        noop = q.tasks["noop"]
        args = [{"i": i} for i in range(n)]
        if grouped:
            with q.group("bench:fanin", on_complete=[noop.spec(i=-1)]) as group:
                group.enqueue_many(noop, args)
        else:
            q.enqueue_many(noop, args)
        _analyze(dsn)
        workers = Workers(contender, dsn, layout, burst=True).start()
        with psycopg.connect(dsn, autocommit=True) as conn:
            def count(sql: str) -> int:
                row = conn.execute(sql).fetchone()
                return int(row[0]) if row else 0
            capped = False
            try:
                started = workers.go()
                while True:
                    time.sleep(POLL)
                    pending = count("SELECT count(*) FROM pgqueue.jobs")
                    elapsed = time.perf_counter() - started
                    if pending == 0 and (not grouped or count(
                            "SELECT count(*) FROM pgqueue.job_history"
                            " WHERE group_id IS NULL AND args->>'i' = '-1'")):
                        break
                    if elapsed > FANIN_CAP:
                        capped = True
                        break
                    if not workers.alive():
                        raise RuntimeError(f"fan-in workers exited with {pending} jobs left: "
                                           f"{workers.failed()}")
            finally:
                workers.stop(grace=0.0 if capped else 5.0)
            entry: dict[str, Any] = {
                "value": (n - pending) / elapsed, "jobs": n - pending, "seconds": elapsed,
                "capped": capped, "grouped": grouped, "layout": layout.describe(),
                "worker_failures": workers.failed()}
            if grouped and not capped:
                row = conn.execute("""
                    SELECT extract(epoch FROM f.started_at - m.last) * 1000,
                           (SELECT count(*) FROM pgqueue.groups WHERE completed_at IS NOT NULL)
                    FROM (SELECT max(finished_at) AS last FROM pgqueue.job_history
                          WHERE group_id IS NOT NULL) m,
                         pgqueue.job_history f
                    WHERE f.group_id IS NULL AND f.args->>'i' = '-1'""").fetchone()
                if row:
                    # started_at and finished_at are transaction starts (now()): a claim in
                    # a transaction begun before the last finish committed can show < 0
                    entry["followup_delay_ms"] = float(row[0])
                    entry["groups_completed"] = int(row[1])
    return entry


def fanin_figures(cluster: Cluster, sizes: PipelineSizes, repeat: int = 1) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for grouped in (False, True):
        key = "grouped" if grouped else "ungrouped"
        out[key] = median_run([fanin_drain(cluster, sizes, grouped) for _ in range(repeat)])
        _say(f"  pipeline: drain {sizes.fanin:,} {key} {out[key]['value']:,.0f} jobs/s")
    out["grouped_over_ungrouped"] = out["grouped"]["value"] / out["ungrouped"]["value"]
    return out


# ---------------------------------------------------------------- end to end


def end_to_end(cluster: Cluster, sizes: PipelineSizes, tmp: Path) -> dict[str, Any]:
    from clerk import db as clerk_db
    from clerk.config import QUEUES
    from clerk.demo import serve_directory
    site_files = tmp / "site"
    pages = build_site(site_files, sizes.site_documents, sizes.pages_per_document)
    with clerk_database(cluster, "e2e", tmp) as pipeline, serve_directory(site_files) as url:
        dsn = pipeline.dsn
        pipeline.allow_url(url)  # the bench site on 127.0.0.1 (clerk.network refuses it)
        clerk_db.fetch_all(dsn, "add_site", {"subdomain": SITE, "name": "Bench City",
                                             "source_url": url + "index.html",
                                             "source_kind": "index", "token": None})
        (origin,), = _rows(dsn, "SELECT clock_timestamp()")
        started = time.perf_counter()
        pipeline.enqueue_site(SITE, "normal")
        pipeline.queue.work(list(QUEUES), concurrency=sizes.e2e_concurrency,
                            isolation="process", burst=True, poll_interval=0.5)
        wall = time.perf_counter() - started
        stages = _rows(dsn, """
            SELECT task, count(*), count(*) FILTER (WHERE state = 'succeeded'),
                   extract(epoch FROM min(started_at) - %(t)s),
                   extract(epoch FROM max(finished_at) - %(t)s),
                   extract(epoch FROM sum(finished_at - started_at))
            FROM pgqueue.job_history GROUP BY task ORDER BY min(started_at)""", {"t": origin})
        deployed = (pipeline.settings.deploy_dir / f"{SITE}.db").exists()
    by_task = {task: {"jobs": jobs, "succeeded": ok, "first_start_s": float(first),
                      "last_finish_s": float(last), "busy_s": float(busy)}
               for task, jobs, ok, first, last, busy in stages}
    deploy = by_task.get("clerk.deploy")
    if not deploy or not deploy["succeeded"] or not deployed:
        raise RuntimeError(f"the site was not deployed: {by_task}")
    ocr = by_task["clerk.ocr_page"]
    if ocr["succeeded"] != pages:
        raise RuntimeError(f"{ocr['succeeded']} of {pages} pages read")
    after = [by_task[t]["first_start_s"] for t in ("clerk.compile", "clerk.extract")
             if t in by_task]
    seconds = deploy["last_finish_s"]
    return {"value": seconds, "pages": pages, "documents": sizes.site_documents,
            "scanned_pages": sizes.site_documents, "pages_per_second": pages / seconds,
            "wall_seconds": wall, "concurrency": sizes.e2e_concurrency,
            "fanin_delay_ms": (min(after) - ocr["last_finish_s"]) * 1000 if after else None,
            "stages": by_task}


# ---------------------------------------------------------------- all, report, CLI


def run_all(cluster: Cluster, sizes: PipelineSizes, repeat: int = 1,
            say: Callable[[str], None] = _say) -> dict[str, Any]:
    started = time.monotonic()
    results: dict[str, Any] = {"sizes": sizes.as_dict()}
    with tempfile.TemporaryDirectory(prefix="bench-pipeline-") as name:
        tmp = Path(name)
        runs: list[tuple[str, Callable[[], dict[str, Any]]]] = [
            ("ocr", lambda: ocr_figures(cluster, sizes, tmp)),
            ("fanin", lambda: fanin_figures(cluster, sizes, repeat)),
            ("end_to_end", lambda: end_to_end(cluster, sizes, tmp))]
        for key, run in runs:
            try:
                results[key] = run()
            except Exception as error:  # one figure failing must not lose the others
                import traceback
                traceback.print_exc()
                results[key] = {"error": repr(error)}
            if key == "end_to_end" and "value" in results[key]:
                e2e = results[key]
                say(f"  pipeline: {e2e['pages']} pages enqueue -> deployed in "
                    f"{e2e['value']:.1f} s")
    results["seconds"] = time.monotonic() - started
    return results


def render(results: dict[str, Any]) -> str:
    out = ["pipeline (clerk on pgqueue)"]
    ocr = results.get("ocr", {})
    if "direct" in ocr:
        direct = ocr["direct"]
        out.append(f"  OCR, {direct['pages']} scanned pages at {ocr['dpi']} dpi:")
        out.append(f"    tesseract direct, 1 process    {direct['value']:6.2f} pages/s"
                   f"  ({direct['seconds_per_page'] * 1000:.0f} ms/page; rendering adds "
                   f"{direct['render_seconds_per_page'] * 1000:.0f} ms)")
        for workers in (1, 2):
            q = ocr[f"queue_{workers}"]
            out.append(f"    queue, {workers} worker{'s' if workers > 1 else ' '}"
                       f"               {q['value']:6.2f} pages/s  ideal {q['ideal']:.2f}"
                       f"  achieved/ideal {q['achieved_over_ideal']:.2f}")
        out.append(f"    2 workers / 1 worker           {ocr['scaling_2_over_1']:6.2f}x")
        through = ocr.get("through_database")
        if through:
            store = through["store"]
            out.append(f"    1 worker, every page's PDF streamed from the database (cache 0 B) "
                       f"{through['value']:.2f} pages/s = {through['over_local']:.2f} of a local "
                       f"file ({through['ms_per_page_added']:+.0f} ms/page, "
                       f"{through['pdf_bytes'] / 1e6:.1f} MB PDF)")
            page = through["per_page"]
            out.append(f"    a page job's PDF ({page['pdf_bytes'] / 1e6:.1f} MB): from the database "
                       f"{page['cold_ms']:.1f} ms, from this host's cache {page['warm_ms']:.2f} ms "
                       f"(median of 25; stored once in {page['store_ms']:.0f} ms); a scanned page's "
                       f"read_page is {ocr['engines']['default_seconds_per_page'] * 1000:.0f} ms")
            out.append(f"    store {store['bytes'] / 1e6:.0f} MB: into the database "
                       f"{store['store_mb_s']:.0f} MB/s, back into an empty cache "
                       f"{store['read_mb_s']:.0f} MB/s")
        engines = ocr.get("engines")
        if engines:
            out.append(f"  read_page per scanned page: {engines['default_engine']} "
                       f"{engines['default_seconds_per_page'] * 1000:.0f} ms, Poppler + "
                       f"tesseract command {engines['portable_seconds_per_page'] * 1000:.0f} ms "
                       f"({engines['default_over_portable']:.2f}x); "
                       f"{engines['default_over_direct']:.2f}x the tesseract command alone "
                       "on a rendered image")
            out.append("    queue / (read_page alone x workers): " + ", ".join(
                f"{w} worker{'s' if w > 1 else ''} {ocr[f'queue_{w}']['over_backend_alone']:.2f}"
                for w in (1, 2)))
        skip = ocr["text_layer"]
        out.append(f"  read_page: text layer {skip['text_layer_ms_per_page']:.0f} ms/page, "
                   f"scan {skip['scanned_ms_per_page']:.0f} ms/page "
                   f"(the text layer is {skip['value']:.0f}x faster)")
    elif "error" in ocr:
        out.append(f"  OCR: failed: {ocr['error']}")
    fanin = results.get("fanin", {})
    if "grouped" in fanin:
        flat, grouped = fanin["ungrouped"], fanin["grouped"]
        out.append(f"  fan-in, {flat['jobs']:,} no-op jobs, {flat['layout']}:")
        out.append(f"    ungrouped {flat['value']:8,.0f} jobs/s   one group "
                   f"{grouped['value']:8,.0f} jobs/s   grouped/ungrouped "
                   f"{fanin['grouped_over_ungrouped']:.2f}")
    elif "error" in fanin:
        out.append(f"  fan-in: failed: {fanin['error']}")
    e2e = results.get("end_to_end", {})
    if "value" in e2e:
        out.append(f"  end to end, {e2e['pages']} pages in {e2e['documents']} documents "
                   f"({e2e['scanned_pages']} scanned), 1 worker x {e2e['concurrency']} slots:")
        out.append(f"    enqueue -> deployed {e2e['value']:.1f} s "
                   f"({e2e['pages_per_second']:.1f} pages/s); fan-in delay "
                   f"{e2e['fanin_delay_ms']:.0f} ms")
        for task, stage in e2e["stages"].items():
            out.append(f"    {task:<15} {stage['jobs']:4d} jobs  {stage['first_start_s']:6.1f}"
                       f" -> {stage['last_finish_s']:6.1f} s  busy {stage['busy_s']:6.1f} s")
    elif "error" in e2e:
        out.append(f"  end to end: failed: {e2e['error']}")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    import json
    from datetime import datetime

    from bench.harness import machine_facts
    from bench.report import RESULTS_DIR
    parser = argparse.ArgumentParser(prog="python -m bench.pipeline", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="6 OCR pages, 30-page site")
    parser.add_argument("--repeat", type=int, default=1, help="runs of each fan-in drain")
    parser.add_argument("--output", help="JSON path (default bench/results/<stamp>-pipeline.json)")
    defaults = PipelineSizes()
    for name, value in defaults.as_dict().items():
        parser.add_argument(f"--{name.replace('_', '-')}", type=type(value), default=None,
                            help=f"(default {value})")
    args = parser.parse_args(argv)
    sizes = PipelineSizes.quick() if args.quick else PipelineSizes()
    for name in sizes.as_dict():
        if getattr(args, name) is not None:
            setattr(sizes, name, getattr(args, name))
    cluster = Cluster().start()
    try:
        results = {"machine": {**machine_facts(), **cluster.facts()},
                   "pipeline": run_all(cluster, sizes, args.repeat)}
    finally:
        cluster.stop()
    print(render(results["pipeline"]))
    path = Path(args.output) if args.output else (
        RESULTS_DIR / f"{datetime.now():%Y%m%d-%H%M%S}-pipeline.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2, default=str) + "\n")
    print(f"took {results['pipeline']['seconds']:.0f} s; JSON: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
