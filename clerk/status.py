"""What `clerk status` shows, read from pgqueue's tables and views and clerk's (the only truth).

A site's *run* starts with a fetch job. The fetch opens one group of page jobs (OCR), whose
completion inserts the follow-ups: a fast compile, and extract → compile+entities → deploy.
Status describes the site's latest run only; what an older run left (its fetch summary,
its last deploy) is labelled "previous run". Every site is read by one statement
(`site_runs` in sql/clerk/status.sql), for one site or for all sites in flight.
"""

from __future__ import annotations

import functools
from datetime import datetime
from typing import Any, LiteralString, cast

from psycopg import sql

from clerk.blobs import site_storage_of
from clerk.config import QUEUES
from clerk.db import CLERK_SCHEMA
from clerk.output import error_line, printable
from clerk.pipeline import Pipeline
from clerk.triage import site_page_reads
from pgqueue.db import mask_url, query
from pgqueue.embedded import describe_embedded
from pgqueue.sql import parse_named, sql_root, validate_schema

STATES = ("queued", "scheduled", "running", "succeeded", "failed", "cancelled")
STAGES = ("fetch", "ocr", "compile", "extract", "compile+entities", "deploy")
FETCH_QUEUE = "fetch"
PAGE_QUEUE = "ocr"
# Which stage each stage waits for: the fast compile and extract both start when the page
# group completes; the full compile follows extract, deploy follows the full compile.
DEPENDS_ON = {"ocr": "fetch", "compile": "ocr", "extract": "ocr",
              "compile+entities": "extract", "deploy": "compile+entities"}
FINISHED = ("done", "skipped")
STOPPED = ("failed", "cancelled", "not run")

MARKS = {"done": "✓", "running": "→", "queued": "…", "retrying": "↻", "pending": " ",
         "failed": "✗", "cancelled": "✗", "skipped": "-", "not run": " "}


@functools.cache
def statements(queue_schema: str) -> dict[str, sql.Composed]:
    """sql/clerk/status.sql, composed for clerk's schema and the configured queue schema."""
    text = (sql_root() / "clerk" / "status.sql").read_text()
    return {name: sql.SQL(cast("LiteralString", body)).format(  # type: ignore[redundant-cast]
                schema=sql.Identifier(CLERK_SCHEMA),
                queue_schema=sql.Identifier(validate_schema(queue_schema)))
            for name, body in parse_named(text).items()}


def read_runs(pipeline: Pipeline, sites: list[str]) -> list[dict[str, Any]]:
    """The latest run of each site as `describe_run` sees it, in the order given: one query
    for all of them."""
    if not sites:
        return []
    with pipeline.queue.session(atomic=False) as conn:
        rows = query(conn, statements(pipeline.queue.schema)["site_runs"], {
            "sites": sites, "fetch_queue": FETCH_QUEUE, "page_queue": PAGE_QUEUE}).fetchall()
    order = {site: index for index, site in enumerate(sites)}
    return [describe_run(row) for row in sorted(rows, key=lambda row: order[row["site"]])]


def raise_priority(pipeline: Pipeline, site: str, priority: int) -> dict[str, int]:
    """Raise the priority of a site's run in flight (never lower it); the counts changed."""
    with pipeline.queue.session() as conn:
        row = query(conn, statements(pipeline.queue.schema)["raise_run_priority"],
                    {"site": site, "priority": priority}).fetchone()
    assert row is not None  # an aggregate always returns its one row
    return {key: int(value) if value is not None else 0 for key, value in row.items()}


# -- one run ------------------------------------------------------------------------------

def _job_state(state: str, attempt: int, runnable: bool) -> str:
    if state == "queued":
        return "retrying" if attempt > 0 or not runnable else "queued"
    return {"succeeded": "done", "running": "running", "failed": "failed",
            "cancelled": "cancelled"}[state]


def _step_stage(stage: str, step: dict[str, Any]) -> bool:
    task, entities = str(step["task"]), bool(step["entities"])
    return {"compile": task == "clerk.compile" and not entities,
            "extract": task == "clerk.extract",
            "compile+entities": task == "clerk.compile" and entities,
            "deploy": task == "clerk.deploy"}[stage]


def _pages(row: dict[str, Any]) -> dict[str, int]:
    total = row["pages_total"] or 0
    pending = row["pages_pending"] or 0
    failed = row["pages_failed"] or 0
    cancelled = row["pages_cancelled"] or 0
    return {"total": total, "read": max(0, total - pending - failed - cancelled),
            "failed": failed, "cancelled": cancelled, "pending": pending}


def pages_detail(pages: dict[str, int]) -> str:
    """`6/20 pages read, 14 cancelled`: cancelled and failed pages are not counted as read."""
    text = f"{pages['read']}/{pages['total']} pages read"
    for key in ("failed", "cancelled"):
        if pages[key]:
            text += f", {pages[key]} {key}"
    return text


def _stages(row: dict[str, Any], pages: dict[str, int], live: dict[str, dict[str, int]]
            ) -> list[dict[str, Any]]:
    states: dict[str, str] = {}
    details: dict[str, str | None] = dict.fromkeys(STAGES)
    errors: dict[str, str | None] = dict.fromkeys(STAGES)
    if row["fetch_id"] is None:
        states["fetch"] = "pending"
    else:
        states["fetch"] = _job_state(row["fetch_state"], row["fetch_attempt"],
                                     row["fetch_runnable"])
        if states["fetch"] in ("failed", "retrying") and row["fetch_error"]:
            errors["fetch"] = error_line(row["fetch_error"])
        if states["fetch"] == "retrying":
            details["fetch"] = (f"attempt {row['fetch_attempt']}/{row['fetch_max_attempts']} "
                                f"failed, retrying")
    for stage in STAGES[1:]:
        before = states[DEPENDS_ON[stage]]
        if before in STOPPED:
            states[stage] = "not run"
            continue
        if before == "skipped" or (stage == "ocr" and before == "done"
                                   and row["group_id"] is None):
            states[stage] = "skipped"  # the fetch found nothing new
            continue
        if stage == "ocr":
            if row["group_id"] is None:
                states[stage] = "pending"
                continue
            details[stage] = pages_detail(pages)
            if row["group_cancelled_at"] is not None:
                states[stage] = "cancelled"
            elif row["group_completed_at"] is not None:
                states[stage] = "done"
            else:
                states[stage] = "running" if live.get(PAGE_QUEUE, {}).get("running") else "queued"
            continue
        steps = [s for s in row["steps"] if _step_stage(stage, s)]
        if not steps:
            states[stage] = "pending"
            continue
        latest = steps[-1]
        states[stage] = _job_state(latest["state"], latest["attempt"], latest["runnable"])
        if latest["error"] and states[stage] in ("failed", "retrying"):
            errors[stage] = error_line(latest["error"])
    return [{"stage": stage, "state": states[stage], "detail": details[stage],
             "error": errors[stage]} for stage in STAGES]


def describe_run(row: dict[str, Any]) -> dict[str, Any]:
    """A `site_runs` row as the state of the site's latest run: stages, pages, waits."""
    live: dict[str, dict[str, int]] = row["live"] or {}
    pages = _pages(row)
    stages = _stages(row, pages, live)
    served = set(row["served"] or [])
    queued_queues = sorted(q for q, counts in live.items() if counts["queued"])
    waiting_for = [q for q in queued_queues if q not in served]
    running = sum(counts["running"] for counts in live.values())
    by_stage = {s["stage"]: s["state"] for s in stages}
    if row["fetch_id"] is None:
        state = "never run" if row["last_fetch_at"] is None else "idle"
    elif live:
        state = "in progress"
    elif all(s in FINISHED for s in by_stage.values()):
        state = "complete"
    elif "failed" in by_stage.values():
        state = "failed"
    elif "cancelled" in by_stage.values():
        state = "cancelled"
    else:
        state = "stopped"
    current = next((s for s in stages if s["state"] not in FINISHED), None)
    fetch_created = row["fetch_created_at"]
    this_run = (row["last_fetch_at"] is not None and fetch_created is not None
                and row["last_fetch_at"] >= fetch_created)
    previous = None
    if not this_run and row["last_fetch_at"] is not None:
        previous = {"result": printable(row["last_result"]), "fetched_at": _iso(row["last_fetch_at"]),
                    "deployed_at": _iso(row["last_success_at"])}
    finished_pages = pages["total"] - pages["pending"]
    return {
        "site": row["site"], "name": row["name"], "source_url": row["source_url"],
        "state": state, "complete": state == "complete",
        "stage": current["stage"] if current else None,
        "waiting_for_worker": waiting_for if not running else [],
        "queues_without_worker": waiting_for, "served_queues": sorted(served),
        "live": live, "priority": row["priority"],
        "fetch_job_id": row["fetch_id"], "group_id": row["group_id"],
        "last_fetch_at": _iso(row["last_fetch_at"]), "last_success_at": _iso(row["last_success_at"]),
        "last_result": row["last_result"] if this_run else None,
        "previous_run": previous,
        "pages_done": pages["read"], "pages_total": pages["total"],
        "pages_failed": pages["failed"], "pages_cancelled": pages["cancelled"],
        "pages_pending": pages["pending"],
        "percent": round(100.0 * finished_pages / pages["total"], 1) if pages["total"] else (
            100.0 if state == "complete" else 0.0),
        "started_at": _iso(row["fetch_created_at"]),
        "updated_at": _iso(_latest(row["group_updated_at"], row["live_updated_at"],
                                   row["fetch_finished_at"])),
        "stages": stages,
        "steps": row["steps"],
        "fetch_error": error_line(row["fetch_error"]) if row["fetch_state"] == "failed" else None,
    }


def _latest(*moments: datetime | None) -> datetime | None:
    present = [m for m in moments if m is not None]
    return max(present) if present else None


def _iso(value: datetime | None) -> str | None:
    return value.isoformat(timespec="seconds") if value is not None else None


# -- the commands -------------------------------------------------------------------------

def queue_table(pipeline: Pipeline) -> dict[str, dict[str, int]]:
    """Every clerk queue (even an empty one) and any other queue, by state."""
    table = {name: dict.fromkeys(STATES, 0) for name in QUEUES}
    for row in pipeline.queue.queue_depth():
        table.setdefault(row["queue"], dict.fromkeys(STATES, 0))[row["state"]] = row["jobs"]
    return table


def workers(pipeline: Pipeline) -> list[dict[str, Any]]:
    return [{"host": w["host"], "pid": w["pid"], "queues": list(w["queues"]),
             "concurrency": w["concurrency"], "current_jobs": list(w["current_jobs"]),
             "current_tasks": w["current_tasks"], "last_beat": _iso(w["last_beat"]),
             "started_at": _iso(w["started_at"]), "jobs_done": w["jobs_done"]}
            for w in pipeline.queue.active_workers()]


def active_sites(pipeline: Pipeline) -> list[dict[str, Any]]:
    """Sites with unfinished work: their current stage and page progress."""
    with pipeline.queue.session(atomic=False) as conn:
        tags = sorted({row["tag"] for row in query(conn, pipeline.queue.statements.live_tags)})
    return [{"site": run["site"], "stage": run["stage"] or "-", "state": run["state"],
             "pages_done": run["pages_done"], "pages_total": run["pages_total"],
             "percent": run["percent"], "failed_pages": run["pages_failed"],
             "cancelled_pages": run["pages_cancelled"],
             "waiting_for_worker": run["waiting_for_worker"],
             "started_at": run["started_at"], "updated_at": run["updated_at"],
             "problem": _problem(run)}
            for run in read_runs(pipeline, tags)]


def _problem(run: dict[str, Any]) -> str | None:
    """What is going wrong in a run in flight: a stage failing or retrying, failed pages."""
    for stage in run["stages"]:
        if stage["state"] in ("failed", "retrying"):
            return f"{stage['stage']} {stage['state']}" + (
                f": {stage['error']}" if stage.get("error") else "")
    if run["pages_failed"]:
        return f"{plural(run['pages_failed'], 'page')} failed"
    return None


# -- the overview, as text ----------------------------------------------------------------
# `clerk status` prints the sections below in order. A new line or section is one function
# from the overview's data to its lines, added to OVERVIEW_SECTIONS (header lines first).

LIST_LIMIT = 20  # active sites listed one per line up to this many; beyond, a summary
SLOWEST = 5
FAILING = 10


def site_line(site: dict[str, Any]) -> str:
    """One active site: its stage, its pages, when it last moved, what it waits for."""
    if site["pages_total"]:
        pages = pages_detail({"read": site["pages_done"], "total": site["pages_total"],
                              "failed": site["failed_pages"],
                              "cancelled": site["cancelled_pages"]})
        pages += f" ({site['percent']:.0f}%)"
    else:
        pages = "pages not listed yet" if site["stage"] == "fetch" else "no pages"
    waiting = site["waiting_for_worker"]
    note = f"  waiting for a worker (none on queue {', '.join(waiting)})" if waiting else ""
    return (f"  {printable(site['site']):<24} {site['stage']:<17} {pages}  "
            f"updated {site['updated_at'] or '-'}{note}")


def summarise_sites(sites: list[dict[str, Any]]) -> dict[str, Any]:
    """Active sites in a few figures: how many per stage, the runs in flight longest, and
    those with something failing."""
    by_stage: dict[str, int] = {}
    for site in sites:
        by_stage[site["stage"]] = by_stage.get(site["stage"], 0) + 1
    order = {stage: index for index, stage in enumerate(("-", *STAGES))}
    slowest = sorted((s for s in sites if s["started_at"]), key=lambda s: (s["started_at"],
                                                                            s["site"]))
    failing = [s for s in sites if s.get("problem")]
    return {"active": len(sites),
            "by_stage": dict(sorted(by_stage.items(), key=lambda kv: order.get(kv[0], 99))),
            "slowest": slowest[:SLOWEST], "failing": failing[:FAILING],
            "failing_count": len(failing)}


def _header_lines(data: dict[str, Any]) -> list[str]:
    lines = [f"database: {data['database']}"]
    refresh = data.get("refresh")
    if refresh and refresh["sites"]:
        lines.append(f"refresh: {plural(refresh['sites'], 'site')} on a schedule, next "
                     f"{printable(refresh['next_site'])} at "
                     f"{refresh['next_run_at'].isoformat(timespec='seconds')}")
    held = data["connections"]
    lines.append(f"connections: {sum(held['held'].values())} in use of "
                 f"{held['max_connections'] - held['reserved']} allowed ("
                 + ", ".join(f"{printable(role)} {n}" for role, n in held["held"].items())
                 + ")")
    return lines


def _queue_lines(data: dict[str, Any]) -> list[str]:
    lines = ["", f"{'queue':<13}" + "".join(f"{s:>11}" for s in (*STATES, "workers"))]
    for name, counts in data["queues"].items():
        lines.append(f"{name:<13}" + "".join(f"{counts[s]:>11}" for s in STATES)
                     + f"{data['workers_per_queue'].get(name, 0):>11}")
    return lines


def _paused_lines(data: dict[str, Any]) -> list[str]:
    """Each paused queue (`clerk pause QUEUE`), with its reason."""
    return [f"paused: {printable(row['queue'])} since {row['paused_at']}"
            + (f": {printable(row['reason'])}" if row["reason"] else "")
            + " (clerk resume to go on)" for row in data.get("paused", [])]


def _worker_lines(data: dict[str, Any]) -> list[str]:
    lines = ["", f"workers ({len(data['workers'])}):"]
    for worker in data["workers"]:
        jobs = ", ".join(str(job) for job in worker["current_jobs"]) or "-"
        lines.append(f"  {printable(worker['host'])}:{worker['pid']:<8} "
                     f"{','.join(worker['queues']):<14} jobs {jobs}  beat {worker['last_beat']}")
    return lines


def _site_lines(data: dict[str, Any]) -> list[str]:
    sites = data["sites"]
    lines = ["", f"active sites ({len(sites)}):"]
    if data.get("all_sites") or len(sites) <= LIST_LIMIT:
        return lines + [site_line(site) for site in sites]
    summary = summarise_sites(sites)
    lines.append("  by stage: " + ", ".join(f"{stage} {count}" for stage, count
                                           in summary["by_stage"].items()))
    lines.append(f"  in flight longest ({len(summary['slowest'])}):")
    lines += ["  " + site_line(site) for site in summary["slowest"]]
    if summary["failing_count"]:
        lines.append(f"  failing ({summary['failing_count']}"
                     + (f", first {FAILING}" if summary["failing_count"] > FAILING else "")
                     + "):")
        lines += [f"    {printable(site['site']):<24} {printable(site['problem'])}"
                  for site in summary["failing"]]
    else:
        lines.append("  failing: none")
    lines.append("  (clerk status --all lists every site; clerk status --subdomain NAME "
                 "shows one)")
    return lines


OVERVIEW_SECTIONS = [_header_lines, _queue_lines, _paused_lines, _worker_lines, _site_lines]


def overview_lines(data: dict[str, Any]) -> list[str]:
    """`clerk status` as text, section by section (OVERVIEW_SECTIONS)."""
    return [line for section in OVERVIEW_SECTIONS for line in section(data)]


def overview(pipeline: Pipeline) -> dict[str, Any]:
    found = workers(pipeline)
    per_queue = {name: 0 for name in QUEUES}
    for worker in found:
        for name in worker["queues"]:
            per_queue[name] = per_queue.get(name, 0) + worker["concurrency"]  # slots
    database = describe_embedded(pipeline.dsn) or mask_url(pipeline.dsn)  # no fake password
    return {"database": database, "queues": queue_table(pipeline),
            "workers": found, "workers_per_queue": per_queue, "sites": active_sites(pipeline),
            "connections": pipeline.queue.connections(),  # the server's, by role (issue 21)
            "paused": [{**row, "paused_at": _iso(row["paused_at"])}
                       for row in pipeline.queue.paused_details()]}  # clerk pause QUEUE


def site_status(pipeline: Pipeline, site: str) -> dict[str, Any]:
    """The stages of the site's latest run, with ✓ / → / ✗, pages and failures."""
    [run] = read_runs(pipeline, [site])
    if run["name"] is None:
        raise LookupError(f"no site {site!r}")
    return with_failures(pipeline, run)


def with_failures(pipeline: Pipeline, run: dict[str, Any]) -> dict[str, Any]:
    """A run with what went wrong in it: failed pages and jobs, documents, refused links."""
    site = run["site"]
    failures = (pipeline.queue.group_failures(run["group_id"]) if run["group_id"] is not None
                else [])
    failed_jobs = []
    if run["fetch_error"] is not None:
        failed_jobs.append({"job_id": run["fetch_job_id"], "task": "clerk.fetch",
                            "queue": FETCH_QUEUE, "error": run["fetch_error"]})
    failed_jobs += [{"job_id": s["id"], "task": s["task"], "queue": s["queue"],
                     "attempt": s["attempt"], "error": error_line(s["error"])}
                    for s in run["steps"] if s["state"] == "failed"]
    documents = pipeline.fetch_all("document_errors", {"site": site})
    refused = pipeline.fetch_all("refused_links", {"site": site})
    return {
        **{key: value for key, value in run.items() if key not in ("steps", "live")},
        "failed_pages": [{"job_id": f["id"], **f["args"], "error": error_line(f["last_error"])}
                         for f in failures],
        "failed_jobs": failed_jobs,
        "document_errors": [{**d, "date": str(d["date"])} for d in documents],
        "refused_links": [{"url": r["url"], "error": r["reason"]} for r in refused],
        "page_reads": site_page_reads(pipeline, site),  # how each page was read (issue 17)
        "storage": site_storage_of(pipeline, site),  # what it holds in the database (issue 16)
    }


def plural(count: int, noun: str) -> str:
    """`1 job`, `2 jobs`."""
    return f"{count} {noun}{'' if count == 1 else 's'}"


__all__ = ["MARKS", "OVERVIEW_SECTIONS", "STAGES", "active_sites", "describe_run", "overview",
           "overview_lines", "pages_detail", "plural", "printable", "raise_priority", "read_runs",
           "site_line", "site_status", "statements", "summarise_sites", "with_failures"]
