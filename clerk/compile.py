"""Compile a site's page texts (and cached entities) into one SQLite database for Datasette.

The database is built in a uniquely named temporary file beside `meetings.db` and renamed
over it, so Datasette and deploy never see half a database, and two compilations of the
same site (at-least-once execution) each build their own file; the last rename wins and
neither removes the other's work. Rows stream from disk with generators, so memory does
not grow with the site. Compile never runs spaCy: entities come from the extraction cache.

A pipeline run compiles a site twice: a fast compile (pages only, as soon as OCR is done)
and a full one (with entities, after extraction), on any compilation worker. Given the run
id, the marker `.compiled.json` records which run and kind the current `meetings.db` comes
from. It is read and written, and the database renamed, under an exclusive lock on the
site directory, so a fast compile that started before the full one finished never renames
over it: the check happens again just before its rename.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import json
import logging
import os
import tempfile
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from clerk.extract import ExtractionCache, merge_names, text_sha256
from clerk.storage import Kind, PageRecord, iter_site_pages

if TYPE_CHECKING:  # sqlite-utils pulls in numpy: a quarter second on every `clerk` command
    import sqlite_utils

log = logging.getLogger(__name__)

DATABASE_FILE = "meetings.db"
MARKER_FILE = ".compiled.json"  # {"run": ..., "entities": ...} of the current meetings.db
BATCH_SIZE = 500
PAGE_TABLES: dict[Kind, str] = {"minutes": "minutes", "agenda": "agendas"}
PAGE_COLUMNS = {
    "id": str,
    "meeting": str,
    "date": str,
    "page": int,
    "text": str,
    "document_url": str,
}


# Entity tables (a full compile). `people` holds one row per person of the site (names
# folded by clerk.extract.merge_names: "Mayor Alvarez", "Alvarez" and "Patricia Alvarez"
# are one person when the site has one Alvarez); `person_names` maps every written name to
# its person; `mentions` is each page's people as written; `votes` is one row per person
# and roll call, joinable to `people` (person_id), `motions` (motion_id) and `roll_calls`.
# Every entity row carries the meeting, date, page, page id and `page_url` (the PDF at
# that page). The view `person_votes` answers "how did each member vote".
ENTITY_TABLES = ("mentions", "motions", "roll_calls", "votes", "references")
VOTE_KINDS = (("ayes", "aye"), ("noes", "no"), ("abstain", "abstain"), ("absent", "absent"))


@dataclass(frozen=True)
class CompileResult:
    path: Path
    agendas: int
    minutes: int
    people: int = 0  # people of the site, after folding names
    motions: int = 0
    votes: int = 0  # one per person and roll call
    references: int = 0
    roll_calls: int = 0
    mentions: int = 0
    missing_entities: int = 0
    tables: list[str] = field(default_factory=list)
    skipped: bool = False  # a fast compile kept out: this run's full database is in place


def _document_key(record: PageRecord) -> str:
    return f"{record.kind}/{record.meeting}/{record.date}"


@dataclass
class _Counts:
    pages: dict[str, int] = field(default_factory=lambda: {"minutes": 0, "agenda": 0})
    people: int = 0
    mentions: int = 0
    motions: int = 0
    roll_calls: int = 0
    votes: int = 0
    references: int = 0
    missing_entities: int = 0


class _Builder:
    """Streams pages once; entity rows are buffered per batch and flushed with the pages."""

    def __init__(
        self,
        db: sqlite_utils.Database,
        site_dir: Path,
        document_urls: dict[str, str] | None,
        cache: ExtractionCache | None,
    ) -> None:
        self.db = db
        self.site_dir = site_dir
        self.document_urls = document_urls or {}
        self.cache = cache
        self.counts = _Counts()
        self.entity_rows: dict[str, list[dict[str, Any]]] = {table: [] for table in ENTITY_TABLES}
        self.next_id = {"motions": 1, "roll_calls": 1, "votes": 1}

    def _id(self, table: str) -> int:
        number = self.next_id[table]
        self.next_id[table] += 1
        return number

    def document_url(self, record: PageRecord) -> str | None:
        urls = self.document_urls
        return urls.get(_document_key(record)) or urls.get(record.id)

    def rows(self, kind: Kind) -> Iterator[dict[str, Any]]:
        for record in iter_site_pages(self.site_dir, kinds=(kind,)):
            text = record.read_text()
            self.counts.pages[kind] += 1
            if self.cache is not None:
                self._entities(record, text)
            yield {
                "id": record.id,
                "meeting": record.meeting,
                "date": record.date,
                "page": record.page,
                "text": text,
                "document_url": self.document_url(record),
            }

    def _entities(self, record: PageRecord, text: str) -> None:
        assert self.cache is not None
        entities = self.cache.get(text_sha256(text))
        if entities is None:
            self.counts.missing_entities += 1
            return
        table = PAGE_TABLES[record.kind]
        url = self.document_url(record)
        base = {
            "page_id": record.id,
            "page_table": table,
            "meeting": record.meeting,
            "date": record.date,
            "page": record.page,
            "page_url": f"{url}#page={record.page}" if url else None,
        }
        rows = self.entity_rows
        for person in entities.people:
            rows["mentions"].append({**base, "name": person.name, "title": person.title})
        motion_ids: list[int] = []
        for motion in entities.motions:
            motion_ids.append(self._id("motions"))
            rows["motions"].append(
                {
                    "id": motion_ids[-1],
                    **base,
                    "text": motion.text,
                    "mover": motion.mover,
                    "seconder": motion.seconder,
                    "result": motion.result,
                    "tally": motion.tally,
                }
            )
        for vote in entities.votes:
            roll_call_id = self._id("roll_calls")
            in_range = vote.motion is not None and 0 <= vote.motion < len(motion_ids)
            motion_id = motion_ids[vote.motion] if in_range and vote.motion is not None else None
            rows["roll_calls"].append(
                {
                    "id": roll_call_id,
                    "motion_id": motion_id,
                    **base,
                    "ayes": json.dumps(vote.ayes),
                    "noes": json.dumps(vote.noes),
                    "abstain": json.dumps(vote.abstain),
                    "absent": json.dumps(vote.absent),
                    "tally": vote.tally,
                }
            )
            for field_name, label in VOTE_KINDS:
                for name in getattr(vote, field_name):
                    rows["votes"].append(
                        {
                            "id": self._id("votes"),
                            "roll_call_id": roll_call_id,
                            "motion_id": motion_id,
                            "name": name,
                            "vote": label,
                            **base,
                        }
                    )
        for kind, number in entities.references:
            rows["references"].append({**base, "kind": kind, "number": number})
        if sum(len(batch) for batch in rows.values()) >= BATCH_SIZE:
            self.flush_entities()

    def flush_entities(self) -> None:
        for table, batch in self.entity_rows.items():
            if batch:
                self.db[table].insert_all(batch, batch_size=BATCH_SIZE)  # type: ignore[union-attr]
                setattr(self.counts, table, getattr(self.counts, table) + len(batch))
                batch.clear()


def _create_tables(db: sqlite_utils.Database, entities: bool) -> None:
    for table in PAGE_TABLES.values():
        db[table].create(PAGE_COLUMNS, pk="id")  # type: ignore[union-attr]
    if not entities:
        return
    base = {
        "page_id": str,
        "page_table": str,
        "meeting": str,
        "date": str,
        "page": int,
        "page_url": str,
    }
    tables: dict[str, tuple[dict[str, Any], str | None]] = {
        "people": (
            {
                "id": int,
                "name": str,
                "title": str,
                "aliases": str,
                "pages": int,
                "first_date": str,
                "last_date": str,
            },
            "id",
        ),
        "person_names": ({"name": str, "person_id": int}, "name"),
        "mentions": ({**base, "name": str, "title": str, "person_id": int}, None),
        "motions": (
            {
                "id": int,
                **base,
                "text": str,
                "mover": str,
                "seconder": str,
                "result": str,
                "tally": str,
                "mover_id": int,
                "seconder_id": int,
            },
            "id",
        ),
        "roll_calls": (
            {
                "id": int,
                "motion_id": int,
                **base,
                "ayes": str,
                "noes": str,
                "abstain": str,
                "absent": str,
                "tally": str,
            },
            "id",
        ),
        "votes": (
            {
                "id": int,
                "roll_call_id": int,
                "motion_id": int,
                "person_id": int,
                "name": str,
                "vote": str,
                **base,
            },
            "id",
        ),
        "references": ({**base, "kind": str, "number": str}, None),
    }
    for name, (columns, pk) in tables.items():
        db[name].create(columns, pk=pk)  # type: ignore[union-attr]


@functools.cache
def _statements() -> dict[str, str]:
    """The named statements of sql/clerk/meetings.sql (SQLite; our file, never input)."""
    from pgqueue.sql import parse_named, sql_root

    return parse_named((sql_root() / "clerk" / "meetings.sql").read_text())


def _build_people(db: sqlite_utils.Database) -> int:
    """One person per folded name: `people`, `person_names`, and the person ids on
    mentions, votes and motions. Returns the number of people."""
    sql = _statements()
    names = [row[0] for row in db.execute(sql["entity_names"]).fetchall() if row[0]]
    canonical = merge_names(names)
    titles: dict[str, Counter[str]] = {}
    for name, title, uses in db.execute(sql["name_titles"]).fetchall():
        titles.setdefault(canonical.get(name, name), Counter())[title] += uses
    ids = {person: number for number, person in enumerate(sorted(set(canonical.values())), start=1)}
    aliases: dict[str, list[str]] = {}
    for name, person in canonical.items():
        if name != person:
            aliases.setdefault(person, []).append(name)
    db["people"].insert_all(  # type: ignore[union-attr]
        (
            {
                "id": number,
                "name": person,
                "title": titles[person].most_common(1)[0][0] if person in titles else None,
                "aliases": json.dumps(sorted(aliases.get(person, []))),
                "pages": 0,
            }
            for person, number in ids.items()
        ),
        batch_size=BATCH_SIZE,
    )
    db["person_names"].insert_all(  # type: ignore[union-attr]
        ({"name": name, "person_id": ids[person]} for name, person in canonical.items()),
        batch_size=BATCH_SIZE,
    )
    for statement in ("link_mentions", "link_votes", "link_motions"):
        db.execute(sql[statement])
    spans = db.execute(sql["person_spans"]).fetchall()
    db.conn.executemany(
        sql["set_person_span"],
        [{"id": row[0], "first_date": row[1], "last_date": row[2], "pages": row[3]} for row in spans],
    )
    db.execute(sql["person_votes_view"])
    return len(ids)


def _finish(db: sqlite_utils.Database, entities: bool) -> None:
    for table in PAGE_TABLES.values():
        db[table].enable_fts(["text"], tokenize="porter", create_triggers=False)  # type: ignore[union-attr]
        db[table].create_index(["meeting", "date"])  # type: ignore[union-attr]
        db[table].create_index(["date"])  # type: ignore[union-attr]
    if entities:
        for table in ENTITY_TABLES:
            db[table].create_index(["page_id"])  # type: ignore[union-attr]
        db["people"].create_index(["name"])  # type: ignore[union-attr]
        db["mentions"].create_index(["person_id"])  # type: ignore[union-attr]
        db["votes"].create_index(["person_id", "date"])  # type: ignore[union-attr]
        db["votes"].create_index(["motion_id"])  # type: ignore[union-attr]
        db["votes"].create_index(["roll_call_id"])  # type: ignore[union-attr]
        db["roll_calls"].create_index(["motion_id"])  # type: ignore[union-attr]
        db["references"].create_index(["kind", "number"])  # type: ignore[union-attr]


def _table_names(path: Path) -> list[str]:
    import sqlite_utils

    with contextlib.closing(sqlite_utils.Database(path)) as db:
        return sorted(db.table_names())


@contextlib.contextmanager
def _site_lock(site_dir: Path) -> Iterator[None]:
    """An exclusive lock on the site directory (flock, so it dies with its process)."""
    descriptor = os.open(site_dir, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        yield
    finally:
        os.close(descriptor)


def _superseded(site_dir: Path, run: str | None, entities: bool) -> bool:
    """Whether this compile must not replace the current database: it is a fast one, and
    the full compile of the same run already put its database in place. Call locked."""
    if run is None:
        return False
    try:
        previous = json.loads((site_dir / MARKER_FILE).read_text())
    except (OSError, ValueError):
        return False
    if previous.get("run") != run:
        return False
    if not entities and previous.get("entities"):
        return True
    return False


def _write_marker(site_dir: Path, run: str, entities: bool) -> None:
    temp = site_dir / f"{MARKER_FILE}.{os.getpid()}.tmp"
    temp.write_text(json.dumps({"run": run, "entities": entities}))
    os.replace(temp, site_dir / MARKER_FILE)


def _skipped(target: Path) -> CompileResult:
    tables = _table_names(target) if target.exists() else []
    return CompileResult(path=target, agendas=0, minutes=0, tables=tables, skipped=True)


def compile_site(
    site_dir: Path,
    *,
    entities: bool,
    document_urls: dict[str, str] | None = None,
    run: str | None = None,
) -> CompileResult:
    """Build `<site_dir>/meetings.db` from the page texts, atomically.

    `document_urls` maps a document key `"<kind>/<meeting>/<date>"` (or a page id) to
    the URL of its PDF, for the `document_url` column. With `entities=True` the entity
    tables (`ENTITY_TABLES`, `people`, `person_names` and the view `person_votes`) are
    filled from the extraction cache; pages with no cached entities are counted in
    `missing_entities`. `run` names the pipeline
    run: a fast compile (`entities=False`) of a run whose full compile is already in place
    replaces nothing and returns a result with `skipped=True`.
    """
    site_dir = Path(site_dir)
    site_dir.mkdir(parents=True, exist_ok=True)
    target = site_dir / DATABASE_FILE
    with _site_lock(site_dir):
        if _superseded(site_dir, run, entities):  # the full compile raced ahead: no work
            return _skipped(target)
    descriptor, temp_name = tempfile.mkstemp(dir=site_dir, prefix=f".{DATABASE_FILE}.", suffix=".tmp")
    os.close(descriptor)
    temp = Path(temp_name)
    cache = ExtractionCache(site_dir) if entities else None
    import sqlite_utils

    try:
        db = sqlite_utils.Database(temp)
        # The temporary file is disposable until the rename, so skip the journal.
        db.execute("PRAGMA journal_mode = OFF")
        db.execute("PRAGMA synchronous = OFF")
        _create_tables(db, entities)
        builder = _Builder(db, site_dir, document_urls, cache)
        for kind, table in PAGE_TABLES.items():
            # Ids derive from the meeting slug, so "City Council" and "CITY COUNCIL" on
            # the same date name the same page: the later one replaces the earlier.
            db[table].insert_all(builder.rows(kind), batch_size=BATCH_SIZE, replace=True)  # type: ignore[union-attr]
        builder.flush_entities()
        if entities:
            builder.counts.people = _build_people(db)
        _finish(db, entities)
        db.execute("PRAGMA journal_mode = DELETE")
        db.conn.commit()
        db.close()
        with temp.open("rb+") as handle:
            os.fsync(handle.fileno())
        with _site_lock(site_dir):
            # Checked again at the rename: the full compile may have finished meanwhile.
            if _superseded(site_dir, run, entities):
                temp.unlink()
                return _skipped(target)
            os.replace(temp, target)
            if run is not None:
                _write_marker(site_dir, run, entities)
    except BaseException:
        with contextlib.suppress(OSError):
            temp.unlink()
        raise
    finally:
        if cache is not None:
            cache.close()
    counts = builder.counts
    result = CompileResult(
        path=target,
        agendas=counts.pages["agenda"],
        minutes=counts.pages["minutes"],
        people=counts.people,
        motions=counts.motions,
        votes=counts.votes,
        references=counts.references,
        roll_calls=counts.roll_calls,
        mentions=counts.mentions,
        missing_entities=counts.missing_entities,
        tables=_table_names(target),
    )
    log.info(
        "compiled %s: %d agenda pages, %d minutes pages",
        target,
        result.agendas,
        result.minutes,
        extra={"action": "compile.site"},
    )
    return result
