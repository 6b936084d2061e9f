"""The on-disk layout: safe meeting names, contained paths, stable ids, streaming walk."""

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from clerk.sites import InvalidSubdomain
from clerk.storage import (
    MAX_MEETING_BYTES,
    Document,
    StorageError,
    iter_site_pages,
    meeting_slug,
    page_id,
    safe_meeting_name,
)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("City Council", "City Council"),
        ("Planning Commission", "Planning Commission"),
        ("../../etc", "etc"),
        ("Parks/Recreation", "Parks-Recreation"),
        ("a\\b", "a-b"),
        (".hidden", "hidden"),
        ("_agendas", "agendas"),
        ("City\x00Council\n", "City Council"),
        ("   ", "Meeting"),
        ("..", "Meeting"),
        ("Budget..Hearing", "Budget.Hearing"),
    ],
)
def test_safe_meeting_name(raw: str, expected: str) -> None:
    assert safe_meeting_name(raw) == expected


@given(st.text())
def test_safe_meeting_name_is_always_one_safe_segment(raw: str) -> None:
    name = safe_meeting_name(raw)
    assert name and "/" not in name and "\\" not in name and ".." not in name
    assert not name.startswith((".", "_"))
    assert all(ch.isprintable() for ch in name)
    assert len(name.encode()) <= MAX_MEETING_BYTES


@given(st.text())
def test_document_paths_stay_inside_storage(raw: str) -> None:
    root = Path("/srv/storage")
    document = Document("alameda.ca", "agenda", raw, "2024-01-05")
    for path in (document.pdf_path(root), document.page_text_path(root, 3)):
        assert root in path.parents


def test_layout_matches_civic_sites(tmp_path: Path) -> None:
    minutes = Document("pleasanton", "minutes", "City Council", "2024-01-05")
    agenda = Document("pleasanton", "agenda", "City Council", "2024-01-05")
    site = tmp_path / "pleasanton"
    assert minutes.pdf_path(tmp_path) == site / "pdfs/City Council/2024-01-05.pdf"
    assert agenda.pdf_path(tmp_path) == site / "pdfs/_agendas/City Council/2024-01-05.pdf"
    assert minutes.page_text_path(tmp_path, 2) == site / "txt/City Council/2024-01-05/2.txt"
    assert agenda.page_text_path(tmp_path, 1) == (site / "txt/_agendas/City Council/2024-01-05/1.txt")


def test_page_ids_are_stable_and_prefixed_for_agendas() -> None:
    assert page_id("minutes", "City Council", "2024-01-05", 3) == "city-council-2024-01-05-3"
    assert page_id("agenda", "City Council", "2024-01-05", 1) == ("agenda-city-council-2024-01-05-1")
    assert meeting_slug("Comité d'Été") == "comite-d-ete"


@pytest.mark.parametrize(
    ("site", "kind", "date", "error"),
    [
        ("../x", "agenda", "2024-01-05", InvalidSubdomain),
        ("ok", "notes", "2024-01-05", StorageError),
        ("ok", "agenda", "2024-13-01", StorageError),
        ("ok", "agenda", "01/05/2024", StorageError),
    ],
)
def test_invalid_identities_are_refused(site: str, kind: str, date: str, error: type) -> None:
    with pytest.raises(error):
        Document(site, kind, "City Council", date)  # type: ignore[arg-type]


@pytest.mark.parametrize("page", [0, -1, True])
def test_pages_count_from_one(page: int, tmp_path: Path) -> None:
    with pytest.raises(StorageError):
        Document("ok", "agenda", "x", "2024-01-05").page_text_path(tmp_path, page)


def test_iter_site_pages_is_ordered_and_skips_junk(tmp_path: Path) -> None:
    def write(doc: Document, page: int) -> None:
        path = doc.page_text_path(tmp_path, page)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"{doc.meeting} {page}")

    council = Document("town", "minutes", "City Council", "2024-01-05")
    planning = Document("town", "agenda", "Planning", "2023-12-01")
    for page in (10, 2, 1):
        write(council, page)
    write(planning, 1)
    site = tmp_path / "town"
    (council.text_dir(tmp_path) / ".3.txt.abc.tmp").write_text("partial")
    (council.text_dir(tmp_path) / "notes.md").write_text("x")
    (site / "txt" / "City Council" / "not-a-date").mkdir()

    records = list(iter_site_pages(site))
    assert [(r.kind, r.meeting, r.date, r.page) for r in records] == [
        ("minutes", "City Council", "2024-01-05", 1),
        ("minutes", "City Council", "2024-01-05", 2),
        ("minutes", "City Council", "2024-01-05", 10),
        ("agenda", "Planning", "2023-12-01", 1),
    ]
    assert records[0].read_text() == "City Council 1"
    assert records[3].id == "agenda-planning-2023-12-01-1"
    assert list(iter_site_pages(tmp_path / "missing")) == []
