"""Extraction patterns on synthetic civic sentences (the real minutes are in integration)."""

import pytest

from clerk.config import Settings
from clerk.extract import Extractor, Motion, PageEntities, Person, Vote, split_names, strip_title


@pytest.fixture(scope="module")
def extractor() -> Extractor:
    return Extractor(Settings())


@pytest.mark.parametrize(
    ("text", "mover", "seconder"),
    [
        (
            "Motion by Councilmember Smith, seconded by Vice Mayor Jones, to approve the minutes.",
            "Smith",
            "Jones",
        ),
        ("Moved by Commissioner Ana Lee, seconded by Commissioner Park.", "Ana Lee", "Park"),
        (
            "It was moved by Trustee Garcia and seconded by Trustee Chen to adopt the budget.",
            "Garcia",
            "Chen",
        ),
        ("Garcia moved, Chen seconded.", "Garcia", "Chen"),
        ("Council Member O'Brien moved to continue the item, seconded by Mayor Diaz.", "O'Brien", "Diaz"),
        ("Budget approved - B. Munro (motion), Z. Maiorca (second)", "B. Munro", "Z. Maiorca"),
        ("Motion: Alderman Novak  Second: Alderwoman Reyes", "Novak", "Reyes"),
        # minutes wrap lines: the seconder's name on the next line
        ("Councilmember Diaz moved to approve the budget amendment, seconded by\n"
         "Councilmember Lee.", "Diaz", "Lee"),
        ("It was moved by Trustee Brown and seconded\nby Trustee Green.", "Brown", "Green"),
    ],
)
def test_motions(extractor: Extractor, text: str, mover: str, seconder: str) -> None:
    motions = extractor.extract(text).motions
    assert [(m.mover, m.seconder) for m in motions] == [(mover, seconder)]


def test_motion_result_from_the_same_or_next_line(extractor: Extractor) -> None:
    text = (
        "Motion by Supervisor Kim, seconded by Supervisor Ode to deny the appeal.\n"
        "The motion failed 2-3.\n"
        "Moved by Chair Ross, seconded by Vice Chair Bell.\n"
    )
    motions = extractor.extract(text).motions
    assert [m.result for m in motions] == ["failed", None]


def test_people_with_titles(extractor: Extractor) -> None:
    text = (
        "Mayor Pro Tem Ana Ruiz called the meeting to order. Vice Mayor Jones and "
        "Council Member Jean Smith were present. Director Lopez presented the report.\n"
        "Councilmembers Present: Amy Wong, Bo Diaz,\n  Cy Ross\n"
    )
    people = extractor.extract(text).people
    assert Person("Ana Ruiz", "Mayor Pro Tem") in people
    assert Person("Jones", "Vice Mayor") in people
    assert Person("Jean Smith", "Council Member") in people
    assert Person("Lopez", "Director") in people
    assert Person("Cy Ross", "Councilmember") in people


def test_roll_call_votes_and_tallies(extractor: Extractor) -> None:
    text = (
        "AYES: Councilmembers Smith, Jones, and Lee\n"
        "NOES: Park\n"
        "ABSTAIN: None\n"
        "ABSENT: Brown\n"
        "\n"
        "The resolution passed 4-1. The consent calendar carried unanimously.\n"
        "Ayes: Kim, Ode; Nays: Ross\n"
    )
    votes = extractor.extract(text).votes
    assert votes[0] == Vote(["Smith", "Jones", "Lee"], ["Park"], [], ["Brown"], "3-1")
    assert votes[1] == Vote(["Kim", "Ode"], ["Ross"], [], [], "2-1")
    assert [v.tally for v in votes[2:]] == ["4-1", "unanimous"]


def test_attendance_absent_is_not_a_vote(extractor: Extractor) -> None:
    entities = extractor.extract("Commissioners Absent: Shelley Young, Pat Bader")
    assert entities.votes == []
    assert Person("Pat Bader", "Commissioner") in entities.people


def test_references(extractor: Extractor) -> None:
    text = (
        "Adopt Resolution No. 2024-15 and introduce Ordinance 1234; amend Res. 22-3 "
        "and Ordinance Number 1500."
    )
    assert extractor.extract(text).references == [
        ("resolution", "2024-15"),
        ("ordinance", "1234"),
        ("resolution", "22-3"),
        ("ordinance", "1500"),
    ]


def test_helpers() -> None:
    assert strip_title("Vice Mayor Jones") == ("Jones", "Vice Mayor")
    assert split_names("Councilmembers Smith, Jones and Lee") == ["Smith", "Jones", "Lee"]
    assert split_names("None") == []


def test_entities_round_trip_through_json() -> None:
    entities = PageEntities(
        people=[Person("Jones", "Mayor")],
        motions=[Motion("text", "A", "B", "passed")],
        votes=[Vote(["A"], [], [], [], "1-0")],
        references=[("resolution", "1")],
    )
    assert PageEntities.from_json(entities.to_json()) == entities


def test_missing_model_falls_back_to_rules_with_a_warning() -> None:
    extractor = Extractor(Settings(spacy_model="en_core_web_sm_not_installed"))
    assert extractor.model_name == "blank"
    assert "not installed" in extractor.warnings[0]
    assert "python -m spacy download en_core_web_sm_not_installed " in extractor.warnings[0]
    assert extractor.extract("Mayor Diaz spoke.").people == [Person("Diaz", "Mayor")]


def test_a_blank_line_ends_a_motion(extractor: Extractor) -> None:
    text = "Councilmember Diaz moved to approve the agenda\n\nSeconded by nobody in particular"
    assert [(m.mover, m.seconder) for m in extractor.extract(text).motions] == []
