"""The actions (POST only, never routed in read-only mode): retry or cancel a job, or every
job matching the jobs page's filter (the first POST answers with the count to confirm; the
confirmed one acts on the filter as it matches then); pause and resume a queue.

Retry and cancel are pgqueue's own (`Queue.retry_failed`, `Queue.cancel`): the dashboard
adds no second path to change a job."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from pgqueue.web.reads import BadFilter, JobFilter, Reads
from pgqueue.web.render import render
from pgqueue.web.security import check_post

BATCH = 5000  # ids per retry/cancel transaction in a bulk action
RETRYABLE = ["failed"]
CANCELLABLE = ["queued", "running"]


def _done(request: Request, message: str, back: str, **counts: Any) -> Response:
    reads: Reads = request.app.state.reads
    reads.forget()  # the next overview shows what the action did
    return render(request, "pgqueue/done.html", {"message": message, "back": back, **counts})


def _local(path: object, default: str) -> str:
    """A path of this dashboard to go back to (never another site's URL)."""
    if isinstance(path, str) and path.startswith("/") and not path.startswith("//") \
            and "\\" not in path:
        return path
    return default


async def retry_job(request: Request) -> Response:
    await check_post(request)
    job_id = int(request.path_params["id"])
    queue = request.app.state.queue
    moved = await run_in_threadpool(lambda: queue.retry_failed(ids=[job_id]))
    message = (f"job {job_id} queued again" if moved
               else f"job {job_id} was not failed (or a live job holds its dedupe key)")
    return _done(request, message, f"/jobs/{job_id}", retried=moved)


async def cancel_job(request: Request) -> Response:
    await check_post(request)
    job_id = int(request.path_params["id"])
    queue = request.app.state.queue
    result = await run_in_threadpool(lambda: queue.cancel(ids=[job_id]))
    if result.cancelled:
        message = f"job {job_id} cancelled"
    elif result.signalled:
        message = f"job {job_id} is running: its worker was told to stop it"
    else:
        message = f"job {job_id} was neither queued nor running"
    return _done(request, message, f"/jobs/{job_id}", cancelled=result.cancelled,
                 signalled=result.signalled)


async def _matching(request: Request, verb: str, states: list[str]) -> Response | None:
    """The confirmation page (the count), or None when the form says confirm=yes."""
    form = await check_post(request)
    try:
        flt = JobFilter.parse(form)
    except BadFilter as error:
        raise HTTPException(400, str(error)) from None
    request.state.job_filter = flt
    if form.get("confirm") == "yes":
        return None
    reads: Reads = request.app.state.reads
    ids = await run_in_threadpool(reads.matching_ids, flt, states)
    return render(request, "pgqueue/confirm.html", {
        "action": verb, "count": len(ids), "filter": flt.as_dict(), "query": flt.query(),
        "states": states})


async def _bulk(request: Request, verb: str, states: list[str]) -> Response:
    confirm = await _matching(request, verb, states)
    if confirm is not None:
        return confirm
    flt: JobFilter = request.state.job_filter
    reads: Reads = request.app.state.reads
    queue = request.app.state.queue

    def act() -> dict[str, int]:
        ids = reads.matching_ids(flt, states)
        totals = {"matched": len(ids), "retried": 0, "cancelled": 0, "signalled": 0}
        for start in range(0, len(ids), BATCH):
            chunk = ids[start:start + BATCH]
            if verb == "retry":
                totals["retried"] += queue.retry_failed(ids=chunk)
            else:
                result = queue.cancel(ids=chunk)
                totals["cancelled"] += result.cancelled
                totals["signalled"] += result.signalled
        return totals

    totals = await run_in_threadpool(act)
    if verb == "retry":
        message = f"{totals['retried']} of {totals['matched']} matching failed jobs queued again"
    else:
        message = (f"{totals['cancelled']} queued jobs cancelled, {totals['signalled']} "
                   f"running ones told to stop (of {totals['matched']} matching)")
    query = urlencode(flt.query())
    return _done(request, message, "/jobs" + (f"?{query}" if query else ""), **totals)


async def retry_matching(request: Request) -> Response:
    return await _bulk(request, "retry", RETRYABLE)


async def cancel_matching(request: Request) -> Response:
    return await _bulk(request, "cancel", CANCELLABLE)


async def pause_queue(request: Request) -> Response:
    form = await check_post(request)
    name = str(request.path_params["name"])
    reason = form.get("reason")
    queue = request.app.state.queue
    paused = await run_in_threadpool(
        lambda: queue.pause(name, reason=reason.strip() or None
                            if isinstance(reason, str) else None))
    message = (f"queue {name} paused: no worker claims its jobs until it is resumed"
               if paused else f"queue {name} was paused already")
    return _done(request, message, _local(form.get("next"), "/"), queue=name, paused=paused)


async def resume_queue(request: Request) -> Response:
    form = await check_post(request)
    name = str(request.path_params["name"])
    queue = request.app.state.queue
    resumed = await run_in_threadpool(queue.resume, name)
    message = f"queue {name} resumed" if resumed else f"queue {name} was not paused"
    return _done(request, message, _local(form.get("next"), "/"), queue=name, resumed=resumed)
