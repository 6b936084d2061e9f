"""The content-addressed document store and the host cache (clerk.blobs, issue 16), on a
real PostgreSQL: stored once, streamed in chunks, nothing half-stored when the bytes are
wrong or the database goes away mid-stream, cache entries atomic and evicted oldest
first, and a 200 MB PDF through a worker in bounded memory."""

from __future__ import annotations

import functools
import hashlib
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import IO, Any

import psycopg
import pytest

from clerk import blobs
from clerk.blobs import CHUNK_BYTES, BlobCache, BlobCorrupt
from pgqueue.db import connect
from tests.support.big_pdf import padded_pdf
from tests.support.pipeline import PdfFactory

ROOT = Path(__file__).resolve().parents[2]


def count(db_url: str, table: str) -> int:
    with connect(db_url, autocommit=True) as conn:
        row = conn.execute(f"SELECT count(*) AS n FROM clerk.{table}").fetchone()
        assert row is not None
        return int(row["n"])


def write_all(body: bytes, out: IO[bytes]) -> int:
    return out.write(body)


def some_bytes(path: Path, size: int) -> Path:
    path.write_bytes(os.urandom(size))
    return path


def test_a_document_is_stored_once_and_streams_back_in_chunks(db_url: str, tmp_path: Path) -> None:
    file = some_bytes(tmp_path / "a.pdf", 2 * CHUNK_BYTES + 12345)
    sha = hashlib.sha256(file.read_bytes()).hexdigest()
    with connect(db_url) as conn:
        first = blobs.store_file(conn, file, max_bytes=10 * CHUNK_BYTES)
        conn.commit()
        again = blobs.store_file(conn, file, sha256=sha)
        conn.commit()
    assert (first.sha256, first.created, again.created) == (sha, True, False)
    assert (count(db_url, "blobs"), count(db_url, "blob_chunks")) == (1, 3)
    out = tmp_path / "out.pdf"
    with connect(db_url) as conn, out.open("wb") as handle:
        assert blobs.read_blob(conn, sha, handle) == file.stat().st_size
    assert out.read_bytes() == file.read_bytes()
    with connect(db_url) as conn, pytest.raises(blobs.BlobError, match="MAX_PDF_BYTES"):
        blobs.store_file(conn, file, max_bytes=CHUNK_BYTES)
    with connect(db_url) as conn, out.open("wb") as handle, pytest.raises(blobs.BlobMissing):
        blobs.read_blob(conn, "0" * 64, handle)


def test_bytes_that_are_not_what_was_expected_leave_nothing(db_url: str, tmp_path: Path) -> None:
    """A file truncated or changed between its download and its upload: BlobCorrupt, and
    the transaction that carried its chunks leaves no trace."""
    file = some_bytes(tmp_path / "a.pdf", CHUNK_BYTES + 10)
    claimed = hashlib.sha256(b"the bytes that were downloaded").hexdigest()
    with connect(db_url) as conn:
        with pytest.raises(BlobCorrupt, match="changed while it was stored"), conn.transaction():
            blobs.store_file(conn, file, sha256=claimed)
    assert (count(db_url, "blobs"), count(db_url, "blob_chunks")) == (0, 0)


def test_the_database_going_away_mid_store_leaves_nothing(
        db_url: str, admin_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    file = some_bytes(tmp_path / "a.pdf", 4 * CHUNK_BYTES)
    real_run = blobs._run
    conn = connect(db_url)

    def run(connection: Any, name: str, params: dict[str, Any] | None = None) -> Any:
        if name == "blob_chunk_insert" and params and params["seq"] == 2:
            with psycopg.connect(admin_url, autocommit=True) as admin:  # the server drops us
                admin.execute("SELECT pg_terminate_backend(%s)", (conn.info.backend_pid,))
        return real_run(connection, name, params)

    monkeypatch.setattr(blobs, "_run", run)
    with pytest.raises(psycopg.OperationalError):
        blobs.store_file(conn, file)
    conn.close()
    monkeypatch.setattr(blobs, "_run", real_run)
    assert (count(db_url, "blobs"), count(db_url, "blob_chunks")) == (0, 0)


def test_the_database_going_away_mid_read_leaves_the_cache_as_it_was(
        db_url: str, admin_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    file = some_bytes(tmp_path / "a.pdf", 4 * CHUNK_BYTES)
    with connect(db_url) as conn:
        sha = blobs.store_file(conn, file).sha256
        conn.commit()
    real_run = blobs._run
    conn = connect(db_url, autocommit=True)

    def run(connection: Any, name: str, params: dict[str, Any] | None = None) -> Any:
        if name == "blob_chunk" and params and params["seq"] == 2:
            with psycopg.connect(admin_url, autocommit=True) as admin:
                admin.execute("SELECT pg_terminate_backend(%s)", (conn.info.backend_pid,))
        return real_run(connection, name, params)

    monkeypatch.setattr(blobs, "_run", run)
    cache = BlobCache(tmp_path / "storage", 10 * CHUNK_BYTES)
    with pytest.raises(psycopg.OperationalError):
        cache.load(sha, lambda out: blobs.read_blob(conn, sha, out))
    conn.close()
    assert not cache.has(sha)
    assert sorted(p.name for p in cache.dir.iterdir()) == []  # no temporary file either


def test_cache_entries_arrive_whole_and_checked(tmp_path: Path) -> None:
    cache = BlobCache(tmp_path, 10 * CHUNK_BYTES)
    body = os.urandom(3 * CHUNK_BYTES)
    sha = hashlib.sha256(body).hexdigest()
    seen: list[list[str]] = []

    def interrupted(out: IO[bytes]) -> int:
        out.write(body[:CHUNK_BYTES])
        out.flush()
        seen.append(sorted(p.name for p in cache.dir.iterdir()))  # mid-load: a temp only
        raise ConnectionError("gone")

    with pytest.raises(ConnectionError):
        cache.load(sha, interrupted)
    assert seen == [[next(iter(seen[0]))]] and seen[0][0].endswith(".part")
    assert not cache.has(sha) and list(cache.dir.iterdir()) == []

    with pytest.raises(BlobCorrupt):
        cache.load(sha, lambda out: out.write(body[:-1] + b"x"))
    assert not cache.has(sha) and list(cache.dir.iterdir()) == []

    assert cache.load(sha, lambda out: out.write(body)).read_bytes() == body


def test_the_cache_evicts_oldest_first_and_never_from_under_a_reader(tmp_path: Path) -> None:
    cache = BlobCache(tmp_path, 2 * CHUNK_BYTES)
    bodies = [os.urandom(CHUNK_BYTES) for _ in range(3)]
    shas = [hashlib.sha256(body).hexdigest() for body in bodies]
    for index, (sha, body) in enumerate(zip(shas, bodies, strict=True)):
        cache.load(sha, functools.partial(write_all, body))
        os.utime(cache.path(sha), (1000 + index, 1000 + index))
    cache.evict()
    assert [cache.has(sha) for sha in shas] == [False, True, True]  # the oldest went
    with cache.use(shas[1], lambda out: 0):  # a use makes it the newest
        pass
    fourth = os.urandom(CHUNK_BYTES)
    cache.load(hashlib.sha256(fourth).hexdigest(), lambda out: out.write(fourth))
    assert [cache.has(sha) for sha in shas] == [False, True, False]  # 2 was older than 1 now
    big = os.urandom(3 * CHUNK_BYTES)  # larger than the whole cache
    big_sha = hashlib.sha256(big).hexdigest()
    with cache.use(big_sha, lambda out: out.write(big)) as path:
        assert not cache.has(big_sha)  # evicted at once...
        assert path.read_bytes() == big  # ...and still this job's to read
    assert cache.size() <= cache.max_bytes
    assert list((cache.dir / "using").iterdir()) == []


def test_garbage_collection_keeps_what_a_document_refers_to(db_url: str, tmp_path: Path) -> None:
    kept, dropped = (some_bytes(tmp_path / f"{n}.pdf", 1000) for n in ("kept", "dropped"))
    with connect(db_url) as conn:
        sha = blobs.store_file(conn, kept).sha256
        blobs.store_file(conn, dropped)
        conn.execute("INSERT INTO clerk.sites (subdomain, name, source_url) "
                     "VALUES ('town', 'Town', 'http://example.org/')")
        conn.execute("INSERT INTO clerk.documents (site, kind, meeting, date, url, sha256) "
                     "VALUES ('town', 'minutes', 'Council', '2024-01-05', 'http://x/', %s)", (sha,))
        conn.commit()
    assert blobs.collect_garbage_at(db_url) == (1, 1000)
    with connect(db_url) as conn:
        assert blobs.blob_exists(conn, sha)


# -- a 200 MB PDF through a worker --------------------------------------------------------

WORKER = """
import resource, sys, time
from pathlib import Path
from clerk.config import load_settings
from clerk.pipeline import build_pipeline
from clerk import blobs
dsn, path, storage, site = sys.argv[1], Path(sys.argv[2]), sys.argv[3], sys.argv[4]
settings = load_settings(None, {"CLERK_STORAGE_DIR": storage, "CLERK_CACHE_MAX_BYTES": "1000"})
pipeline = build_pipeline(settings, dsn)
started = time.monotonic()
with pipeline.queue.session() as conn:
    stored = blobs.store_file(conn, path, max_bytes=settings.max_pdf_bytes)
    conn.execute("INSERT INTO clerk.documents (site, kind, meeting, date, url, sha256, pages) "
                 "VALUES (%s, 'minutes', 'Council', '2024-01-05', 'http://x/', %s, 1)",
                 (site, stored.sha256))
stored_in = time.monotonic() - started
pipeline.ocr_page(site, "minutes", "Council", "2024-01-05", 1)
with pipeline.queue.session() as conn:
    text = conn.execute("SELECT text FROM clerk.page_reads WHERE site = %s", (site,)).fetchone()["text"]
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(f"peak_rss={peak} stored_s={stored_in:.1f} total_s={time.monotonic() - started:.1f} "
      f"text={text[:30]!r}")
"""


def run_worker(db_url: str, pdf: Path, storage: Path, site: str) -> dict[str, str]:
    with connect(db_url, autocommit=True) as conn:
        conn.execute("INSERT INTO clerk.sites (subdomain, name, source_url) "
                     "VALUES (%s, 'Big', 'http://example.org/')", (site,))
    result = subprocess.run([sys.executable, "-c", WORKER, db_url, str(pdf), str(storage), site],
                            cwd=ROOT, capture_output=True, text=True, timeout=600,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert result.returncode == 0, result.stderr[-3000:]
    line = result.stdout.strip().splitlines()[-1]
    assert "heron" in line, line
    return dict(part.split("=", 1) for part in line.split(" ") if "=" in part)


def test_a_200_mb_pdf_streams_through_a_worker_in_bounded_memory(
        db_url: str, tmp_path: Path, pdf_factory: PdfFactory) -> None:
    """Stored from its file and read back into an empty cache (smaller than the document)
    by one worker process, which then reads its page: the process's peak RSS is that of the
    same work on a 1 MB document plus far less than the file's size."""
    base = pdf_factory.text_pdf("base.pdf", ["Council minutes: the heron count was approved "
                                             "by all members present"]).read_bytes()
    size = 200 * 1000 * 1000
    small = run_worker(db_url, padded_pdf(base, tmp_path / "small.pdf", 1000 * 1000),
                       tmp_path / "s1", "small")
    big_pdf = padded_pdf(base, tmp_path / "big.pdf", size)
    big = run_worker(db_url, big_pdf, tmp_path / "s2", "big")
    growth = int(big["peak_rss"]) - int(small["peak_rss"])
    print(f"\n200 MB PDF stored and read back by one worker: peak RSS "
          f"{int(big['peak_rss']) / 1e6:.0f} MB (a 1 MB one: {int(small['peak_rss']) / 1e6:.0f} MB), "
          f"stored in {big['stored_s']} s, {big['total_s']} s in all")
    assert growth < size // 8, f"peak RSS grew {growth / 1e6:.0f} MB for a {size / 1e6:.0f} MB document"
    assert count(db_url, "blob_chunks") == (-(-big_pdf.stat().st_size // CHUNK_BYTES)
                                            + -(-1000 * 1000 // CHUNK_BYTES))


def test_a_page_read_from_an_older_version_writes_nothing(db_url: str, tmp_path: Path) -> None:
    """The document changed while one of its pages was being read: that page's text,
    of the old version, is not stored over the new version's."""
    from clerk.ocr import PageText
    from clerk.storage import Document

    old, new = (hashlib.sha256(name.encode()).hexdigest() for name in ("old", "new"))
    document = Document("town", "minutes", "Council", "2024-01-05")
    with connect(db_url) as conn:
        conn.execute("INSERT INTO clerk.sites (subdomain, name, source_url) "
                     "VALUES ('town', 'Town', 'http://example.org/')")
        conn.execute("INSERT INTO clerk.documents (site, kind, meeting, date, url, sha256, pages) "
                     "VALUES ('town', 'minutes', 'Council', '2024-01-05', 'http://x/', %s, 1)",
                     (new,))
        text = PageText("the old version's words", "ocr", decision="ocr", engine="test")
        assert not blobs.save_page_text(conn, document, 1, text, sha256=old, dpi=200, seconds=1.0)
        assert blobs.save_page_text(conn, document, 1, replace(text, text="new words"),
                                    sha256=new, dpi=200, seconds=1.0)
        conn.commit()
        rows = conn.execute("SELECT text, sha256, dpi FROM clerk.page_reads").fetchall()
    assert rows == [{"text": "new words", "sha256": new, "dpi": 200}]
