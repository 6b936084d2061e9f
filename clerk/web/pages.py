"""The site pages' handlers: the Sites list, a site's page, their live partials, the
overview's panel, and the two actions (enqueue a site, purge a site).

Reads run in Starlette's thread pool (plain `def` handlers: psycopg is synchronous); the
actions are `async` only to await `check_post`, and do their work in the thread pool.
Every page is also JSON at the same path (pgqueue.web's rule); the JSON is the data, not
the drawing.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from clerk.pipeline import PRIORITIES, Pipeline, SiteNotFound
from clerk.sites import InvalidSubdomain, UnknownSite, purge_site, validate_subdomain
from clerk.web import reads
from pgqueue.web import check_post, json_dumps, render, wants_json

NOTES = {  # what an action did, shown on the page it redirects to (?done=...)
    "enqueued": "Run started (fetch job {job}).",
    "joined": "A run was already in progress ({jobs} jobs): joined it.",
    "purged": "Purged: {cancelled} queued jobs cancelled, {signalled} running jobs told to "
              "stop, {groups} runs cancelled, {documents} stored documents deleted.",
}


def _json(data: Any, status_code: int = 200) -> Response:
    return Response(json_dumps(data), status_code=status_code, media_type="application/json")


def _site(request: Request) -> str:
    try:
        return validate_subdomain(str(request.path_params["site"]))
    except InvalidSubdomain as error:
        raise HTTPException(status_code=404, detail=str(error)) from None


def _note(request: Request) -> str | None:
    done = request.query_params.get("done")
    if done not in NOTES:
        return None
    fields = {key: request.query_params.get(key, "?") for key in
              ("job", "jobs", "cancelled", "signalled", "groups", "documents")}
    return NOTES[done].format(**fields)


class SitePages:
    """The handlers, bound to one clerk Pipeline (its settings name the storage paths)."""

    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline

    # -- the Sites list ----------------------------------------------------------------

    def _list(self, request: Request) -> dict[str, Any]:
        return reads.sites_page(self.pipeline, after=request.query_params.get("after") or None,
                                q=request.query_params.get("q") or None)

    def sites(self, request: Request) -> Response:
        data = self._list(request)
        if wants_json(request):
            return _json(data)
        return render(request, "clerk/sites.html", {**data, "live_query": _query(request)})

    def sites_live(self, request: Request) -> Response:
        """The table's rows, polled by the Sites page."""
        data = self._list(request)
        if wants_json(request):
            return _json(data)
        return render(request, "clerk/sites_rows.html", data)

    # -- one site ----------------------------------------------------------------------

    def _detail(self, request: Request) -> dict[str, Any]:
        site = _site(request)
        try:
            return reads.site_page(self.pipeline, site)
        except LookupError:
            raise HTTPException(status_code=404, detail=f"no site {site!r}") from None

    def site(self, request: Request) -> Response:
        data = self._detail(request)
        if wants_json(request):
            return _json(data)
        return render(request, "clerk/site.html", {
            **data, "diagram": reads.diagram(data["stages"], data["live"]),
            "note": _note(request), "priorities": list(PRIORITIES)})

    def site_live(self, request: Request) -> Response:
        """The pipeline drawing, counts and failures of a site, polled by its page."""
        data = self._detail(request)
        if wants_json(request):
            return _json(data)
        return render(request, "clerk/site_live.html", {
            **data, "diagram": reads.diagram(data["stages"], data["live"])})

    # -- the overview's panel ----------------------------------------------------------

    def panel(self, request: Request) -> Response:
        data = reads.panel(self.pipeline)
        if wants_json(request):
            return _json(data)
        return render(request, "clerk/panel.html", data)

    # -- actions -----------------------------------------------------------------------

    async def enqueue(self, request: Request) -> Response:
        """`clerk enqueue SITE [--priority P]`: start a run, or join the one in progress."""
        form = await check_post(request)
        site = _site(request)
        priority = str(form.get("priority") or "normal")
        if priority not in PRIORITIES:
            raise HTTPException(status_code=400, detail=f"no priority {priority!r}: "
                                f"{', '.join(PRIORITIES)}")
        try:
            result = await run_in_threadpool(self.pipeline.enqueue_site, site, priority)
        except SiteNotFound as error:
            raise HTTPException(status_code=404, detail=str(error)) from None
        if wants_json(request):
            return _json(result)
        if result["joined"]:
            return _back(request, site, done="joined", jobs=result["live_jobs"])
        return _back(request, site, done="enqueued", job=result["job_id"])

    async def purge(self, request: Request) -> Response:
        """`clerk purge SITE`, after a confirmation that says what it will stop."""
        form = await check_post(request)
        site = _site(request)
        if form.get("confirm") != "yes":
            live = await run_in_threadpool(self.pipeline.live_jobs, site)
            data = {"site": site, "confirm": True, "live_jobs": live,
                    "jobs": sum(live.values())}
            if wants_json(request):
                return _json(data)
            return render(request, "clerk/purge_confirm.html", data)
        try:
            result = await run_in_threadpool(purge_site, self.pipeline, site)
        except UnknownSite as error:
            raise HTTPException(status_code=404, detail=str(error)) from None
        if wants_json(request):
            return _json({"site": site, **result})
        return _back(request, site, done="purged", cancelled=result["cancelled"],
                     signalled=result["signalled"], groups=result["groups"],
                     documents=result["documents_deleted"])


def _query(request: Request) -> str:
    """The list's own query string, for its polled partial."""
    params = {key: value for key, value in request.query_params.items()
              if key in ("after", "q") and value}
    return urlencode(params)


def _back(request: Request, site: str, **params: Any) -> Response:
    """303 to the site's page, which says what the action did (POST, redirect, GET)."""
    root = str(request.scope.get("root_path", "")).rstrip("/")
    return RedirectResponse(f"{root}/sites/{site}?{urlencode(params)}", status_code=303)


__all__ = ["SitePages"]
