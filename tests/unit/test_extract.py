"""Extraction patterns on synthetic civic sentences (the real minutes are in integration)."""

import pytest

from bench.extraction import Case, evaluate, load_cases, score
from bench.extraction import main as bench_main
from clerk.config import Settings
from clerk.extract import (
    EXTRACTOR_VERSION,
    Extractor,
    Motion,
    PageEntities,
    Person,
    Vote,
    merge_names,
    split_names,
    strip_title,
)


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
        (
            "Councilmember Diaz moved to approve the budget amendment, seconded by\nCouncilmember Lee.",
            "Diaz",
            "Lee",
        ),
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
    assert votes == [
        Vote(["Smith", "Jones", "Lee"], ["Park"], [], ["Brown"], "3-1"),
        Vote(["Kim", "Ode"], ["Ross"], [], [], "2-1"),
    ]


def test_tally_and_outcome_belong_to_the_motion(extractor: Extractor) -> None:
    text = (
        "Moved by Councilmember Lindqvist, seconded by Councilmember Tran, to approve the consent\n"
        "calendar as presented.\n"
        "AYES: Alvarez, Okafor, Lindqvist\n"
        "NOES: O'Brien, Tran\n"
        "Motion carried 3-2.\n"
    )
    entities = extractor.extract(text)
    [motion] = entities.motions
    assert (motion.result, motion.tally) == ("passed", "3-2")
    assert motion.text.endswith("to approve the consent calendar as presented.")
    assert entities.votes == [Vote(["Alvarez", "Okafor", "Lindqvist"], ["O'Brien", "Tran"], [], [], "3-2", 0)]


def test_outcome_on_a_one_line_roll_call_after_a_sentence_end(extractor: Extractor) -> None:
    text = (
        "Moved by Trustee Natarajan, seconded by Trustee Weiss, to adopt Resolution No. 2024-25-07.\n"
        "Ayes: Gonzalez, Brooks, Holt, Natarajan, Weiss. Noes: None. Absent: O'Brien. Motion carried 5-0.\n"
    )
    entities = extractor.extract(text)
    assert [(m.result, m.tally) for m in entities.motions] == [("passed", "5-0")]
    assert entities.votes[0].absent == ["O'Brien"]
    assert entities.votes[0].ayes == ["Gonzalez", "Brooks", "Holt", "Natarajan", "Weiss"]


def test_vote_lists_continue_on_wrapped_lines_until_prose(extractor: Extractor) -> None:
    text = (
        "AYES: Davis, Hernandez, Perez,\n"
        "      Valencia, Ramirez\n"
        "NOES: None\n"
        "\n"  # OCR leaves blank lines inside a roll call
        "ABSENT:\n"
        "\n"
        "Ayala, Rios\n"
        "Motion carried 5-0.\n"
        "Smith, Jones\n"
    )
    votes = extractor.extract(text).votes
    ayes = ["Davis", "Hernandez", "Perez", "Valencia", "Ramirez"]
    assert votes == [Vote(ayes, [], [], ["Ayala", "Rios"], "5-0")]


def test_a_vote_list_ends_at_its_sentence_end(extractor: Extractor) -> None:
    text = "Ayes: Kim, Ode. Noes: Ross. Absent: O'Brien.\nMaria Lopez, Ana Diaz\n"
    assert extractor.extract(text).votes == [Vote(["Kim", "Ode"], ["Ross"], [], ["O'Brien"], "2-1")]
    text = "Ayes: Kim, Ode. Noes: Ross. Absent: O'Brien. Lee thanked staff.\n"
    assert extractor.extract(text).votes[0].absent == ["O'Brien"]


def test_motion_styles_without_a_named_pair(extractor: Extractor) -> None:
    text = (
        "It was moved and seconded to approve the consent agenda. The motion passed unanimously.\n"
        "\n"
        "MOTION: Vice Chair Whitfield\n"
        "The motion failed for lack of a second.\n"
    )
    motions = extractor.extract(text).motions
    assert [(m.mover, m.seconder, m.result, m.tally) for m in motions] == [
        (None, None, "passed", "unanimous"),
        ("Whitfield", None, "failed", None),
    ]
    assert "approve the consent agenda" in motions[0].text


def test_names_stop_at_titles_and_headings(extractor: Extractor) -> None:
    text = (
        "Others Present: Ryan Warsing (LSRCC), Kimberly Bares (PLACE\n"
        "Consulting), Simone Martin-Newberry\n"
        "Commissioners Absent: Shelley Young, Pat Bader\n"
        "Meeting called to order by Commissioner Simone Martin-Newberry Commissioners Absent\n"
        "Chair Pat Bader Meeting adjourned.\n"
    )
    names = {p.name for p in extractor.extract(text).people}
    assert names == {"Ryan Warsing", "Kimberly Bares", "Simone Martin-Newberry", "Shelley Young", "Pat Bader"}


def test_people_on_a_page_fold_into_one_name(extractor: Extractor) -> None:
    text = (
        "Present: Mayor Patricia Alvarez, Councilmembers Grace Lindqvist,\n"
        "Marcus O'Brien and Helen Tran\n"
        "Mayor Alvarez adjourned the meeting. P. Alvarez thanked staff.\n"
    )
    people = extractor.extract(text).people
    assert sorted(people, key=lambda p: p.name) == [
        Person("Grace Lindqvist", "Councilmember"),
        Person("Helen Tran", "Councilmember"),
        Person("Marcus O'Brien", "Councilmember"),
        Person("Patricia Alvarez", "Mayor"),
    ]


def test_merge_names() -> None:
    merged = merge_names(["Alvarez", "Patricia Alvarez", "P. Alvarez", "Lee", "Ana Lee", "Bo Lee", "Kim"])
    assert merged["Alvarez"] == merged["P. Alvarez"] == "Patricia Alvarez"
    assert merged["Lee"] == "Lee"  # two Lees: ambiguous, left alone
    assert merged["Kim"] == "Kim"


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
        motions=[Motion("text", "A", "B", "passed", "1-0")],
        votes=[Vote(["A"], [], [], [], "1-0", 0)],
        references=[("resolution", "1")],
    )
    assert PageEntities.from_json(entities.to_json()) == entities


def test_missing_model_falls_back_to_rules_with_a_warning() -> None:
    extractor = Extractor(Settings(spacy_model="en_core_web_sm_not_installed"))
    assert extractor.model_name == "rules"
    assert "not installed" in extractor.warnings[0]
    assert "python -m spacy download en_core_web_sm_not_installed " in extractor.warnings[0]
    assert extractor.extract("Mayor Diaz spoke.").people == [Person("Diaz", "Mayor")]


def test_a_blank_line_ends_a_motion(extractor: Extractor) -> None:
    text = "Councilmember Diaz moved to approve the agenda\n\nSeconded by nobody in particular"
    assert [(m.mover, m.seconder) for m in extractor.extract(text).motions] == []


# ------------------------------------------------------------ the labelled evaluation set
# tests/fixtures/extraction: real and generated pages with hand-written answers, as text
# layers and as Tesseract read them after a scan (committed text: no OCR at test time).
# The targets, per page and over the whole set; `python -m bench.extraction`
# prints the same numbers as a table.

CASES = load_cases()
PEOPLE_PRECISION, PEOPLE_RECALL, OUTCOME_RIGHT = 0.95, 0.90, 0.9
MEMBERS_EXACT = {"text": 0.9, "ocr": 0.8}
# Pages that miss a target for a reason the rules do not cover (stated, not hidden):
# "Linda Rosen, Trustee of the Rosen Family Trust" names a person in an item's prose
# with no title before the name, which only a statistical NER model finds (1 of 6).
# A vote table ("ROLL CALL VOTE  AYE  NO  ABSENT" with an X per member) is read from a
# text layer's columns; Tesseract's text keeps no columns, so after a scan its two roll
# calls are lost (outcomes and tallies written below the table are still read).
PAGE_FLOORS = {
    ("text", "real_manhattanbeach_agenda_p1"): {"people.recall": 0.83},
    ("ocr", "gen_council_vote_table"): {"roll_calls.members": 0.0},
}


def test_the_labelled_set_is_there() -> None:
    versions = {case.version for case in CASES}
    assert versions == {"text", "ocr"} and len(CASES) >= 14


@pytest.mark.parametrize("case", CASES, ids=[f"{case.version}-{case.name}" for case in CASES])
def test_labelled_page(extractor: Extractor, case: Case) -> None:
    result = score(case, extractor.extract(case.text))
    floors = {
        "people.precision": PEOPLE_PRECISION,
        "people.recall": PEOPLE_RECALL,
        **PAGE_FLOORS.get((case.version, case.name), {}),
    }
    people = result.counts["people"]
    assert people.precision >= floors["people.precision"], result.misses
    assert people.recall >= floors["people.recall"], result.misses
    assert result.counts["motions"].recall >= 0.9, result.misses
    assert result.share("motions.outcome").rate >= OUTCOME_RIGHT, result.misses
    members_floor = floors.get("roll_calls.members", MEMBERS_EXACT[case.version])
    assert result.share("roll_calls.members").rate >= members_floor, result.misses


@pytest.mark.parametrize("version", ["text", "ocr"])
def test_labelled_set_targets(extractor: Extractor, version: str) -> None:
    reports = evaluate(extractor.extract, [case for case in CASES if case.version == version], rounds=1)
    assert [report.version for report in reports] == [version, f"held-out {version}"]
    for report in reports:  # the tuned pages, then the held-out ones
        total = report.score
        assert total.counts["people"].precision >= PEOPLE_PRECISION, total.misses
        assert total.counts["people"].recall >= PEOPLE_RECALL, total.misses
        assert total.counts["motions"].recall >= 0.9, total.misses
        assert total.share("motions.outcome").rate >= OUTCOME_RIGHT, total.misses
        assert total.share("roll_calls.members").rate >= MEMBERS_EXACT[version], total.misses
        assert total.counts["references"].recall >= 0.9, total.misses


def test_bench_prints_the_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert bench_main(["--rounds", "1"]) == 0
    out = capsys.readouterr().out
    assert "| people precision / recall |" in out and "| cpu ms/page |" in out
    assert f"extractor v{EXTRACTOR_VERSION}:rules" in out
