"""The outside attacks of issue 23, clerk side: each reproduces what was done and checks
that nothing is lost, no second run starts, and no secret or internal response leaks.

Everything is real: PostgreSQL, HTTP servers on 127.0.0.1, PDFs, Tesseract, the CLI.
"""

from __future__ import annotations

import base64
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from clerk.compile import DATABASE_FILE
from clerk.config import Settings, load_settings
from clerk.pipeline import Pipeline, document_meetings
from clerk.sources import DocumentRef
from pgqueue import PermanentFailure
from pgqueue.db import connect, describe, mask_url
from tests.acceptance.conftest import CitySite, Cli, history, pages, run_workers
from tests.support.pipeline import LocalServer, PdfFactory, Route


def wait_until(condition: Callable[[], Any], what: str, timeout: float = 60.0) -> Any:
    event = threading.Event()
    deadline = 0.0
    while deadline < timeout:
        value = condition()
        if value:
            return value
        event.wait(0.05)
        deadline += 0.05
    raise AssertionError(f"timed out waiting for {what}")


def rows(db_url: str, sql: str, params: Any = None) -> list[dict[str, Any]]:
    with connect(db_url, autocommit=True) as conn:
        return conn.execute(sql, params).fetchall()


def fetch_jobs(db_url: str, site: str) -> list[dict[str, Any]]:
    return rows(db_url, "SELECT id FROM pgqueue.all_jobs WHERE queue = 'fetch' AND tag = %s",
                (site,))


# ---------------------------------------------------------------- 16: one run per site


def test_enqueue_that_stalls_between_check_and_insert_starts_no_second_run(
        city: CitySite, pdf_factory: PdfFactory, cli: Cli, settings: Settings, db_url: str,
        make_pipeline: Callable[[Settings], Pipeline], monkeypatch: pytest.MonkeyPatch) -> None:
    """Enqueue A checks "no run in progress", then stalls before its insert; enqueue B
    starts a run and its fetch fans out (the fetch job, and its dedupe key, are gone);
    then A wakes up. A must join B's run, not start a second one."""
    city.add("a.pdf", "City Council Agenda 2024-03-05",
             pdf_factory.text_pdf("a.pdf", ["Agenda: the heron survey"]).read_bytes())
    cli("site", "add", "springfield", "--url", city.url)
    stalled, proceed = threading.Event(), threading.Event()
    first, second = make_pipeline(settings), make_pipeline(settings)
    real_enqueue = first.queue.enqueue

    def stalling_enqueue(*args: Any, **kwargs: Any) -> int:
        stalled.set()
        assert proceed.wait(120)
        return real_enqueue(*args, **kwargs)

    monkeypatch.setattr(first.queue, "enqueue", stalling_enqueue)
    results: dict[str, Any] = {}
    a = threading.Thread(target=lambda: results.update(a=first.enqueue_site("springfield")))
    a.start()
    assert stalled.wait(60)
    b = threading.Thread(target=lambda: results.update(b=second.enqueue_site("springfield")))
    b.start()

    def b_done_or_blocked() -> bool:
        waiting = rows(db_url, "SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND NOT granted")
        return "b" in results or bool(waiting)

    wait_until(b_done_or_blocked, "enqueue B to finish or to wait for A")
    if "b" in results:  # B was not held back: let its fetch run and fan out
        assert not results["b"]["joined"]
        assert second.queue.work(["fetch"], burst=True, poll_interval=0.2,
                                 install_signals=False) == 0
    proceed.set()
    a.join(60)
    b.join(60)
    assert sorted(r["joined"] for r in results.values()) == [False, True]
    assert len(fetch_jobs(db_url, "springfield")) == 1


# ---------------------------------------------------------------- 3, 9, 10: retries


def ocr_history(db_url: str) -> list[dict[str, Any]]:
    return rows(db_url, "SELECT id, state::text AS state, args, timeout_seconds"
                        " FROM pgqueue.job_history WHERE queue = 'ocr' ORDER BY id")


def deploys(db_url: str) -> int:
    return len([job for job in history(db_url) if job["queue"] == "deploy"])


def run_with_page_two_failing(city: CitySite, pdf_factory: PdfFactory, cli: Cli,
                              pipeline: Pipeline, monkeypatch: pytest.MonkeyPatch) -> None:
    """One three-page agenda whose page 2 fails for good in the first run."""
    city.add("a.pdf", "City Council Agenda 2024-05-07", pdf_factory.text_pdf("a.pdf", [
        "Agenda: the osprey nest", "Page two: the kestrel permit", "Page three: adjourn"]
    ).read_bytes())
    import clerk.pipeline as pipeline_module
    real_read_page = pipeline_module.read_page

    def read_page(pdf: Path, page: int, settings: Settings) -> Any:
        if page == 2:
            raise PermanentFailure("simulated OCR failure of page 2")
        return real_read_page(pdf, page, settings)

    with monkeypatch.context() as patch:
        patch.setattr(pipeline_module, "read_page", read_page)
        cli("site", "add", "springfield", "--url", city.url)
        cli("enqueue", "springfield")
        run_workers(pipeline)
    assert [job["state"] for job in ocr_history(pipeline.dsn)] == [
        "succeeded", "failed", "succeeded"]


def test_retry_of_failed_pages_finishes_the_run(
        city: CitySite, pdf_factory: PdfFactory, cli: Cli, clerk_env: dict[str, str],
        pipeline: Pipeline, db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        make_pipeline: Callable[[Settings], Pipeline]) -> None:
    """`clerk failed --retry --queue ocr`: the page is read, compiled and deployed, with
    the OCR task's current timeout (the configuration changed since the failure);
    nothing is left for "nothing new" to hide."""
    run_with_page_two_failing(city, pdf_factory, cli, pipeline, monkeypatch)
    database = tmp_path / "storage" / "springfield" / DATABASE_FILE
    assert [p["page"] for p in pages(database, "agendas")] == [1, 3]
    assert deploys(db_url) == 1

    upgraded_env = {**clerk_env, "CLERK_OCR_TIMEOUT": "77"}
    output = Cli(upgraded_env)("failed", "--retry", "--queue", "ocr").output
    run_workers(make_pipeline(load_settings(None, upgraded_env)))

    assert [p["page"] for p in pages(database, "agendas")] == [1, 2, 3]
    assert any("kestrel" in p["text"] for p in pages(database, "agendas"))
    retried = ocr_history(db_url)[3:]
    assert [(job["args"]["page"], job["state"], job["timeout_seconds"]) for job in retried] == [
        (2, "succeeded", 77)]
    assert deploys(db_url) == 2
    deployed = tmp_path / "deploy" / "springfield.db"
    assert [p["page"] for p in pages(deployed, "agendas")] == [1, 2, 3]
    # Nothing left over: the next run has nothing new and reads nothing.
    cli("enqueue", "springfield")
    run_workers(pipeline)
    assert len(ocr_history(db_url)) == 4
    assert "springfield: 1 failed jobs re-queued (the site's run re-opened" in output


def test_retry_during_a_new_run_starts_no_second_run(
        city: CitySite, pdf_factory: PdfFactory, cli: Cli, pipeline: Pipeline, db_url: str,
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run_with_page_two_failing(city, pdf_factory, cli, pipeline, monkeypatch)
    assert "enqueued" in cli("enqueue", "springfield").output  # the next run, queued
    output = cli("failed", "--retry").output
    run_workers(pipeline)

    assert len(fetch_jobs(db_url, "springfield")) == 2
    assert [job["args"]["page"] for job in ocr_history(db_url)[3:]] == [2]
    assert deploys(db_url) == 2
    database = tmp_path / "storage" / "springfield" / DATABASE_FILE
    assert [p["page"] for p in pages(database, "agendas")] == [1, 2, 3]
    # The failure is history, not erased.
    assert [job["state"] for job in ocr_history(db_url)][1] == "failed"
    assert "not re-queued: a run is in progress" in output


def test_retry_of_a_failed_fetch_while_the_next_is_queued_keeps_its_record(
        city: CitySite, cli: Cli, pipeline: Pipeline, db_url: str) -> None:
    """Item 10: the failed fetch's retry collided with the queued fetch's dedupe key, the
    failed record was deleted, and the CLI said "0 re-queued"."""
    city.server.status(city.index_path, 404)
    cli("site", "add", "springfield", "--url", city.url)
    cli("enqueue", "springfield")
    run_workers(pipeline)
    failed = [job for job in history(db_url) if job["state"] == "failed"]
    assert [job["queue"] for job in failed] == ["fetch"]

    city.publish()
    cli("enqueue", "springfield")
    output = cli("failed", "--retry").output
    assert [job["id"] for job in history(db_url) if job["state"] == "failed"] == [failed[0]["id"]]
    assert "0 failed jobs re-queued" not in output and "a run is in progress" in output
    assert "1 failed jobs not re-queued" in output
    run_workers(pipeline)
    assert len(fetch_jobs(db_url, "springfield")) == 2


# ---------------------------------------------------------------- 4: same meeting and date


def test_documents_with_the_same_meeting_and_date_do_not_overwrite_each_other(
        city: CitySite, pdf_factory: PdfFactory, cli: Cli, pipeline: Pipeline, db_url: str,
        tmp_path: Path) -> None:
    city.add("agenda.pdf", "City Council Agenda - May 7, 2024",
             pdf_factory.text_pdf("agenda.pdf", ["Agenda: the pelican pier"]).read_bytes())
    city.add("packet.pdf", "City Council Agenda Packet - May 7, 2024",
             pdf_factory.text_pdf("packet.pdf", ["Packet: the cormorant report",
                                                 "Packet page two: staff memo"]).read_bytes())
    city.add("minutes-a.pdf", "City Council Minutes 2024-05-07",
             pdf_factory.text_pdf("ma.pdf", ["Minutes: the egret motion"]).read_bytes())
    city.add("minutes-b.pdf", "CITY COUNCIL Minutes 2024-05-07",
             pdf_factory.text_pdf("mb.pdf", ["Minutes: the grebe motion"]).read_bytes())
    cli("site", "add", "springfield", "--url", city.url)
    cli("enqueue", "springfield")
    run_workers(pipeline)

    database = tmp_path / "storage" / "springfield" / DATABASE_FILE
    agendas, minutes = pages(database, "agendas"), pages(database, "minutes")
    texts = " ".join(p["text"] for p in agendas + minutes)
    for word in ("pelican", "cormorant", "egret", "grebe"):
        assert word in texts
    assert len(agendas) == 3 and len(minutes) == 2
    assert len({p["id"] for p in agendas + minutes}) == 5
    urls = {p["document_url"] for p in agendas + minutes}
    assert urls == {city.server.url(city.path(name)) for name in
                    ("agenda.pdf", "packet.pdf", "minutes-a.pdf", "minutes-b.pdf")}
    assert len(ocr_history(db_url)) == 5

    # Nothing changed: every PDF is asked for conditionally, and nothing is read again.
    cli("enqueue", "springfield")
    run_workers(pipeline)
    assert len(ocr_history(db_url)) == 5
    for name in ("agenda.pdf", "packet.pdf", "minutes-a.pdf", "minutes-b.pdf"):
        assert [bool(h.get("If-None-Match")) for h in city.hits(name)] == [False, True]
    identities = sorted((p["meeting"], p["page"]) for p in agendas)
    assert identities == sorted((p["meeting"], p["page"]) for p in
                                pages(database, "agendas"))


def test_document_names_stay_put_when_a_twin_is_listed_first() -> None:
    def ref(name: str, meeting: str) -> DocumentRef:
        return DocumentRef(f"http://city.example/{name}", meeting, "2024-05-07", "agenda")

    known = [{"url": "http://city.example/b.pdf", "kind": "agenda", "meeting": "City Council",
              "date": "2024-05-07"}]
    refs = [ref("a.pdf", "CITY COUNCIL"), ref("b.pdf", "City Council"), ref("c.pdf", "City Council")]
    assert document_meetings(refs, known) == ["CITY COUNCIL (2)", "City Council",
                                              "City Council (3)"]
    # b.pdf is no longer listed: its name is free, a.pdf (a replacement) takes it.
    assert document_meetings(refs[:1], known) == ["CITY COUNCIL"]


# ---------------------------------------------------------------- 5: SSRF


def status_json(cli: Cli) -> str:
    return cli("status", "--subdomain", "springfield", "--json").output


def test_links_and_redirects_to_private_addresses_are_never_fetched(
        city: CitySite, pdf_factory: PdfFactory, clerk_env: dict[str, str], db_url: str,
        make_pipeline: Callable[[Settings], Pipeline], tmp_path: Path) -> None:
    """Only the city's own server is allowed (one address and port, as an intranet
    operator would allow it); an internal service on another port of 127.0.0.1 is
    reached by a link, a redirect, a host name and an IPv4-mapped literal: never
    contacted. A non-PDF body never reaches an error message."""
    internal = LocalServer()
    internal.start()
    try:
        secret = pdf_factory.text_pdf("secret.pdf", ["Internal: the payroll ledger"]).read_bytes()
        internal.static("/secret.pdf", secret)
        city.add("good.pdf", "City Council Agenda 2024-06-04",
                 pdf_factory.text_pdf("good.pdf", ["Agenda: the tern colony"]).read_bytes())
        city.link(internal.url("/secret.pdf"), "Internal Agenda 2024-06-05")
        city.server.redirect(city.path("moved.pdf"), internal.url("/secret.pdf"))
        city.link("moved.pdf", "Planning Agenda 2024-06-06")
        city.link(f"http://localhost:{internal.port}/secret.pdf", "Parks Agenda 2024-06-07")
        city.link(f"http://[::ffff:127.0.0.1]:{internal.port}/secret.pdf", "Arts Agenda 2024-06-08")
        city.link("http://169.254.169.254/latest/meta-data.pdf", "Cloud Agenda 2024-06-09")
        city.add("html.pdf", "Library Agenda 2024-06-10",
                 b"<html>SECRET-TOKEN-4242 internal admin page</html>", content_type="text/html")
        env = {**clerk_env, "CLERK_ALLOW_PRIVATE_HOSTS": f"127.0.0.1:{city.server.port}"}
        cli = Cli(env)
        cli("site", "add", "springfield", "--url", city.url)
        cli("enqueue", "springfield")
        run_workers(make_pipeline(load_settings(None, env)))

        assert internal.requests == []
        database = tmp_path / "storage" / "springfield" / DATABASE_FILE
        assert [p["text"].split()[1] for p in pages(database, "agendas")] == ["the"]
        assert "tern" in pages(database, "agendas")[0]["text"]
        errors = {row["meeting"]: row["error"] for row in rows(
            db_url, "SELECT meeting, error FROM clerk.documents WHERE error IS NOT NULL")}
        for meeting in ("Internal", "Planning", "Parks", "Arts"):
            assert "loopback address" in errors[meeting], errors
            assert "ALLOW_PRIVATE_HOSTS" in errors[meeting]
        assert "redirected to" in errors["Planning"]
        assert "link-local address" in errors["Cloud"]
        assert "not a PDF" in errors["Library"]
        shown = status_json(cli)
        assert "SECRET-TOKEN" not in shown and "payroll" not in shown
        assert "SECRET-TOKEN" not in errors["Library"]
    finally:
        internal.stop()


def test_a_site_on_a_private_address_is_refused_by_default(
        city: CitySite, pdf_factory: PdfFactory, clerk_env: dict[str, str], db_url: str,
        make_pipeline: Callable[[Settings], Pipeline]) -> None:
    city.add("a.pdf", "City Council Agenda 2024-06-04",
             pdf_factory.text_pdf("a.pdf", ["Agenda"]).read_bytes())
    env = {k: v for k, v in clerk_env.items() if k != "CLERK_ALLOW_PRIVATE_HOSTS"}
    cli = Cli(env)
    cli("site", "add", "springfield", "--url", city.url)
    cli("enqueue", "springfield")
    run_workers(make_pipeline(load_settings(None, env)))
    assert city.server.requests == []
    [failed] = [job for job in history(db_url) if job["state"] == "failed"]
    assert "loopback address" in failed["last_error"]
    assert "ALLOW_PRIVATE_HOSTS" in failed["last_error"]
    assert len(history(db_url)) == 1  # refused at once: not retried, nothing else ran


def test_index_redirect_to_a_private_address_is_refused(
        city: CitySite, clerk_env: dict[str, str], db_url: str,
        make_pipeline: Callable[[Settings], Pipeline]) -> None:
    internal = LocalServer()
    internal.start()
    try:
        internal.static("/index.html", b"<a href='x-2024-01-01.pdf'>x</a>", content_type="text/html")
        city.server.redirect(city.index_path, internal.url("/index.html"))
        env = {**clerk_env, "CLERK_ALLOW_PRIVATE_HOSTS": f"127.0.0.1:{city.server.port}"}
        Cli(env)("site", "add", "springfield", "--url", city.url)
        Cli(env)("enqueue", "springfield")
        run_workers(make_pipeline(load_settings(None, env)))
        assert internal.requests == []
        [failed] = [job for job in history(db_url) if job["state"] == "failed"]
        assert "loopback address" in failed["last_error"]
    finally:
        internal.stop()


def test_a_bad_allow_list_is_one_clear_error(clerk_env: dict[str, str]) -> None:
    result = Cli({**clerk_env, "CLERK_ALLOW_PRIVATE_HOSTS": "10.0.0.0/33"})("status", ok=False)
    assert "ALLOW_PRIVATE_HOSTS" in result.output and "10.0.0.0/33" in result.output


# ---------------------------------------------------------------- 7: NUL from a web server


def raw_response(head: bytes, body: bytes) -> Callable[[Any], None]:
    def handler(request: Any) -> None:
        request.close_connection = True
        request.wfile.write(head + b"Content-Length: " + str(len(body)).encode()
                            + b"\r\nConnection: close\r\n\r\n" + body)
    return handler


def test_nul_in_one_documents_reason_phrase_or_headers_fails_that_document_alone(
        city: CitySite, pdf_factory: PdfFactory, cli: Cli, pipeline: Pipeline, db_url: str,
        tmp_path: Path) -> None:
    good = pdf_factory.text_pdf("good.pdf", ["Agenda: the plover beach"]).read_bytes()
    odd = pdf_factory.text_pdf("odd.pdf", ["Minutes: the avocet marsh"]).read_bytes()
    city.add("good.pdf", "City Council Agenda 2024-07-02", good)
    city.server.routes[city.path("bad.pdf")] = Route(handler=raw_response(
        b"HTTP/1.1 404 Not\x00Found\x1b[31m\r\nContent-Type: text/plain\r\n", b"gone"))
    city.link("bad.pdf", "Planning Agenda 2024-07-03")
    city.server.routes[city.path("odd.pdf")] = Route(handler=raw_response(
        b"HTTP/1.1 200 O\x00K\r\nContent-Type: application/pdf\r\nETag: \"a\x00b\"\r\n"
        b"Last-Modified: Tue\x00\r\n", odd))
    city.link("odd.pdf", "City Council Minutes 2024-07-02")
    cli("site", "add", "springfield", "--url", city.url)
    cli("enqueue", "springfield")
    run_workers(pipeline)

    assert [job["state"] for job in history(db_url) if job["queue"] == "fetch"] == ["succeeded"]
    database = tmp_path / "storage" / "springfield" / DATABASE_FILE
    assert "plover" in pages(database, "agendas")[0]["text"]
    assert "avocet" in pages(database, "minutes")[0]["text"]
    [bad] = rows(db_url, "SELECT error, etag FROM clerk.documents WHERE meeting = 'Planning'")
    assert "HTTP 404 Not Found" in bad["error"] and "\x00" not in bad["error"]
    assert "\x1b" not in bad["error"]
    [kept] = rows(db_url, "SELECT etag, last_modified FROM clerk.documents WHERE kind = 'minutes'")
    assert kept == {"etag": None, "last_modified": None}


# ---------------------------------------------------------------- 12: a site's password


def require_basic_auth(body: bytes, content_type: str, userinfo: str,
                       seen: list[str | None]) -> Callable[[Any], None]:
    expected = "Basic " + base64.b64encode(userinfo.encode()).decode()

    def handler(request: Any) -> None:
        seen.append(request.headers.get("Authorization"))
        ok = request.headers.get("Authorization") == expected
        payload = body if ok else b"authentication required"
        request.send_response(200 if ok else 401)
        request.send_header("Content-Type", content_type if ok else "text/plain")
        if not ok:
            request.send_header("WWW-Authenticate", 'Basic realm="clerk"')
        request.send_header("Content-Length", str(len(payload)))
        request.end_headers()
        request.wfile.write(payload)
    return handler


def test_a_sites_password_is_used_but_never_shown_or_published(
        city: CitySite, pdf_factory: PdfFactory, cli: Cli, pipeline: Pipeline, db_url: str,
        tmp_path: Path) -> None:
    seen: list[str | None] = []
    elsewhere: list[str | None] = []
    other = LocalServer()
    other.start()
    try:
        pdf = pdf_factory.text_pdf("a.pdf", ["Agenda: the sandpiper"]).read_bytes()
        city.add("a.pdf", "City Council Agenda 2024-08-06", pdf)
        other.routes["/b.pdf"] = Route(handler=require_basic_auth(
            pdf_factory.text_pdf("b.pdf", ["Minutes: the curlew"]).read_bytes(),
            "application/pdf", "alice:hunter2", elsewhere))
        city.link(other.url("/b.pdf"), "City Council Minutes 2024-08-06")
        index = city.server.routes[city.index_path].body
        city.server.routes[city.index_path] = Route(handler=require_basic_auth(
            index, "text/html", "alice:hunter2", seen))
        city.server.routes[city.path("a.pdf")] = Route(handler=require_basic_auth(
            pdf, "application/pdf", "alice:hunter2", seen))
        with_password = city.url.replace("http://", "http://alice:hunter2@")
        cli("site", "add", "springfield", "--url", with_password)
        cli("enqueue", "springfield")
        run_workers(pipeline)

        database = tmp_path / "storage" / "springfield" / DATABASE_FILE
        assert "sandpiper" in pages(database, "agendas")[0]["text"]  # the password worked
        assert len(seen) == 2 and all(seen)
        assert elsewhere == [None]  # another origin never gets it
        for args in (("site", "list"), ("site", "list", "--json"), ("status",),
                     ("status", "--json"), ("status", "--subdomain", "springfield"),
                     ("status", "--subdomain", "springfield", "--json")):
            assert "hunter2" not in cli(*args).output, args
        [row] = rows(db_url, "SELECT source_url FROM clerk.sites")
        assert row["source_url"] == city.url
        for stored in rows(db_url, "SELECT url FROM clerk.documents"):
            assert "hunter2" not in stored["url"]
        for published in (database, tmp_path / "deploy" / "springfield.db"):
            assert b"hunter2" not in published.read_bytes()
            urls = {p["document_url"] for p in pages(published, "agendas")}
            assert urls == {city.server.url(city.path("a.pdf"))}
    finally:
        other.stop()


def test_a_password_stored_in_an_older_url_moves_out(db_url: str, cli: Cli) -> None:
    """Sites added before the credential had its own column: the migration moves it."""
    cli("site", "add", "springfield", "--url", "http://127.0.0.1:9/index.html")
    with connect(db_url, autocommit=True) as conn:  # back to the schema before 0003
        conn.execute("DELETE FROM clerk.migrations WHERE component = 'clerk' AND version = 3")
        conn.execute("ALTER TABLE clerk.sites DROP COLUMN source_auth")
        conn.execute("UPDATE clerk.sites SET source_url = 'http://bob:s3cret@127.0.0.1:9/i.html'")
    cli("db", "upgrade")
    [row] = rows(db_url, "SELECT source_url, source_auth FROM clerk.sites")
    assert row == {"source_url": "http://127.0.0.1:9/i.html", "source_auth": "bob:s3cret"}


# ---------------------------------------------------------------- 11: a malformed DATABASE_URL


@pytest.mark.parametrize("password", ["hunter two/zeta9", "hunterx/zeta9", "hunter#zeta9?",
                                      "hunter@zeta9 x"])
def test_a_malformed_database_url_never_prints_its_password(
        clerk_env: dict[str, str], password: str) -> None:
    cli = Cli({**clerk_env, "DATABASE_URL": f"postgresql://clerk:{password}@127.0.0.1:9/clerk"})
    for args in (("status",), ("worker", "fetch", "--burst"), ("site", "list"), ("doctor",)):
        result = cli(*args, ok=False)
        for piece in ("hunter", "zeta9"):
            assert piece not in result.output, (args, result.output)


def test_mask_url_knows_the_passwords_of_urls_it_was_shown() -> None:
    url = "postgresql://clerk:wolf pack/vixen42@db.example:5432/clerk"
    described = describe(url)
    assert "wolf" not in described and "vixen42" not in described
    message = 'invalid dsn: unexpected spaces found in "wolf pack", use %20'
    assert "wolf" not in mask_url(message)
    assert "vixen42" not in mask_url('port "vixen42@db.example" is not a number')


# ---------------------------------------------------------------- 14: bounded work per site


def test_pages_are_bounded_per_document_and_per_run(
        city: CitySite, pdf_factory: PdfFactory, clerk_env: dict[str, str], db_url: str,
        make_pipeline: Callable[[Settings], Pipeline], tmp_path: Path) -> None:
    """A long blank PDF linked several times, and more pages than a run may queue: the
    long one is refused with the bound named, the run queues at most its bound, and the
    next runs read the rest, without downloading or reading anything twice."""
    blank = pdf_factory.text_pdf("blank.pdf", [""] * 5).read_bytes()
    for day in (1, 2, 3):
        city.add(f"blank-{day}.pdf", f"Board Agenda 2024-09-0{day}", blank)
    city.add("a.pdf", "City Council Agenda 2024-09-10", pdf_factory.text_pdf(
        "a.pdf", ["Agenda: the gannet", "two: the shearwater", "three: the fulmar"]).read_bytes())
    city.add("b.pdf", "City Council Minutes 2024-09-10", pdf_factory.text_pdf(
        "b.pdf", ["Minutes: the puffin", "two: the guillemot", "three: the auk"]).read_bytes())
    env = {**clerk_env, "CLERK_MAX_PAGES_PER_DOCUMENT": "3", "CLERK_MAX_PAGES_PER_RUN": "4"}
    cli = Cli(env)
    workers = make_pipeline(load_settings(None, env))
    cli("site", "add", "springfield", "--url", city.url)
    cli("enqueue", "springfield")
    run_workers(workers)

    assert len(ocr_history(db_url)) == 4
    errors = [row["error"] for row in rows(
        db_url, "SELECT error FROM clerk.documents WHERE meeting = 'Board' ORDER BY date")]
    assert len(errors) == 3
    assert all("5 pages, more than MAX_PAGES_PER_DOCUMENT=3" in error for error in errors)
    [site] = rows(db_url, "SELECT last_result FROM clerk.sites")
    assert "2 pages left for the next run (MAX_PAGES_PER_RUN=4)" in site["last_result"]

    cli("enqueue", "springfield")
    run_workers(workers)
    assert len(ocr_history(db_url)) == 6
    database = tmp_path / "storage" / "springfield" / DATABASE_FILE
    assert len(pages(database, "agendas")) == 3 and len(pages(database, "minutes")) == 3

    cli("enqueue", "springfield")
    run_workers(workers)
    assert len(ocr_history(db_url)) == 6
    for day in (1, 2, 3):
        assert [bool(h.get("If-None-Match")) for h in city.hits(f"blank-{day}.pdf")] == [
            False, True, True]
