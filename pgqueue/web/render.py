"""HTML from one Jinja environment, or the same context as JSON. See pgqueue.web."""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from pathlib import Path, PurePath
from typing import Any

import jinja2
from markupsafe import Markup
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from pgqueue.web.extension import Extension

TEMPLATES = Path(__file__).resolve().parent / "templates"
PGQUEUE_NAV: tuple[tuple[str, str], ...] = (
    ("Overview", "/"), ("Jobs", "/jobs"), ("Workers", "/workers"), ("Groups", "/groups"))


def json_default(value: Any) -> Any:
    """The documented encoding of what json cannot encode itself."""
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, uuid.UUID | PurePath):
        return str(value)
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    raise TypeError(f"{type(value).__name__} is not JSON-serialisable in a dashboard context")


def json_dumps(value: Any) -> str:
    return json.dumps(value, default=json_default, ensure_ascii=False)


def wants_json(request: Request) -> bool:
    """`?format=json`, or an Accept header that ranks application/json above text/html."""
    fmt = request.query_params.get("format")
    if fmt is not None:
        return fmt == "json"
    best: tuple[float, str] | None = None
    for part in request.headers.get("accept", "").split(","):
        fields = [f.strip() for f in part.split(";")]
        kind = fields[0].lower()
        if kind not in ("application/json", "text/html"):
            continue
        weight = 1.0
        for field in fields[1:]:
            if field.startswith("q="):
                try:
                    weight = float(field[2:])
                except ValueError:
                    weight = 0.0
        if best is None or weight > best[0]:
            best = (weight, kind)
    return best is not None and best[1] == "application/json" and best[0] > 0


def format_age(value: Any) -> str:
    """Seconds (or a past datetime) as '3m 20s'; '' for None."""
    if value is None:
        return ""
    if isinstance(value, datetime):
        seconds = (datetime.now(UTC) - value).total_seconds()
    elif isinstance(value, timedelta):
        seconds = value.total_seconds()
    else:
        seconds = float(value)
    sign = "-" if seconds < 0 else ""
    left = int(abs(seconds))
    if left < 60:
        return f"{sign}{abs(seconds):.1f}s" if abs(seconds) < 10 else f"{sign}{left}s"
    days, left = divmod(left, 86400)
    hours, left = divmod(left, 3600)
    minutes, secs = divmod(left, 60)
    if days:
        return f"{sign}{days}d {hours}h"
    if hours:
        return f"{sign}{hours}h {minutes}m"
    return f"{sign}{minutes}m {secs}s"


def format_when(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ")
    return str(value)


def last_line(text: Any) -> str:
    """The last non-blank line of an error (its exception), '' for none."""
    lines = [line for line in str(text or "").splitlines() if line.strip()]
    return lines[-1].strip() if lines else ""


def make_environment(extensions: Sequence[Extension]) -> jinja2.Environment:
    loaders: list[jinja2.BaseLoader] = [
        jinja2.FileSystemLoader(str(ext.templates_dir)) for ext in extensions
        if ext.templates_dir is not None]
    loaders.append(jinja2.FileSystemLoader(str(TEMPLATES)))
    env = jinja2.Environment(loader=jinja2.ChoiceLoader(loaders), autoescape=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=True,
                             lstrip_blocks=True)
    env.filters["age"] = format_age
    env.filters["when"] = format_when
    env.filters["last_line"] = last_line
    env.filters["tojson_pretty"] = lambda v: json.dumps(v, default=json_default, indent=2,
                                                          ensure_ascii=False)
    env.globals["url"] = _url
    env.globals["static"] = _static
    env.globals["csrf_token"] = _csrf_token
    env.globals["csrf_field"] = _csrf_field
    return env


def root_path(request: Request) -> str:
    return str(request.scope.get("root_path", "")).rstrip("/")


@jinja2.pass_context
def _url(context: jinja2.runtime.Context, path: str) -> str:
    return root_path(context["request"]) + path


@jinja2.pass_context
def _static(context: jinja2.runtime.Context, name: str) -> str:
    return root_path(context["request"]) + "/static/" + name


@jinja2.pass_context
def _csrf_token(context: jinja2.runtime.Context) -> str:
    from pgqueue.web.security import csrf_token
    return csrf_token(context["request"])


@jinja2.pass_context
def _csrf_field(context: jinja2.runtime.Context) -> Markup:
    from pgqueue.web.security import csrf_token
    token = csrf_token(context["request"])
    return Markup('<input type="hidden" name="csrf_token" value="{}">').format(token)


def render(request: Request, template: str, context: dict[str, Any], *,
           status_code: int = 200) -> Response:
    """The page as HTML, or its `context` as JSON when the client asks for JSON."""
    if wants_json(request):
        return Response(json_dumps(context), status_code=status_code,
                        media_type="application/json")
    state = request.app.state
    env: jinja2.Environment = state.jinja
    nav = list(PGQUEUE_NAV) + [item for ext in state.extensions for item in ext.nav]
    full = {**context, "request": request, "title": state.title,
            "read_only": state.read_only, "nav": nav}
    html = env.get_template(template).render(full)
    return HTMLResponse(html, status_code=status_code)
