"""Every page in HTML and JSON at the same path, the jobs filters, keyset paging, escaping."""

from __future__ import annotations

import os
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

from starlette.testclient import TestClient

from pgqueue import Queue, current_job
from tests.web.conftest import SCRIPT, run_all

WEB_SQL = Path(__file__).resolve().parents[2] / "sql" / "pgqueue" / "web.sql"


def _history(web: TestClient, path: str, **params: str) -> list[int]:
    return [j["id"] for j in web.get(path, params={**params, "format": "json"}).json()["jobs"]]


def test_every_page_answers_html_and_the_same_context_as_json(wq: Queue, web: TestClient) -> None:
    ok, boom, after = wq.tasks["web.ok"], wq.tasks["web.boom"], wq.tasks["web.after"]
    ok.enqueue(n=1)
    failed = boom.enqueue(message="disk full")
    with wq.group("run-1", tag="site-a", on_complete=[after.spec()]) as group:
        group.enqueue_many(ok, [{"n": i} for i in range(3)])
    run_all(wq)
    waiting = ok.enqueue(n=99)
    with wq.session() as conn:
        worker_id = wq.store.register_worker(conn, host="web-host", pid=4242,
                                             queues=["default"], concurrency=2,
                                             isolation="thread")
    with wq.connect(autocommit=True) as conn:
        claimed = wq.store.claim(conn, worker_id=worker_id, queues=["default"], limit=1,
                                 lease_seconds=60)
    assert [c.id for c in claimed] == [waiting]

    pages = {"/": "Overview", "/jobs": "Jobs", f"/jobs/{failed}": "disk full",
             f"/jobs/{waiting}": "web-host", "/workers": "web-host", "/groups": "run-1",
             f"/groups/{group.id}": "run-1", "/_/overview": "failures in the last hour",
             "/_/jobs": "web.boom"}
    for path, text in pages.items():
        html = web.get(path)
        assert html.status_code == 200, (path, html.text[html.text.find("<main>"):])
        assert html.headers["content-type"].startswith("text/html")
        assert text in html.text, (path, text)
        for how in ({"params": {"format": "json"}}, {"headers": {"Accept": "application/json"}}):
            answer = web.get(path, **how)  # type: ignore[arg-type]
            assert answer.status_code == 200, (path, answer.text[:500])
            assert answer.headers["content-type"] == "application/json"
            assert isinstance(answer.json(), dict)

    overview = web.get("/", params={"format": "json"}).json()
    queues = {q["queue"]: q for q in overview["queues"]}
    assert queues["ocr"]["failed_last_hour"] == 1 and overview["failures_last_hour"] == 1
    assert queues["default"]["succeeded_last_hour"] == 5  # n=1, three members, the follow-up
    assert queues["default"]["running"] == 1
    assert len(overview["throughput"]) == 60 and overview["throughput"][-1]["succeeded"] >= 5
    assert overview["hosts"] == [{"host": "web-host", "workers": 1, "slots": 2, "stale": 0}]
    datetime.fromisoformat(overview["at"])  # datetimes as ISO 8601
    assert "<svg" in web.get("/").text and 'class="ok"' in web.get("/").text

    job = web.get(f"/jobs/{failed}", params={"format": "json"}).json()
    assert job["job"]["state"] == "failed" and "disk full" in job["job"]["last_error"]
    assert "Traceback" in job["job"]["last_error"]  # the attempt's traceback is kept
    assert next(t["event"] for t in job["timeline"]) == "enqueued"
    assert job["can_retry"] and not job["can_cancel"]
    running = web.get(f"/jobs/{waiting}", params={"format": "json"}).json()["job"]
    assert (running["worker_host"], running["worker_pid"]) == ("web-host", 4242)
    assert 0 <= running["beat_age"] < 60 and running["lease_left"] > 0

    workers = web.get("/workers", params={"format": "json"}).json()["workers"]
    assert [(w["host"], w["busy"], w["concurrency"], w["current_jobs"], w["stale"])
            for w in workers] == [("web-host", 1, 2, [waiting], False)]
    with wq.session() as conn:
        conn.execute(f"UPDATE {wq.schema}.workers SET last_beat = now() - interval '5 minutes'")
    assert web.get("/workers", params={"format": "json"}).json()["workers"][0]["stale"] is True
    assert "stale" in web.get("/workers").text

    groups = web.get("/groups", params={"format": "json"}).json()["groups"]
    assert [(g["key"], g["done"], g["total"], g["fired"]) for g in groups] == [
        ("run-1", 3, 3, True)]
    assert isinstance(groups[0]["percent"], int | float)  # a Decimal, as a number
    detail = web.get(f"/groups/{group.id}", params={"format": "json"}).json()
    assert detail["members"] == {"succeeded": 3}
    assert [(f["task"], f["state"]) for f in detail["fired"]] == [("web.after", "succeeded")]


def test_a_job_page_lists_every_attempt_with_its_error_and_traceback(
        wq: Queue, web: TestClient) -> None:
    @wq.task(name="web.flaky", queue="default", max_attempts=3, retry_backoff=0.01)
    def flaky() -> None:
        job = current_job()
        assert job is not None
        if job.attempt < 3:
            raise ValueError(f"scan {job.attempt} unreadable {SCRIPT}")

    job_id = flaky.enqueue()
    run_all(wq, ("default",))
    page = web.get(f"/jobs/{job_id}", params={"format": "json"}).json()
    assert page["job"]["state"] == "succeeded"
    attempts = page["attempts"]
    assert [(a["number"], a["attempt"], a["outcome"]) for a in attempts] == [
        (1, 1, "failed"), (2, 2, "failed"), (3, 3, "succeeded")]
    for number, attempt in enumerate(attempts[:2], start=1):
        assert attempt["error"].startswith("Traceback (most recent call last)")
        assert f"ValueError: scan {number} unreadable {SCRIPT}" in attempt["error"]
    assert attempts[2]["error"] is None
    for attempt in attempts:
        assert attempt["worker_id"] is not None and attempt["worker_host"]
        started, ended = (datetime.fromisoformat(attempt[k]) for k in ("started_at", "ended_at"))
        assert started <= ended and attempt["seconds"] == (ended - started).total_seconds()
    events = [t["event"] for t in page["timeline"]]
    assert events[0] == "enqueued" and events[-1] == "finished: succeeded"
    assert [e for e in events if e.startswith("attempt")] == [
        "attempt 1 started", "attempt 1 failed: retried", "attempt 2 started",
        "attempt 2 failed: retried", "attempt 3 started"]
    times = [datetime.fromisoformat(t["at"]) for t in page["timeline"]]
    assert times == sorted(times)

    html = web.get(f"/jobs/{job_id}").text
    section = html[html.index('<table id="attempts">'):]
    section = section[:section.index("</table>")]
    assert re.findall(r'data-outcome="(\w+)"', section) == ["failed", "failed", "succeeded"]
    errors = re.findall(r"<details><summary[^>]*>(.*?)</summary><pre[^>]*>(.*?)</pre>",
                        section, re.S)
    escaped = "&lt;script&gt;alert(1)&lt;/script&gt;"
    assert [summary for summary, _ in errors] == [
        f"ValueError: scan {n} unreadable {escaped}" for n in (1, 2)]
    assert all(text.startswith("Traceback (most recent call last)") for _, text in errors)
    assert SCRIPT not in html


def test_a_rescued_attempt_shows_as_rescued(wq: Queue, web: TestClient) -> None:
    job_id = wq.tasks["web.ok"].enqueue(n=1)
    with wq.session() as conn:
        worker_id = wq.store.register_worker(conn, host="lost-host", pid=7, queues=["default"],
                                             concurrency=1, isolation="thread")
    with wq.connect(autocommit=True) as conn:
        (claimed,) = wq.store.claim(conn, worker_id=worker_id, queues=["default"], limit=1,
                                    lease_seconds=60)
        conn.execute(f"UPDATE {wq.schema}.jobs SET lease_until = now() - interval '1 s'")
    assert claimed.id == job_id and wq.rescue_expired() == {"requeued": 1, "failed": 0}
    page = web.get(f"/jobs/{job_id}", params={"format": "json"}).json()
    assert page["job"]["state"] == "queued"
    (lost,) = page["attempts"]
    assert (lost["attempt"], lost["outcome"], lost["worker_host"], lost["worker_pid"]) == (
        1, "rescued", "lost-host", 7)
    assert lost["error"] == "worker lost (lease expired) during attempt 1"
    assert "attempt 1 lost (lease expired): rescued" in [t["event"] for t in page["timeline"]]
    html = web.get(f"/jobs/{job_id}").text
    assert 'data-outcome="rescued"' in html and "lost (lease expired), rescued" in html
    assert "lost-host" in html

    with wq.session() as conn:  # the rescue's backoff, skipped
        conn.execute(f"UPDATE {wq.schema}.jobs SET run_at = now()")
    run_all(wq, ("default",))
    page = web.get(f"/jobs/{job_id}", params={"format": "json"}).json()
    assert [(a["attempt"], a["outcome"]) for a in page["attempts"]] == [
        (1, "rescued"), (2, "succeeded")]


def test_a_job_given_back_at_a_warm_shutdown_shows_the_run_that_was_cut(
        wq: Queue, web: TestClient) -> None:
    job_id = wq.tasks["web.ok"].enqueue(n=1)
    with wq.session() as conn:
        worker_id = wq.store.register_worker(conn, host="stopping-host", pid=9,
                                             queues=["default"], concurrency=1,
                                             isolation="thread")
    with wq.connect(autocommit=True) as conn:
        (claimed,) = wq.store.claim(conn, worker_id=worker_id, queues=["default"], limit=1,
                                    lease_seconds=60)
        assert claimed.id == job_id
        assert wq.store.release(conn, worker_id=worker_id, ids=[job_id], started=[job_id],
                                reason="given back at a warm shutdown: still running when "
                                       "the 30 s grace ended") == 1
    page = web.get(f"/jobs/{job_id}", params={"format": "json"}).json()
    assert (page["job"]["state"], page["job"]["attempt"]) == ("queued", 0)
    (cut,) = page["attempts"]
    assert (cut["attempt"], cut["outcome"], cut["worker_host"]) == (1, "returned", "stopping-host")
    assert "the 30 s grace ended" in cut["error"]
    assert "attempt 1 given back by its worker (not counted)" in [
        t["event"] for t in page["timeline"]]
    html = web.get(f"/jobs/{job_id}").text
    assert 'data-outcome="returned"' in html and "given back by its worker, not counted" in html


def test_missing_job_and_bad_filters_are_one_line_errors(web: TestClient) -> None:
    missing = web.get("/jobs/999999")
    assert missing.status_code == 404 and "no job 999999" in missing.text
    assert web.get("/jobs/999999", params={"format": "json"}).json() == {
        "error": "no job 999999 (never existed, or pruned)", "status": 404}
    for params, text in (({"state": "lost"}, "unknown state"), ({"priority": "high"}, "priority"),
                         ({"since": "yesterday"}, "since"), ({"after": "x"}, "after")):
        answer = web.get("/jobs", params=params)
        assert answer.status_code == 400 and text in answer.text, params
        assert "Traceback" not in answer.text


def test_filters_narrow_the_jobs(wq: Queue, web: TestClient) -> None:
    ok, boom = wq.tasks["web.ok"], wq.tasks["web.boom"]
    a = [ok.enqueue(n=i, city="Springfield", tag="a") for i in range(3)]
    b = [ok.enqueue(n=i, city="Shelbyville", tag="b", priority=5) for i in range(2)]
    failed = [boom.enqueue(message=f"m{i}", tag="a") for i in range(2)]
    run_all(wq)
    late = ok.enqueue(n=50, city="100%_Springfield", delay=3600)

    def ids(**params: str) -> set[int]:
        return set(_history(web, "/jobs", **params))

    assert ids() == set(a + b + failed + [late])
    assert ids(state="failed") == set(failed)
    assert ids(state="queued") == {late}
    assert ids(queue="ocr") == set(failed)
    assert ids(task="web.ok") == set(a + b + [late])
    assert ids(tag="a") == set(a + failed)
    assert ids(priority="5") == set(b)
    assert ids(q="shelbyville") == set(b)  # text in the args, any case
    assert ids(q="100%_") == {late}
    assert ids(q="_") == ids(q="%") == {late}  # LIKE's wildcards are taken literally
    assert ids(q="Springfield", tag="a", state="succeeded") == set(a)
    with wq.session() as conn:
        conn.execute(f"UPDATE {wq.schema}.job_history SET created_at = now() - interval '2 days'"
                     f" WHERE id = ANY(%s)", (b,))
    now = datetime.now(UTC)
    assert ids(until=(now - timedelta(days=1)).isoformat()) == set(b)
    assert ids(since=(now - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M")) == \
        set(a + failed + [late])
    html = web.get("/jobs", params={"state": "failed"}).text
    assert '<option selected>failed</option>' in html


def test_keyset_paging_walks_every_job_once_both_ways(wq: Queue, web: TestClient) -> None:
    ok, boom = wq.tasks["web.ok"], wq.tasks["web.boom"]
    wq.enqueue_many(ok, [{"n": i} for i in range(60)])
    wq.enqueue_many(boom, [{"n": i} for i in range(17)])
    run_all(wq)
    wq.enqueue_many(ok, [{"n": i} for i in range(60, 83)])  # live ones too: both tables
    everything = sorted(_history(web, "/jobs", limit="500"))
    assert len(everything) == 100

    for order, expected in (("newest", everything[::-1]), ("oldest", everything)):
        seen: list[int] = []
        pages = []
        params = {"order": order, "limit": "7"}
        while True:
            page = web.get("/jobs", params={**params, "format": "json"}).json()
            pages.append(page)
            seen += [j["id"] for j in page["jobs"]]
            if page["next_after"] is None:
                break
            assert f"after={page['next_after']}" in web.get("/jobs", params=params).text
            params = {"order": order, "limit": "7", "after": str(page["next_after"])}
        assert seen == expected, order  # no duplicate, no gap, in order
        assert len(pages) == 15
        # ... and back from the last page with `before`
        back: list[int] = []
        page = pages[-1]
        back = [j["id"] for j in page["jobs"]]
        while page["prev_before"] is not None:
            page = web.get("/jobs", params={"order": order, "limit": "7", "format": "json",
                                            "before": str(page["prev_before"])}).json()
            back = [j["id"] for j in page["jobs"]] + back
        assert back == expected, order

    # a filter pages the same way
    failed_seen: list[int] = []
    params = {"state": "failed", "limit": "5"}
    while True:
        page = web.get("/jobs", params={**params, "format": "json"}).json()
        failed_seen += [j["id"] for j in page["jobs"]]
        if page["next_after"] is None:
            break
        params["after"] = str(page["next_after"])
    assert len(failed_seen) == len(set(failed_seen)) == 17


def test_paging_is_keyset_never_offset() -> None:
    text = WEB_SQL.read_text()
    code = "\n".join(line.split("--", 1)[0] for line in text.splitlines())
    assert not re.search(r"\bOFFSET\b", code, re.IGNORECASE)
    for name in ("jobs_newest", "jobs_oldest"):
        body = text.split(f"-- name: {name}", 1)[1].split("-- name:", 1)[0]
        assert "id > %(lo)s AND id < %(hi)s" in body and "LIMIT %(limit)s" in body


def test_a_script_in_an_arg_or_an_error_renders_as_text(wq: Queue, web: TestClient) -> None:
    job = wq.tasks["web.boom"].enqueue(message=SCRIPT, note=SCRIPT, tag=SCRIPT)
    run_all(wq)
    escaped = "&lt;script&gt;alert(1)&lt;/script&gt;"
    for path in ("/jobs", f"/jobs/{job}", "/_/jobs", "/jobs?q=%3Cscript"):
        html = web.get(path).text
        assert SCRIPT not in html, path
        assert escaped in html, path
    with wq.session() as conn:  # an error of blank lines only (written by hand) still renders
        conn.execute(f"UPDATE {wq.schema}.job_history SET last_error = E'\\n  \\n' WHERE id = %s",
                     (job,))
    assert web.get("/jobs").status_code == 200 and web.get(f"/jobs/{job}").status_code == 200
    # the filter's own echo of the search is escaped too
    html = web.get("/jobs", params={"q": '"><script>alert(2)</script>'}).text
    assert "<script>alert(2)" not in html and "&lt;script&gt;alert(2)" in html
    assert web.get(f"/jobs/{job}", params={"format": "json"}).json()["job"]["args"]["note"] == SCRIPT


def test_static_htmx_is_served_from_the_package(web: TestClient) -> None:
    script = web.get("/static/htmx.min.js")
    assert script.status_code == 200 and "htmx" in script.text[:2000]
    html = web.get("/").text
    assert 'src="/static/htmx.min.js"' in html and "https://" not in html
    assert 'hx-trigger="every 3s"' in html and 'hx-get="/_/overview"' in html
    assert os.path.exists(Path(__file__).resolve().parents[2] / "pgqueue" / "web" / "static"
                          / "htmx.LICENSE")


def test_mounted_under_a_prefix_links_carry_it(wq: Queue) -> None:
    from starlette.applications import Starlette
    from starlette.routing import Mount

    from pgqueue.web import create_app

    outer = Starlette(routes=[Mount("/queue", app=create_app(wq))])
    with TestClient(outer) as client:
        html = client.get("/queue/").text
        assert 'href="/queue/jobs"' in html and 'src="/queue/static/htmx.min.js"' in html
        assert client.get("/queue/jobs", params={"format": "json"}).status_code == 200


def test_pages_refresh_their_counts_by_polling_partials(wq: Queue, web: TestClient) -> None:
    wq.tasks["web.ok"].enqueue(n=1)
    jobs = web.get("/jobs", params={"state": "queued"}).text
    assert 'hx-get="/_/jobs?state=queued&amp;order=newest"' in jobs and 'hx-trigger="every 5s"' in jobs
    partial = web.get("/_/jobs", params={"state": "queued"}).text
    assert partial.lstrip().startswith('<table id="jobs">') and "<html" not in partial
    older = web.get("/jobs", params={"after": "5"}).text
    assert 'hx-get="/_/jobs' not in older  # a later page stays still while it is read
    live = web.get("/_/overview").text
    assert "<html" not in live and 'id="queues"' in live
    assert 'hx-select="#workers"' in web.get("/workers").text
    assert 'hx-select="#groups"' in web.get("/groups").text
    sort = re.search(r'id="sort-age" href="([^"]+)"', jobs)
    assert sort and "order=oldest" in sort.group(1) and "state=queued" in sort.group(1)


def test_a_filtered_page_looks_at_a_bounded_stretch_and_paging_stays_exact(
        wq: Queue, web: TestClient) -> None:
    ok, boom = wq.tasks["web.ok"], wq.tasks["web.boom"]
    wq.enqueue_many(ok, [{"n": i} for i in range(40)])
    wq.enqueue_many(boom, [{"n": i} for i in range(9)])
    wq.enqueue_many(ok, [{"n": i} for i in range(40, 80)])
    wq.enqueue_many(boom, [{"n": i} for i in range(9, 13)])
    run_all(wq)
    failed = sorted(_history(web, "/jobs", state="failed", limit="500"))
    assert len(failed) == 13
    web.app.state.reads.scan_window = 10  # type: ignore[attr-defined]
    for order, expected in (("newest", failed[::-1]), ("oldest", failed)):
        seen: list[int] = []
        pages = []
        params = {"order": order, "limit": "4", "state": "failed"}
        while True:
            page = web.get("/jobs", params={**params, "format": "json"}).json()
            pages.append(page)
            seen += [j["id"] for j in page["jobs"]]
            if page["next_after"] is None:
                break
            params["after"] = str(page["next_after"])
        assert seen == expected, order
        assert any(p["looked"] and not p["jobs"] for p in pages), "a page cut short by the window"
        assert len(pages) <= 15  # ~93 ids, 10 a look, 4 a page
        last = next(p for p in reversed(pages) if p["jobs"])
        back = [j["id"] for j in last["jobs"]]
        page = last
        while page["prev_before"] is not None:
            page = web.get("/jobs", params={"order": order, "limit": "4", "state": "failed",
                                            "format": "json",
                                            "before": str(page["prev_before"])}).json()
            back = [j["id"] for j in page["jobs"]] + back
        assert back == expected, order
    for order, expected in (("newest", failed[::-1]), ("oldest", failed)):
        # pages never full: every page ends at a window's edge, ids at the edges included
        seen, params = [], {"order": order, "limit": "100", "state": "failed"}
        while True:
            page = web.get("/jobs", params={**params, "format": "json"}).json()
            seen += [j["id"] for j in page["jobs"]]
            if page["next_after"] is None:
                break
            params["after"] = str(page["next_after"])
        assert seen == expected, order
    html = web.get("/jobs", params={"state": "failed", "limit": "4", "after": str(failed[0])}).text
    assert 'id="looked"' in html
    # without a filter the window does not apply: pages are always full
    web.app.state.reads.scan_window = 1  # type: ignore[attr-defined]
    page = web.get("/jobs", params={"limit": "20", "format": "json"}).json()
    assert len(page["jobs"]) == 20 and page["looked"] is None
