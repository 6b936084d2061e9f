"""The pages: overview, jobs, job detail, workers, groups. Each answers HTML, or its context
as JSON (see `render`). Endpoints are plain functions: Starlette runs them in its thread pool,
so the (blocking) database reads never hold up the event loop."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from pgqueue.errors import DatabaseUnavailable
from pgqueue.web.reads import MAX_ID, MAX_PAGE_SIZE, PAGE_SIZE, STALE_SECONDS, BadFilter, JobFilter, Reads
from pgqueue.web.render import render

HERE = Path(__file__).resolve().parent
CHART_WIDTH = 600
CHART_HEIGHT = 120


def _reads(request: Request) -> Reads:
    reads: Reads = request.app.state.reads
    return reads


def paused_queues(request: Request) -> list[str]:
    return sorted(request.app.state.queue.paused_queues())


def _int_param(request: Request, name: str) -> int | None:
    value = request.query_params.get(name, "").strip()
    if not value:
        return None
    try:
        number = int(value)
    except ValueError:
        raise HTTPException(400, f"{name} must be a whole number, not {value!r}") from None
    if not 0 <= number <= MAX_ID:
        raise HTTPException(400, f"{name} is out of range")
    return number


def chart(series: list[dict[str, Any]]) -> dict[str, Any]:
    """Bars of the jobs finished per minute (succeeded under failed), in SVG units."""
    peak = max([p["succeeded"] + p["failed"] + p["cancelled"] for p in series] + [1])
    step = CHART_WIDTH / max(len(series), 1)
    bars = []
    for i, point in enumerate(series):
        ok = point["succeeded"] * CHART_HEIGHT / peak
        bad = (point["failed"] + point["cancelled"]) * CHART_HEIGHT / peak
        bars.append({"x": round(i * step + 1, 1), "width": round(max(step - 2, 1), 1),
                     "ok_y": round(CHART_HEIGHT - ok, 1), "ok_h": round(ok, 1),
                     "bad_y": round(CHART_HEIGHT - ok - bad, 1), "bad_h": round(bad, 1),
                     "label": f"{point['minute']:%H:%M}: {point['succeeded']} succeeded, "
                              f"{point['failed']} failed, {point['cancelled']} cancelled"})
    return {"width": CHART_WIDTH, "height": CHART_HEIGHT, "peak": peak, "bars": bars}


def _overview_context(request: Request) -> dict[str, Any]:
    data = dict(_reads(request).overview())
    paused = paused_queues(request)
    known = {q["queue"] for q in data["queues"]}
    data["queues"] = [{**q, "paused": q["queue"] in paused} for q in data["queues"]] + [
        {"queue": name, "queued": 0, "scheduled": 0, "running": 0, "succeeded_last_hour": 0,
         "failed_last_hour": 0, "cancelled_last_hour": 0, "oldest_runnable_age": None,
         "paused": True} for name in paused if name not in known]
    data["paused_queues"] = paused
    return data


def overview(request: Request) -> Response:
    context = _overview_context(request)
    if not _wants_html(request):
        return render(request, "pgqueue/overview.html", context)
    panels = [p for ext in request.app.state.extensions for p in ext.overview_panels]
    return render(request, "pgqueue/overview.html",
                  {**context, "chart": chart(context["throughput"]), "panels": panels})


def overview_live(request: Request) -> Response:
    """The overview's counts alone, polled by the page."""
    context = _overview_context(request)
    if not _wants_html(request):
        return render(request, "pgqueue/_overview_live.html", context)
    return render(request, "pgqueue/_overview_live.html",
                  {**context, "chart": chart(context["throughput"])})


def _wants_html(request: Request) -> bool:
    from pgqueue.web.render import wants_json
    return not wants_json(request)


def _jobs_context(request: Request) -> dict[str, Any]:
    try:
        flt = JobFilter.parse(request.query_params)
    except BadFilter as error:
        raise HTTPException(400, str(error)) from None
    order = request.query_params.get("order", "newest")
    if order not in ("newest", "oldest"):
        raise HTTPException(400, "order must be newest or oldest")
    after = _int_param(request, "after")
    before = _int_param(request, "before")
    if after is not None and before is not None:
        raise HTTPException(400, "give after or before, not both")
    limit = _int_param(request, "limit") or PAGE_SIZE
    limit = min(max(limit, 1), MAX_PAGE_SIZE)
    page = _reads(request).jobs_page(flt, order=order, after=after, before=before,
                                     limit=limit)
    jobs = page.rows
    base = {**flt.query(), "order": order}
    if limit != PAGE_SIZE:
        base["limit"] = str(limit)
    if before is None:  # came forward (or first page)
        next_after = page.edge
        prev_before = jobs[0]["id"] if jobs and after is not None else None
    else:
        prev_before = page.edge
        next_after = jobs[-1]["id"] if jobs else None
    return {
        "filter": flt.as_dict(),
        "order": order,
        "jobs": jobs,
        "next_after": next_after,
        "prev_before": prev_before,
        "looked": page.looked,
        "query": base,
        "first_page": after is None and before is None,
    }


def jobs(request: Request) -> Response:
    context = _jobs_context(request)
    if _wants_html(request):
        context["choices"] = _reads(request).filter_choices()
        context["states"] = ["queued", "running", "succeeded", "failed", "cancelled"]
    return render(request, "pgqueue/jobs.html", context)


def jobs_live(request: Request) -> Response:
    """The jobs table alone, polled on the first page."""
    return render(request, "pgqueue/_jobs_table.html", _jobs_context(request))


def job_detail(request: Request) -> Response:
    job_id = int(request.path_params["id"])
    rows = _reads(request).rows("job", {"id": job_id})
    if not rows:
        raise HTTPException(404, f"no job {job_id} (never existed, or pruned)")
    job = rows[0]
    group = None
    if job["group_id"] is not None:
        found = _reads(request).rows("group", {"id": job["group_id"]})
        group = found[0] if found else None
    attempts, total = _reads(request).attempts(job)
    context = {
        "job": job,
        "group": group,
        "attempts": attempts,
        "attempts_total": total,
        "timeline": timeline(job, attempts),
        "chain": job["on_success"] or [],
        "can_retry": job["state"] == "failed",
        "can_cancel": job["state"] in ("queued", "running") and not job["cancel_requested"],
    }
    return render(request, "pgqueue/job.html", context)


# What the timeline says when an attempt ends without ending its job, by its outcome (the
# attempt that ends the job is the "finished" event).
ENDED = {
    "failed": "attempt {attempt} failed: retried",
    "rescued": "attempt {attempt} lost (lease expired): rescued",
    "returned": "attempt {attempt} given back by its worker (not counted)",
}


def timeline(job: dict[str, Any], attempts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A job's events in time order: enqueued, each attempt's start and its end when it did
    not end the job (a retry, a rescue, a give-back), when it may run (next), finished."""
    events: list[tuple[str, Any]] = [("enqueued", job["created_at"])]
    for attempt in attempts:
        if attempt["started_at"] is not None:
            events.append((f"attempt {attempt['attempt']} started", attempt["started_at"]))
        ended = ENDED.get(attempt["outcome"])
        if ended is not None:
            events.append((ended.format(attempt=attempt["attempt"]), attempt["ended_at"]))
    events.append(("runnable from", job["run_at"]))
    if job["finished_at"] is not None:
        events.append((f"finished: {job['state']}", job["finished_at"]))
    events.sort(key=lambda item: item[1])  # stable: enqueued stays first at equal times
    return [{"event": label, "at": at} for label, at in events]


def workers(request: Request) -> Response:
    rows = _reads(request).rows("workers", {"stale_seconds": STALE_SECONDS})
    for row in rows:
        row["beat_age"] = float(row["beat_age"])
        row["busy"] = int(row["busy"])
    return render(request, "pgqueue/workers.html",
                  {"workers": rows, "stale_seconds": STALE_SECONDS})


def groups(request: Request) -> Response:
    hi = _int_param(request, "after")
    only_open = request.query_params.get("open", "") in ("1", "yes", "true", "on")
    tag = request.query_params.get("tag", "").strip() or None
    rows = _reads(request).rows("groups_page", {
        "hi": hi if hi is not None else MAX_ID, "open": only_open, "tag": tag,
        "limit": PAGE_SIZE + 1})
    more = len(rows) > PAGE_SIZE
    rows = rows[:PAGE_SIZE]
    return render(request, "pgqueue/groups.html", {
        "groups": rows, "open": only_open, "tag": tag,
        "next_after": rows[-1]["id"] if more else None})


def group_detail(request: Request) -> Response:
    group_id = int(request.path_params["id"])
    reads = _reads(request)
    found = reads.rows("group", {"id": group_id})
    if not found:
        raise HTTPException(404, f"no group {group_id} (never existed, or pruned)")
    group = found[0]
    spec = reads.rows("group_spec", {"id": group_id})
    followups = spec[0]["on_complete"] if spec else []
    members: dict[str, int] = {}
    for row in reads.rows("group_members", {"id": group_id}):
        members[row["state"]] = members.get(row["state"], 0) + int(row["jobs"])
    fired = []
    if group["completed_at"] is not None:
        fired = reads.rows("group_followups", {"id": group_id,
                                               "completed_at": group["completed_at"]})
    return render(request, "pgqueue/group.html", {
        "group": group, "members": members, "followups": followups, "fired": fired})


# -- errors -----------------------------------------------------------------------------------

def _error(request: Request, exc: Exception, status: int) -> Response:
    detail = exc.detail if isinstance(exc, HTTPException) else str(exc)
    return render(request, "pgqueue/error.html", {"error": detail, "status": status},
                  status_code=status)


async def not_found(request: Request, exc: Exception) -> Response:
    return _error(request, exc, 404)


async def forbidden(request: Request, exc: Exception) -> Response:
    return _error(request, exc, 403)


async def bad_request(request: Request, exc: Exception) -> Response:
    return _error(request, exc, 400)


async def database_error(request: Request, exc: Exception) -> Response:
    """The database is down (503) or refused a statement (500): one line, no traceback."""
    message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    status = 503 if isinstance(exc, DatabaseUnavailable) else 500
    return render(request, "pgqueue/error.html", {"error": message, "status": status},
                  status_code=status)
