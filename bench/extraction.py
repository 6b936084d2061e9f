"""Extraction quality against the labelled pages in `tests/fixtures/extraction/`.

    python -m bench.extraction               # the table: text layers, then OCR text
    python -m bench.extraction --cases       # and one line per page
    python -m bench.extraction --json out.json
    python -m bench.extraction --model en_core_web_sm   # rules plus a spaCy NER model

Pages named `heldout_*` were labelled after the rules were written and are reported in
columns of their own: the tuned pages say whether the rules do what they were built for,
the held-out ones how they do on phrasings nobody tuned for.

For each entity kind it prints precision and recall (a found item is right when it matches
a labelled one; see `tests/fixtures/extraction/README.md` for how names match), and for
each field of the matched items how often the field is right: a person's role; a motion's
mover, seconder, text, outcome and tally; a roll call's ayes, noes, abstain and absent
lists (exact sets) and `members` (ayes, noes and absent all exact). `cpu ms/page` is the
extractor's CPU time per page (process time, the median of 5 rounds over every page).

Motions and roll calls are paired with the labels in page order (the pairing that agrees
most with the labels, never crossing), so one missed motion does not shift the rest.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

FIXTURES = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "extraction"
VERSIONS = ("text", "ocr")
ROLL_FIELDS = ("ayes", "noes", "abstain", "absent")
MOTION_FIELDS = ("mover", "seconder", "text", "outcome", "tally")


@dataclass(frozen=True)
class Case:
    name: str
    version: str  # "text" (a text layer or typed page) or "ocr" (after a scan and Tesseract)
    text: str
    labels: dict[str, Any]

    @property
    def held_out(self) -> bool:
        """Pages labelled after the rules were written (`heldout_*`): no rule was tuned on
        them, so their numbers estimate how the rules do on minutes they have not seen."""
        return self.name.startswith("heldout_")


def load_cases(root: Path = FIXTURES) -> list[Case]:
    """Every labelled page, in both versions where an OCR version exists."""
    cases: list[Case] = []
    for labels_path in sorted((root / "labels").glob("*.json")):
        labels = json.loads(labels_path.read_text())
        for version in VERSIONS:
            page = root / version / f"{labels_path.stem}.txt"
            if page.exists():
                cases.append(Case(labels_path.stem, version, page.read_text(), labels))
    return cases


def norm(name: str | None) -> str:
    """Compare names without case, punctuation or spacing: "M. Prest" = "m prest"."""
    if not name:
        return ""
    name = name.replace("\u2019", "'").replace("'", "")
    return " ".join(re.findall(r"[a-z0-9]+", name.lower()))


def _phrase_in(phrase: str, text: str) -> bool:
    return norm(phrase) in norm(text)


@dataclass
class Count:
    """Found-versus-labelled counts for one entity kind."""

    tp: int = 0
    fp: int = 0
    fn: int = 0

    def add(self, other: Count) -> None:
        self.tp, self.fp, self.fn = self.tp + other.tp, self.fp + other.fp, self.fn + other.fn

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 1.0

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 1.0


@dataclass
class Share:
    """How often a field of the matched items is right."""

    right: int = 0
    total: int = 0

    def add(self, other: Share) -> None:
        self.right, self.total = self.right + other.right, self.total + other.total

    def record(self, ok: bool) -> None:
        self.right += int(ok)
        self.total += 1

    @property
    def rate(self) -> float:
        return self.right / self.total if self.total else 1.0


KINDS = ("people", "motions", "roll_calls", "references")


@dataclass
class Score:
    counts: dict[str, Count] = field(default_factory=lambda: {kind: Count() for kind in KINDS})
    fields: dict[str, Share] = field(default_factory=dict)
    misses: list[str] = field(default_factory=list)

    def share(self, name: str) -> Share:
        return self.fields.setdefault(name, Share())

    def add(self, other: Score) -> None:
        for kind, count in other.counts.items():
            self.counts[kind].add(count)
        for name, share in other.fields.items():
            self.share(name).add(share)
        self.misses.extend(other.misses)


class _People:
    """The labelled people of a page, found by any of their names."""

    def __init__(self, labelled: Iterable[dict[str, Any]]) -> None:
        self.people = list(labelled)
        self.index: dict[str, int] = {}
        for number, person in enumerate(self.people):
            for name in (person["name"], *person.get("aliases", [])):
                self.index.setdefault(norm(name), number)

    def find(self, name: str | None) -> int | None:
        """The person a name denotes: a labelled form, or a surname (with or without an
        initial) that only one labelled person on the page has."""
        if not name:
            return None
        key = norm(name)
        if key in self.index:
            return self.index[key]
        words = key.split()
        if not words or len(words) > 2 or (len(words) == 2 and len(words[0]) > 1):
            return None
        owners = {
            number
            for number, person in enumerate(self.people)
            if norm(person["name"]).split()[-1] == words[-1]
        }
        return owners.pop() if len(owners) == 1 else None

    def same(self, found: str | None, labelled: str | None) -> bool:
        if not labelled or not found:
            return not labelled and not found
        number = self.find(labelled)
        return self.find(found) == number if number is not None else norm(found) == norm(labelled)

    def members(self, names: Iterable[str]) -> set[Any]:
        return {self.find(name) if self.find(name) is not None else norm(name) for name in names}


def _align(
    labelled: Sequence[Any], found: Sequence[Any], similarity: Callable[[Any, Any], float]
) -> list[tuple[int, int]]:
    """Order-preserving pairs (labelled index, found index) with the most total similarity."""
    rows, cols = len(labelled), len(found)
    best = [[0.0] * (cols + 1) for _ in range(rows + 1)]
    for i in range(rows - 1, -1, -1):
        for j in range(cols - 1, -1, -1):
            pair = similarity(labelled[i], found[j])
            take = pair + best[i + 1][j + 1] if pair > 0 else 0.0
            best[i][j] = max(take, best[i + 1][j], best[i][j + 1])
    pairs: list[tuple[int, int]] = []
    i = j = 0
    while i < rows and j < cols:
        pair = similarity(labelled[i], found[j])
        if pair > 0 and best[i][j] == pair + best[i + 1][j + 1]:
            pairs.append((i, j))
            i, j = i + 1, j + 1
        elif best[i][j] == best[i + 1][j]:
            i += 1
        else:
            j += 1
    return pairs


def score(case: Case, entities: Any) -> Score:
    """Compare one page's extracted entities (`clerk.extract.PageEntities`) with its labels."""
    result = Score()
    labels = case.labels
    people = _People(labels["people"])
    where = f"{case.version}/{case.name}"

    # people: a found name is right when it names a labelled person; each person counts once
    hit: dict[int, set[str | None]] = {}
    for person in entities.people:
        number = people.find(person.name)
        if number is None:
            result.counts["people"].fp += 1
            result.misses.append(f"{where}: false person {person.name!r}")
        else:
            hit.setdefault(number, set()).add(person.title)
    result.counts["people"].tp = len(hit)
    result.counts["people"].fn = len(people.people) - len(hit)
    for number, person in enumerate(people.people):
        if number not in hit:
            result.misses.append(f"{where}: missed person {person['name']!r}")
            continue
        titles = {norm(title) for title in hit[number]}
        result.share("people.role").record(norm(person.get("role")) in titles)
        if norm(person.get("role")) not in titles:
            result.misses.append(
                f"{where}: {person['name']!r} role {sorted(hit[number], key=str)!r}, "
                f"labelled {person.get('role')!r}"
            )

    # motions
    def motion_similarity(label: dict[str, Any], motion: Any) -> float:
        return (
            float(bool(label["mover"]) and people.same(motion.mover, label["mover"]))
            + float(bool(label["seconder"]) and people.same(motion.seconder, label["seconder"]))
            + float(_phrase_in(label["text"], motion.text))
        )

    motions = list(entities.motions)
    pairs = _align(labels["motions"], motions, motion_similarity)
    count = result.counts["motions"]
    count.tp, count.fp, count.fn = len(pairs), len(motions) - len(pairs), len(labels["motions"]) - len(pairs)
    paired = {i for i, _ in pairs}
    for i, label in enumerate(labels["motions"]):
        if i not in paired:
            result.misses.append(f"{where}: missed motion {label['text']!r}")
    for i, j in pairs:
        label, motion = labels["motions"][i], motions[j]
        checks = {
            "mover": people.same(motion.mover, label["mover"]),
            "seconder": people.same(motion.seconder, label["seconder"]),
            "text": _phrase_in(label["text"], motion.text),
            "outcome": motion.result == label["outcome"],
            "tally": getattr(motion, "tally", None) == label["tally"],
        }
        for name, ok in checks.items():
            result.share(f"motions.{name}").record(ok)
            if not ok:
                attribute = {"outcome": "result"}.get(name, name)
                found = getattr(motion, attribute, None)
                result.misses.append(
                    f"{where}: motion {label['text']!r} {name} {found!r}, labelled {label[name]!r}"
                )

    # roll calls: the votes with member lists (a bare tally is not a roll call)
    rolls = [vote for vote in entities.votes if any(getattr(vote, key) for key in ROLL_FIELDS)]

    def members(roll: Any, keys: Iterable[str] = ROLL_FIELDS) -> set[Any]:
        lists = roll if isinstance(roll, dict) else {key: getattr(roll, key) for key in ROLL_FIELDS}
        return people.members(name for key in keys for name in lists[key])

    def roll_similarity(label: dict[str, Any], roll: Any) -> float:
        both, either = members(label) & members(roll), members(label) | members(roll)
        return len(both) / len(either) if either else 0.0

    pairs = _align(labels["roll_calls"], rolls, roll_similarity)
    count = result.counts["roll_calls"]
    count.tp, count.fp, count.fn = len(pairs), len(rolls) - len(pairs), len(labels["roll_calls"]) - len(pairs)
    for i, j in pairs:
        label, roll = labels["roll_calls"][i], rolls[j]
        exact = {key: people.members(label[key]) == people.members(getattr(roll, key)) for key in ROLL_FIELDS}
        for key, ok in exact.items():
            result.share(f"roll_calls.{key}").record(ok)
            if not ok:
                result.misses.append(
                    f"{where}: roll call {i + 1} {key} {getattr(roll, key)!r}, labelled {label[key]!r}"
                )
        result.share("roll_calls.members").record(exact["ayes"] and exact["noes"] and exact["absent"])
    result.share("roll_calls.members").total += len(labels["roll_calls"]) - len(pairs)  # missed: wrong
    if len(labels["roll_calls"]) > len(pairs):
        result.misses.append(f"{where}: {len(labels['roll_calls']) - len(pairs)} roll call(s) missed")

    # references
    labelled_refs = {(kind, number) for kind, number in labels["references"]}
    found_refs = {(kind, number) for kind, number in entities.references}
    count = result.counts["references"]
    count.tp = len(labelled_refs & found_refs)
    count.fp, count.fn = len(found_refs - labelled_refs), len(labelled_refs - found_refs)
    for ref in sorted(found_refs ^ labelled_refs):
        result.misses.append(f"{where}: reference {ref} {'false' if ref in found_refs else 'missed'}")
    return result


@dataclass
class Report:
    version: str  # "text" or "ocr", prefixed "held-out " for the held-out pages
    pages: int
    score: Score
    cpu_ms_per_page: float
    per_case: dict[str, Score]


def evaluate(extract: Callable[[str], Any], cases: Sequence[Case], *, rounds: int = 5) -> list[Report]:
    """Score `extract` (text -> PageEntities) on the cases, one report per version."""
    reports: list[Report] = []
    groups = [(held_out, version) for held_out in (False, True) for version in VERSIONS]
    for held_out, version in groups:
        chosen = [case for case in cases if case.version == version and case.held_out == held_out]
        if not chosen:
            continue
        total = Score()
        per_case: dict[str, Score] = {}
        timings: list[float] = []
        for round_number in range(rounds):
            started = time.process_time()
            results = [extract(case.text) for case in chosen]
            timings.append((time.process_time() - started) / len(chosen))
            if round_number == 0:
                for case, entities in zip(chosen, results, strict=True):
                    per_case[case.name] = score(case, entities)
                    total.add(per_case[case.name])
        label = f"held-out {version}" if held_out else version
        reports.append(Report(label, len(chosen), total, statistics.median(timings) * 1000, per_case))
    return reports


def _row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def table(reports: Sequence[Report]) -> str:
    """A Markdown table: one column per version."""
    head = ["", *(f"{r.version} ({r.pages} pages)" for r in reports)]
    lines = [_row(head), _row(["---"] * len(head))]
    for kind in KINDS:
        lines.append(
            _row(
                [
                    f"{kind} precision / recall",
                    *(
                        f"{r.score.counts[kind].precision:.2f} / {r.score.counts[kind].recall:.2f}"
                        for r in reports
                    ),
                ]
            )
        )
    names = sorted(
        {name for r in reports for name in r.score.fields},
        key=lambda name: (KINDS.index(name.split(".")[0]), name),
    )
    for name in names:
        cells = []
        for r in reports:
            share = r.score.fields.get(name)
            cells.append(f"{share.rate:.2f} ({share.right}/{share.total})" if share else "-")
        lines.append(_row([f"{name} right", *cells]))
    lines.append(_row(["cpu ms/page", *(f"{r.cpu_ms_per_page:.1f}" for r in reports)]))
    return "\n".join(lines)


def as_json(reports: Sequence[Report]) -> dict[str, Any]:
    return {
        r.version: {
            "pages": r.pages,
            "cpu_ms_per_page": round(r.cpu_ms_per_page, 2),
            **{f"{kind}.precision": round(r.score.counts[kind].precision, 3) for kind in KINDS},
            **{f"{kind}.recall": round(r.score.counts[kind].recall, 3) for kind in KINDS},
            **{f"{name}": round(share.rate, 3) for name, share in sorted(r.score.fields.items())},
        }
        for r in reports
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.extraction", description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="a spaCy pipeline to add NER from (default: rules only)")
    parser.add_argument("--cases", action="store_true", help="also list every miss, page by page")
    parser.add_argument("--json", type=Path, help="write the numbers to this file")
    parser.add_argument("--rounds", type=int, default=5, help="timing rounds (default 5)")
    args = parser.parse_args(argv)

    from clerk.config import Settings
    from clerk.extract import Extractor

    extractor = Extractor(Settings(spacy_model=args.model))
    for warning in extractor.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    cases = load_cases()
    if not cases:
        print(f"error: no labelled pages in {FIXTURES}", file=sys.stderr)
        return 2
    reports = evaluate(extractor.extract, cases, rounds=max(1, args.rounds))
    print(f"extractor {extractor.signature}, {len({c.name for c in cases})} labelled pages")
    print(table(reports))
    if args.cases:
        for report in reports:
            for case_score in report.per_case.values():
                for miss in case_score.misses:
                    print(f"  {miss}")
    if args.json:
        numbers = {"extractor": extractor.signature, **as_json(reports)}
        args.json.write_text(json.dumps(numbers, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
