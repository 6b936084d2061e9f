"""Extraction on the real minutes, and the per-page cache across runs."""

import subprocess
from pathlib import Path

import pytest

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
