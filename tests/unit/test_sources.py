"""Source plugins: dates as cities write them, index links, manifest validation."""

import json

import pytest

from clerk.sources import SOURCES, DocumentRef, SourceError, get_source
from clerk.sources.dates import parse_date
from clerk.sources.index import guess_kind, guess_meeting, parse_index
from clerk.sources.manifest import ManifestError, parse_manifest


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024-01-05", "2024-01-05"),
        ("cc_2024_01_05.pdf", "2024-01-05"),
        ("agenda20240105", "2024-01-05"),
        ("Agenda 1/5/2024", "2024-01-05"),
        ("1-5-24 minutes", "2024-01-05"),
        ("SSA21_MeetingMinutes_1.29.18.pdf", "2018-01-29"),
        ("January 5, 2024", "2024-01-05"),
        ("Jan 5 2024", "2024-01-05"),
        ("Jan. 5th, 2024", "2024-01-05"),
        ("Sept 12 2023", "2023-09-12"),
        ("5 January 2024", "2024-01-05"),
        ("12/31/99", "1999-12-31"),
        ("Notice-and-Agenda-001-2023-06-06", "2023-06-06"),
        ("2/30/2024", None),
        ("version 1.2.3", None),
        ("no date here", None),
    ],
)
def test_parse_date(text: str, expected: str | None) -> None:
    assert parse_date(text) == expected


def test_kind_from_words_defaults_to_agenda() -> None:
    assert guess_kind("City Council Minutes") == "minutes"
    assert guess_kind("", "SSA21_MeetingMinutes_1.29.18") == "minutes"
    assert guess_kind("Agenda Packet") == "agenda"
    assert guess_kind("City Council 2024-01-05") == "agenda"


def test_meeting_from_remaining_words() -> None:
    assert guess_meeting("City Council Agenda - January 5, 2024", (22, 37)) == "City Council"
    assert guess_meeting("planning_commission_minutes") == "Planning Commission"
    assert guess_meeting("Agenda (120 KB)") is None


PAGE = """
<html><head><base href="/clerk/"></head><body>
<a href="2024/cc-agenda.pdf">City Council Agenda - January 5, 2024</a>
<a href="https://files.example.org/SSA21_MeetingMinutes_1.29.18.pdf">Download</a>
<a href="docs/PC%20Minutes%201-5-24.pdf?v=2">Planning Commission Minutes (120 KB)</a>
<a href="docs/PC%20Minutes%201-5-24.pdf?v=2#page=2">duplicate</a>
<a href="file:///etc/passwd.pdf">City Council Agenda 1/1/2024</a>
<a href="javascript:alert(1)">Agenda</a>
<a href="ftp://files.example.org/a-2024-01-01.pdf">FTP agenda</a>
<a href="/about.html">About</a>
<a href="undated.pdf">Agenda</a>
</body></html>
"""


def test_parse_index_resolves_and_reads_links() -> None:
    result = parse_index(PAGE, "https://city.example.gov/meetings/")
    assert result.documents == [
        DocumentRef(
            "https://city.example.gov/clerk/2024/cc-agenda.pdf",
            "City Council",
            "2024-01-05",
            "agenda",
        ),
        DocumentRef(
            "https://files.example.org/SSA21_MeetingMinutes_1.29.18.pdf",
            "SSA21",
            "2018-01-29",
            "minutes",
        ),
        DocumentRef(
            "https://city.example.gov/clerk/docs/PC%20Minutes%201-5-24.pdf?v=2",
            "Planning Commission",
            "2024-01-05",
            "minutes",
        ),
    ]
    rejected = {item.url: item.reason for item in result.rejected}
    assert "scheme 'file' refused" in rejected["file:///etc/passwd.pdf"]
    assert "javascript:alert(1)" in rejected
    assert "ftp://files.example.org/a-2024-01-01.pdf" in rejected
    assert rejected["https://city.example.gov/clerk/undated.pdf"].startswith("no date")


VALID = [
    {"url": "https://c.gov/a.pdf", "meeting": "City Council", "date": "2024-01-05", "kind": "agenda"},
    {"url": "b.pdf", "meeting": "Planning", "date": "2024-02-01", "kind": "minutes"},
]


def test_manifest_parses_and_resolves_relative_urls() -> None:
    documents = parse_manifest(json.dumps(VALID), base_url="https://c.gov/docs/list.json")
    assert documents[1] == DocumentRef("https://c.gov/docs/b.pdf", "Planning", "2024-02-01", "minutes")


def test_manifest_reports_every_problem_with_its_entry() -> None:
    bad = [
        {"url": "file:///etc/passwd", "meeting": "x", "date": "2024-01-05", "kind": "agenda"},
        {"url": "https://c.gov/a.pdf", "meeting": "", "date": "1/5/2024", "kind": "notes"},
        "not an object",
        {"url": "https://c.gov/a.pdf", "meeting": "x", "date": "2024-01-05", "kind": "agenda", "extra": 1},
    ]
    with pytest.raises(ManifestError) as caught:
        parse_manifest(json.dumps(bad))
    message = str(caught.value)
    assert "entry 0: 'url'" in message and "file" in message
    assert "entry 1: 'meeting' is required" in message
    assert "entry 2: expected an object" in message
    assert "entry 3: unknown field(s) 'extra'" in message


@pytest.mark.parametrize("data", ["{", '{"url": 1}', "[]x"])
def test_manifest_must_be_a_json_list(data: str) -> None:
    with pytest.raises(ManifestError):
        parse_manifest(data)


def test_manifest_date_must_be_iso() -> None:
    entry = {**VALID[0], "date": "2024-02-30"}
    with pytest.raises(ManifestError, match="'date' '2024-02-30'"):
        parse_manifest(json.dumps([entry]))


def test_registry() -> None:
    assert set(SOURCES) == {"index", "manifest", "legistar", "civicplus", "primegov"}
    for kind in SOURCES:
        assert callable(get_source(kind).discover)
    with pytest.raises(SourceError, match="unknown source kind 'granicus'"):
        get_source("granicus")
