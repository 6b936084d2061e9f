"""The dashboard in a real browser: counts that change during a pipeline run without a
reload, a site's page drawing its stages, and failed jobs filtered and retried with the
button (its confirmation step included). Screenshots of each page go to the artifacts.

The run is driven stage by stage with burst workers (real pgqueue workers running clerk's
tasks), so what the browser must show at each step is known, and every wait is on what the
page shows, with a generous bound, never on time.
"""

from __future__ import annotations

import psycopg
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select

from clerk.config import QUEUES
from clerk.pipeline import Pipeline
from tests.acceptance.conftest import CitySite, Cli
from tests.browser.conftest import Dashboard, keep_screenshot
from tests.support.pipeline import LocalServer, PdfFactory

AGENDA = ["CITY COUNCIL AGENDA\nJanuary 9, 2024\n1. Call to order\n2. Warrant register",
          "3. Maple Street repaving\n4. Adjournment"]
MINUTES = ["CITY COUNCIL MINUTES\nJanuary 9, 2024\nMoved by Councilmember Smith, seconded by "
           "Councilmember Jones, to approve the warrant register. The motion passed 5-0.",
           "AYES: Smith, Jones, Lopez, Kim, Patel", "The meeting adjourned at 9:14 pm."]


def work(pipeline: Pipeline, *queues: str) -> None:
    """Real workers on these queues until they have nothing left to do."""
    assert pipeline.queue.work(list(queues), concurrency=2, burst=True, poll_interval=0.2,
                               install_signals=False) == 0


def stage_states(dashboard: Dashboard) -> dict[str, str]:
    return {node.get_attribute("data-stage"): node.get_attribute("data-state")
            for node in dashboard.browser.find_elements(By.CSS_SELECTOR, "svg g.stage")}


def test_a_run_seen_live_from_overview_to_site_page(
        dashboard: Dashboard, city: CitySite, pdf_factory: PdfFactory, cli: Cli,
        pipeline: Pipeline) -> None:
    city.add("council-agenda-2024-01-09.pdf", "City Council Agenda - January 9, 2024",
             pdf_factory.text_pdf("agenda.pdf", AGENDA).read_bytes())
    city.add("council-minutes-2024-01-09.pdf", "City Council Minutes - January 9, 2024",
             pdf_factory.text_pdf("minutes.pdf", MINUTES).read_bytes())
    city.add("planning-2024-01-16.pdf", "Planning Commission Agenda 2024-01-16",
             pdf_factory.truncated_pdf("planning.pdf").read_bytes())  # a document problem
    city.link("ftp://example.org/minutes-2024-05-14.pdf", "City Council Minutes 2024-05-14")
    cli("site", "add", "springfield", "--url", city.url, "--name", "Springfield")

    dashboard.open("/sites/springfield")  # the run starts from the site page's button
    assert stage_states(dashboard)["fetch"] == "pending"
    dashboard.browser.find_element(By.ID, "enqueue").click()
    dashboard.wait(lambda _: "Run started" in (dashboard.text(".clerk-note") or ""),
                   "the enqueue button did not start a run")
    assert stage_states(dashboard)["fetch"] == "queued"

    dashboard.open("/")
    dashboard.wait(lambda _: dashboard.text("#sites-in-flight") == "1", "the panel never "
                   "showed the run in flight")
    assert dashboard.text('#clerk-panel tr[data-site="springfield"] [data-count="pages_total"]') == "0"

    work(pipeline, "fetch")  # the fetch lists 5 pages in 2 documents: OCR is next
    dashboard.wait(lambda _: dashboard.text(
        '#clerk-panel tr[data-site="springfield"] [data-count="pages_total"]') == "5",
        "the overview never showed the fetched pages without a reload")
    assert dashboard.no_reload("/")

    work(pipeline, "ocr")  # pages read: compile and extract are queued
    dashboard.wait(lambda _: dashboard.text(
        '#clerk-panel tr[data-site="springfield"] [data-count="pages_done"]') == "5",
        "the overview never showed the pages read")
    dashboard.wait(lambda _: dashboard.text('tr[data-queue="extraction"] [data-count="queued"]')
                   == "1", "the queue table never showed the extraction queued")
    assert dashboard.no_reload("/")
    keep_screenshot(dashboard.screenshot("overview-during-run"), "overview.png")

    dashboard.open("/sites/springfield")
    assert stage_states(dashboard) == {
        "fetch": "done", "ocr": "done", "compile": "queued", "extract": "queued",
        "compile+entities": "pending", "deploy": "pending"}
    assert dashboard.text("#pages-done") == "5" and dashboard.text("#pages-total") == "5"
    keep_screenshot(dashboard.screenshot("site-during-run"), "site.png")

    work(pipeline, *QUEUES)  # the rest of the run, to deployed
    dashboard.wait(lambda _: dashboard.text("#run-state") == "complete",
                   "the site page never showed the run complete without a reload")
    assert dashboard.no_reload("/sites/springfield")
    assert set(stage_states(dashboard).values()) == {"done"}
    page = dashboard.browser.page_source
    assert "ftp://example.org/minutes-2024-05-14.pdf" in page  # refused link
    assert "planning-2024-01-16.pdf" in page  # the document problem
    assert dashboard.text("#meetings-db").endswith("springfield/meetings.db")
    dashboard.screenshot("site-complete")

    dashboard.open("/sites")
    dashboard.wait(lambda _: dashboard.text('#site-rows tr[data-site="springfield"] td:nth-child(2)')
                   == "complete", "the Sites list never showed the run complete")
    dashboard.screenshot("sites")
    dashboard.open("/")
    dashboard.wait(lambda _: dashboard.text("#sites-in-flight") == "0", "the panel still "
                   "shows the run in flight")
    dashboard.screenshot("overview-after-run")


def test_failed_jobs_filtered_and_retried_with_the_button(
        dashboard: Dashboard, http_server: LocalServer, cli: Cli, pipeline: Pipeline,
        db_url: str) -> None:
    for site in ("north", "south", "west"):  # index pages that answer 404: the fetch fails
        cli("site", "add", site, "--url", http_server.url(f"/{site}/index.html"))
        cli("enqueue", site)
    work(pipeline, "fetch")

    dashboard.open("/jobs")
    Select(dashboard.browser.find_element(By.NAME, "state")).select_by_visible_text("failed")
    dashboard.browser.find_element(By.CSS_SELECTOR, "form.filters button[type=submit]").click()
    dashboard.wait(lambda b: "state=failed" in b.current_url, "the filter was not applied")
    rows = dashboard.browser.find_elements(By.CSS_SELECTOR, "#jobs tbody tr[data-id]")
    assert len(rows) == 3 and all("failed" in row.text for row in rows)
    dashboard.screenshot("jobs-failed")

    dashboard.browser.find_element(By.ID, "retry-matching").click()
    dashboard.wait(lambda _: dashboard.text("#count") == "3", "no confirmation with the count")
    dashboard.screenshot("jobs-retry-confirm")
    dashboard.browser.find_element(By.ID, "confirm").click()
    dashboard.wait(lambda _: "3" in (dashboard.text("#message") or ""),
                   "no message saying the 3 jobs were retried")

    with psycopg.connect(db_url) as conn:
        live = conn.execute("SELECT tag, state::text FROM pgqueue.jobs WHERE queue = 'fetch' "
                            "ORDER BY tag").fetchall()
    assert live == [("north", "queued"), ("south", "queued"), ("west", "queued")]
    # The retried job's page still lists its failed attempts, each error opening on a click.
    with psycopg.connect(db_url) as conn:
        (north,) = conn.execute("SELECT id FROM pgqueue.jobs WHERE tag = 'north'").fetchone()
    dashboard.open(f"/jobs/{north}")
    (attempt,) = dashboard.browser.find_elements(By.CSS_SELECTOR, "#attempts tbody tr")
    assert attempt.get_attribute("data-outcome") == "failed"
    error = attempt.find_element(By.CSS_SELECTOR, "details pre")
    assert not error.is_displayed()
    attempt.find_element(By.CSS_SELECTOR, "details summary").click()
    dashboard.wait(lambda _: error.is_displayed(), "the attempt's error did not open")
    assert "Traceback (most recent call last)" in error.text and "HTTP 404" in error.text
    dashboard.screenshot("job-attempts")
    dashboard.open("/jobs?state=failed")
    assert dashboard.browser.find_elements(By.CSS_SELECTOR, "#jobs tbody tr[data-id]") == []
