"""Who may reach the dashboard and which POSTs it accepts. See pgqueue.web.

* Cross-site POSTs: `check_post` refuses a foreign `Origin` or `Sec-Fetch-Site`, and a
  missing or wrong CSRF token. The token is an HMAC (app secret) of a random nonce kept in
  an HttpOnly, SameSite=Strict cookie: a page from another site can neither read it nor
  make one that matches.
* Off loopback: `bind_check` refuses to serve without a password; `protect` then asks
  every request for HTTP Basic credentials, compared in constant time.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import ipaddress
import os
import re
import secrets
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from pgqueue.errors import ConfigurationError

CSRF_COOKIE = "pgqueue_csrf"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"
PASSWORD_ENV = "DASHBOARD_PASSWORD"  # the variable's name, not a password  # noqa: S105
_NONCE = re.compile(r"[0-9a-f]{32}")
_NEW_NONCE = "pgqueue_csrf_new_nonce"


def _nonce(request: Request) -> str:
    """This browser's nonce: from its cookie, or a new one the middleware will set."""
    cookie = request.cookies.get(CSRF_COOKIE, "")
    if _NONCE.fullmatch(cookie):
        return cookie
    state = request.scope.setdefault("state", {})
    if _NEW_NONCE not in state:
        state[_NEW_NONCE] = secrets.token_hex(16)
    return str(state[_NEW_NONCE])


def csrf_token(request: Request) -> str:
    secret: bytes = request.app.state.csrf_secret
    return hmac.new(secret, _nonce(request).encode(), hashlib.sha256).hexdigest()


def _forbidden(reason: str) -> HTTPException:
    return HTTPException(status_code=403, detail=f"forbidden: {reason}")


def check_origin(request: Request) -> None:
    """A browser's POST must come from a page of this very host."""
    site = request.headers.get("sec-fetch-site")
    if site is not None and site not in ("same-origin", "none"):
        raise _forbidden(f"cross-site request (Sec-Fetch-Site: {site})")
    origin = request.headers.get("origin")
    if origin is not None:
        host = request.headers.get("host", "")
        if origin == "null" or urlsplit(origin).netloc.lower() != host.lower():
            raise _forbidden("cross-site request (Origin is not this host)")


async def check_post(request: Request) -> FormData:
    """Call first in every POST handler: refuses (403) read-only mode, cross-site requests
    and a missing or wrong CSRF token; returns the parsed form."""
    if request.app.state.read_only:
        raise _forbidden("the dashboard is read-only")
    check_origin(request)
    form = await request.form()
    given = request.headers.get(CSRF_HEADER) or form.get(CSRF_FIELD)
    cookie = request.cookies.get(CSRF_COOKIE, "")
    if not isinstance(given, str) or not given or not _NONCE.fullmatch(cookie):
        raise _forbidden("missing CSRF token (reload the page)")
    if not hmac.compare_digest(given.encode(), csrf_token(request).encode()):
        raise _forbidden("wrong CSRF token (reload the page)")
    return form


FRAMING = [  # no other site may frame the dashboard and click its buttons (clickjacking)
    (b"x-frame-options", b"DENY"),
    (b"content-security-policy", b"frame-ancestors 'none'"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
]


class CsrfCookie:
    """Sets the nonce cookie when a page made one (the first visit of a browser), and the
    headers that keep the pages out of other sites' frames."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_cookie(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [*message.get("headers", []), *FRAMING]
                nonce = scope.get("state", {}).get(_NEW_NONCE)
                if nonce is not None:
                    path = str(scope.get("root_path", "")).rstrip("/") or "/"
                    secure = "; Secure" if scope.get("scheme") == "https" else ""
                    cookie = f"{CSRF_COOKIE}={nonce}; Path={path}; HttpOnly; SameSite=Strict{secure}"
                    headers.append((b"set-cookie", cookie.encode()))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_cookie)


# -- binding and HTTP Basic ------------------------------------------------------------------

def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def bind_check(host: str, *, password_env: str = PASSWORD_ENV,
               user_env: str = "DASHBOARD_USER", default_user: str = "clerk",
               environ: Mapping[str, str] | None = None) -> tuple[str, str] | None:
    """The (user, password) to require, or None on loopback without a password; raises
    ConfigurationError (one line) for an address off loopback without a password."""
    env = os.environ if environ is None else environ
    password = env.get(password_env, "")
    if not password:
        if is_loopback(host):
            return None
        raise ConfigurationError(
            f"refusing to serve the dashboard on {host or 'every address'}: off loopback it "
            f"needs a password; set {password_env} (HTTP Basic, user {user_env} or "
            f"{default_user!r}) or bind 127.0.0.1")
    return (env.get(user_env) or default_user, password)


class BasicAuth:
    """Every HTTP request needs these credentials (compared in constant time)."""

    def __init__(self, app: ASGIApp, user: str, password: str,
                 realm: str = "pgqueue dashboard") -> None:
        self.app = app
        self._expected = hashlib.sha256(f"{user}:{password}".encode()).digest()
        self._realm = realm

    def _allowed(self, scope: Scope) -> bool:
        for name, value in scope.get("headers", []):
            if name == b"authorization":
                scheme, _, encoded = value.decode("latin-1").partition(" ")
                if scheme.lower() != "basic":
                    return False
                try:
                    given = base64.b64decode(encoded.strip(), validate=True)
                except (binascii.Error, ValueError):
                    return False
                # Hash both sides so the comparison's length is fixed too.
                return hmac.compare_digest(hashlib.sha256(given).digest(), self._expected)
        return False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or self._allowed(scope):
            await self.app(scope, receive, send)
            return
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        await send({"type": "http.response.start", "status": 401, "headers": [
            (b"www-authenticate", f'Basic realm="{self._realm}", charset="UTF-8"'.encode()),
            (b"content-type", b"text/plain; charset=utf-8")]})
        await send({"type": "http.response.body", "body": b"authentication required\n"})


def protect(app: ASGIApp, host: str, *, password_env: str = PASSWORD_ENV,
            user_env: str = "DASHBOARD_USER", default_user: str = "clerk",
            environ: Mapping[str, str] | None = None) -> ASGIApp:
    """`app` as it may be served on `host`: behind HTTP Basic when a password is set;
    raises ConfigurationError off loopback without one."""
    credentials = bind_check(host, password_env=password_env, user_env=user_env,
                             default_user=default_user, environ=environ)
    return app if credentials is None else BasicAuth(app, *credentials)


def serve(app: ASGIApp, host: str = "127.0.0.1", port: int = 8080, *,
          password_env: str = PASSWORD_ENV, user_env: str = "DASHBOARD_USER",
          default_user: str = "clerk", log_level: str = "warning", **uvicorn_options: Any
          ) -> None:
    """Serve with uvicorn until interrupted; refuses (ConfigurationError) an address off
    loopback without a password in `password_env`."""
    import uvicorn
    guarded = protect(app, host, password_env=password_env, user_env=user_env,
                      default_user=default_user)
    uvicorn.run(guarded, host=host, port=port, log_level=log_level, **uvicorn_options)
