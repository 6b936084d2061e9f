"""What the site pages show, read with clerk's own functions where they exist.

A site's latest run is `clerk.status.read_runs` (the `site_runs` statement `clerk status`
uses); what went wrong in it is `clerk.status.with_failures` (what `status --subdomain`
prints); the stage a run is at, or how it ended, is `clerk.progress.stage_label` (what
`enqueue --wait` prints). Only what those do not read is in sql/clerk/web.sql: a keyset
page of the site list, the totals for the overview's panel, and each run's duration.
"""

from __future__ import annotations

import functools
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, LiteralString, cast

from psycopg import sql

from clerk.compile import DATABASE_FILE
from clerk.db import CLERK_SCHEMA
from clerk.output import printable
from clerk.pipeline import Pipeline
from clerk.progress import stage_label
from clerk.sites import site_dir
from clerk.status import FETCH_QUEUE, read_runs, with_failures
from pgqueue.db import mask_url, query
from pgqueue.sql import parse_named, sql_root, validate_schema

PAGE_SIZE = 50
PANEL_SITES = 20  # sites in flight listed on the overview; the others are counted
IN_FLIGHT_CAP = 1000  # sites in flight counted up to this, then "1000+"

# The pipeline as drawn on a site's page: fetch → OCR, whose completion starts the fast
# compile and extraction side by side; extraction → the full compile → deploy. Columns and
# rows of a grid; the SVG's coordinates are computed from them (diagram()).
LAYOUT = {"fetch": (0, 0.5), "ocr": (1, 0.5), "compile": (2, 0), "extract": (2, 1),
          "compile+entities": (3, 1), "deploy": (4, 1)}
EDGES = (("fetch", "ocr"), ("ocr", "compile"), ("ocr", "extract"),
         ("extract", "compile+entities"), ("compile+entities", "deploy"))
LABELS = {"fetch": "fetch", "ocr": "OCR", "compile": "compile", "extract": "extract",
          "compile+entities": "compile (entities)", "deploy": "deploy"}
# Which queue's live counts belong to which stage (a stage's own jobs).
STAGE_QUEUE = {"fetch": "fetch", "ocr": "ocr", "extract": "extraction", "deploy": "deploy"}
BOX_W, BOX_H, GAP_X, GAP_Y, MARGIN = 150, 64, 44, 26, 8


@functools.cache
def statements(queue_schema: str) -> dict[str, sql.Composed]:
    """sql/clerk/web.sql, composed for clerk's schema and the configured queue schema."""
    text = (sql_root() / "clerk" / "web.sql").read_text()
    return {name: sql.SQL(cast("LiteralString", body)).format(  # type: ignore[redundant-cast]
                schema=sql.Identifier(CLERK_SCHEMA),
                queue_schema=sql.Identifier(validate_schema(queue_schema)))
            for name, body in parse_named(text).items()}


def _rows(pipeline: Pipeline, name: str, params: dict[str, Any]) -> list[dict[str, Any]]:
    with pipeline.queue.session(atomic=False) as conn:
        return query(conn, statements(pipeline.queue.schema)[name], params).fetchall()


def _duration(started: datetime | None, finished: datetime | None) -> float | None:
    """Seconds from the run's start to its end, or until now while it runs."""
    if started is None:
        return None
    end = finished if finished is not None else datetime.now(UTC)
    return round((end - started).total_seconds(), 1)


def _moment(iso: str | None) -> datetime | None:
    """A time `describe_run` gave as text, back as a datetime (for the `when` filter)."""
    return datetime.fromisoformat(iso) if iso else None


def site_rows(pipeline: Pipeline, sites: list[str],
              records: dict[str, dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """One row per site for the Sites list: its run's state, stage, pages and duration.

    With the sites' `records` (their rows of `sites_page`), a site that has no fetch job and
    no live job is described from its record alone ("never run", or "idle" when its
    history was pruned): finding its latest run (`site_runs`) would search every job's
    history for a job it does not have."""
    spans = {row["site"]: row for row in _rows(pipeline, "run_spans", {
        "sites": sites, "fetch_queue": FETCH_QUEUE})}
    quiet = {site for site in sites if records is not None and site in records
             and spans[site]["started_at"] is None and not spans[site]["live_jobs"]}
    runs = {run["site"]: run for run in read_runs(pipeline, [s for s in sites if s not in quiet])}
    rows = []
    for site in sites:
        span = spans[site]
        if site in quiet:
            assert records is not None
            record = records[site]
            state = "never run" if record["last_fetch_at"] is None else "idle"
            run: dict[str, Any] = {
                "name": record["name"], "state": state, "stage": None, "pages_done": 0,
                "pages_failed": 0, "pages_cancelled": 0, "pages_pending": 0, "pages_total": 0,
                "percent": 0.0, "last_result": None, "waiting_for_worker": []}
            result = state
            last_fetch, last_success = record["last_fetch_at"], record["last_success_at"]
        else:
            run = runs[site]
            result = stage_label(run)
            last_fetch, last_success = (_moment(run["last_fetch_at"]),
                                        _moment(run["last_success_at"]))
        rows.append({
            "site": site, "name": run["name"], "state": run["state"],
            "stage": run["stage"], "result": result,
            "pages_done": run["pages_done"], "pages_failed": run["pages_failed"],
            "pages_cancelled": run["pages_cancelled"], "pages_pending": run["pages_pending"],
            "pages_total": run["pages_total"], "percent": run["percent"],
            "started_at": span["started_at"], "finished_at": span["finished_at"],
            "duration_seconds": _duration(span["started_at"], span["finished_at"]),
            "last_fetch_at": last_fetch, "last_success_at": last_success,
            "fetch_result": printable(run["last_result"]) if run["last_result"] else None,
            "waiting_for_worker": run["waiting_for_worker"]})
    return rows


def sites_page(pipeline: Pipeline, *, after: str | None = None, q: str | None = None,
               limit: int = PAGE_SIZE) -> dict[str, Any]:
    """A page of the site list (keyset: `after` the last subdomain of the previous page)."""
    found = _rows(pipeline, "sites_page", {"after": after, "q": q or None, "limit": limit + 1})
    more = len(found) > limit
    found = found[:limit]
    records = {row["subdomain"]: row for row in found}
    rows = site_rows(pipeline, list(records), records)
    for row in rows:
        row["kind"] = records[row["site"]]["source_kind"]
    return {"sites": rows, "after": after, "q": q or "",
            "next_after": found[-1]["subdomain"] if more else None}


def panel(pipeline: Pipeline) -> dict[str, Any]:
    """The overview's panel: how many sites, how many with work in flight (counted up to
    IN_FLIGHT_CAP), and the PANEL_SITES whose runs have been in flight longest."""
    [totals] = _rows(pipeline, "site_totals", {"cap": IN_FLIGHT_CAP + 1})
    tags = [row["site"] for row in _rows(pipeline, "sites_in_flight", {"limit": PANEL_SITES})]
    in_flight = int(totals["in_flight"])
    return {"sites": totals["sites"], "in_flight": min(in_flight, IN_FLIGHT_CAP),
            "in_flight_capped": in_flight > IN_FLIGHT_CAP,
            "active": site_rows(pipeline, tags)}


def diagram(stages: list[dict[str, Any]], live: dict[str, dict[str, int]]
            ) -> dict[str, Any]:
    """The run's stages as boxes and arrows on a grid, for the site page's SVG."""
    nodes = {}
    for stage in stages:
        column, row = LAYOUT[stage["stage"]]
        counts = live.get(STAGE_QUEUE.get(stage["stage"], ""), {})
        nodes[stage["stage"]] = {
            **stage, "label": LABELS[stage["stage"]],
            "x": MARGIN + column * (BOX_W + GAP_X), "y": MARGIN + row * (BOX_H + GAP_Y),
            "w": BOX_W, "h": BOX_H,
            "counts": {key: value for key, value in counts.items() if value}}
    edges = []
    for start, end in EDGES:
        a, b = nodes[start], nodes[end]
        edges.append({"x1": a["x"] + BOX_W, "y1": a["y"] + BOX_H / 2,
                      "x2": b["x"] - 4, "y2": b["y"] + BOX_H / 2,
                      "done": a["state"] in ("done", "skipped")})
    width = MARGIN * 2 + 5 * BOX_W + 4 * GAP_X
    height = MARGIN * 2 + 2 * BOX_H + GAP_Y
    return {"nodes": list(nodes.values()), "edges": edges, "width": width, "height": height}


def site_page(pipeline: Pipeline, site: str, *, failures: bool = True) -> dict[str, Any]:
    """A site's latest run: its stages, live counts, and (with `failures`) what went wrong
    in it (`clerk status --subdomain`), and where its meetings.db is. LookupError for an
    unknown site."""
    [run] = read_runs(pipeline, [site])
    if run["name"] is None:
        raise LookupError(f"no site {site!r}")
    [row] = site_rows(pipeline, [site])
    data: dict[str, Any] = dict(with_failures(pipeline, run)) if failures else {
        key: value for key, value in run.items() if key not in ("steps", "live")}
    data["source_url"] = mask_url(data["source_url"] or "")
    data["result"] = row["result"]
    data["duration_seconds"] = row["duration_seconds"]
    data["run_started_at"], data["run_finished_at"] = row["started_at"], row["finished_at"]
    data["live"] = run["live"]
    database = site_dir(pipeline.settings.storage_dir, site) / DATABASE_FILE
    data["meetings_db"] = {"path": str(database), "exists_here": Path(database).is_file()}
    return data


__all__ = ["IN_FLIGHT_CAP", "PAGE_SIZE", "PANEL_SITES", "diagram", "panel", "site_page",
           "site_rows", "sites_page", "statements"]
