"""Documents and page texts in PostgreSQL; STORAGE_DIR as each host's bounded cache.

Machines share nothing but the database. The fetch host stores each downloaded PDF in the
database; an OCR host that lacks it streams it into its cache; the compiling host writes
the layout Datasette users know (`pdfs/`, `txt/`, `meetings.db`, clerk.storage) from the
database. So any host can run any stage, and no shared filesystem is needed.

The store
    `blobs` (sha256, size, chunks) and `blob_chunks` (sha256, seq, 1 MiB of bytea). A PDF
    is content-addressed: an unchanged or republished document, or one that two sites
    link, is stored once. It streams in and out a chunk at a time (never whole in memory),
    and a blob row commits in the transaction that stores its chunks, with the document row
    that refers to it: a blob is complete or absent, never half-stored. Why bytea chunks and
    not large objects: a chunk is an ordinary row, so a removed site's blobs go with a
    DELETE (large objects need lo_unlink or vacuumlo, and leak when forgotten), vacuum and
    autovacuum reclaim them like any table, pg_dump dumps them as table data (large objects
    dump one by one, with their own ACLs, and a thousand cities are millions of them),
    logical replication carries them (it skips large objects), and the size per site is a
    sum. TOAST stores each 1 MiB chunk out of line; PDFs are already compressed, so the
    column is EXTERNAL (no second compression attempt). A thousand cities at ~500 MB of PDFs
    each is ~500 GB in about 500,000 chunk rows: small for a btree, and nothing in the
    database ever reads a whole table of them.

Page texts
    `page_reads` (clerk migration 0004) gains the text, the document version (sha256) it
    was read from, the dpi and the seconds the read took. A page job of an older version
    writes nothing; a document that changes loses its old pages.

The rule for documents that leave a site
    A document no longer listed by the city is kept, with its PDF and pages: the archive
    keeps what a city took down. A document that changes keeps only its new version; a
    blob no document refers to any more (the old version, a removed site's documents) is
    deleted by `collect_garbage`, which `clerk site remove`, `clerk purge` and `clerk prune`
    run. It holds an advisory lock exclusively while every store holds it shared, so a blob
    being referred to right now is never collected.

The cache
    `STORAGE_DIR/.cache/<sha256>.pdf`, bounded by CACHE_MAX_BYTES and evicted oldest first
    (a use touches the file). A file arrives atomically: streamed into a temporary file in
    the cache directory, its sha256 and size checked, fsynced, then renamed into place. A
    job uses a hard link of its own to the cached file (`.cache/using/`), so an eviction by
    another process on the host never pulls a PDF from under a page being read, and a
    document larger than the whole cache is still read (evicted again afterwards).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from pgqueue.sql import Statements, sql_root

log = logging.getLogger(__name__)

CHUNK_BYTES = 1024 * 1024
CACHE_DIR = ".cache"
USING_DIR = "using"
INCOMING_DIR = "incoming"  # a fetch's downloads, until stored and adopted
STALE_PART_SECONDS = 3600.0  # a temporary file older than this was left by a dead process
_BLOB_NAME = re.compile(r"([0-9a-f]{64})\.pdf")
_SHA256 = re.compile(r"[0-9a-f]{64}")


class BlobError(Exception):
    """A document that cannot be stored or read back."""


class BlobMissing(BlobError):
    """The database has no such document (never stored, or collected)."""


class BlobCorrupt(BlobError):
    """Bytes whose size or sha256 is not what was expected (a truncated file or stream)."""


_STATEMENTS: Statements | None = None


def statements() -> Statements:
    """sql/clerk/blobs.sql for clerk's schema (loaded on first use)."""
    global _STATEMENTS
    if _STATEMENTS is None:
        from clerk.db import CLERK_SCHEMA

        _STATEMENTS = Statements(CLERK_SCHEMA, sql_root() / "clerk" / "blobs.sql")
    return _STATEMENTS


def _run(conn: Any, name: str, params: dict[str, Any] | None = None) -> Any:
    return conn.execute(getattr(statements(), name), params or {})


def check_sha256(sha256: str) -> str:
    if not isinstance(sha256, str) or not _SHA256.fullmatch(sha256):
        raise BlobError(f"invalid sha256 {sha256!r}")
    return sha256


@dataclass(frozen=True)
class StoredBlob:
    sha256: str
    size: int
    created: bool  # False: the same bytes were stored already


def store_file(conn: Any, path: Path, *, sha256: str | None = None,
               max_bytes: int | None = None) -> StoredBlob:
    """Store the file at `path` as a blob, in the caller's transaction, a chunk at a time.

    Nothing is stored when the blob exists already. The bytes are hashed as they stream:
    a file whose sha256 or size differs from what was expected (truncated, changed on
    disk) raises BlobCorrupt, and the caller's transaction, rolled back, leaves nothing.
    A file over `max_bytes` (MAX_PDF_BYTES) is refused before a byte is sent.
    """
    path = Path(path)
    size = path.stat().st_size
    if max_bytes is not None and size > max_bytes:
        raise BlobError(f"{path.name}: {size} bytes, more than MAX_PDF_BYTES={max_bytes}")
    if sha256 is None:
        sha256 = sha256_file(path)
    check_sha256(sha256)
    _run(conn, "blob_lock_shared")
    existing = _run(conn, "blob_get", {"sha256": sha256}).fetchone()
    if existing is not None:
        return StoredBlob(sha256, int(existing["size"]), False)
    if _run(conn, "blob_insert", {"sha256": sha256, "size": size}).fetchone() is None:
        return StoredBlob(sha256, size, False)  # stored meanwhile by another transaction
    digest = hashlib.sha256()
    written = seq = 0
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK_BYTES):
            digest.update(chunk)
            written += len(chunk)
            if written > size:
                break
            _run(conn, "blob_chunk_insert", {"sha256": sha256, "seq": seq, "data": chunk})
            seq += 1
    if written != size or digest.hexdigest() != sha256:
        raise BlobCorrupt(f"{path.name}: the file changed while it was stored "
                          f"({written} of {size} bytes, sha256 {digest.hexdigest()[:12]} "
                          f"instead of {sha256[:12]})")
    _run(conn, "blob_complete", {"sha256": sha256, "size": size, "chunks": seq})
    return StoredBlob(sha256, size, True)


def blob_exists(conn: Any, sha256: str | None) -> bool:
    return bool(sha256) and _run(conn, "blob_get", {"sha256": sha256}).fetchone() is not None


def read_blob(conn: Any, sha256: str, out: IO[bytes]) -> int:
    """Write a blob to `out` a chunk at a time; check its size and sha256; return its size.

    One short query per chunk (no transaction held open across the stream): memory holds
    one chunk, whatever the document's size.
    """
    check_sha256(sha256)
    row = _run(conn, "blob_get", {"sha256": sha256}).fetchone()
    if row is None:
        raise BlobMissing(f"document {sha256[:12]} is not stored in the database "
                          "(a run of its site stores it again)")
    digest = hashlib.sha256()
    written = 0
    for seq in range(int(row["chunks"])):
        chunk_row = _run(conn, "blob_chunk", {"sha256": sha256, "seq": seq}).fetchone()
        if chunk_row is None:
            raise BlobMissing(f"document {sha256[:12]} was deleted while it was read")
        data = bytes(chunk_row["data"])
        digest.update(data)
        out.write(data)
        written += len(data)
        del data, chunk_row
    if written != int(row["size"]) or digest.hexdigest() != sha256:
        raise BlobCorrupt(f"document {sha256[:12]}: read {written} of {row['size']} bytes, "
                          "or its sha256 differs")
    return written


def collect_garbage(conn: Any) -> tuple[int, int]:
    """Delete the blobs no document refers to; return (blobs, bytes) deleted. Run it in a
    transaction of its own: it holds the store's lock exclusively until it commits."""
    _run(conn, "blob_lock_exclusive")
    sizes = [int(row["size"]) for row in _run(conn, "blob_collect_garbage").fetchall()]
    return len(sizes), sum(sizes)


def collect_garbage_at(dsn: str) -> tuple[int, int]:
    """`collect_garbage` on a connection of its own."""
    from pgqueue.db import connect

    with connect(dsn) as conn, conn.transaction():
        return collect_garbage(conn)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        while block := handle.read(CHUNK_BYTES):
            digest.update(block)
    return digest.hexdigest()


# -- page texts --------------------------------------------------------------------------

def save_page_text(conn: Any, document: Any, page: int, result: Any, *, sha256: str,
                   dpi: int | None, seconds: float) -> bool:
    """Store a page's text and how it was read (a clerk.ocr.PageText). False when the
    document has changed since (or is gone): a stale page writes nothing."""
    from clerk.triage import alnum_count

    row = _run(conn, "save_page_text", {
        "site": document.site, "kind": document.kind, "meeting": document.meeting,
        "date": document.date, "page": page, "method": result.method,
        "decision": result.decision or "text-layer", "reason": result.reason,
        "engine": result.engine, "chars": alnum_count(result.text),
        "text": result.text.replace("\x00", ""), "sha256": sha256, "dpi": dpi,
        "seconds": round(seconds, 3)}).fetchone()
    return row is not None


def pages_with_text(conn: Any, document: Any) -> set[int]:
    key = {"site": document.site, "kind": document.kind, "meeting": document.meeting,
           "date": document.date}
    return {int(row["page"]) for row in _run(conn, "pages_with_text", key).fetchall()}


def clear_page_texts(conn: Any, document: Any) -> None:
    _run(conn, "clear_page_texts", {"site": document.site, "kind": document.kind,
                                    "meeting": document.meeting, "date": document.date})


def site_storage(conn: Any, site: str) -> dict[str, int]:
    """What a site holds in the database: documents, PDF bytes, pages, text bytes."""
    row = _run(conn, "site_storage", {"site": site}).fetchone()
    return {key: int(value) for key, value in dict(row).items()}


def site_storage_of(pipeline: Any, site: str) -> dict[str, int]:
    """`site_storage` through a clerk Pipeline's pooled connections (for `clerk status`)."""
    with pipeline.queue.session(atomic=False) as conn:
        return site_storage(conn, site)


def storage_line(storage: dict[str, int]) -> str:
    """`clerk status --subdomain`'s line for what the site holds in the database."""
    return (f"storage: {storage['documents']} documents, {human_bytes(storage['pdf_bytes'])} "
            f"of PDFs, {storage['pages']} page texts ({human_bytes(storage['text_bytes'])})")


def human_bytes(size: int) -> str:
    value = float(size)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if value < 1024 or unit == "TB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"


# -- the cache ---------------------------------------------------------------------------

Loader = Callable[[IO[bytes]], int]


class BlobCache:
    """A host's cache of PDFs by sha256 under `STORAGE_DIR/.cache`, at most `max_bytes`."""

    def __init__(self, storage_dir: Path, max_bytes: int) -> None:
        self.dir = Path(storage_dir) / CACHE_DIR
        self.max_bytes = int(max_bytes)

    def path(self, sha256: str) -> Path:
        return self.dir / f"{check_sha256(sha256)}.pdf"

    def has(self, sha256: str) -> bool:
        return self.path(sha256).is_file()

    def _temp(self, sha256: str) -> tuple[int, Path]:
        self.dir.mkdir(parents=True, exist_ok=True)
        descriptor, name = tempfile.mkstemp(dir=self.dir, prefix=f".{sha256}.", suffix=".part")
        return descriptor, Path(name)

    def load(self, sha256: str, loader: Loader) -> Path:
        """Fill the cache entry from `loader` (which writes the bytes to a file), atomically:
        a temporary file, checked against its sha256, fsynced and renamed into place. On
        any error the temporary file goes and the cache is as it was. Then evict."""
        path = self._fill(sha256, loader)
        self.evict()
        return path

    def _fill(self, sha256: str, loader: Loader) -> Path:
        path = self.path(sha256)
        descriptor, temp = self._temp(sha256)
        try:
            with os.fdopen(descriptor, "wb") as handle:
                loader(handle)
                handle.flush()
                os.fsync(handle.fileno())
            if sha256_file(temp) != sha256:
                raise BlobCorrupt(f"document {sha256[:12]}: the cached copy's sha256 differs")
            os.replace(temp, path)
        except BaseException:
            temp.unlink(missing_ok=True)
            raise
        return path

    def incoming(self) -> Path:
        """A new path for a download, in the cache's filesystem (so adopting it is a
        rename); what a killed fetch leaves there is swept after an hour."""
        directory = self.dir / INCOMING_DIR
        directory.mkdir(parents=True, exist_ok=True)
        return directory / f"{uuid.uuid4().hex}.pdf"

    def adopt(self, file: Path, sha256: str) -> Path:
        """Move a file whose sha256 is known (a fresh download) into the cache."""
        path = self.path(sha256)
        self.dir.mkdir(parents=True, exist_ok=True)
        os.replace(file, path)
        self.evict()
        return path

    @contextlib.contextmanager
    def use(self, sha256: str, loader: Loader) -> Iterator[Path]:
        """A path to the document for as long as the block runs: a hard link of this job's
        own to the cache entry, loaded first when the host lacks it."""
        using = self.dir / USING_DIR
        using.mkdir(parents=True, exist_ok=True)
        link = using / f"{os.getpid()}-{uuid.uuid4().hex[:12]}-{sha256}.pdf"
        for _attempt in range(5):
            path = self.path(sha256)
            try:
                os.link(path, link)
                with contextlib.suppress(FileNotFoundError):
                    os.utime(path)  # used: the newest, evicted last
                break
            except FileNotFoundError:
                self._fill(sha256, loader)  # evicted only once this job holds its link
        else:
            raise BlobError(f"document {sha256[:12]}: evicted from the cache as fast as it "
                            "was loaded (CACHE_MAX_BYTES too small for the jobs of this host?)")
        try:
            self.evict()
            yield link
        finally:
            link.unlink(missing_ok=True)

    def entries(self) -> list[tuple[float, int, Path]]:
        """(mtime, size, path) of every cached document, oldest first."""
        found: list[tuple[float, int, Path]] = []
        try:
            with os.scandir(self.dir) as listing:
                for entry in listing:
                    if _BLOB_NAME.fullmatch(entry.name) and entry.is_file(follow_symlinks=False):
                        with contextlib.suppress(FileNotFoundError):
                            stat = entry.stat(follow_symlinks=False)
                            found.append((stat.st_mtime, stat.st_size, Path(entry.path)))
        except FileNotFoundError:
            return []
        return sorted(found)

    def size(self) -> int:
        return sum(size for _, size, _ in self.entries())

    def evict(self) -> int:
        """Delete the oldest documents until the cache fits its bound; return how many.
        Temporary files and job links left by dead processes go too."""
        self._sweep()
        entries = self.entries()
        total = sum(size for _, size, _ in entries)
        evicted = 0
        for _, size, path in entries:
            if total <= self.max_bytes:
                break
            path.unlink(missing_ok=True)
            total -= size
            evicted += 1
        return evicted

    def _sweep(self) -> None:
        now = time.time()
        for directory, stale in ((self.dir, lambda name: name.endswith(".part")),
                                 (self.dir / INCOMING_DIR, lambda name: True)):
            with contextlib.suppress(FileNotFoundError), os.scandir(directory) as listing:
                for entry in listing:
                    if stale(entry.name) and entry.is_file(follow_symlinks=False):
                        with contextlib.suppress(FileNotFoundError):
                            if now - entry.stat().st_mtime > STALE_PART_SECONDS:
                                os.unlink(entry.path)
        with contextlib.suppress(FileNotFoundError), os.scandir(self.dir / USING_DIR) as links:
            for entry in links:
                pid = entry.name.split("-", 1)[0]
                if pid.isdigit() and not _alive(int(pid)):
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(entry.path)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def database_loader(connection: Callable[[], contextlib.AbstractContextManager[Any]],
                    sha256: str) -> Loader:
    """A cache loader streaming the blob from the database on a connection of `connection`."""
    def load(out: IO[bytes]) -> int:
        with connection() as conn:
            return read_blob(conn, sha256, out)
    return load


# -- an existing installation's STORAGE_DIR, loaded into the database ---------------------

@dataclass
class ImportResult:
    documents: int = 0  # PDFs stored (or found stored already)
    bytes: int = 0
    pages: int = 0  # page texts loaded
    skipped: list[str] | None = None  # why a document was not loaded

    def line(self, site: str) -> str:
        skipped = self.skipped or []
        return (f"{site}: {self.documents} documents ({human_bytes(self.bytes)}), "
                f"{self.pages} page texts loaded"
                + (f", {len(skipped)} skipped" if skipped else ""))


def import_site(connection: Callable[[], contextlib.AbstractContextManager[Any]], site: str,
                storage_dir: Path, *, max_bytes: int) -> ImportResult:
    """Load what an installation from before issue 16 keeps on disk: each document's PDF
    when it is the version the database records (its sha256), and the page texts read
    from it that the database lacks. A PDF that differs from the record is skipped (the
    site's next run fetches it), and its page texts with it. One transaction per
    document, so an interrupted import is resumed by running it again."""
    from clerk.storage import Document
    from clerk.triage import alnum_count

    result = ImportResult(skipped=[])
    assert result.skipped is not None
    with connection() as conn:
        documents = _run(conn, "site_documents", {"site": site}).fetchall()
    for row in documents:
        document = Document(site, row["kind"], row["meeting"], row["date"])
        name = f"{row['kind']} {row['meeting']} {row['date']}"
        pdf = document.pdf_path(storage_dir)
        if not row["sha256"] or not pdf.is_file():
            result.skipped.append(f"{name}: no PDF on disk")
            continue
        if sha256_file(pdf) != row["sha256"]:
            result.skipped.append(f"{name}: the PDF on disk is not the version recorded")
            continue
        try:
            with connection() as conn, conn.transaction():
                stored = store_file(conn, pdf, sha256=row["sha256"], max_bytes=max_bytes)
                for page in range(1, int(row["pages"] or 0) + 1):
                    path = document.page_text_path(storage_dir, page)
                    if not path.is_file():
                        continue
                    text = path.read_text(encoding="utf-8", errors="replace").replace("\x00", "")
                    if _run(conn, "import_page_text", {
                            "site": site, "kind": document.kind, "meeting": document.meeting,
                            "date": document.date, "page": page, "chars": alnum_count(text),
                            "text": text}).fetchone() is not None:
                        result.pages += 1
        except BlobError as error:
            result.skipped.append(f"{name}: {error}")
            continue
        result.documents += 1
        result.bytes += stored.size
    return result


# -- the on-disk layout, written from the database -----------------------------------------

@dataclass
class ExportResult:
    pages_written: int = 0
    pages_removed: int = 0
    pdfs_written: int = 0


def export_site(conn: Any, site: str, storage_dir: Path, cache: BlobCache | None = None, *,
                pdfs: bool = True) -> ExportResult:
    """Write a site's `txt/` (and `pdfs/`) under STORAGE_DIR from the database.

    The database is the truth: a page text that differs is rewritten (atomically), one the
    database does not have (an older version's, a page past the document's end) is removed,
    and a PDF is written when the file is missing or another version (a hard link from the
    host's cache when it has it, else streamed from the database). Rows stream through a
    server-side cursor, so memory does not grow with the site.
    """
    from clerk.ocr import write_page_text
    from clerk.sites import site_dir
    from clerk.storage import TEXT_DIR, Document

    result = ExportResult()
    root = site_dir(storage_dir, site)
    wanted: set[Path] = set()
    with conn.transaction(), conn.cursor(name=f"clerk_export_{uuid.uuid4().hex[:8]}") as cursor:
        cursor.itersize = 200
        cursor.execute(statements().site_page_texts, {"site": site})
        for row in cursor:
            document = Document(site, row["kind"], row["meeting"], row["date"])
            path = document.page_text_path(storage_dir, int(row["page"]))
            wanted.add(path)
            try:
                current = path.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError):
                current = None
            if current != row["text"]:
                write_page_text(path, row["text"])
                result.pages_written += 1
    text_root = root / TEXT_DIR
    if text_root.is_dir():
        for path in list(text_root.rglob("*.txt")):
            if path not in wanted and not path.name.startswith("."):
                path.unlink(missing_ok=True)
                result.pages_removed += 1
    if pdfs:
        for row in _run(conn, "site_documents_stored", {"site": site}).fetchall():
            document = Document(site, row["kind"], row["meeting"], row["date"])
            if _write_pdf(conn, document.pdf_path(storage_dir), row["sha256"], int(row["size"]),
                          cache):
                result.pdfs_written += 1
    return result


def _pdf_is(path: Path, sha256: str, size: int) -> bool:
    """Whether the layout's PDF is this version: its size, then its recorded sha256 (an
    extended attribute when the filesystem has them, else the bytes)."""
    try:
        if path.stat().st_size != size:
            return False
    except FileNotFoundError:
        return False
    with contextlib.suppress(OSError, AttributeError):
        return os.getxattr(path, "user.clerk.sha256").decode() == sha256
    return sha256_file(path) == sha256


def _write_pdf(conn: Any, path: Path, sha256: str, size: int, cache: BlobCache | None) -> bool:
    if _pdf_is(path, sha256, size):
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    temp = Path(name)
    try:
        cached = cache.path(sha256) if cache is not None else None
        with os.fdopen(descriptor, "wb") as handle:
            if cached is not None and cached.is_file():
                with cached.open("rb") as source:
                    while block := source.read(CHUNK_BYTES):
                        handle.write(block)
            else:
                read_blob(conn, sha256, handle)
            handle.flush()
            os.fsync(handle.fileno())
        if sha256_file(temp) != sha256:
            raise BlobCorrupt(f"{path.name}: the copy's sha256 differs")
        with contextlib.suppress(OSError, AttributeError):
            os.setxattr(temp, "user.clerk.sha256", sha256.encode())
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    return True
