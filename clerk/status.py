"""What `clerk status` shows, read from pgqueue's views and clerk's tables (the only truth)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from clerk.config import QUEUES
from clerk.pipeline import Pipeline
from pgqueue.db import mask_url, query
from pgqueue.embedded import describe_embedded

STATES = ("queued", "scheduled", "running", "succeeded", "failed", "cancelled")
STAGES = ("fetch", "ocr", "compile", "extract", "compile+entities", "deploy")


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


def _iso(value: datetime | None) -> str | None:
    return value.isoformat(timespec="seconds") if value is not None else None


def active_sites(pipeline: Pipeline) -> list[dict[str, Any]]:
    """Sites with unfinished work: their current stage and page progress."""
    with pipeline.queue.session(atomic=False) as conn:
        rows = query(conn, pipeline.queue.statements.live_tags).fetchall()
    stages: dict[str, set[str]] = {}
    for row in rows:
        stages.setdefault(row["tag"], set()).add(row["queue"])
    result = []
    order = {"fetch": 0, "ocr": 1, "extraction": 2, "compilation": 3, "deploy": 4}
    for site in sorted(stages):
        with pipeline.queue.session(atomic=False) as conn:
            group = query(conn, pipeline.queue.statements.latest_group_by_tag, {"tag": site}).fetchone()
        stage = min(stages[site], key=lambda q: order.get(q, 9))
        result.append({
            "site": site, "stage": stage,
            "pages_done": group["done"] if group else 0,
            "pages_total": group["total"] if group else 0,
            "percent": float(group["percent"]) if group else 0.0,
            "failed_pages": group["failed"] if group else 0,
            "started_at": _iso(group["started_at"]) if group else None,
            "updated_at": _iso(group["updated_at"]) if group else None})
    return result


def overview(pipeline: Pipeline) -> dict[str, Any]:
    found = workers(pipeline)
    per_queue = {name: 0 for name in QUEUES}
    for worker in found:
        for name in worker["queues"]:
            per_queue[name] = per_queue.get(name, 0) + 1
    database = describe_embedded(pipeline.dsn) or mask_url(pipeline.dsn)  # no fake password
    return {"database": database, "queues": queue_table(pipeline),
            "workers": found, "workers_per_queue": per_queue, "sites": active_sites(pipeline)}


def site_status(pipeline: Pipeline, site: str) -> dict[str, Any]:
    """Stages of the site's latest run, with ✓ / → / ✗, pages and failures."""
    statements = pipeline.queue.statements
    row = pipeline.fetch_one("get_site", {"subdomain": site})
    if row is None:
        raise LookupError(f"no site {site!r}")
    with pipeline.queue.session(atomic=False) as conn:
        group = query(conn, statements.latest_group_by_tag, {"tag": site}).fetchone()
        live = query(conn, statements.live_by_tag, {"tag": site}).fetchall()
        since = group["started_at"] if group else row["created_at"]
        jobs = query(conn, statements.jobs_by_tag_since,
                     {"tag": site, "since": since, "exclude_queue": "ocr"}).fetchall()
        fetches = query(conn, statements.jobs_by_tag_since,
                        {"tag": site, "since": row["created_at"], "exclude_queue": "ocr"}
                        ).fetchall()
    failures = pipeline.queue.group_failures(group["id"]) if group else []
    fetch_jobs = [j for j in fetches if j["queue"] == "fetch"]
    stages = _stages(group, jobs, fetch_jobs, live)
    documents = pipeline.fetch_all("document_errors", {"site": site})
    refused = pipeline.fetch_all("refused_links", {"site": site})
    complete = all(s["state"] in ("done", "skipped") for s in stages)
    # The latest fetch, and the run's later steps, that failed for good: their errors.
    failed_jobs = [{"job_id": j["id"], "task": j["task"], "queue": j["queue"],
                    "attempt": j["attempt"], "error": _last_line(j["last_error"])}
                   for j in fetch_jobs[-1:] + [j for j in jobs if j["queue"] != "fetch"]
                   if j["state"] == "failed"]
    if complete:
        state = "complete"
    elif live:
        state = "in progress"
    elif not fetch_jobs:
        state = "never run"
    else:
        state = "failed" if failed_jobs or any(s["state"] == "failed" for s in stages) else "stopped"
    return {
        "site": site, "name": row["name"], "source_url": row["source_url"],
        "last_fetch_at": _iso(row["last_fetch_at"]), "last_success_at": _iso(row["last_success_at"]),
        "last_result": row["last_result"], "complete": complete, "state": state,
        "pages_done": group["done"] if group else 0, "pages_total": group["total"] if group else 0,
        "percent": float(group["percent"]) if group else 0.0,
        "started_at": _iso(group["started_at"]) if group else None,
        "updated_at": _iso(group["updated_at"]) if group else None,
        "stages": stages,
        "failed_pages": [{"job_id": f["id"], **f["args"], "error": _last_line(f["last_error"])}
                         for f in failures],
        "failed_jobs": failed_jobs,
        "document_errors": [{**d, "date": str(d["date"])} for d in documents],
        "refused_links": [{"url": r["url"], "error": r["reason"]} for r in refused],
    }


def _last_line(text: str | None) -> str | None:
    return text.strip().splitlines()[-1] if text and text.strip() else text


def _state_of(jobs: list[dict[str, Any]]) -> str:
    if not jobs:
        return "pending"
    latest = jobs[-1]["state"]
    return {"succeeded": "done", "queued": "queued", "running": "running",
            "failed": "failed", "cancelled": "cancelled"}[latest]


def _stages(group: dict[str, Any] | None, jobs: list[dict[str, Any]],
            fetches: list[dict[str, Any]], live: list[dict[str, Any]]) -> list[dict[str, Any]]:
    fetch_state = _state_of(fetches)
    if fetch_state == "done" and group is None:
        fetch_state = "done"
    if group is None:
        ocr = "pending"
    elif group["cancelled_at"] is not None:
        ocr = "cancelled"
    elif group["completed_at"] is not None:
        ocr = "done"
    else:
        ocr = "running"
    compiles = [j for j in jobs if j["task"] == "clerk.compile"]
    fast = [j for j in compiles if not j["args"].get("entities")]
    full = [j for j in compiles if j["args"].get("entities")]
    extracts = [j for j in jobs if j["task"] == "clerk.extract"]
    deploys = [j for j in jobs if j["task"] == "clerk.deploy"]
    stages = [
        {"stage": "fetch", "state": fetch_state},
        {"stage": "ocr", "state": ocr,
         "detail": f"{group['done']}/{group['total']} pages" if group else None},
        {"stage": "compile", "state": _state_of(fast)},
        {"stage": "extract", "state": _state_of(extracts)},
        {"stage": "compile+entities", "state": _state_of(full)},
        {"stage": "deploy", "state": _state_of(deploys)},
    ]
    if group is None and fetch_state == "done" and not live:
        for stage in stages[1:]:  # nothing new: the run ended at fetch
            stage["state"] = "skipped"
    return stages


MARKS = {"done": "✓", "running": "→", "queued": "…", "pending": " ", "failed": "✗",
         "cancelled": "✗", "skipped": "-"}
