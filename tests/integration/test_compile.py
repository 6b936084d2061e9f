"""compile_site builds a searchable meetings.db atomically from the files on disk."""

import sqlite3
import threading
from pathlib import Path

import sqlite_utils

from clerk.compile import compile_site
from clerk.config import Settings
from clerk.extract import extract_site
from clerk.ocr import write_page_text
from clerk.storage import Document


def _site(tmp_path: Path) -> Path:
    pages = {
        Document("town", "minutes", "City Council", "2024-01-05"): [
            "Motion by Councilmember Smith, seconded by Mayor Jones. Motion carried 5-0.",
            "AYES: Smith, Jones\nNOES: Lee\nAdopted Resolution No. 2024-15.",
        ],
        Document("town", "agenda", "City Council", "2024-01-05"): ["Budget hearings scheduled"],
        Document("town", "agenda", "Planning Commission", "2023-12-01"): ["Zoning variances"],
    }
    for document, texts in pages.items():
        for page, text in enumerate(texts, start=1):
            write_page_text(document.page_text_path(tmp_path, page), text)
    return tmp_path / "town"


def test_compile_pages_with_fts(tmp_path: Path) -> None:
    site = _site(tmp_path)
    urls = {"agenda/City Council/2024-01-05": "https://town.gov/a.pdf"}
    result = compile_site(site, entities=False, document_urls=urls)
    assert (result.path, result.agendas, result.minutes) == (site / "meetings.db", 2, 2)
    db = sqlite_utils.Database(result.path)
    assert {"agendas", "minutes", "agendas_fts", "minutes_fts"} <= set(db.table_names())
    assert "people" not in db.table_names()
    row = db["agendas"].get("agenda-city-council-2024-01-05-1")
    assert row["document_url"] == "https://town.gov/a.pdf" and row["page"] == 1
    # porter stemming: "hearing" finds "hearings"
    hits = [r["id"] for r in db["agendas"].search("hearing")]
    assert hits == ["agenda-city-council-2024-01-05-1"]
    assert [r["id"] for r in db["minutes"].search("carried")] == ["city-council-2024-01-05-1"]
    assert any(index.columns == ["meeting", "date"] for index in db["minutes"].indexes)
    db.close()
    assert [p.name for p in site.iterdir() if p.name.startswith(".")] == []


def test_compile_with_entities_reads_the_cache(tmp_path: Path) -> None:
    site = _site(tmp_path)
    extract_site(site, Settings(storage_dir=tmp_path))
    result = compile_site(site, entities=True)
    assert result.motions == 1 and result.missing_entities == 0
    db = sqlite_utils.Database(result.path)
    motion = next(db["motions"].rows)
    assert (motion["page_id"], motion["mover"], motion["seconder"], motion["result"]) == (
        "city-council-2024-01-05-1",
        "Smith",
        "Jones",
        "passed",
    )
    assert ("resolution", "2024-15") in [(r["kind"], r["number"]) for r in db["references"].rows]
    assert motion["tally"] == "5-0"
    assert [r["tally"] for r in db["roll_calls"].rows] == ["2-1"]
    names = {r["name"] for r in db["people"].rows}
    assert {"Smith", "Jones", "Lee"} <= names
    db.close()


def test_compile_without_cache_counts_missing(tmp_path: Path) -> None:
    result = compile_site(_site(tmp_path), entities=True)
    assert result.missing_entities == 4 and result.people == 0


def test_concurrent_compiles_leave_one_complete_database(tmp_path: Path) -> None:
    site = _site(tmp_path)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            compile_site(site, entities=False)
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    with sqlite3.connect(site / "meetings.db") as connection:
        assert connection.execute("select count(*) from agendas").fetchone() == (2,)
    connection.close()
    assert sorted(p.name for p in site.iterdir()) == ["meetings.db", "txt"]


def test_empty_site_compiles(tmp_path: Path) -> None:
    site = tmp_path / "empty"
    result = compile_site(site, entities=True)
    assert (result.agendas, result.minutes) == (0, 0)
    assert result.path.is_file()
