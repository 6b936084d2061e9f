"""Extraction on the real minutes, and the per-page cache across runs."""

import json
import sqlite3
import subprocess
from pathlib import Path

import pytest

from clerk.compile import compile_site
from clerk.config import Settings
from clerk.extract import ExtractionCache, Extractor, Person, extract_site, text_sha256
from clerk.ocr import write_page_text
from clerk.storage import Document
from tests.support.pipeline import CIVIC

MINUTES = CIVIC / "minutes" / "SSA21_MeetingMinutes_1.29.18.pdf"


@pytest.fixture(scope="module")
def minutes_text() -> str:
    return subprocess.run(
        ["pdftotext", "-layout", str(MINUTES), "-"], capture_output=True, text=True, check=True
    ).stdout


def test_real_minutes(minutes_text: str) -> None:
    entities = Extractor(Settings()).extract(minutes_text)
    motions = [(m.mover, m.seconder, m.result) for m in entities.motions]
    assert motions == [
        ("M. Prest", "C. Dallas", None),
        ("Z. Maiorca", "T. Feinberg", "passed"),
        ("B. Munro", "C. Dallas", "passed"),
        ("B. Munro", "Z. Maiorca", "passed"),
    ]
    assert "Minutes from 11/30/17 meeting approved" in entities.motions[1].text
    present = {
        "Anthony Qaiyum",
        "Zach Maiorca",
        "Melaina Prest",
        "Chris Dallas",
        "Ben Munro",
        "Todd Feinberg",
        "Shelley Young",
        "Pat Bader",
    }
    assert present <= {p.name for p in entities.people if p.title == "Commissioner"}
    assert Person("Todd Feinberg", "Commissioner") in entities.people
    assert entities.votes == []


def _site(tmp_path: Path, minutes_text: str) -> Path:
    doc = Document("lincolnsquare", "minutes", "SSA 21 Commission", "2018-01-29")
    for page, text in enumerate(minutes_text.split("\f")[:2], start=1):
        write_page_text(doc.page_text_path(tmp_path, page), text)
    agenda = Document("lincolnsquare", "agenda", "SSA 21 Commission", "2018-01-29")
    write_page_text(agenda.page_text_path(tmp_path, 1), "Resolution No. 2018-3 Mayor Diaz")
    return tmp_path / "lincolnsquare"


def test_extract_site_caches_by_text(tmp_path: Path, minutes_text: str) -> None:
    site = _site(tmp_path, minutes_text)
    settings = Settings(storage_dir=tmp_path)
    extractor = Extractor(settings)
    first = extract_site(site, settings, extractor=extractor)
    assert (first.pages, first.extracted, first.cached) == (3, 3, 0)
    second = extract_site(site, settings, extractor=extractor)
    assert (second.pages, second.extracted, second.cached) == (3, 0, 3)

    agenda_page = site / "txt" / "_agendas" / "SSA 21 Commission" / "2018-01-29" / "1.txt"
    write_page_text(agenda_page, "Ordinance 77 was introduced.")
    third = extract_site(site, settings, extractor=extractor)
    assert (third.pages, third.extracted, third.cached) == (3, 1, 2)
    with ExtractionCache(site) as cache:
        assert cache.get(text_sha256("Ordinance 77 was introduced.")).references == [("ordinance", "77")]
        # the replaced page's entry was pruned
        assert cache.get(text_sha256("Resolution No. 2018-3 Mayor Diaz")) is None


MEETING_1 = (
    "Present: Mayor Patricia Alvarez, Councilmembers Grace Lindqvist, Helen Tran\n"
    "Moved by Councilmember Lindqvist, seconded by Councilmember Tran, to approve the consent\n"
    "calendar as presented.\n"
    "AYES: Alvarez, Lindqvist, Tran\n"
    "NOES: None\n"
    "Motion carried 3-0.\n"
)
MEETING_2_PAGE_2 = (
    "Moved by Mayor Alvarez, seconded by Councilmember Lindqvist, to introduce Ordinance No. 12.\n"
    "Ayes: Alvarez, Lindqvist. Noes: Tran. Motion carried 2-1.\n"
)


def test_compiled_votes_join_people_and_motions_across_a_site(tmp_path: Path) -> None:
    first = Document("town", "minutes", "City Council", "2024-01-05")
    second = Document("town", "minutes", "City Council", "2024-02-02")
    write_page_text(first.page_text_path(tmp_path, 1), MEETING_1)
    write_page_text(second.page_text_path(tmp_path, 1), "Call to order. Pledge of allegiance.")
    write_page_text(second.page_text_path(tmp_path, 2), MEETING_2_PAGE_2)
    site = tmp_path / "town"
    extract_site(site, Settings(storage_dir=tmp_path))
    urls = {"minutes/City Council/2024-02-02": "https://town.gov/m.pdf"}
    result = compile_site(site, entities=True, document_urls=urls)
    assert (result.people, result.motions, result.roll_calls, result.votes) == (3, 2, 2, 6)

    with sqlite3.connect(result.path) as db:
        db.row_factory = sqlite3.Row
        people = {row["name"]: row for row in db.execute("SELECT * FROM people")}
        # "Mayor Patricia Alvarez", "Mayor Alvarez" and "Alvarez" are one person
        assert set(people) == {"Patricia Alvarez", "Grace Lindqvist", "Helen Tran"}
        alvarez = people["Patricia Alvarez"]
        assert (alvarez["title"], json.loads(alvarez["aliases"])) == ("Mayor", ["Alvarez"])
        assert (alvarez["first_date"], alvarez["last_date"], alvarez["pages"]) == (
            "2024-01-05",
            "2024-02-02",
            2,
        )
        # the query the README shows: how did each member vote
        rows = db.execute(
            "SELECT person, vote, motion, outcome, tally, meeting, date, page, page_url"
            " FROM person_votes WHERE person = ? ORDER BY date",
            ("Helen Tran",),
        ).fetchall()
        assert [(r["vote"], r["outcome"], r["tally"], r["date"], r["page"]) for r in rows] == [
            ("aye", "passed", "3-0", "2024-01-05", 1),
            ("no", "passed", "2-1", "2024-02-02", 2),
        ]
        assert "introduce Ordinance No. 12" in rows[1]["motion"]
        assert rows[0]["page_url"] is None and rows[1]["page_url"] == "https://town.gov/m.pdf#page=2"
        # the tables join on ids too: votes -> people, motions, roll calls; movers -> people
        joined = db.execute(
            "SELECT people.name, motions.result, roll_calls.tally, mover.name AS mover"
            " FROM votes JOIN people ON people.id = votes.person_id"
            " JOIN motions ON motions.id = votes.motion_id"
            " JOIN roll_calls ON roll_calls.id = votes.roll_call_id"
            " JOIN people AS mover ON mover.id = motions.mover_id"
            " WHERE votes.date = '2024-02-02' ORDER BY people.name"
        ).fetchall()
        assert [tuple(r) for r in joined] == [
            ("Grace Lindqvist", "passed", "2-1", "Patricia Alvarez"),
            ("Helen Tran", "passed", "2-1", "Patricia Alvarez"),
            ("Patricia Alvarez", "passed", "2-1", "Patricia Alvarez"),
        ]
        assert db.execute("SELECT count(*) FROM votes WHERE person_id IS NULL").fetchone()[0] == 0
