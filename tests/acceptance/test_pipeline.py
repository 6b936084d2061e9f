"""The whole pipeline on generated agendas and minutes served over HTTP on 127.0.0.1.

Site add and enqueue go through the `clerk` CLI (once as a real subprocess), the workers
run every queue, and the results are read where users read them: meetings.db, the
deployed copy, `clerk status --subdomain`, and pgqueue's job history.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
from pathlib import Path

import pytest

from clerk.compile import DATABASE_FILE
from clerk.pipeline import Pipeline
from pgqueue import PermanentFailure
from pgqueue.db import connect
from tests.acceptance.conftest import (
    CLERK_BIN,
    CitySite,
    Cli,
    history,
    pages,
    run_workers,
    search,
    subprocess_env,
)
from tests.support.pipeline import PdfFactory, http_date

AGENDA_PAGES = [
    "CITY COUNCIL AGENDA\nRegular meeting, January 9, 2024\n1. Call to order\n"
    "2. Consent calendar: approve the warrant register for the library annex",
    "3. Public hearing on the Maple Street sidewalk assessment district\n4. Adjournment",
]
MINUTES_TEXT = (
    "CITY COUNCIL MINUTES\nMayor Lopez called the meeting to order at 7:00 pm.\n"
    "Moved by Councilmember Smith, seconded by Councilmember Jones,\n"
    "to approve the budget amendment. The motion passed 4-1.\n"
    "AYES: Smith, Jones, Lopez, Kim\nNOES: Patel\n"
)
MINUTES_SCAN = "PELICAN HARBOR DREDGING\nThe council reviewed the\nharbor dredging contract."
SCANNED_AGENDA = "PLANNING COMMISSION\nVariance for the lighthouse\ngarage on Orchard Lane."


def publish_city(city: CitySite, pdf_factory: PdfFactory) -> None:
    """Two agendas (one born-digital, one scanned) and minutes with a scanned page."""
    city.add("council-agenda-2024-01-09.pdf", "City Council Agenda - January 9, 2024",
             pdf_factory.text_pdf("agenda.pdf", AGENDA_PAGES).read_bytes())
    city.add("planning-2024-01-16.pdf", "Planning Commission Agenda 2024-01-16",
             pdf_factory.scanned_pdf("planning.pdf", [SCANNED_AGENDA]).read_bytes())
    city.add("council-minutes-2024-01-09.pdf", "City Council Minutes - January 9, 2024",
             pdf_factory.mixed_pdf("minutes.pdf", [("text", MINUTES_TEXT),
                                                   ("scan", MINUTES_SCAN)]).read_bytes())


def ocr_jobs(db_url: str) -> list[dict]:
    return [job for job in history(db_url) if job["queue"] == "ocr"]


def test_end_to_end(city: CitySite, pdf_factory: PdfFactory, cli: Cli, clerk_env: dict[str, str],
                    pipeline: Pipeline, db_url: str, tmp_path: Path) -> None:
    publish_city(city, pdf_factory)
    # One real process: the installed entry point, its environment, its exit code.
    added = subprocess.run([str(CLERK_BIN), "site", "add", "springfield", "--url", city.url,
                            "--name", "Springfield"], env=subprocess_env(clerk_env),
                           capture_output=True, text=True, timeout=60)
    assert added.returncode == 0, added.stderr
    assert "added site springfield" in added.stdout
    assert "enqueued" in cli("enqueue", "springfield").output

    run_workers(pipeline)

    database = tmp_path / "storage" / "springfield" / DATABASE_FILE
    agendas = pages(database, "agendas")
    minutes = pages(database, "minutes")
    assert [(p["meeting"], p["date"], p["page"]) for p in agendas] == [
        ("City Council", "2024-01-09", 1), ("City Council", "2024-01-09", 2),
        ("Planning Commission", "2024-01-16", 1)]
    assert [(p["meeting"], p["date"], p["page"]) for p in minutes] == [
        ("City Council", "2024-01-09", 1), ("City Council", "2024-01-09", 2)]
    every_text = " ".join(p["text"] for p in agendas + minutes)
    for words in ("warrant register", "Maple Street", "budget amendment"):
        assert words in every_text
    assert all(p["document_url"].startswith(city.server.base) for p in agendas + minutes)

    # Words that exist only as pixels: OCR read them and FTS finds them.
    assert len(search(database, "minutes", "pelican dredging")) == 1
    assert len(search(database, "agendas", "lighthouse")) == 1
    assert len(search(database, "agendas", "warrant")) == 1

    with sqlite3.connect(database) as conn:
        motions = conn.execute("SELECT mover, seconder, result FROM motions").fetchall()
        votes = conn.execute("SELECT ayes, noes, tally FROM roll_calls WHERE ayes <> '[]'").fetchall()
    assert ("Smith", "Jones", "passed") in motions
    assert (json.dumps(["Smith", "Jones", "Lopez", "Kim"]), json.dumps(["Patel"]), "4-1") in votes

    deployed = tmp_path / "deploy" / "springfield.db"
    assert deployed.read_bytes() == database.read_bytes()

    status = json.loads(cli("status", "--subdomain", "springfield", "--json").output)
    assert status["complete"] is True
    assert {s["stage"]: s["state"] for s in status["stages"]} == dict.fromkeys(
        ("fetch", "ocr", "compile", "extract", "compile+entities", "deploy"), "done")
    assert (status["pages_done"], status["pages_total"]) == (5, 5)
    assert status["failed_pages"] == [] and status["document_errors"] == []
    assert status["last_success_at"] is not None
    text = cli("status", "--subdomain", "springfield").output
    assert "springfield (Springfield): complete" in text
    assert "✓ deploy" in text
    assert all(job["state"] == "succeeded" for job in history(db_url))
    assert len(ocr_jobs(db_url)) == 5


def test_unchanged_site_downloads_and_reads_nothing(
        city: CitySite, pdf_factory: PdfFactory, cli: Cli, pipeline: Pipeline, db_url: str,
        tmp_path: Path) -> None:
    publish_city(city, pdf_factory)
    cli("site", "add", "springfield", "--url", city.url)
    cli("enqueue", "springfield")
    run_workers(pipeline)
    assert len(ocr_jobs(db_url)) == 5
    database = tmp_path / "storage" / "springfield" / DATABASE_FILE
    before = {p["id"]: p["text"] for p in pages(database, "agendas") + pages(database, "minutes")}
    city.server.requests.clear()

    cli("enqueue", "springfield")
    run_workers(pipeline)

    # Every document was asked for conditionally (the server answered 304), none re-read.
    for filename in ("council-agenda-2024-01-09.pdf", "planning-2024-01-16.pdf",
                     "council-minutes-2024-01-09.pdf"):
        requests = city.hits(filename)
        assert len(requests) == 1
        assert requests[0].get("If-None-Match"), requests[0]
    assert len(ocr_jobs(db_url)) == 5
    fetches = [job for job in history(db_url) if job["queue"] == "fetch"]
    assert [job["state"] for job in fetches] == ["succeeded", "succeeded"]
    status = json.loads(cli("status", "--subdomain", "springfield", "--json").output)
    assert status["complete"] is True
    assert status["last_result"].startswith("nothing new")
    after = {p["id"]: p["text"] for p in pages(database, "agendas") + pages(database, "minutes")}
    assert after == before

    # One changed PDF: only its pages are read again, and the site is rebuilt with them.
    city.add("council-agenda-2024-01-09.pdf", "City Council Agenda - January 9, 2024",
             pdf_factory.text_pdf("agenda-v2.pdf", [AGENDA_PAGES[0] + "\nAmended: osprey nesting "
                                                    "platform", AGENDA_PAGES[1]]).read_bytes())
    cli("enqueue", "springfield")
    run_workers(pipeline)
    new_pages = ocr_jobs(db_url)[5:]
    assert sorted((j["args"]["kind"], j["args"]["date"], j["args"]["page"]) for j in new_pages) == [
        ("agenda", "2024-01-09", 1), ("agenda", "2024-01-09", 2)]
    assert len(search(database, "agendas", "osprey")) == 1
    assert len(search(database, "minutes", "pelican")) == 1  # the other documents stay
    assert (tmp_path / "deploy" / "springfield.db").read_bytes() == database.read_bytes()
    status = json.loads(cli("status", "--subdomain", "springfield", "--json").output)
    assert status["complete"] is True
    assert (status["pages_done"], status["pages_total"]) == (2, 2)


def test_high_priority_site_overtakes_backlog(
        http_server, pdf_factory: PdfFactory, cli: Cli, pipeline: Pipeline, db_url: str) -> None:
    big = CitySite(http_server, "bigtown")
    for day in range(1, 5):
        big.add(f"agenda-{day}.pdf", f"City Council Agenda 2024-03-0{day}",
                pdf_factory.text_pdf(f"big-{day}.pdf", [f"Big town item {n}" * 3
                                                        for n in range(6)]).read_bytes())
    small = CitySite(http_server, "smallville")
    small.add("agenda.pdf", "City Council Agenda 2024-03-05",
              pdf_factory.text_pdf("small.pdf", ["Smallville agenda: a kestrel survey"]).read_bytes())
    cli("site", "add", "bigtown", "--url", big.url)
    cli("site", "add", "smallville", "--url", small.url)

    # The big site's pages are queued first (its fetch runs alone), then the small site
    # is enqueued with high priority behind that backlog.
    cli("enqueue", "bigtown")
    pipeline.queue.work(["fetch"], burst=True, poll_interval=0.2, install_signals=False)
    assert sum(pipeline.live_jobs("bigtown").values()) == 24
    cli("enqueue", "smallville", "--priority", "high")
    # One worker for every queue, one job at a time. It claims by priority across all its
    # queues (the order they are listed in does not matter), and holds no lower-priority
    # job in its buffer while the run's steps go on, nor claims one before a finished
    # step's follow-ups exist: the small site's run finishes before the backlog's pages
    # are read.
    pipeline.queue.work(["fetch", "deploy", "compilation", "extraction", "ocr"], concurrency=1,
                        burst=True, poll_interval=0.2, install_signals=False)

    finished = history(db_url)
    assert all(job["state"] == "succeeded" for job in finished)
    small_jobs = [job for job in finished if job["tag"] == "smallville"]
    assert {job["priority"] for job in small_jobs} == {100}
    small_deploy = next(i for i, job in enumerate(finished)
                        if job["tag"] == "smallville" and job["queue"] == "deploy")
    big_ocr = [i for i, job in enumerate(finished) if job["tag"] == "bigtown" and job["queue"] == "ocr"]
    assert len(big_ocr) == 24
    assert small_deploy < max(big_ocr), "the high-priority site waited for the whole backlog"
    overtaken = sum(1 for i in big_ocr if i > small_deploy)
    assert overtaken == 24, f"{24 - overtaken} backlog pages ran inside the high-priority run"


def test_conditional_requests_use_last_modified_too(
        city: CitySite, pdf_factory: PdfFactory, cli: Cli, pipeline: Pipeline, db_url: str) -> None:
    """A server that sends Last-Modified but no ETag still gets conditional requests."""
    body = pdf_factory.text_pdf("a.pdf", ["Agenda: the heron rookery"]).read_bytes()
    stamp = http_date(1_700_000_000)
    city.server.static(city.path("a.pdf"), body, last_modified=stamp)
    city.link("a.pdf", "City Council Agenda 2024-04-02")
    cli("site", "add", "springfield", "--url", city.url)
    cli("enqueue", "springfield")
    run_workers(pipeline)
    cli("enqueue", "springfield")
    run_workers(pipeline)
    second = city.hits("a.pdf")[1]
    assert second.get("If-Modified-Since") == stamp
    assert len(ocr_jobs(db_url)) == 1


def test_fetch_that_dies_before_fan_out_loses_no_pages(
        city: CitySite, pdf_factory: PdfFactory, cli: Cli, pipeline: Pipeline, db_url: str,
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The PDFs were downloaded and recorded, then the fetch died: the next fetch finds
    them unchanged (304) and must still read their pages, which were never read."""
    city.add("a.pdf", "City Council Agenda 2024-04-02",
             pdf_factory.text_pdf("a.pdf", ["Agenda: the egret colony", "Page two: adjourn"]).read_bytes())

    def die(*args: object, **kwargs: object) -> None:
        raise PermanentFailure("simulated crash between the downloads and the fan-out")

    with monkeypatch.context() as patch:
        patch.setattr(Pipeline, "_fan_out", die)
        cli("site", "add", "springfield", "--url", city.url)
        cli("enqueue", "springfield")
        run_workers(pipeline)
    assert [job["state"] for job in history(db_url)] == ["failed"]

    cli("enqueue", "springfield")
    run_workers(pipeline)
    assert city.hits("a.pdf")[1].get("If-None-Match")  # not downloaded again
    assert len(ocr_jobs(db_url)) == 2
    database = tmp_path / "storage" / "springfield" / DATABASE_FILE
    assert len(pages(database, "agendas")) == 2
    assert search(database, "agendas", "egret")

    # A page text lost in the database (where page texts live, issue 16) is read again,
    # alone, and the copy on disk is rewritten from the database.
    with connect(db_url, autocommit=True) as conn:
        conn.execute("DELETE FROM clerk.page_reads WHERE site = 'springfield' AND page = 2")
    (tmp_path / "storage" / "springfield" / "txt" / "_agendas" / "City Council" / "2024-04-02"
     / "2.txt").unlink()
    cli("enqueue", "springfield")
    run_workers(pipeline)
    assert [job["args"]["page"] for job in ocr_jobs(db_url)[2:]] == [2]
    assert len(pages(database, "agendas")) == 2
