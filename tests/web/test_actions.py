"""The actions over HTTP: retry and cancel one job or every job matching a filter (with its
count to confirm), their CSRF guard, and read-only mode (no action routed, no button)."""

from __future__ import annotations

import re

import pytest
from starlette.testclient import TestClient

from pgqueue import Queue
from pgqueue.web import create_app
from tests.web.conftest import run_all, states, token


def _failures(wq: Queue) -> tuple[list[int], list[int], list[int]]:
    """Failed jobs: three tagged a in ocr, two tagged b; one succeeded job tagged a."""
    boom, ok = wq.tasks["web.boom"], wq.tasks["web.ok"]
    a = [boom.enqueue(message=f"a{i}", tag="a") for i in range(3)]
    b = [boom.enqueue(message=f"b{i}", tag="b") for i in range(2)]
    done = [ok.enqueue(n=1, tag="a")]
    run_all(wq)
    return a, b, done


def test_retry_and_cancel_one_job(wq: Queue, web: TestClient) -> None:
    a, _b, _ = _failures(wq)
    assert 'id="retry"' in web.get(f"/jobs/{a[0]}").text
    answer = web.post(f"/jobs/{a[0]}/retry", data={"csrf_token": token(web)})
    assert answer.status_code == 200 and f"job {a[0]} queued again" in answer.text
    assert states(wq)[a[0]] == "queued" and states(wq)[a[1]] == "failed"
    page = web.get(f"/jobs/{a[0]}").text
    assert 'id="cancel"' in page and 'id="retry"' not in page
    answer = web.post(f"/jobs/{a[0]}/cancel", data={"csrf_token": token(web)},
                      headers={"Accept": "application/json"})
    assert answer.json()["cancelled"] == 1 and states(wq)[a[0]] == "cancelled"
    again = web.post(f"/jobs/{a[0]}/cancel", data={"csrf_token": token(web)})
    assert "neither queued nor running" in again.text


def test_retry_all_matching_retries_exactly_the_filtered_failed_jobs(
        wq: Queue, web: TestClient) -> None:
    a, b, done = _failures(wq)
    other = wq.tasks["web.boom"].enqueue(message="a-but-later", tag="a", priority=3)
    run_all(wq)
    page = web.get("/jobs", params={"tag": "a", "priority": "0"}).text
    form = re.search(r'<form class="inline" method="post" action="/jobs/retry">(.*?)</form>',
                     page, re.S)
    assert form, "no retry-all button on a filtered page"
    fields = dict(re.findall(r'name="(\w+)" value="([^"]*)"', form.group(1)))
    assert fields["tag"] == "a" and fields["priority"] == "0"  # the filter rides along

    confirm = web.post("/jobs/retry", data=fields)
    assert confirm.status_code == 200
    assert re.search(r'id="count">3<', confirm.text), "the count to confirm"
    assert set(states(wq).values()) >= {"failed"}
    assert [states(wq)[i] for i in a] == ["failed"] * 3  # nothing done before confirming

    fields = {**dict(re.findall(r'name="(\w+)" value="([^"]*)"', confirm.text)),
              "confirm": "yes"}
    done_page = web.post("/jobs/retry", data=fields, headers={"Accept": "application/json"})
    assert done_page.json()["retried"] == 3 and done_page.json()["matched"] == 3
    after = states(wq)
    assert [after[i] for i in a] == ["queued"] * 3
    assert [after[i] for i in b] == ["failed"] * 2  # another tag
    assert after[other] == "failed"  # another priority
    assert after[done[0]] == "succeeded"  # not failed: nothing to retry


def test_cancel_all_matching_cancels_the_live_jobs_of_the_filter(
        wq: Queue, web: TestClient) -> None:
    ok = wq.tasks["web.ok"]
    keep = [ok.enqueue(n=i, tag="keep") for i in range(2)]
    drop = [ok.enqueue(n=i, tag="drop", delay=3600) for i in range(4)]
    confirm = web.post("/jobs/cancel", data={"csrf_token": token(web), "tag": "drop"})
    assert re.search(r'id="count">4<', confirm.text)
    answer = web.post("/jobs/cancel", data={"csrf_token": token(web), "tag": "drop",
                                            "confirm": "yes"},
                      headers={"Accept": "application/json"})
    assert answer.json()["cancelled"] == 4
    now = states(wq)
    assert [now[i] for i in drop] == ["cancelled"] * 4 and [now[i] for i in keep] == ["queued"] * 2


@pytest.mark.parametrize("headers, data, reason", [
    ({"Origin": "https://evil.example"}, "token", "Origin"),
    ({"Origin": "null"}, "token", "Origin"),
    ({"Sec-Fetch-Site": "cross-site"}, "token", "Sec-Fetch-Site"),
    ({"Sec-Fetch-Site": "same-site"}, "token", "Sec-Fetch-Site"),
    ({}, None, "missing CSRF token"),
    ({}, "0" * 64, "wrong CSRF token"),
])
def test_cross_site_posts_are_refused(wq: Queue, web: TestClient, headers: dict[str, str],
                                      data: str | None, reason: str) -> None:
    a, _, _ = _failures(wq)
    good = token(web)
    form = {} if data is None else {"csrf_token": good if data == "token" else data}
    for path, extra in ((f"/jobs/{a[0]}/retry", {}), ("/jobs/retry", {"confirm": "yes"}),
                        ("/queues/ocr/pause", {})):
        answer = web.post(path, data={**form, **extra}, headers=headers)
        assert answer.status_code == 403, (path, answer.text)
        assert reason in answer.text
    assert states(wq)[a[0]] == "failed"
    # the same POST from this origin, with the token, goes through
    ok = web.post(f"/jobs/{a[0]}/retry", data={"csrf_token": good},
                  headers={"Origin": "http://testserver", "Sec-Fetch-Site": "same-origin"})
    assert ok.status_code == 200 and states(wq)[a[0]] == "queued"


def test_a_token_is_bound_to_its_browser_and_its_app(wq: Queue) -> None:
    a, _, _ = _failures(wq)
    app = create_app(wq)
    with TestClient(app) as mine, TestClient(app) as theirs:
        stolen = token(mine)
        token(theirs)  # another browser: a cookie of its own
        answer = theirs.post(f"/jobs/{a[0]}/retry", data={"csrf_token": stolen})
        assert answer.status_code == 403 and "wrong CSRF token" in answer.text
    with TestClient(create_app(wq)) as restarted:  # another app: another secret
        restarted.cookies.set("pgqueue_csrf", mine.cookies["pgqueue_csrf"])
        answer = restarted.post(f"/jobs/{a[0]}/retry", data={"csrf_token": stolen})
        assert answer.status_code == 403
    assert states(wq)[a[0]] == "failed"


def test_read_only_routes_no_action_and_shows_no_button(wq: Queue, ro_web: TestClient) -> None:
    a, _, _ = _failures(wq)
    pending = wq.tasks["web.ok"].enqueue(n=1, delay=3600)
    for path in ("/", "/jobs", f"/jobs/{a[0]}", f"/jobs/{pending}", "/workers", "/groups"):
        html = ro_web.get(path).text
        assert 'method="post"' not in html and "<button" not in html.replace(
            '<button type="submit">filter</button>', ""), path
        assert "read-only" in html
    for path in (f"/jobs/{a[0]}/retry", f"/jobs/{pending}/cancel", "/jobs/retry",
                 "/jobs/cancel", "/queues/ocr/pause", "/queues/ocr/resume"):
        answer = ro_web.post(path, data={"confirm": "yes"})
        assert answer.status_code in (404, 405), path
    assert states(wq)[a[0]] == "failed" and states(wq)[pending] == "queued"


def test_the_overview_is_read_once_per_few_seconds_and_fresh_after_an_action(
        wq: Queue, web: TestClient) -> None:
    a, _, _ = _failures(wq)
    web.app.state.reads.cache_seconds = 3600.0  # type: ignore[attr-defined]
    before = web.get("/", params={"format": "json"}).json()
    wq.tasks["web.ok"].enqueue(n=7, delay=3600)  # outside the dashboard
    assert web.get("/", params={"format": "json"}).json()["at"] == before["at"]  # cached
    web.post(f"/jobs/{a[0]}/retry", data={"csrf_token": token(web)})
    after = web.get("/", params={"format": "json"}).json()
    assert after["at"] != before["at"]
    queues = {q["queue"]: q for q in after["queues"]}
    assert queues["ocr"]["queued"] == 1 and queues["default"]["scheduled"] == 1


def test_pages_refuse_other_sites_frames_and_set_a_strict_cookie(web: TestClient) -> None:
    page = web.get("/jobs")
    assert page.headers["x-frame-options"] == "DENY"  # no clickjacking of the buttons
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    cookie = page.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/" in cookie
    assert "set-cookie" not in web.get("/jobs").headers  # set once per browser
