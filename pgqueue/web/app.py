"""`create_app`: the routes, the Jinja environment and the state pages read. See pgqueue.web."""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from typing import TYPE_CHECKING

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from pgqueue.errors import PgQueueError
from pgqueue.web import actions, pages
from pgqueue.web.extension import Extension
from pgqueue.web.reads import Reads
from pgqueue.web.render import make_environment
from pgqueue.web.security import CsrfCookie

if TYPE_CHECKING:
    from pgqueue.queue import Queue

STATIC = pages.HERE / "static"


def create_app(queue: Queue, *, read_only: bool = False, extensions: Sequence[Extension] = (),
               title: str = "pgqueue", secret: bytes | None = None) -> Starlette:
    """The dashboard of `queue`, with the pages of `extensions`; see pgqueue.web."""
    names = [ext.name for ext in extensions]
    if len(set(names)) != len(names):
        raise ValueError(f"extension names must be unique: {names}")
    routes: list[BaseRoute] = [
        Route("/", pages.overview),
        Route("/_/overview", pages.overview_live),
        Route("/jobs", pages.jobs),
        Route("/_/jobs", pages.jobs_live),
        Route("/jobs/{id:int}", pages.job_detail),
        Route("/workers", pages.workers),
        Route("/groups", pages.groups),
        Route("/groups/{id:int}", pages.group_detail),
        Mount("/static", app=StaticFiles(directory=STATIC), name="static"),
    ]
    if not read_only:
        routes += [
            Route("/jobs/{id:int}/retry", actions.retry_job, methods=["POST"]),
            Route("/jobs/{id:int}/cancel", actions.cancel_job, methods=["POST"]),
            Route("/jobs/retry", actions.retry_matching, methods=["POST"]),
            Route("/jobs/cancel", actions.cancel_matching, methods=["POST"]),
            Route("/queues/{name}/pause", actions.pause_queue, methods=["POST"]),
            Route("/queues/{name}/resume", actions.resume_queue, methods=["POST"]),
        ]
    for ext in extensions:
        routes += list(ext.routes)
        if not read_only:
            routes += list(ext.action_routes)
    app = Starlette(routes=routes, middleware=[Middleware(CsrfCookie)],
                    exception_handlers={404: pages.not_found, 403: pages.forbidden,
                                        400: pages.bad_request,
                                        PgQueueError: pages.database_error})
    app.state.queue = queue
    app.state.read_only = read_only
    app.state.extensions = list(extensions)
    app.state.title = title
    app.state.csrf_secret = secret or secrets.token_bytes(32)
    app.state.jinja = make_environment(extensions)
    app.state.reads = Reads(queue.store)
    return app
