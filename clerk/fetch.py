"""Download one PDF safely: http(s) only, conditional, bounded in size and time, atomic.

A fetch worker talks to thousands of city web servers, some slow, some broken, some
serving an HTML error page as `application/pdf`. Every way that can go wrong ends in one
exception class, `FetchError`, whose message names the URL (with any user:password
removed), and never in a half-written file: the body streams into a temporary file in the
destination's directory and is renamed into place only once it is complete and checked.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urljoin, urlsplit, urlunsplit

import requests
import requests.auth
from tenacity import (
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    stop_after_delay,
    wait_exponential,
)
from urllib3.exceptions import HTTPError, ProtocolError, ReadTimeoutError

from clerk.config import DEFAULT_HTTP_TIMEOUT, DEFAULT_MAX_PDF_BYTES
from clerk.network import AddressPolicy, BlockedAddress, guarded_session

log = logging.getLogger(__name__)

ALLOWED_SCHEMES = frozenset({"http", "https"})
USER_AGENT = "clerk/0.1 (civic meeting archive)"
CHUNK_BYTES = 64 * 1024
# The PDF header may follow some junk; readers look for it within the first 1024 bytes.
PDF_MAGIC = b"%PDF-"
PDF_MAGIC_WINDOW = 1024
DEFAULT_CONNECT_TIMEOUT = 10.0
DEFAULT_DEADLINE = 600.0  # 200 MB at 3 Mbit/s is about 9 minutes
DEFAULT_ATTEMPTS = 3
DEFAULT_MAX_REDIRECTS = 5


class FetchError(Exception):
    """A download that failed; the message names the URL."""

    def __init__(self, url: str, message: str) -> None:
        self.url = redact_url(url)
        # Servers choose reason phrases and headers: no NUL or control character goes on
        # into the database (which refuses NUL) or a terminal.
        super().__init__(clean_text(f"{self.url}: {message}"))


class UnsupportedScheme(FetchError):
    """A URL or a redirect to anything but http(s): never fetched."""


class RefusedAddress(FetchError):
    """A URL, or a redirect, to an address that is not public and not allowed: never
    connected to (see clerk.network)."""


class HttpStatusError(FetchError):
    """The server answered with an error status."""

    def __init__(self, url: str, status: int, reason: str = "") -> None:
        self.status = status
        super().__init__(url, f"HTTP {status} {reason}".strip())


class TooLarge(FetchError):
    """The body exceeded the configured maximum size."""


class NotAPdf(FetchError):
    """The body does not start with %PDF- (often an HTML error page)."""


class DeadlineExceeded(FetchError):
    """The whole download took longer than its wall-clock deadline."""


class TooManyRedirects(FetchError):
    """A redirect loop or chain longer than allowed."""


class TransientFetchError(FetchError):
    """A failure worth retrying: connection error, timeout, 5xx."""


@dataclass(frozen=True)
class DownloadResult:
    """What a download did; `changed` is False for 304 or byte-identical content."""

    changed: bool
    etag: str | None
    last_modified: str | None
    sha256: str | None
    size: int | None


def redact_url(url: str) -> str:
    """The URL without user:password, safe to log and to put in an error message."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable url>"
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))


class OriginAuth(requests.auth.AuthBase):
    """HTTP basic auth sent only to one origin (scheme, host, port): a site's credential
    reaches its own server, never a link or a redirect to another one."""

    def __init__(self, origin_url: str, userinfo: str) -> None:
        self.origin = _origin(origin_url)
        user, _, password = userinfo.partition(":")
        self._basic = requests.auth.HTTPBasicAuth(unquote(user), unquote(password))

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        if request.url and _origin(request.url) == self.origin:
            return self._basic(request)
        return request

    def __repr__(self) -> str:  # never the password, whatever prints this object
        return f"OriginAuth({self.origin!r})"


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    return scheme, (parts.hostname or ""), parts.port or (443 if scheme == "https" else 80)


def check_scheme(url: str) -> str:
    """Return the URL if it is http(s) with a host, else raise UnsupportedScheme."""
    try:
        parts = urlsplit(url)
    except ValueError as error:
        raise UnsupportedScheme(url, f"invalid URL ({error})") from error
    if parts.scheme.lower() not in ALLOWED_SCHEMES:
        raise UnsupportedScheme(url, f"scheme {parts.scheme or '(none)'!r} refused: only http and https")
    if not parts.hostname:
        raise UnsupportedScheme(url, "URL has no host")
    return url


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1024 * 1024), b""):
            digest.update(block)
    return digest.hexdigest()


def _fsync_dir(directory: Path) -> None:
    # A rename is durable only once its directory is synced.
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _is_transient(error: BaseException) -> bool:
    return isinstance(error, TransientFetchError)


@dataclass
class _Request:
    url: str
    dest: Path
    etag: str | None
    last_modified: str | None
    max_bytes: int
    timeout: tuple[float, float]
    deadline_at: float
    max_redirects: int
    session: requests.Session
    policy: AddressPolicy | None = None
    known_sha256: str | None = None  # the version stored elsewhere (clerk's database)


def _remaining(request: _Request, url: str) -> float:
    left = request.deadline_at - time.monotonic()
    if left <= 0:
        raise DeadlineExceeded(url, "download deadline exceeded")
    return left


def _open(request: _Request, headers: dict[str, str]) -> requests.Response:
    """GET with redirects followed by hand, so every hop is checked for its scheme (and,
    through a guarded session, its address: see clerk.network)."""
    url = request.url
    seen: set[str] = set()
    for _hop in range(request.max_redirects + 1):
        check_scheme(url)
        seen.add(url)
        left = _remaining(request, url)
        connect, read = request.timeout
        try:
            if request.policy is not None:
                request.policy.check_url(url)
            response = request.session.get(
                url,
                headers=headers,
                stream=True,
                allow_redirects=False,
                timeout=(min(connect, left), min(read, left)),
            )
        except BlockedAddress as error:
            hop = "" if url == request.url else f"redirected to {redact_url(url)}: "
            raise RefusedAddress(request.url, f"{hop}{error}") from None
        except (requests.ConnectionError, requests.Timeout) as error:
            raise TransientFetchError(url, f"{type(error).__name__}: {error}") from error
        except requests.RequestException as error:
            raise FetchError(url, f"{type(error).__name__}: {error}") from error
        if not response.is_redirect:
            return response
        location = response.headers.get("Location", "")
        response.close()
        target = urljoin(url, location)
        try:
            check_scheme(target)
        except UnsupportedScheme as error:
            raise UnsupportedScheme(request.url, f"redirected to a refused URL ({error})") from error
        if target in seen:
            raise TooManyRedirects(request.url, f"redirect loop at {redact_url(target)}")
        url = target
    raise TooManyRedirects(request.url, f"more than {request.max_redirects} redirects")


def _stream_to_temp(request: _Request, response: requests.Response, url: str) -> tuple[Path, str, int]:
    """Write the body to a temporary file beside dest; return its path, sha256 and size."""
    declared = response.headers.get("Content-Length")
    if declared and declared.isdigit() and int(declared) > request.max_bytes:
        raise TooLarge(url, f"Content-Length {declared} exceeds the limit of {request.max_bytes}")
    request.dest.parent.mkdir(parents=True, exist_ok=True)
    handle = tempfile.NamedTemporaryFile(
        dir=request.dest.parent, prefix=f".{request.dest.name}.", suffix=".part", delete=False
    )
    temp = Path(handle.name)
    digest = hashlib.sha256()
    size = 0
    head = b""
    try:
        with handle:
            while True:
                _remaining(request, url)
                try:
                    # read1 returns what has arrived instead of waiting for a full chunk,
                    # so a server dripping a byte a second still meets the deadline check.
                    chunk = response.raw.read1(CHUNK_BYTES, decode_content=True)
                except (ReadTimeoutError, ProtocolError, OSError) as error:
                    raise TransientFetchError(url, f"reading body: {error}") from error
                except HTTPError as error:
                    message = f"reading body: {type(error).__name__}: {error}"
                    raise FetchError(url, message) from error
                if not chunk:
                    break
                size += len(chunk)
                if size > request.max_bytes:
                    raise TooLarge(url, f"body exceeds the limit of {request.max_bytes} bytes")
                if len(head) < PDF_MAGIC_WINDOW:
                    head += chunk[: PDF_MAGIC_WINDOW - len(head)]
                    if len(head) >= PDF_MAGIC_WINDOW and PDF_MAGIC not in head:
                        raise NotAPdf(url, _not_pdf_message(response, head))
                digest.update(chunk)
                handle.write(chunk)
            if PDF_MAGIC not in head:
                raise NotAPdf(url, _not_pdf_message(response, head))
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    return temp, digest.hexdigest(), size


def _not_pdf_message(response: requests.Response, head: bytes) -> str:
    # Never any of the body: it may be an internal service's answer, and the message is
    # stored, shown by `clerk status` and logged.
    kind = clean_text(response.headers.get("Content-Type", "unknown type"))[:100]
    if not head:
        return f"empty body (Content-Type {kind})"
    return f"not a PDF (Content-Type {kind}; the body does not start with {PDF_MAGIC.decode()})"


def clean_text(text: str) -> str:
    """`text` without NUL and other control characters (a server's reason phrase or
    header, stored in PostgreSQL, which refuses NUL, and shown in a terminal)."""
    return "".join(ch if ch.isprintable() else " " for ch in text)


def _attempt(request: _Request) -> DownloadResult:
    headers = {"User-Agent": USER_AGENT, "Accept": "application/pdf,*/*;q=0.5"}
    have_file = request.dest.is_file() or request.known_sha256 is not None
    # Conditional headers only make sense when the file they describe is still there.
    if have_file and request.etag:
        headers["If-None-Match"] = request.etag
    if have_file and request.last_modified:
        headers["If-Modified-Since"] = request.last_modified
    response = _open(request, headers)
    # Closed on every path: an abandoned streamed response leaks its socket.
    with contextlib.closing(response):
        return _handle(request, response, have_file)


def unchanged_by_validators(response: requests.Response, etag: str | None,
                            last_modified: str | None) -> bool:
    """A 200 from a server that ignored the conditional headers, yet sent the validators
    it sent last time: a strong ETag equal to the one we hold, or (without any ETag) the
    same Last-Modified. The resource did not change by the server's own account, so its
    body need not be read: the fallback for servers that ignore conditional requests
    (README "Cheap re-runs"), for index pages and PDFs alike."""
    sent_etag = response.headers.get("ETag")
    if etag and sent_etag:
        return not etag.startswith("W/") and sent_etag == etag
    sent_modified = response.headers.get("Last-Modified")
    return bool(last_modified and sent_modified and not sent_etag and not etag
                and sent_modified == last_modified)


def _handle(request: _Request, response: requests.Response, have_file: bool) -> DownloadResult:
    url = response.url or request.url
    # A validator with a control character in it cannot be stored or sent back: drop it.
    etag = _header(response, "ETag") or request.etag
    last_modified = _header(response, "Last-Modified") or request.last_modified
    if response.status_code == 304:
        if not have_file:
            raise FetchError(url, "304 Not Modified but there is no local copy")
        if request.known_sha256 is not None:
            return DownloadResult(False, etag, last_modified, request.known_sha256, None)
        return DownloadResult(
            False, etag, last_modified, sha256_file(request.dest), request.dest.stat().st_size
        )
    if (response.status_code == 200 and request.known_sha256 is not None
            and unchanged_by_validators(response, request.etag, request.last_modified)):
        return DownloadResult(False, etag, last_modified, request.known_sha256, None)
    if response.status_code >= 500:
        raise TransientFetchError(url, f"HTTP {response.status_code} {response.reason or ''}")
    if response.status_code != 200:
        raise HttpStatusError(url, response.status_code, response.reason or "")
    temp, sha256, size = _stream_to_temp(request, response, url)
    if request.known_sha256 == sha256 or (
            request.known_sha256 is None and have_file and sha256_file(request.dest) == sha256):
        temp.unlink(missing_ok=True)
        return DownloadResult(False, etag, last_modified, sha256, size)
    os.replace(temp, request.dest)
    _fsync_dir(request.dest.parent)
    return DownloadResult(True, etag, last_modified, sha256, size)


def _header(response: requests.Response, name: str) -> str | None:
    value = response.headers.get(name)
    if value is None or clean_text(value) != value or len(value) > 1024:
        return None
    return value


def download(
    url: str,
    dest: Path,
    *,
    etag: str | None = None,
    last_modified: str | None = None,
    max_bytes: int = DEFAULT_MAX_PDF_BYTES,
    timeout: float | tuple[float, float] = DEFAULT_HTTP_TIMEOUT,
    session: requests.Session | None = None,
    deadline: float = DEFAULT_DEADLINE,
    attempts: int = DEFAULT_ATTEMPTS,
    wait_initial: float = 0.5,
    wait_max: float = 8.0,
    max_redirects: int = DEFAULT_MAX_REDIRECTS,
    policy: AddressPolicy | None = None,
    known_sha256: str | None = None,
) -> DownloadResult:
    """Fetch `url` into `dest` if it changed, and say whether it did.

    `timeout` is the read timeout (or a (connect, read) pair); `deadline` bounds the whole
    call including retries, so a slow-drip server cannot hold a worker. Connection errors,
    timeouts and 5xx are retried `attempts` times with exponential waits from
    `wait_initial` to `wait_max` seconds; 4xx, refused schemes, oversize and non-PDF
    bodies are not, since asking again would get the same answer.

    Without a `session`, the download makes a guarded one (clerk.network): only public
    addresses, plus those `policy` allows. A caller's session is used as it is (clerk's
    pipeline passes a guarded one).

    `known_sha256` is the version kept elsewhere (clerk stores documents in the database):
    the conditional headers are sent without a local copy, and a 304 or the same bytes
    is unchanged, with nothing written to `dest`.
    """
    check_scheme(url)
    if isinstance(timeout, tuple):
        connect_timeout, read_timeout = timeout
    else:
        connect_timeout, read_timeout = min(DEFAULT_CONNECT_TIMEOUT, timeout), timeout
    own_session = session is None
    request = _Request(
        url=url,
        dest=Path(dest),
        etag=etag,
        last_modified=last_modified,
        max_bytes=max_bytes,
        timeout=(connect_timeout, read_timeout),
        deadline_at=time.monotonic() + deadline,
        max_redirects=max_redirects,
        session=session or guarded_session(policy),
        policy=policy,
        known_sha256=known_sha256,
    )
    retrying = Retrying(
        retry=retry_if_exception(_is_transient),
        stop=stop_after_attempt(max(1, attempts)) | stop_after_delay(deadline),
        wait=wait_exponential(multiplier=wait_initial, min=wait_initial, max=wait_max),
        before_sleep=lambda state: log.warning(
            "retrying download of %s after %s",
            redact_url(url),
            state.outcome.exception() if state.outcome else "error",
            extra={"action": "fetch.retry"},
        ),
        reraise=True,
    )
    try:
        return retrying(_attempt, request)
    finally:
        if own_session:
            with contextlib.suppress(Exception):
                request.session.close()
