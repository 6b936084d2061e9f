"""`clerk enqueue --wait` and `clerk status` tell the truth (issue 12, items 7 and 8; issue 23,
item 17), run as people run them: the real `clerk` program and real `clerk worker` processes
against the test PostgreSQL, on a city site served over HTTP on 127.0.0.1.

Nothing here waits on a duration: a test reads the waiting command's output line by line until
the line it expects (with a generous bound), or runs a burst worker to its end.
"""

from __future__ import annotations

import json
import os
import pty
import queue
import re
import select
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest

from clerk.pipeline import Pipeline
from pgqueue.db import connect
from tests.acceptance.conftest import CLERK_BIN, CitySite, Cli, run_workers, subprocess_env
from tests.support.pipeline import PdfFactory, Route

NO_FETCH_WORKER = "no worker is running for queue fetch: start clerkd (or clerk worker fetch)"
NO_OCR_WORKER = "no worker is running for queue ocr: start clerkd (or clerk worker ocr)"
CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def drain(pipeline: Pipeline) -> None:
    """Every queue, in this process, until nothing is left. One slot: two slots whose first
    jobs start together can each build the queue's connection pool (a race in pgqueue's
    lazy pool, reported), and the pool left over is closed only by the garbage collector."""
    run_workers(pipeline, concurrency=1)


def publish(city: CitySite, pdf_factory: PdfFactory, pages: int = 3, day: int = 1) -> None:
    city.add(f"agenda-{day}.pdf", f"City Council Agenda 2024-06-0{day}",
             pdf_factory.text_pdf(f"a{day}.pdf", [f"Agenda item {n}: the osprey survey."
                                                  for n in range(pages)]).read_bytes())


def clerk(env: dict[str, str], *args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([str(CLERK_BIN), *args], env=subprocess_env(env),
                            capture_output=True, text=True, timeout=180)
    if ok:
        assert result.returncode == 0, f"clerk {' '.join(args)}: {result.stdout}{result.stderr}"
    assert "Traceback" not in result.stderr, result.stderr
    return result


def burst_worker(env: dict[str, str], queue_name: str) -> None:
    """A real `clerk worker QUEUE --burst`: it drains the queue and exits."""
    clerk(env, "worker", queue_name, "--burst")


class Running:
    """A clerk command in the background whose output is read line by line as it comes."""

    def __init__(self, env: dict[str, str], *args: str) -> None:
        self.process = subprocess.Popen(
            [str(CLERK_BIN), *args], env=subprocess_env(env), stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True)
        self.lines: list[str] = []
        self._new: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._new.put(line.rstrip("\n"))
        self._new.put(None)

    def wait_for_line(self, text: str, timeout: float = 90) -> str:
        """The first line (seen so far or to come) that contains `text`."""
        for line in self.lines:
            if text in line:
                return line
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self._new.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"no line with {text!r} within {timeout} s; output so far:\n"
                                     + "\n".join(self.lines)) from None
            if line is None:
                raise AssertionError(f"the command ended without a line with {text!r}:\n"
                                     + "\n".join(self.lines))
            self.lines.append(line)
            if text in line:
                return line

    def wait(self, timeout: float = 180) -> int:
        code = self.process.wait(timeout=timeout)
        self._reader.join(timeout=10)
        if self.process.stdout is not None and not self._reader.is_alive():
            self.process.stdout.close()
        while not self._new.empty():
            line = self._new.get()
            if line is not None:
                self.lines.append(line)
        return code

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.wait(timeout=30)


@pytest.fixture
def running() -> Iterator[list[Running]]:
    """Background commands, killed at the end whatever happens."""
    started: list[Running] = []
    yield started
    for command in started:
        command.stop()


def test_wait_without_a_worker_says_so_and_keeps_reporting(
        city: CitySite, pdf_factory: PdfFactory, cli: Cli, clerk_env: dict[str, str],
        running: list[Running]) -> None:
    publish(city, pdf_factory)
    cli("site", "add", "springfield", "--url", city.url)
    waiting = Running(clerk_env, "enqueue", "springfield", "--wait")
    running.append(waiting)

    # Nobody serves the fetch queue: the wait says so, and which command starts a worker.
    waiting.wait_for_line(NO_FETCH_WORKER)
    assert waiting.wait_for_line("springfield: fetch") == "springfield: fetch"
    assert waiting.wait_for_line("progress ").startswith("progress 0% (0/")  # a pipe: plain lines

    # A fetch worker drains the fetch queue and exits: the run moves on to the pages, which
    # no worker serves either, and the wait says that too (it does not hang silently).
    burst_worker(clerk_env, "fetch")
    assert waiting.wait_for_line("springfield: fetch → ") == "springfield: fetch → ocr 3 pages"
    waiting.wait_for_line(NO_OCR_WORKER)
    assert waiting.process.poll() is None  # still waiting, as it should


def test_wait_draws_a_bar_only_on_a_terminal(city: CitySite, pdf_factory: PdfFactory, cli: Cli,
                                             clerk_env: dict[str, str]) -> None:
    publish(city, pdf_factory)
    cli("site", "add", "springfield", "--url", city.url)
    controller, terminal = pty.openpty()
    process = subprocess.Popen([str(CLERK_BIN), "enqueue", "springfield", "--wait"],
                               env=subprocess_env(clerk_env), stdout=terminal, stderr=terminal)
    os.close(terminal)
    seen = b""
    try:
        deadline = time.monotonic() + 90
        while NO_FETCH_WORKER.encode() not in seen and time.monotonic() < deadline:
            ready, _, _ = select.select([controller], [], [], 1)
            if ready:
                try:
                    seen += os.read(controller, 4096)
                except OSError:  # the command ended: the terminal is gone
                    break
    finally:
        process.kill()
        process.wait(timeout=30)
        os.close(controller)
    text = seen.decode(errors="replace")
    assert NO_FETCH_WORKER in text, text
    # The bar is redrawn in place (a carriage return and an erase), and the lines that stay
    # are printed over it; no plain periodic lines on a terminal.
    assert "\r\x1b[K[" in text and "  0%  springfield fetch" in text, text
    assert "progress " not in text


def test_wait_follows_stages_and_exits_zero_when_every_run_completes(
        city: CitySite, pdf_factory: PdfFactory, cli: Cli, clerk_env: dict[str, str],
        running: list[Running], http_server, pipeline: Pipeline) -> None:
    publish(city, pdf_factory, pages=4)
    small = CitySite(http_server, "smallville")
    publish(small, pdf_factory, pages=1, day=2)
    cli("site", "add", "springfield", "--url", city.url)
    cli("site", "add", "smallville", "--url", small.url)
    waiting = Running(clerk_env, "enqueue", "springfield", "smallville", "--wait")
    running.append(waiting)
    waiting.wait_for_line("smallville: fetch")
    drain(pipeline)

    assert waiting.wait() == 0, waiting.output
    for site, pages in (("springfield", 4), ("smallville", 1)):
        changes = [line for line in waiting.lines if line.startswith(f"{site}: ")
                   and not line.startswith(f"{site}: enqueued")]
        # One line per stage change, in the pipeline's order (some may be passed between
        # two looks), the last one the end.
        assert changes[0] == f"{site}: fetch"
        assert changes[-1].endswith("→ complete"), changes
        stages = [line.split(" → ")[-1] for line in changes[1:]]
        order = ["ocr", "compile", "extract", "compile+entities", "deploy", "complete"]
        seen = [order.index(stage.split()[0]) for stage in stages]
        assert seen == sorted(seen) and len(set(seen)) == len(seen), changes
        if any(stage.startswith("ocr") for stage in stages):
            assert f"ocr {pages} pages" in stages
    assert "springfield (springfield): complete" in waiting.output
    assert "smallville (smallville): complete" in waiting.output
    # The percent counts steps over both sites together (the fetch, each page, the follow-ups).
    assert "progress 0% (0/10 steps)" in waiting.output


def test_wait_percent_is_weighted_by_pages(
        city: CitySite, pdf_factory: PdfFactory, cli: Cli, clerk_env: dict[str, str],
        running: list[Running], http_server, pipeline: Pipeline, db_url: str) -> None:
    publish(city, pdf_factory, pages=6)
    small = CitySite(http_server, "smallville")
    publish(small, pdf_factory, pages=1, day=2)
    cli("site", "add", "springfield", "--url", city.url)
    cli("site", "add", "smallville", "--url", small.url)
    waiting = Running(clerk_env, "enqueue", "springfield", "smallville", "--wait")
    running.append(waiting)
    waiting.wait_for_line("smallville: fetch")
    burst_worker(clerk_env, "fetch")
    # Springfield's six pages are held back (due in an hour, beyond a burst worker's
    # horizon); smallville's one page and its follow-ups run to the end.
    with connect(db_url) as conn:
        held = conn.execute("UPDATE pgqueue.jobs SET run_at = now() + interval '1 hour'"
                            " WHERE tag = 'springfield' AND queue = 'ocr'").rowcount
    assert held == 6
    drain(pipeline)
    assert waiting.wait_for_line("→ complete").startswith("smallville: ")

    # smallville: 6 of 6 steps (fetch, 1 page, 4 follow-ups); springfield: 1 of 11 (its
    # fetch). Weighted: 7/17 = 41%; an average per site would say (100% + 9%) / 2 = 55%.
    line = waiting.wait_for_line("progress 41%")
    assert line.startswith("progress 41% (7/17 steps): springfield ocr 0/6 pages; "
                           "smallville complete"), line
    assert waiting.process.poll() is None


def test_wait_exits_non_zero_when_a_fetch_fails(
        city: CitySite, cli: Cli, clerk_env: dict[str, str], running: list[Running]) -> None:
    city.server.status(city.index_path, 404)
    cli("site", "add", "springfield", "--url", city.url)
    waiting = Running(clerk_env, "enqueue", "springfield", "--wait")
    running.append(waiting)
    waiting.wait_for_line("springfield: fetch")
    burst_worker(clerk_env, "fetch")

    assert waiting.wait() == 1, waiting.output
    assert "springfield: fetch → failed at fetch:" in waiting.output
    assert "springfield (springfield): failed" in waiting.output
    error = waiting.wait_for_line("Error: not every run completed")
    assert "springfield: failed at fetch" in error and "HTTP 404" in error, error

    # `clerk failed`: a header, and the message without the exception's module path.
    failed = clerk(clerk_env, "failed").stdout.splitlines()
    assert failed[0].split() == ["job", "queue", "task", "site", "state", "error"]
    [row] = failed[1:]
    assert "springfield" in row and "failed 1/3" in row and "HTTP 404" in row
    assert "pgqueue.errors" not in row and "PermanentFailure" not in row, row


def test_wait_exits_non_zero_when_the_run_is_cancelled(
        city: CitySite, pdf_factory: PdfFactory, cli: Cli, clerk_env: dict[str, str],
        running: list[Running]) -> None:
    publish(city, pdf_factory)
    cli("site", "add", "springfield", "--url", city.url)
    waiting = Running(clerk_env, "enqueue", "springfield", "--wait")
    running.append(waiting)
    waiting.wait_for_line("springfield: fetch")
    burst_worker(clerk_env, "fetch")
    waiting.wait_for_line("springfield: fetch → ocr 3 pages")
    cli("purge", "springfield")

    assert waiting.wait() == 1, waiting.output
    error = waiting.wait_for_line("Error: not every run completed")
    assert "springfield: cancelled at ocr" in error, error


def test_status_after_a_failed_newer_fetch_shows_that_run(
        city: CitySite, pdf_factory: PdfFactory, cli: Cli, clerk_env: dict[str, str],
        pipeline: Pipeline) -> None:
    publish(city, pdf_factory, pages=2)
    cli("site", "add", "springfield", "--url", city.url)
    cli("enqueue", "springfield")
    drain(pipeline)
    assert json.loads(cli("status", "--subdomain", "springfield", "--json").output)["complete"]

    city.server.status(city.index_path, 404)  # the city's page is gone
    cli("enqueue", "springfield")
    burst_worker(clerk_env, "fetch")

    status = json.loads(cli("status", "--subdomain", "springfield", "--json").output)
    assert (status["state"], status["complete"]) == ("failed", False)
    assert {s["stage"]: s["state"] for s in status["stages"]} == {
        "fetch": "failed", "ocr": "not run", "compile": "not run", "extract": "not run",
        "compile+entities": "not run", "deploy": "not run"}
    assert (status["pages_done"], status["pages_total"]) == (0, 0)  # not the old run's 2/2
    assert status["last_result"] is None
    assert status["previous_run"]["result"].startswith("1 documents listed")
    assert status["previous_run"]["deployed_at"] is not None

    text = cli("status", "--subdomain", "springfield").output
    assert "springfield (springfield): failed" in text
    assert re.search(r"✗ fetch +failed: .*HTTP 404", text), text
    assert "✓" not in text  # nothing of the previous run is shown as this run's
    assert "previous run: 1 documents listed" in text
    assert "pgqueue.errors" not in text


def test_status_counts_cancelled_pages_and_names_the_missing_worker(
        city: CitySite, pdf_factory: PdfFactory, cli: Cli, clerk_env: dict[str, str],
        db_url: str) -> None:
    publish(city, pdf_factory, pages=6)
    cli("site", "add", "springfield", "--url", city.url)
    cli("enqueue", "springfield")
    burst_worker(clerk_env, "fetch")

    # Six pages queued and no OCR worker anywhere.
    status = json.loads(cli("status", "--subdomain", "springfield", "--json").output)
    assert status["state"] == "in progress" and status["waiting_for_worker"] == ["ocr"]
    text = cli("status", "--subdomain", "springfield").output
    assert "springfield (springfield): in progress, waiting for a worker (none on queue ocr)" \
        in text
    assert "0/6 pages read" in text
    overview = cli("status").output
    [line] = [line for line in overview.splitlines() if line.strip().startswith("springfield")]
    assert "0/6 pages read" in line and "waiting for a worker (none on queue ocr)" in line
    assert "updated None" not in line and "updated -" not in line  # the run has a time

    # Two pages are read; the other four are held back (due in an hour), then the run is
    # purged: four pages cancelled, not counted as read.
    with connect(db_url) as conn:
        held = conn.execute(
            "UPDATE pgqueue.jobs SET run_at = now() + interval '1 hour' WHERE id IN ("
            " SELECT id FROM pgqueue.jobs WHERE tag = 'springfield' AND queue = 'ocr'"
            " ORDER BY id OFFSET 2)").rowcount
    assert held == 4
    burst_worker(clerk_env, "ocr")
    cli("purge", "springfield")

    status = json.loads(cli("status", "--subdomain", "springfield", "--json").output)
    assert (status["pages_done"], status["pages_cancelled"], status["pages_total"]) == (2, 4, 6)
    assert status["state"] == "cancelled"
    stages = {s["stage"]: s["state"] for s in status["stages"]}
    assert (stages["ocr"], stages["compile"], stages["deploy"]) == (
        "cancelled", "not run", "not run")
    text = cli("status", "--subdomain", "springfield").output
    assert "2/6 pages read, 4 cancelled" in text
    assert "6/6" not in text and "100%" not in text


def test_status_overview_while_a_worker_holds_a_fetch(
        city: CitySite, cli: Cli, clerk_env: dict[str, str], tmp_path: Path) -> None:
    # A PDF that drips one byte at a time keeps the fetch job running in its worker.
    city.server.slow_drip(city.path("slow.pdf"), interval=0.05, total=1_000_000)
    city.link("slow.pdf", "City Council Agenda 2024-06-01")
    cli("site", "add", "springfield", "--url", city.url)
    cli("enqueue", "springfield")
    with (tmp_path / "worker.log").open("w") as log:
        worker = subprocess.Popen([str(CLERK_BIN), "worker", "fetch"],
                                  env={**subprocess_env(clerk_env), "CLERK_SHUTDOWN_GRACE": "1"},
                                  stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 90
        data = json.loads(cli("status", "--json").output)
        while not any(w["current_jobs"] for w in data["workers"]):
            assert time.monotonic() < deadline, data
            time.sleep(0.2)  # polling a row, bounded by the deadline
            data = json.loads(cli("status", "--json").output)
        text = cli("status").output
    finally:
        worker.terminate()
        try:
            worker.wait(timeout=60)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait(timeout=30)
    [job] = data["workers"][0]["current_jobs"]
    [worker_line] = [line for line in text.splitlines() if " fetch " in line and "beat" in line]
    assert f"jobs {job}  beat" in worker_line and "[" not in worker_line, worker_line
    [site_line] = [line for line in text.splitlines() if line.strip().startswith("springfield")]
    assert site_line.split()[1] == "fetch" and "pages not listed yet" in site_line, site_line
    assert "None" not in site_line and re.search(r"updated \d{4}-", site_line), site_line


def test_priority_high_raises_the_run_it_joins(
        city: CitySite, pdf_factory: PdfFactory, cli: Cli, clerk_env: dict[str, str],
        pipeline: Pipeline, db_url: str) -> None:
    publish(city, pdf_factory, pages=3)
    cli("site", "add", "springfield", "--url", city.url)
    cli("enqueue", "springfield")
    burst_worker(clerk_env, "fetch")

    plain = cli("enqueue", "springfield").output
    assert plain.strip() == "springfield: a run is already in progress (3 jobs); joined it"
    raised = cli("enqueue", "springfield", "--priority", "high").output
    assert raised.strip() == ("springfield: a run is already in progress (3 jobs); joined it "
                              "and raised it to priority high (3 queued jobs)")
    with connect(db_url) as conn:
        jobs = conn.execute("SELECT priority FROM pgqueue.jobs WHERE tag = 'springfield'"
                            ).fetchall()
        groups = conn.execute("SELECT priority FROM pgqueue.groups WHERE tag = 'springfield'"
                              ).fetchall()
    assert [row["priority"] for row in jobs] == [100, 100, 100]
    assert [row["priority"] for row in groups] == [100]

    lowered = cli("enqueue", "springfield", "--priority", "low").output
    assert "at priority high; joined it; --priority low ignored" in lowered

    # The run's follow-ups, inserted when the pages are done, carry the raised priority.
    drain(pipeline)
    with connect(db_url) as conn:
        later = conn.execute(
            "SELECT task, priority FROM pgqueue.job_history WHERE tag = 'springfield'"
            " AND queue NOT IN ('fetch', 'ocr') ORDER BY id").fetchall()
    assert later and all(row["priority"] == 100 for row in later), later


ESCAPES = "\x1b[2J\x1b]0;owned\x07\x9b31m\x07"


def test_escape_codes_from_a_city_site_do_not_reach_the_terminal(
        city: CitySite, pdf_factory: PdfFactory, cli: Cli, clerk_env: dict[str, str],
        pipeline: Pipeline, http_server) -> None:
    publish(city, pdf_factory, pages=1)

    def not_found(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(404, f"Gone{ESCAPES} Away")  # the reason phrase, as sent
        handler.send_header("Content-Length", "0")
        handler.end_headers()

    city.server.routes[city.path("bad.pdf")] = Route(handler=not_found)
    city.link("bad.pdf", f"City Council{ESCAPES} Minutes 2024-05-07")
    city.link(f"ftp://example.org/{ESCAPES}minutes-2024-05-14.pdf", "Council Minutes 2024-05-14")
    broken = CitySite(http_server, "shelbyville")
    http_server.routes[broken.index_path] = Route(handler=not_found)
    cli("site", "add", "springfield", "--url", city.url, "--name", "Springfield")
    cli("site", "add", "shelbyville", "--url", broken.url)
    cli("enqueue", "springfield", "shelbyville")
    drain(pipeline)

    shown = {
        "status --subdomain springfield": clerk(clerk_env, "status", "--subdomain", "springfield"),
        "status --subdomain shelbyville": clerk(clerk_env, "status", "--subdomain", "shelbyville"),
        "failed": clerk(clerk_env, "failed"),
        "status": clerk(clerk_env, "status"),
        "site list": clerk(clerk_env, "site", "list"),
    }
    for command, result in shown.items():
        found = CONTROL.findall(result.stdout + result.stderr)
        assert not found, f"clerk {command} printed control characters {found}:\n{result.stdout}"
    springfield = shown["status --subdomain springfield"].stdout
    assert "Gone" in springfield and "Away" in springfield  # the text stays, the codes go
    [refused] = [line for line in springfield.splitlines() if "refused link" in line]
    assert refused.count("minutes-2024-05-14.pdf") == 1, refused  # the URL once, not twice
    assert "HTTP 404" in shown["status --subdomain shelbyville"].stdout
    assert "shelbyville" in shown["failed"].stdout

    # JSON keeps what the site sent, escaped by the encoder (a terminal shows `\u001b`).
    data = clerk(clerk_env, "status", "--subdomain", "springfield", "--json").stdout
    assert "\x1b" not in data and "\\u001b" in data
