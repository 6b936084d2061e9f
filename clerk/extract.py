"""People, motions, votes and resolution/ordinance numbers from the text of one page.

Offline and model-free by default: `spacy.blank("en")` tokenizes, an EntityRuler marks
titled people ("Vice Mayor Jones") and references ("Resolution No. 2024-15"), and a
Matcher finds vote tallies ("passed 4-1", "carried unanimously"). Motions, attendance and
roll-call lists are clause grammars over names, commas and "and" that span layout lines,
so they are regular expressions over the page's lines. When `settings.spacy_model` names
an installed pipeline, its PERSON and ORG entities are added.

The seeds' extraction held whole sites in memory (about 5 GB a process). Here
`extract_site` streams one page at a time and caches results by a hash of the page text
in `<site>/entities.sqlite`, so a re-run only extracts pages whose text changed, and
`clerk.compile` reads the cache without running spaCy.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import sqlite3
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from clerk.config import Settings
from clerk.storage import iter_site_pages

if TYPE_CHECKING:  # spaCy takes most of a second to import: only the extract task pays it
    from spacy.language import Language

log = logging.getLogger(__name__)

# Bump when patterns change so cached pages are extracted again.
EXTRACTOR_VERSION = "2"  # bump when the rules change: cached pages are re-extracted
CACHE_FILE = "entities.sqlite"
COMMIT_EVERY = 200  # pages per transaction: durable progress without a commit per page
MAX_TEXT_TEXT_CHARS = 500
DASHES = ("-", "\u2013")

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
    "City Manager",
    "City Attorney",
    "City Clerk",
)
# Capitalised words that follow a title but are not names ("Mayor Called the meeting").
NOT_NAMES = frozenset(
    "the and or of to for a an at on in by with from present absent called moved seconded "
    "second motion meeting opened closed asked stated said noted thanked reported welcomed "
    "presented announced adjourned requested made pro tem none all".split()
)
_RESULTS = {
    "passed": "passed",
    "carried": "passed",
    "approved": "passed",
    "adopted": "passed",
    "failed": "failed",
    "denied": "failed",
    "defeated": "failed",
}

# A name: 1-4 words, each an initial ("M.") or a capitalised word ("O'Brien", "Jean-Luc").
_WORD = r"(?:[A-Z]\.|[A-Z][A-Za-z'\u2019]*(?:-[A-Z][A-Za-z'\u2019]*)?)"
_NOT_NAME_START = r"(?!(?:The|It|This|That|Motion|Meeting|And|Seconded|Second|None)\b)"
_NAME = rf"{_NOT_NAME_START}{_WORD}(?:[ \t]+{_WORD}){{0,3}}"
_TITLE = "|".join(re.escape(title).replace(r"\ ", r"[ \t]+") for title in TITLES)
_TITLED = rf"(?:(?:{_TITLE})s?\.?[ \t]+)?"
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
        rf"(?i:motion)(?:[ \t]+(?i:was[ \t]+made))?[ \t]+(?i:by)[ \t]+{_MOVER}"
        rf"{_GAP}(?i:seconded|second)(?:{_WS}(?i:by))?{_WS}{_SECONDER}",
        # "Moved by X, seconded by Y" / "It was moved by X and seconded by Y"
        rf"(?i:moved)[ \t]+(?i:by)[ \t]+{_MOVER}{_GAP}(?i:seconded){_WS}(?i:by)"
        rf"{_WS}{_SECONDER}",
        # "X (motion), Y (second)"
        rf"{_MOVER}[ \t]*\((?i:motion|moved|m)\)[\s,;]+{_SECONDER}[ \t]*\((?i:second|seconded|s)\)",
        # "Motion: X  Second: Y"
        rf"(?i:motion|moved|mover)[ \t]*:[ \t]*{_MOVER}[\s,;]+(?i:second(?:ed|er)?)[ \t]*:"
        rf"[ \t]*{_SECONDER}",
        # "X moved, Y seconded" / "X moved to approve ..., seconded by Y"
        rf"{_MOVER}[ \t]+(?i:moved)\b{_GAP}(?:(?i:seconded{_WS}by){_WS}{_SECONDER}"
        rf"|[,;][ \t]*(?:(?i:and)[ \t]+)?{_SECONDER.replace('seconder', 'seconder2')}[ \t]+"
        rf"(?i:seconded))",
    )
)
_RESULT = re.compile(r"\b(passed|carried|approved|adopted|failed|denied|defeated)\b", re.IGNORECASE)
_ATTENDANCE = re.compile(
    rf"\b(?P<title>{_TITLE})s?[ \t]+(?P<status>present|absent)[ \t]*:[ \t]*"
    # a list that ends a line with a comma continues on the next line
    r"(?P<names>(?:[^\n]*,[ \t]*\n)*[^\n]*)",
    re.IGNORECASE,
)
_VOTE_LABEL = re.compile(
    r"\b(?P<label>ayes|yes|yeas|noes|nays|no|abstain(?:ed|ing|s|ions?)?|absent)[ \t]*:",
    re.IGNORECASE,
)
_LIST_SPLIT = re.compile(r"\s*(?:,|;|\band\b|&)\s*")
_TITLE_PREFIX = re.compile(rf"^(?:(?:{_TITLE})s?\.?[ \t]+)+", re.IGNORECASE)
_BULLET = re.compile(r"^[\s\u2022\u25cf\u25aa\u2023\u2043\uf0b7\uf0a7*\-o]*\s(?=\S)|^\s+")


@dataclass(frozen=True)
class Person:
    name: str
    title: str | None = None


@dataclass(frozen=True)
class Motion:
    text: str
    mover: str | None
    seconder: str | None
    result: str | None = None


@dataclass(frozen=True)
class Vote:
    ayes: list[str] = field(default_factory=list)
    noes: list[str] = field(default_factory=list)
    abstain: list[str] = field(default_factory=list)
    absent: list[str] = field(default_factory=list)
    tally: str | None = None


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


def strip_title(name: str) -> tuple[str, str | None]:
    """Split 'Vice Mayor Jones' into ('Jones', 'Vice Mayor')."""
    match = _TITLE_PREFIX.match(name)
    if not match:
        return name.strip(), None
    title = " ".join(match.group(0).split()).rstrip(".")
    return name[match.end() :].strip(), _canonical_title(title)


def _canonical_title(title: str) -> str:
    lowered = " ".join(title.split()).lower().rstrip("s.") or title
    for known in TITLES:
        if known.lower() == lowered or known.lower() == title.lower().rstrip("."):
            return known
    return title


def split_names(text: str) -> list[str]:
    """'Councilmembers Smith, Jones and Lee' -> ['Smith', 'Jones', 'Lee']; 'None' -> []."""
    names: list[str] = []
    for part in _LIST_SPLIT.split(text.strip().rstrip(".")):
        name, _title = strip_title(part.strip(" .:"))
        name = re.sub(r"\s*\(.*?\)\s*$", "", name).strip()
        if not name or name.lower() in {"none", "n/a", "nobody", "all"}:
            continue
        if not re.fullmatch(rf"{_WORD}(?:[ \t]+{_WORD}){{0,4}}", name):
            continue
        names.append(name)
    return names


def _clean_lines(text: str) -> list[str]:
    return [_BULLET.sub("", line).rstrip() for line in text.replace("\f", "\n").splitlines()]


def _line_span(text: str, start: int, end: int) -> str:
    line_start = text.rfind("\n", 0, start) + 1
    line_end = text.find("\n", end)
    snippet = text[line_start : line_end if line_end != -1 else len(text)]
    return " ".join(snippet.split())[:MAX_TEXT_TEXT_CHARS]


def _result_near(text: str, start: int, end: int) -> str | None:
    """The outcome named on the motion's own lines, or on the next line unless that
    line starts another motion."""
    line_start = text.rfind("\n", 0, start) + 1
    line_end = text.find("\n", end)
    window = text[line_start : line_end if line_end != -1 else len(text)]
    if line_end != -1:
        next_end = text.find("\n", line_end + 1)
        following = text[line_end + 1 : next_end if next_end != -1 else len(text)]
        if not any(pattern.search(following) for pattern in MOTION_PATTERNS):
            window += "\n" + following
    match = _RESULT.search(window)
    return _RESULTS[match.group(1).lower()] if match else None


class Extractor:
    """Build the spaCy pipeline once per process, then call `extract` per page."""

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or Settings()
        self.warnings: list[str] = []
        self.model_name = "blank"
        from spacy.matcher import Matcher

        self.nlp = self._load(self.settings.spacy_model)
        self._add_rules()
        self.matcher = Matcher(self.nlp.vocab)
        self._add_tally_patterns()

    @property
    def signature(self) -> str:
        """Identifies the extractor in the cache, so a new version or model re-extracts."""
        return f"v{EXTRACTOR_VERSION}:{self.model_name}"

    def _load(self, model: str | None) -> Language:
        import spacy

        if model:
            try:
                nlp = spacy.load(model, exclude=["lemmatizer", "textcat", "parser"])
            except (ImportError, OSError) as error:
                message = (
                    f"spaCy model {model!r} is not installed ({error}); "
                    f"using rules only (python -m spacy download {model} to add NER)"
                )
                log.warning(message, extra={"action": "extract.no_model"})
                self.warnings.append(message)
            else:
                self.model_name = model
                return nlp
        return spacy.blank("en")

    def _add_rules(self) -> None:
        name_token = {
            "TEXT": {"REGEX": r"^(?:[A-Z]\.|[A-Z][A-Za-z'\u2019]+)$"},
            "LOWER": {"NOT_IN": sorted(NOT_NAMES)},
        }
        patterns: list[dict[str, Any]] = []
        for title in TITLES:
            title_tokens = [{"LOWER": token.text.lower()} for token in self.nlp.make_doc(title)]
            patterns.append(
                {
                    "label": "PERSON",
                    "id": title,
                    "pattern": [*title_tokens, {**name_token, "OP": "{1,3}"}],
                }
            )
        number = {"TEXT": {"REGEX": r"^\d+[A-Za-z]?$"}}
        dash = {"TEXT": {"IN": ["-", "\u2013"]}}
        for kind in ("resolution", "ordinance", "res", "ord"):
            for prefix in ([], [{"LOWER": {"IN": ["no", "no.", "number", "#"]}}]):
                for tail in ([], [dash, number], [dash, number, dash, number]):
                    patterns.append(
                        {
                            "label": "REFERENCE",
                            "id": "ordinance" if kind.startswith("ord") else "resolution",
                            "pattern": [
                                {"LOWER": kind},
                                {"TEXT": ".", "OP": "?"},
                                *prefix,
                                {"TEXT": ".", "OP": "?"},
                                number,
                                *tail,
                            ],
                        }
                    )
        before = {"before": "ner"} if "ner" in self.nlp.pipe_names else {}
        ruler = self.nlp.add_pipe(
            "entity_ruler", config={"overwrite_ents": True, "phrase_matcher_attr": None}, **before
        )
        ruler.add_patterns(patterns)  # type: ignore[attr-defined]

    def _add_tally_patterns(self) -> None:
        result = {"LOWER": {"IN": [*_RESULTS, "vote", "voted", "votes"]}}
        fillers = [
            {"LOWER": {"IN": ["by", "with", "on", "a", "vote", "of", "roll", "call", ":"]}, "OP": "*"},
            {"TEXT": "(", "OP": "?"},
        ]
        digit = {"TEXT": {"REGEX": r"^\d{1,2}$"}}
        dash = {"TEXT": {"IN": ["-", "\u2013", "to"]}}
        self.matcher.add(
            "TALLY",
            [
                [result, *fillers, digit, dash, digit, dash, digit],
                [result, *fillers, digit, dash, digit],
                [result, *fillers, {"TEXT": {"REGEX": r"^\d{1,2}[\u2013-]\d{1,2}$"}}],
            ],
        )
        self.matcher.add(
            "UNANIMOUS",
            [
                [result, {"LOWER": "unanimously"}],
                [{"LOWER": "unanimous"}, {"LOWER": {"IN": ["vote", "consent", "approval"]}}],
                [{"LOWER": "unanimously"}, result],
            ],
        )

    def extract(self, text: str) -> PageEntities:
        """Everything this extractor finds on one page of text."""
        text = text[: self.nlp.max_length]
        lines = "\n".join(_clean_lines(text))
        doc = self.nlp(lines)
        people: dict[str, Person] = {}
        references: list[tuple[str, str]] = []
        organizations: list[str] = []
        for ent in doc.ents:
            if ent.label_ == "PERSON" and ent.ent_id_:
                title_length = len(self.nlp.make_doc(ent.ent_id_))
                name = " ".join(token.text for token in ent[title_length:])
                people.setdefault(name, Person(name, ent.ent_id_))
            elif ent.label_ == "PERSON":
                people.setdefault(ent.text, Person(" ".join(ent.text.split()), None))
            elif ent.label_ == "ORG" and ent.text not in organizations:
                organizations.append(" ".join(ent.text.split()))
            elif ent.label_ == "REFERENCE":
                number = "".join(
                    token.text for token in ent if token.text[:1].isdigit() or token.text in DASHES
                )
                reference = (ent.ent_id_, number.replace("\u2013", "-"))
                if reference not in references:
                    references.append(reference)
        for match in _ATTENDANCE.finditer(lines):
            title = _canonical_title(match.group("title"))
            for name in split_names(match.group("names")):
                people.setdefault(name, Person(name, title))
        motions = self._motions(lines)
        for motion in motions:
            for name in (motion.mover, motion.seconder):
                if name:
                    people.setdefault(name, Person(name, None))
        votes = self._votes(lines, doc)
        for vote in votes:
            for name in (*vote.ayes, *vote.noes, *vote.abstain, *vote.absent):
                people.setdefault(name, Person(name, None))
        return PageEntities(
            people=list(people.values()),
            motions=motions,
            votes=votes,
            references=references,
            organizations=organizations,
        )

    def _motions(self, lines: str) -> list[Motion]:
        found: list[tuple[int, Motion]] = []
        taken: list[tuple[int, int]] = []
        for pattern in MOTION_PATTERNS:
            for match in pattern.finditer(lines):
                start, end = match.span()
                if any(start < other_end and other_start < end for other_start, other_end in taken):
                    continue
                groups = match.groupdict()
                mover = strip_title(groups["mover"])[0] if groups.get("mover") else None
                second_raw = groups.get("seconder") or groups.get("seconder2")
                seconder = strip_title(second_raw)[0] if second_raw else None
                taken.append((start, end))
                found.append(
                    (
                        start,
                        Motion(
                            text=_line_span(lines, start, end),
                            mover=mover,
                            seconder=seconder,
                            result=_result_near(lines, start, end),
                        ),
                    )
                )
        return [motion for _start, motion in sorted(found, key=lambda item: item[0])]

    def _votes(self, lines: str, doc: Any) -> list[Vote]:
        votes: list[Vote] = []
        current: dict[str, list[str]] | None = None
        for line in lines.splitlines():
            labels = list(_VOTE_LABEL.finditer(line))
            if not labels:
                if current is not None and line.strip():
                    votes.append(Vote(**current))
                    current = None
                continue
            if _ATTENDANCE.search(line):
                continue
            for index, label in enumerate(labels):
                end = labels[index + 1].start() if index + 1 < len(labels) else len(line)
                key = _vote_key(label.group("label"))
                if key == "ayes" or current is None:
                    if key != "ayes" and current is None:
                        continue  # "Absent:" outside a roll call is attendance, not a vote
                    if current is not None and current["ayes"]:
                        votes.append(Vote(**current))
                    current = {"ayes": [], "noes": [], "abstain": [], "absent": []}
                current[key].extend(split_names(line[label.end() : end]))
        if current is not None:
            votes.append(Vote(**current))
        # A roll call's tally is counted from its lists; tallies written out in the text
        # ("carried 5-0") stand alone, since nothing reliable ties them to a roll call.
        votes = [Vote(**{**asdict(vote), "tally": f"{len(vote.ayes)}-{len(vote.noes)}"}) for vote in votes]
        votes.extend(Vote(tally=tally) for tally in self._tallies(doc))
        return votes

    def _tallies(self, doc: Any) -> list[str]:
        spans = sorted(
            ((start, end, self.nlp.vocab.strings[key]) for key, start, end in self.matcher(doc)),
            key=lambda item: (item[0], -(item[1] - item[0])),
        )
        tallies: list[str] = []
        last_end = -1
        for start, end, label in spans:
            if start < last_end:
                continue
            last_end = end
            if label == "UNANIMOUS":
                tallies.append("unanimous")
                continue
            digits = re.findall(r"\d{1,2}", doc[start:end].text)
            if digits:
                tallies.append("-".join(digits[-3:] if len(digits) >= 3 else digits[-2:]))
        return tallies


def _vote_key(label: str) -> str:
    lowered = label.lower()
    if lowered in {"ayes", "yes", "yeas"}:
        return "ayes"
    if lowered in {"noes", "nays", "no"}:
        return "noes"
    if lowered.startswith("abstain"):
        return "abstain"
    return "absent"


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
