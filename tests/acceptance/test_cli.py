"""The `clerk` command line, run as people run it: status, failed, purge, db, doctor, demo."""

from __future__ import annotations

import json
import subprocess
import threading

from clerk.config import QUEUES
from clerk.pipeline import Pipeline
from tests.acceptance.conftest import (
    CLERK_BIN,
    CitySite,
    Cli,
    history,
    run_workers,
    subprocess_env,
)
from tests.support.pipeline import PdfFactory
from tests.support.secrets import SECRET, password_url

UNREACHABLE = "postgresql://nobody:secret-pw@127.0.0.1:9/none?connect_timeout=2"


def publish(city: CitySite, pdf_factory: PdfFactory, documents: int = 2, pages: int = 3) -> None:
    for day in range(1, documents + 1):
        city.add(f"agenda-{day}.pdf", f"City Council Agenda 2024-06-0{day}",
                 pdf_factory.text_pdf(f"a{day}.pdf", [f"Agenda item {n}: the osprey survey."
                                                      for n in range(pages)]).read_bytes())


def fetch_only(pipeline: Pipeline) -> None:
    """Run the fetches, leaving the page jobs queued."""
    pipeline.queue.work(["fetch"], burst=True, poll_interval=0.2, install_signals=False)


def test_status_overview(city: CitySite, pdf_factory: PdfFactory, cli: Cli,
                         pipeline: Pipeline, db_url: str) -> None:
    publish(city, pdf_factory)
    cli("site", "add", "springfield", "--url", city.url)
    cli("enqueue", "springfield")
    fetch_only(pipeline)

    cli.env = {**cli.env, "DATABASE_URL": password_url(db_url)}  # a password to leak
    shown = cli("status", "--json").output
    assert SECRET not in shown
    data = json.loads(shown)
    assert list(data["queues"]) == list(QUEUES)  # every queue, even the empty ones
    assert data["queues"]["ocr"]["queued"] == 6
    assert data["queues"]["fetch"]["queued"] == 0
    assert "***" in data["database"] and "127.0.0.1" in data["database"]
    [site] = data["sites"]
    assert (site["site"], site["stage"], site["pages_done"], site["pages_total"]) == (
        "springfield", "ocr", 0, 6)
    assert data["workers"] == []

    text = cli("status").output
    assert SECRET not in text
    for name in QUEUES:
        assert f"\n{name} " in text
    assert "active sites (1):" in text and "springfield" in text and "0/6 pages" in text

    run_workers(pipeline)
    data = json.loads(cli("status", "--json").output)
    assert data["sites"] == []
    assert data["queues"]["ocr"]["succeeded"] == 6
    site = json.loads(cli("status", "--subdomain", "springfield", "--json").output)
    assert site["state"] == "complete"


def test_status_of_unknown_site(cli: Cli) -> None:
    result = cli("status", "--subdomain", "nowhere", ok=False)
    assert "no site 'nowhere'" in result.output
    result = cli("enqueue", "nowhere", ok=False)
    assert "clerk site add" in result.output


def test_site_list_and_remove(city: CitySite, cli: Cli) -> None:
    assert "no sites" in cli("site", "list").output
    assert "added site springfield" in cli("site", "add", "springfield", "--url", city.url).output
    assert "updated site springfield" in cli("site", "add", "springfield", "--url", city.url,
                                             "--name", "Springfield").output
    [row] = json.loads(cli("site", "list", "--json").output)
    assert (row["subdomain"], row["name"], row["source_url"]) == ("springfield", "Springfield", city.url)
    assert "removed site springfield" in cli("site", "remove", "springfield").output
    assert "no site 'springfield'" in cli("site", "remove", "springfield", ok=False).output


def test_removing_a_site_cancels_its_run(city: CitySite, cli: Cli, pipeline: Pipeline) -> None:
    """Audit 25: a removed site's queued run stayed, listed as active by `clerk status`."""
    cli("site", "add", "ghost", "--url", city.url)
    cli("enqueue", "ghost")
    assert pipeline.live_jobs("ghost") == {"fetch:queued": 1}
    output = cli("site", "remove", "ghost").output
    assert "removed site ghost; 1 queued job cancelled, 0 running told to stop" in output
    assert pipeline.live_jobs("ghost") == {}
    assert "ghost" not in cli("status").output


def test_failed_lists_and_retries(city: CitySite, pdf_factory: PdfFactory, cli: Cli,
                                  pipeline: Pipeline, db_url: str) -> None:
    city.server.status(city.index_path, 404)
    cli("site", "add", "springfield", "--url", city.url)
    cli("enqueue", "springfield")
    run_workers(pipeline)

    text = cli("failed").output
    assert "clerk.fetch" in text and "springfield" in text and "failed 1/3" in text
    assert "HTTP 404" in text
    [row] = json.loads(cli("failed", "--subdomain", "springfield", "--json").output)
    assert row["task"] == "clerk.fetch" and "HTTP 404" in row["last_error"]
    assert "no failed jobs" in cli("failed", "--queue", "ocr").output

    # The city fixes its page; the failed fetch is retried and the run completes.
    publish(city, pdf_factory, documents=1, pages=1)
    assert "1 failed jobs re-queued" in cli("failed", "--retry", "--subdomain", "springfield").output
    run_workers(pipeline)
    assert "no failed jobs" in cli("failed").output
    status = json.loads(cli("status", "--subdomain", "springfield", "--json").output)
    assert status["state"] == "complete"


def test_purge_site(city: CitySite, pdf_factory: PdfFactory, cli: Cli, clerk_env: dict[str, str],
                    pipeline: Pipeline, db_url: str, http_server) -> None:
    publish(city, pdf_factory)
    other = CitySite(http_server, "shelbyville")
    publish(other, pdf_factory, documents=1, pages=2)
    cli("site", "add", "springfield", "--url", city.url)
    cli("site", "add", "shelbyville", "--url", other.url)
    cli("enqueue", "springfield", "shelbyville")
    # A real worker process drains the fetch queue and exits (--burst).
    worker = subprocess.run([str(CLERK_BIN), "worker", "fetch", "--burst"],
                            env=subprocess_env(clerk_env), capture_output=True, text=True,
                            timeout=120)
    assert worker.returncode == 0, worker.stderr
    assert pipeline.live_jobs("springfield") == {"ocr:queued": 6}

    result = cli("purge", "springfield")
    assert "springfield: 6 queued jobs cancelled, 0 running jobs told to stop, 1 runs cancelled" \
        in result.output
    assert pipeline.live_jobs("springfield") == {}
    assert pipeline.live_jobs("shelbyville") == {"ocr:queued": 2}
    status = json.loads(cli("status", "--subdomain", "springfield", "--json").output)
    assert status["complete"] is False
    assert {s["stage"]: s["state"] for s in status["stages"]}["ocr"] == "cancelled"

    run_workers(pipeline)  # the other site is untouched and finishes
    assert json.loads(cli("status", "--subdomain", "shelbyville", "--json").output)["complete"]
    finished = history(db_url)
    assert not [j for j in finished if j["tag"] == "springfield" and j["queue"] != "fetch"
                and j["state"] != "cancelled"]


def test_purge_queue(city: CitySite, pdf_factory: PdfFactory, cli: Cli, pipeline: Pipeline) -> None:
    publish(city, pdf_factory)
    cli("site", "add", "springfield", "--url", city.url)
    cli("enqueue", "springfield")
    fetch_only(pipeline)

    declined = cli("purge-queue", "ocr", input="n\n", ok=False)
    assert "Aborted" in declined.output
    assert pipeline.live_jobs("springfield") == {"ocr:queued": 6}
    assert "ocr: 6 queued jobs cancelled" in cli("purge-queue", "ocr", "--yes").output
    assert json.loads(cli("status", "--json").output)["queues"]["ocr"]["cancelled"] == 6
    # The queue is cleared, not the run: cancelled pages count as finished members of
    # the group, so the site's follow-ups run on what it has.
    assert pipeline.live_jobs("springfield") == {"compilation:queued": 1, "extraction:queued": 1}
    run_workers(pipeline)
    status = json.loads(cli("status", "--subdomain", "springfield", "--json").output)
    assert (status["pages_total"], status["state"]) == (6, "complete")


def test_db_commands(cli: Cli, empty_db_url: str, clerk_env: dict[str, str]) -> None:
    cli.env = {**clerk_env, "DATABASE_URL": empty_db_url}
    # an unmigrated database is refused, not shown as "none" (and not migrated by a look)
    assert "database not migrated" in cli("db", "current", ok=False).output
    upgraded = cli("db", "upgrade").output
    assert upgraded.startswith("applied: ") and "0001_sites" in upgraded
    assert cli("db", "upgrade").output.strip() == "already up to date"
    current = cli("db", "current").output
    assert "(0 pending)" in current and "none" not in current
    history = cli("db", "history").output.splitlines()
    assert any(line.startswith("pgqueue 0001_jobs") for line in history)
    assert any(line.startswith("clerk 0002_refused_links") for line in history)


def test_unreachable_database_is_a_clear_error(cli: Cli, clerk_env: dict[str, str]) -> None:
    cli.env = {**clerk_env, "DATABASE_URL": UNREACHABLE}
    for command in (["status"], ["db", "current"], ["site", "list"]):
        result = cli(*command, ok=False)
        assert "Error:" in result.output
        assert "secret-pw" not in result.output


def test_doctor(cli: Cli, clerk_env: dict[str, str]) -> None:
    result = cli("doctor")
    for name in ("tesseract", "pdftoppm", "pdftotext", "pdfinfo", "spacy model", "database"):
        assert f"✓ {name}: " in result.output
    cli.env = {**clerk_env, "DATABASE_URL": UNREACHABLE, "CLERK_SPACY_MODEL": "xx_no_such_model"}
    result = cli("doctor", ok=False)
    assert result.exit_code == 1
    assert "✗ spacy model" in result.output and "python -m spacy download" in result.output
    assert "✗ database" in result.output and "fix: " in result.output
    assert "secret-pw" not in result.output


def test_enqueue_joins_a_run_in_progress_and_waits(city: CitySite, pdf_factory: PdfFactory,
                                                   cli: Cli, pipeline: Pipeline, db_url: str) -> None:
    publish(city, pdf_factory, documents=1, pages=2)
    cli("site", "add", "springfield", "--url", city.url)
    assert "enqueued" in cli("enqueue", "springfield").output
    joined = cli("enqueue", "springfield", "--priority", "high").output
    assert "a run is already in progress (1 job); joined it" in joined
    fetch_only(pipeline)
    assert "a run is already in progress (2 jobs)" in cli("enqueue", "springfield").output

    # --wait follows the run to its end while a worker (here a thread) does the work.
    worker = pipeline.queue.worker(list(QUEUES), concurrency=2, poll_interval=0.2,
                                   install_signals=False)
    thread = threading.Thread(target=worker.run, name="test-worker")
    thread.start()
    try:
        result = cli("enqueue", "springfield", "--wait")
    finally:
        worker.stop()
        thread.join(30)
    assert not thread.is_alive()
    assert "springfield (springfield): complete" in result.output
    assert "✓ deploy" in result.output
    assert [j["queue"] for j in history(db_url)].count("fetch") == 1  # one run, joined twice
