"""pgqueue's web dashboard: a Starlette app a library user mounts in their own ASGI app.

Needs the `web` extra (Starlette, Jinja2, uvicorn, python-multipart). Server-rendered, htmx
vendored in `static/` (no CDN, works offline).

The contract (extensions such as clerk's site pages code against exactly this)
---------------------------------------------------------------------------------
`create_app(queue, *, read_only=False, extensions=(), title="pgqueue", secret=None) -> Starlette`
    The dashboard for one `pgqueue.Queue`. `secret` (bytes) keys the CSRF tokens; by default
    a random one per app (tokens of a page served before a restart are then refused).
    Mount it anywhere (`Mount("/queue", app=create_app(q))`): links carry the mount's
    `root_path`.

`Extension` (a dataclass): adds pages to the dashboard.
    name: str                                   unique, e.g. "clerk"
    nav: Sequence[tuple[str, str]]              (label, path) links after pgqueue's own;
                                                paths are relative to the dashboard's root
    routes: Sequence[starlette.routing.BaseRoute]  added to the app (after pgqueue's)
    templates_dir: Path | None                  searched BEFORE pgqueue's templates; keep
                                                your templates in a subfolder named after the
                                                extension ("clerk/sites.html")
    overview_panels: Sequence[str] = ()         template names included on the overview page
                                                (with the overview's context; a panel that
                                                needs its own data loads it with htmx,
                                                `hx-get="{{ url('/your/partial') }}"`)
    action_routes: Sequence[BaseRoute] = ()     POST routes, added only when not read-only

`render(request, template, context, *, status_code=200) -> Response`
    HTML from the shared Jinja environment (autoescape ON), or JSON of `context` alone when
    `wants_json(request)`. Templates extend "pgqueue/base.html" (blocks: `title`,
    `content`; the nav lists pgqueue's pages and every extension's `nav`). The template
    context is `context` plus: `request`, `title` (the app's), `read_only`, `nav`. Jinja
    globals: `url(path)` (prefixes the mount's root_path), `csrf_field()` (the hidden
    input a POST form needs), `csrf_token()`, `static(name)`; filters `age`
    (seconds or a datetime -> "3m 20s"), `when` (datetime -> "2026-12-07 10:41:14Z").

`wants_json(request) -> bool`
    True for `?format=json` or an `Accept` header that prefers application/json.

JSON encoding (`json_dumps`, `json_default`)
    datetime/date/time -> ISO 8601 strings; timedelta -> seconds (float); Decimal -> int
    when integral, else float; UUID, Path -> str; set/frozenset/tuple -> list; bytes -> not
    encoded (TypeError), so never put raw bytes in a context. Anything else: TypeError.

`request.app.state.queue` (the Queue), `request.app.state.read_only` (bool),
`request.app.state.extensions` (the Extension list), `request.app.state.title`.

`await check_post(request) -> starlette.datastructures.FormData`
    Every POST handler calls it first. Raises `starlette.exceptions.HTTPException(403)`
    for a cross-site request (an `Origin` that is not this host, or `Sec-Fetch-Site` other
    than same-origin/none) or a missing/wrong CSRF token (form field `csrf_token`, or header
    `X-CSRF-Token` for htmx requests), and 403 in read-only mode; returns the parsed form.
    Action routes are not routed at all in read-only mode (pgqueue's, and extensions'
    `action_routes`); templates hide buttons with `{% if not read_only %}`.

`serve(app, host="127.0.0.1", port=8080, *, password_env="DASHBOARD_PASSWORD",
       user_env="DASHBOARD_USER", default_user="clerk", log_level="warning") -> None`
    Runs uvicorn. Off loopback (anything but 127.0.0.0/8, ::1, localhost) it refuses to
    start without a password in `password_env`: raises `pgqueue.errors.ConfigurationError`
    whose message is the one line to print. With a password set (on any host) every
    request needs HTTP Basic (user from `user_env`, default `default_user`), compared in
    constant time. `protect(app, ...)` / `bind_check(host, ...)` are the same two steps for
    callers that run their own server. Passwords are never printed or logged.

Pages (each also JSON at the same path): `/` overview, `/jobs` (filters: state, queue,
task, tag, priority, q (text in args), since, until; keyset paging with `after`/`before`
cursors, a filtered page looking at 100,000 ids at most; `order=newest|oldest`),
`/jobs/{id}` (its `attempts`, oldest first: number, attempt, outcome (failed, rescued,
returned, then the job's own: running, succeeded, failed, cancelled), error with its
traceback, worker_id, worker_host, worker_pid, started_at, ended_at, seconds; and its
`timeline` of events), `/workers`, `/groups`, `/groups/{id}`; `/_/overview` and `/_/jobs` are
the partials the pages poll. The overview's counts are cached for 2 s (an action clears them).
Actions (POST, absent when read-only): `/jobs/{id}/retry`, `/jobs/{id}/cancel`,
`/jobs/retry` and `/jobs/cancel` (the filter's fields in the form; without `confirm=yes`
they answer with the count to confirm), `/queues/{name}/pause`, `/queues/{name}/resume`.
"""

from __future__ import annotations

try:
    import jinja2  # noqa: F401
    import starlette  # noqa: F401
except ImportError as missing:  # one clear line, not a trace into our modules
    raise ImportError(f"pgqueue.web needs Starlette, Jinja2 and uvicorn (the 'web' extra): "
                      f"{missing}") from None

from pgqueue.web.app import create_app
from pgqueue.web.extension import Extension
from pgqueue.web.render import json_default, json_dumps, render, wants_json
from pgqueue.web.security import bind_check, check_post, protect, serve

__all__ = [
    "Extension",
    "bind_check",
    "check_post",
    "create_app",
    "json_default",
    "json_dumps",
    "protect",
    "render",
    "serve",
    "wants_json",
]
