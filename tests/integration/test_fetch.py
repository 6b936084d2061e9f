"""download() against a real HTTP server on 127.0.0.1."""

import time
from pathlib import Path

import pytest
import requests

from clerk.fetch import (
    DeadlineExceeded,
    FetchError,
    HttpStatusError,
    NotAPdf,
    RefusedAddress,
    TooLarge,
    TooManyRedirects,
    TransientFetchError,
    UnsupportedScheme,
    download,
)
from clerk.network import AddressPolicy
from tests.support.pipeline import LocalServer, http_date

PDF = b"%PDF-1.4\n" + b"0" * 5000 + b"\n%%EOF\n"
FAST = {"wait_initial": 0.01, "wait_max": 0.05}


@pytest.fixture
def session() -> requests.Session:
    with requests.Session() as session:
        yield session


def test_download_then_conditional_get(
    http_server: LocalServer, tmp_path: Path, session: requests.Session
) -> None:
    modified = http_date(1_700_000_000)
    url = http_server.static("/a.pdf", PDF, etag='"v1"', last_modified=modified)
    dest = tmp_path / "pdfs" / "City Council" / "2024-01-05.pdf"
    first = download(url, dest, session=session)
    assert first.changed and first.etag == '"v1"' and first.last_modified == modified
    assert first.size == len(PDF) and dest.read_bytes() == PDF
    mtime = dest.stat().st_mtime_ns

    second = download(url, dest, etag=first.etag, last_modified=first.last_modified, session=session)
    assert not second.changed and second.sha256 == first.sha256
    assert http_server.requests[-1].headers["If-None-Match"] == '"v1"'
    assert dest.stat().st_mtime_ns == mtime

    http_server.static("/a.pdf", PDF + b"new", etag='"v2"')
    third = download(url, dest, etag=first.etag, session=session)
    assert third.changed and third.etag == '"v2"' and dest.read_bytes().endswith(b"new")
    assert [p.name for p in dest.parent.iterdir()] == ["2024-01-05.pdf"]


def test_identical_content_is_not_a_change(
    http_server: LocalServer, tmp_path: Path, session: requests.Session
) -> None:
    url = http_server.static("/same.pdf", PDF)
    dest = tmp_path / "same.pdf"
    assert download(url, dest, session=session).changed
    assert not download(url, dest, session=session).changed


def test_client_errors_are_not_retried(
    http_server: LocalServer, tmp_path: Path, session: requests.Session
) -> None:
    url = http_server.status("/gone.pdf", 404)
    with pytest.raises(HttpStatusError, match=r"gone\.pdf: HTTP 404") as caught:
        download(url, tmp_path / "x.pdf", session=session, **FAST)
    assert caught.value.status == 404
    assert http_server.hits("/gone.pdf") == 1


def test_server_errors_are_retried_then_reported(
    http_server: LocalServer, tmp_path: Path, session: requests.Session
) -> None:
    url = http_server.status("/down.pdf", 500)
    with pytest.raises(TransientFetchError, match=r"down\.pdf: HTTP 500"):
        download(url, tmp_path / "x.pdf", session=session, attempts=3, **FAST)
    assert http_server.hits("/down.pdf") == 3


def test_transient_failure_recovers(
    http_server: LocalServer, tmp_path: Path, session: requests.Session
) -> None:
    url = http_server.flaky("/flaky.pdf", PDF, failures=2)
    result = download(url, tmp_path / "x.pdf", session=session, attempts=3, **FAST)
    assert result.changed and http_server.hits("/flaky.pdf") == 3


def test_connection_refused_is_a_fetch_error(tmp_path: Path, session: requests.Session) -> None:
    with pytest.raises(FetchError, match=r"127\.0\.0\.1:9"):
        download("http://127.0.0.1:9/a.pdf", tmp_path / "x.pdf", session=session, attempts=2, **FAST)


def test_slow_drip_hits_the_deadline(
    http_server: LocalServer, tmp_path: Path, session: requests.Session
) -> None:
    url = http_server.slow_drip("/drip.pdf", interval=0.05)
    started = time.monotonic()
    with pytest.raises(DeadlineExceeded, match=r"drip\.pdf"):
        download(url, tmp_path / "x.pdf", session=session, timeout=5, deadline=1.0)
    assert time.monotonic() - started < 4
    assert list(tmp_path.iterdir()) == []


def test_size_limit_is_enforced_while_streaming(
    http_server: LocalServer, tmp_path: Path, session: requests.Session
) -> None:
    url = http_server.static("/big.pdf", PDF * 10)
    with pytest.raises(TooLarge, match=r"big\.pdf"):
        download(url, tmp_path / "x.pdf", session=session, max_bytes=len(PDF))
    assert list(tmp_path.iterdir()) == []


def test_html_served_as_pdf_is_refused(
    http_server: LocalServer, tmp_path: Path, session: requests.Session
) -> None:
    url = http_server.static("/error.pdf", b"<html><body>Session expired</body></html>")
    with pytest.raises(NotAPdf, match=r"error\.pdf: not a PDF") as raised:
        download(url, tmp_path / "x.pdf", session=session)
    assert "Session expired" not in str(raised.value)  # no body in a stored error
    assert list(tmp_path.iterdir()) == []


def test_existing_file_survives_a_failed_download(
    http_server: LocalServer, tmp_path: Path, session: requests.Session
) -> None:
    dest = tmp_path / "keep.pdf"
    dest.write_bytes(PDF)
    url = http_server.static("/bad.pdf", b"garbage")
    with pytest.raises(NotAPdf):
        download(url, dest, session=session)
    assert dest.read_bytes() == PDF


def test_redirects(http_server: LocalServer, tmp_path: Path, session: requests.Session) -> None:
    http_server.static("/real.pdf", PDF)
    url = http_server.redirect("/old.pdf", "/real.pdf", status=301)
    assert download(url, tmp_path / "x.pdf", session=session).changed

    http_server.redirect("/loop-a.pdf", "/loop-b.pdf")
    loop = http_server.redirect("/loop-b.pdf", "/loop-a.pdf")
    with pytest.raises(TooManyRedirects, match="loop"):
        download(loop, tmp_path / "y.pdf", session=session)

    escape = http_server.redirect("/escape.pdf", "file:///etc/passwd")
    with pytest.raises(UnsupportedScheme, match=r"escape\.pdf: redirected to a refused URL"):
        download(escape, tmp_path / "z.pdf", session=session)


def test_redirect_chain_longer_than_allowed(
    http_server: LocalServer, tmp_path: Path, session: requests.Session
) -> None:
    for hop in range(4):
        http_server.redirect(f"/hop{hop}.pdf", f"/hop{hop + 1}.pdf")
    http_server.static("/hop4.pdf", PDF)
    with pytest.raises(TooManyRedirects, match="more than 2 redirects"):
        download(http_server.url("/hop0.pdf"), tmp_path / "x.pdf", session=session, max_redirects=2)


# ---------------------------------------------------------------- non-public addresses (SSRF)


def test_download_refuses_loopback_by_default(http_server: LocalServer, tmp_path: Path) -> None:
    url = http_server.static("/a.pdf", PDF)
    for target in (url, url.replace("127.0.0.1", "localhost")):
        with pytest.raises(RefusedAddress, match="loopback address"):
            download(target, tmp_path / "x.pdf", **FAST)
    assert http_server.requests == []
    assert list(tmp_path.iterdir()) == []


def test_download_reaches_only_the_allowed_address_and_port(
    http_server: LocalServer, tmp_path: Path
) -> None:
    url = http_server.static("/a.pdf", PDF)
    policy = AddressPolicy.parse(f"127.0.0.1:{http_server.port}")
    assert download(url, tmp_path / "a.pdf", policy=policy).changed
    internal = LocalServer()
    internal.start()
    try:
        internal.static("/secret.pdf", PDF)
        hop = http_server.redirect("/moved.pdf", internal.url("/secret.pdf"))
        with pytest.raises(RefusedAddress, match=r"redirected to .*loopback address"):
            download(hop, tmp_path / "b.pdf", policy=policy, **FAST)
        assert internal.requests == []
    finally:
        internal.stop()


@pytest.mark.parametrize(("address", "refusal"), [
    ("8.8.8.8", None), ("2001:4860:4860::8888", None), ("127.0.0.2", "loopback"),
    ("::1", "loopback"), ("::ffff:127.0.0.1", "loopback"), ("10.1.2.3", "private"),
    ("192.168.0.1", "private"), ("172.16.5.4", "private"), ("169.254.169.254", "link-local"),
    ("fe80::1", "link-local"), ("100.64.0.1", "non-public"), ("0.0.0.0", "unspecified"),
    ("224.0.0.1", "multicast"), ("fd00::1", "private"),
])
def test_only_public_addresses_by_default(address: str, refusal: str | None) -> None:
    assert AddressPolicy().refusal(address, 80) == refusal


def test_allow_list_entries() -> None:
    policy = AddressPolicy.parse("10.0.0.0/8, 127.0.0.1:8080, [::1]:81")
    assert policy.refusal("10.9.9.9", 443) is None
    assert policy.refusal("127.0.0.1", 8080) is None
    assert policy.refusal("::ffff:127.0.0.1", 8080) is None
    assert policy.refusal("127.0.0.1", 5432) == "loopback"
    assert policy.refusal("::1", 81) is None and policy.refusal("::1", 82) == "loopback"
    for bad in ("intranet", "10.0.0.0/33", "127.0.0.1:0", "127.0.0.1:http"):
        with pytest.raises(ValueError, match="ALLOW_PRIVATE_HOSTS"):
            AddressPolicy.parse(bad)


def test_https_through_the_guard_still_verifies_the_host_name(tmp_path: Path) -> None:
    """The guard connects to the address it checked; TLS must still check the certificate
    against the URL's host name (SNI and verification use the name, not the address)."""
    import ssl
    import subprocess
    import threading
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

    from clerk.network import guarded_session

    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-keyout", str(key), "-out", str(cert), "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost"], check=True, capture_output=True)
    (tmp_path / "www").mkdir()
    (tmp_path / "www" / "a.pdf").write_bytes(PDF)

    class Quiet(SimpleHTTPRequestHandler):
        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(*args, directory=str(tmp_path / "www"), **kwargs)  # type: ignore[arg-type]

        def log_message(self, format: str, *args: object) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    try:
        with guarded_session(AddressPolicy.parse("127.0.0.1")) as session:
            session.verify = str(cert)
            url = f"https://localhost:{port}/a.pdf"
            assert download(url, tmp_path / "a.pdf", session=session, **FAST).changed
            with pytest.raises(FetchError, match=r"certificate|hostname|match"):
                download(f"https://127.0.0.1:{port}/a.pdf", tmp_path / "b.pdf", session=session,
                         attempts=1, **FAST)
        with pytest.raises(RefusedAddress, match="loopback"):
            download(url, tmp_path / "c.pdf", **FAST)
    finally:
        server.shutdown()
        server.server_close()
