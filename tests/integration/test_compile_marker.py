"""Two real compiles of one run: a fast compile never renames over the full one.

The fast compile (pages only) and the full compile (with entities) of a pipeline run may
run at once on two compilation workers. The fast one is held half-way through its build
(its document-URL lookups wait on an event the test controls) while the full one runs to
the end; released, the fast one must leave the full database in place.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import sqlite_utils

from clerk.compile import MARKER_FILE, CompileResult, compile_site
from clerk.config import Settings
from clerk.extract import extract_site
from clerk.ocr import write_page_text
from clerk.storage import Document

ENTITY_TABLES = {"people", "motions", "votes", "references"}


def _site(tmp_path: Path) -> Path:
    write_page_text(Document("town", "minutes", "City Council", "2024-01-05").page_text_path(tmp_path, 1),
                    "Motion by Councilmember Smith, seconded by Mayor Jones. Motion carried 5-0.")
    write_page_text(Document("town", "agenda", "City Council", "2024-01-05").page_text_path(tmp_path, 1),
                    "Budget hearings scheduled")
    site = tmp_path / "town"
    extract_site(site, Settings(storage_dir=tmp_path))
    return site


class GatedUrls(dict[str, str]):
    """Document URLs whose first lookup waits for the test: holds a compile mid-build."""

    def __init__(self) -> None:
        super().__init__({"agenda/City Council/2024-01-05": "https://town.gov/a.pdf"})
        self.reached = threading.Event()
        self.release = threading.Event()

    def get(self, key: str, default: Any = None) -> Any:
        self.reached.set()
        assert self.release.wait(60), "the test never released the fast compile"
        return super().get(key, default)


def tables(site: Path) -> set[str]:
    db = sqlite_utils.Database(site / "meetings.db")
    try:
        return set(db.table_names())
    finally:
        db.close()


def test_a_fast_compile_that_started_first_does_not_replace_the_full_one(tmp_path: Path) -> None:
    site = _site(tmp_path)
    urls = GatedUrls()
    fast: list[CompileResult | BaseException] = []

    def compile_fast() -> None:
        try:
            fast.append(compile_site(site, entities=False, document_urls=urls, run="run-7"))
        except BaseException as error:
            fast.append(error)

    thread = threading.Thread(target=compile_fast)
    thread.start()
    try:
        assert urls.reached.wait(60), "the fast compile never started building"
        full = compile_site(site, entities=True, run="run-7")  # runs to the end meanwhile
        assert not full.skipped and full.motions == 1
    finally:
        urls.release.set()
        thread.join(60)
    (result,) = fast
    assert isinstance(result, CompileResult), result
    assert result.skipped
    assert ENTITY_TABLES <= tables(site)  # the full database is the one in place
    assert json.loads((site / MARKER_FILE).read_text()) == {"run": "run-7", "entities": True}
    assert [p.name for p in site.iterdir() if p.name.endswith(".tmp")] == []


def test_the_full_compile_replaces_a_fast_one_and_a_new_run_replaces_both(tmp_path: Path) -> None:
    site = _site(tmp_path)
    assert not compile_site(site, entities=False, run="run-1").skipped
    assert not ENTITY_TABLES & tables(site)
    assert not compile_site(site, entities=True, run="run-1").skipped
    assert ENTITY_TABLES <= tables(site)
    assert compile_site(site, entities=False, run="run-1").skipped  # late: kept out at once
    assert ENTITY_TABLES <= tables(site)
    assert not compile_site(site, entities=False, run="run-2").skipped  # new content: replaces
    assert not ENTITY_TABLES & tables(site)
