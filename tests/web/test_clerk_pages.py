"""clerk's site pages on the dashboard, over HTTP (Starlette's TestClient) against the test
PostgreSQL: the Sites list and a site's page as HTML and JSON, escaping, read-only mode, the
enqueue and purge actions with their CSRF guard, the overview's panel, and `clerk
dashboard` itself in a subprocess (the URL, a masked DSN, the off-loopback refusal)."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest
from psycopg.conninfo import make_conninfo
from starlette.applications import Starlette
from starlette.routing import Mount
from starlette.testclient import TestClient

from clerk import db as clerk_db
from clerk.pipeline import Pipeline
from clerk.sites import enqueue_sites
from clerk.web import create_dashboard, reads
from tests.acceptance import conftest as acceptance
from tests.acceptance.conftest import CLERK_BIN, Cli, subprocess_env
from tests.support.pipeline import LocalServer

# clerk's fixtures (its settings and CLI on the test database), from the acceptance tests
clerk_env, settings = acceptance.clerk_env, acceptance.settings
make_pipeline, pipeline, cli = acceptance.make_pipeline, acceptance.pipeline, acceptance.cli

SCRIPT = '<script>alert("x")</script>'
TOKEN = re.compile(r'name="csrf_token" value="([0-9a-f]+)"')


@pytest.fixture
def client(pipeline: Pipeline) -> Iterator[TestClient]:
    with TestClient(create_dashboard(pipeline)) as client:
        yield client


def token(client: TestClient, path: str) -> str:
    """The CSRF token of a page (its GET also sets the cookie the token is bound to)."""
    page = client.get(path)
    assert page.status_code == 200, page.text
    found = TOKEN.search(page.text)
    assert found, f"no CSRF field on {path}"
    return found.group(1)


def jobs(db_url: str, site: str) -> list[tuple[str, str]]:
    with psycopg.connect(db_url) as conn:
        return conn.execute("SELECT task, state::text FROM pgqueue.jobs WHERE tag = %s ORDER BY id",
                            (site,)).fetchall()


def test_sites_list_html_and_json(cli: Cli, pipeline: Pipeline, client: TestClient) -> None:
    cli("site", "add", "alpha", "--url", "https://alpha.example.org/agendas/")
    cli("site", "add", "beta", "--url", "https://beta.example.org/agendas/", "--name", "Beta City")
    pipeline.enqueue_site("beta")

    page = client.get("/sites")
    assert page.status_code == 200
    assert 'href="/sites/alpha"' in page.text and "Beta City" in page.text
    assert 'hx-get="/_/sites"' in page.text  # its rows refresh without a reload
    listed = client.get("/sites", headers={"Accept": "application/json"}).json()
    by_site = {row["site"]: row for row in listed["sites"]}
    assert by_site["alpha"]["state"] == "never run"
    assert by_site["beta"]["state"] == "in progress"
    assert by_site["beta"]["stage"] == "fetch"
    assert by_site["beta"]["duration_seconds"] is not None and by_site["beta"]["finished_at"] is None
    assert listed["next_after"] is None
    rows = client.get("/_/sites").text
    assert "<html" not in rows and 'data-site="beta"' in rows

    assert [row["site"] for row in client.get("/sites?q=BETA&format=json").json()["sites"]] == ["beta"]


def test_sites_list_pages_by_keyset(cli: Cli, client: TestClient, db_url: str) -> None:
    with psycopg.connect(db_url) as conn:  # 120 sites, as `site import` would add them
        conn.execute("INSERT INTO clerk.sites (subdomain, name, source_url) "
                     "SELECT 's' || lpad(i::text, 3, '0'), 'S' || i, 'https://example.org/' "
                     "FROM generate_series(1, 120) AS i")
    first = client.get("/sites?format=json").json()
    assert len(first["sites"]) == 50 and first["next_after"] == "s050"
    second = client.get(f"/sites?format=json&after={first['next_after']}").json()
    assert second["sites"][0]["site"] == "s051"
    third = client.get(f"/sites?format=json&after={second['next_after']}").json()
    assert [row["site"] for row in third["sites"]][-1] == "s120" and third["next_after"] is None
    assert 'id="next-page"' in client.get("/sites").text


def test_site_page_draws_the_pipeline_and_what_went_wrong(
        cli: Cli, pipeline: Pipeline, client: TestClient, db_url: str, tmp_path: Path) -> None:
    cli("site", "add", "gamma", "--url", "https://gamma.example.org/agendas/")
    with pipeline.queue.session() as conn:
        clerk_db.execute(conn, "save_refused_links", {
            "site": "gamma", "urls": ["ftp://gamma.example.org/minutes.pdf"],
            "reasons": ["not an http(s) URL"]})
    pipeline.enqueue_site("gamma")

    page = client.get("/sites/gamma")
    assert page.status_code == 200
    stages = re.findall(r'data-stage="([^"]+)" data-state="([^"]+)"', page.text)
    assert stages == [("fetch", "queued"), ("ocr", "pending"), ("compile", "pending"),
                      ("extract", "pending"), ("compile+entities", "pending"),
                      ("deploy", "pending")]
    assert "<svg" in page.text and "ftp://gamma.example.org/minutes.pdf" in page.text
    assert str(tmp_path / "storage" / "gamma" / "meetings.db") in page.text
    assert 'hx-get="/_/sites/gamma"' in page.text

    data = client.get("/sites/gamma", headers={"Accept": "application/json"}).json()
    assert [s["stage"] for s in data["stages"]] == ["fetch", "ocr", "compile", "extract",
                                                    "compile+entities", "deploy"]
    assert data["state"] == "in progress" and data["live"]["fetch"]["queued"] == 1
    assert data["refused_links"] == [{"url": "ftp://gamma.example.org/minutes.pdf",
                                      "error": "not an http(s) URL"}]
    assert data["meetings_db"] == {"path": str(tmp_path / "storage" / "gamma" / "meetings.db"),
                                   "exists_here": False}
    assert "<svg" not in json.dumps(data)  # the JSON is the data, not the drawing
    live = client.get("/_/sites/gamma").text
    assert "<html" not in live and 'data-stage="fetch"' in live

    assert client.get("/sites/nosuch").status_code == 404
    assert client.get("/sites/Not_A..Site").status_code == 404


def test_a_failed_fetch_shows_where_the_run_stopped_and_why(
        cli: Cli, pipeline: Pipeline, client: TestClient, http_server: LocalServer) -> None:
    cli("site", "add", "lambda", "--url", http_server.url("/lambda/index.html"))  # a 404
    pipeline.enqueue_site("lambda")
    assert pipeline.queue.work(["fetch"], burst=True, poll_interval=0.2,
                               install_signals=False) == 0
    data = client.get("/sites/lambda?format=json").json()
    assert data["state"] == "failed"
    assert [(s["stage"], s["state"]) for s in data["stages"]][:2] == [("fetch", "failed"),
                                                                      ("ocr", "not run")]
    [failed] = data["failed_jobs"]
    assert failed["task"] == "clerk.fetch" and "404" in failed["error"]
    page = client.get("/sites/lambda").text
    assert 'data-stage="fetch" data-state="failed"' in page
    assert f'href="/jobs/{failed["job_id"]}"' in page  # to the job's attempts and errors
    [row] = client.get("/sites?format=json").json()["sites"]
    assert row["state"] == "failed" and row["result"].startswith("failed at fetch: ")
    assert row["finished_at"] is not None


def test_site_names_and_errors_are_escaped(cli: Cli, pipeline: Pipeline, client: TestClient,
                                           db_url: str) -> None:
    cli("site", "add", "delta", "--url", "https://delta.example.org/", "--name", SCRIPT)
    with pipeline.queue.session() as conn:
        clerk_db.execute(conn, "save_refused_links", {
            "site": "delta", "urls": [f"https://delta.example.org/{SCRIPT}"], "reasons": [SCRIPT]})
        conn.execute("INSERT INTO clerk.documents (site, kind, meeting, date, url, error) "
                     "VALUES ('delta', 'minutes', %s, '2026-11-02', 'https://delta.example.org/m.pdf', %s)",
                     (SCRIPT, SCRIPT))
    pipeline.enqueue_site("delta")
    for path in ("/sites", "/sites/delta", "/_/sites", "/_/sites/delta", "/_/clerk/panel"):
        text = client.get(path).text
        assert "<script>alert" not in text, path
    page = client.get("/sites/delta").text
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in page
    assert client.get("/sites/delta?format=json").json()["name"] == SCRIPT


def test_read_only_has_no_actions(cli: Cli, pipeline: Pipeline, db_url: str) -> None:
    cli("site", "add", "epsilon", "--url", "https://epsilon.example.org/")
    with TestClient(create_dashboard(pipeline, read_only=True)) as client:
        page = client.get("/sites/epsilon").text
        assert "/enqueue" not in page and "/purge" not in page and "csrf_token" not in page
        for action in ("enqueue", "purge"):
            answer = client.post(f"/sites/epsilon/{action}", data={"confirm": "yes"})
            assert answer.status_code in (404, 405), answer.status_code
    assert jobs(db_url, "epsilon") == []


def test_enqueue_starts_a_run_then_joins_it(cli: Cli, client: TestClient, db_url: str) -> None:
    cli("site", "add", "zeta", "--url", "https://zeta.example.org/")
    refused = client.post("/sites/zeta/enqueue", data={"priority": "normal"})
    assert refused.status_code == 403  # no CSRF token
    refused = client.post("/sites/zeta/enqueue", data={"csrf_token": token(client, "/sites/zeta")},
                          headers={"Origin": "https://evil.example"})
    assert refused.status_code == 403  # from another site
    assert jobs(db_url, "zeta") == []

    csrf = token(client, "/sites/zeta")
    started = client.post("/sites/zeta/enqueue", data={"priority": "high", "csrf_token": csrf},
                          follow_redirects=False)
    assert started.status_code == 303
    assert started.headers["location"].startswith("/sites/zeta?done=enqueued&job=")
    assert jobs(db_url, "zeta") == [("clerk.fetch", "queued")]
    with psycopg.connect(db_url) as conn:
        assert conn.execute("SELECT priority FROM pgqueue.jobs WHERE tag = 'zeta'").fetchone() == (100,)
    shown = client.get(started.headers["location"]).text
    assert "Run started (fetch job" in shown

    joined = client.post("/sites/zeta/enqueue", data={"csrf_token": csrf},
                         headers={"Accept": "application/json"})
    assert joined.json() == {"site": "zeta", "joined": True, "live_jobs": 1}
    assert jobs(db_url, "zeta") == [("clerk.fetch", "queued")]
    assert client.post("/sites/nosuch/enqueue", data={"csrf_token": csrf}).status_code == 404
    assert client.post("/sites/zeta/enqueue", data={"csrf_token": csrf, "priority": "urgent"}
                       ).status_code == 400


def test_purge_asks_then_cancels_the_run(cli: Cli, pipeline: Pipeline, client: TestClient,
                                         db_url: str) -> None:
    cli("site", "add", "eta", "--url", "https://eta.example.org/")
    pipeline.enqueue_site("eta")
    csrf = token(client, "/sites/eta")
    asked = client.post("/sites/eta/purge", data={"csrf_token": csrf})
    assert asked.status_code == 200
    assert "This cancels 1 queued or running job of eta" in asked.text
    assert 'name="confirm" value="yes"' in asked.text
    assert jobs(db_url, "eta") == [("clerk.fetch", "queued")]  # nothing done yet

    done = client.post("/sites/eta/purge", data={"csrf_token": csrf, "confirm": "yes"},
                       follow_redirects=False)
    assert done.status_code == 303 and "done=purged&cancelled=1" in done.headers["location"]
    assert jobs(db_url, "eta") == []
    assert "Purged: 1 queued jobs cancelled" in client.get(done.headers["location"]).text
    assert client.get("/sites/eta?format=json").json()["state"] == "cancelled"
    assert client.post("/sites/nosuch/purge", data={"csrf_token": csrf, "confirm": "yes"}
                       ).status_code == 404


def test_overview_has_the_sites_panel(cli: Cli, pipeline: Pipeline, client: TestClient) -> None:
    cli("site", "add", "theta", "--url", "https://theta.example.org/")
    cli("site", "add", "iota", "--url", "https://iota.example.org/")
    pipeline.enqueue_site("theta")
    overview = client.get("/").text
    assert 'hx-get="/_/clerk/panel"' in overview and 'href="/sites"' in overview
    panel = client.get("/_/clerk/panel").text
    assert 'id="sites-total">2<' in panel and 'id="sites-in-flight">1<' in panel
    assert 'data-site="theta"' in panel and 'data-site="iota"' not in panel
    data = client.get("/_/clerk/panel?format=json").json()
    assert data["sites"] == 2 and [a["site"] for a in data["active"]] == ["theta"]


def test_the_panel_lists_a_bounded_number_of_sites(client: TestClient, pipeline: Pipeline,
                                                    db_url: str,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    with psycopg.connect(db_url) as conn:
        conn.execute("INSERT INTO clerk.sites (subdomain, name, source_url) "
                     "SELECT 'p' || lpad(i::text, 2, '0'), 'P' || i, 'https://example.org/' "
                     "FROM generate_series(1, 25) AS i")
    sites = [f"p{i:02d}" for i in range(25, 0, -1)]  # p25 enqueued first: in flight longest
    assert enqueue_sites(pipeline, sites, 0, batch=1) == {"enqueued": 25, "joined": 0}
    data = client.get("/_/clerk/panel?format=json").json()
    assert data["in_flight"] == 25 and not data["in_flight_capped"]
    assert [a["site"] for a in data["active"]] == sites[:reads.PANEL_SITES]
    assert "(the 20 in flight longest below)" in client.get("/_/clerk/panel").text
    monkeypatch.setattr(reads, "IN_FLIGHT_CAP", 10)
    assert 'id="sites-in-flight">10+<' in client.get("/_/clerk/panel").text


def test_mounted_under_a_prefix_every_link_and_redirect_keeps_it(cli: Cli,
                                                                  pipeline: Pipeline) -> None:
    cli("site", "add", "mu", "--url", "https://mu.example.org/")
    outer = Starlette(routes=[Mount("/ops/queue", app=create_dashboard(pipeline))])
    with TestClient(outer) as client:
        page = client.get("/ops/queue/sites/mu").text
        assert 'hx-get="/ops/queue/_/sites/mu"' in page
        assert 'action="/ops/queue/sites/mu/enqueue"' in page
        assert 'href="/ops/queue/sites"' in page
        assert 'href="/ops/queue/sites/mu"' in client.get("/ops/queue/sites").text
        csrf = token(client, "/ops/queue/sites/mu")
        done = client.post("/ops/queue/sites/mu/enqueue", data={"csrf_token": csrf},
                           follow_redirects=False)
        assert done.status_code == 303
        assert done.headers["location"].startswith("/ops/queue/sites/mu?done=enqueued")


# -- `clerk dashboard` -----------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_dashboard_refuses_off_loopback_without_a_password(clerk_env: dict[str, str]) -> None:
    env = {k: v for k, v in subprocess_env(clerk_env).items()
           if k not in ("DASHBOARD_PASSWORD", "DASHBOARD_USER")}
    ran = subprocess.run([str(CLERK_BIN), "dashboard", "--host", "0.0.0.0"], env=env,
                         capture_output=True, text=True, timeout=60)
    assert ran.returncode == 1
    assert ran.stderr.strip().splitlines() == [
        "Error: refusing to serve the dashboard on 0.0.0.0: off loopback it needs a password; "
        "set DASHBOARD_PASSWORD (HTTP Basic, user DASHBOARD_USER or 'clerk') or bind 127.0.0.1"]


def test_dashboard_serves_and_never_prints_the_password(clerk_env: dict[str, str],
                                                        db_url: str) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("CREATE ROLE dash_test_user LOGIN PASSWORD 's3cret-pw' SUPERUSER")
    url = make_conninfo(db_url, user="dash_test_user", password="s3cret-pw")
    port = free_port()
    env = {**subprocess_env(clerk_env), "DATABASE_URL": url}
    server = subprocess.Popen([str(CLERK_BIN), "dashboard", "--port", str(port), "--read-only"],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        line = server.stdout.readline()
        assert f"http://127.0.0.1:{port}/" in line and "(read-only)" in line, line
        assert "s3cret-pw" not in line
        page = get_when_up(f"http://127.0.0.1:{port}/sites")
        assert page.status_code == 200 and "Sites" in page.text and "s3cret-pw" not in page.text
    finally:
        server.terminate()
        _, err = server.communicate(timeout=30)
    assert "s3cret-pw" not in err


def get_when_up(url: str, timeout: float = 60.0) -> httpx.Response:
    deadline = time.monotonic() + timeout
    while True:
        try:
            return httpx.get(url, timeout=10)
        except httpx.TransportError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def test_readme_dashboard_block_runs(cli: Cli, clerk_env: dict[str, str], tmp_path: Path) -> None:
    """README "Dashboard": each line as written (on a free port; the off-loopback example on
    127.0.0.1, with its password, so the test serves nothing beyond this machine): the
    plain one has the actions, --read-only none, the password one asks for HTTP Basic."""
    from tests.test_docs import block, substitute
    cli("site", "add", "kappa", "--url", "https://kappa.example.org/")
    work = tmp_path / "work"
    work.mkdir()
    (work / ".venv").symlink_to(CLERK_BIN.parent.parent)
    env = {k: v for k, v in subprocess_env(clerk_env).items() if not k.startswith("DASHBOARD_")}
    lines = [line.split("  #")[0].strip() for line in block("Dashboard", "bash").splitlines()
             if line.strip()]
    plain, read_only, with_password = lines
    with_password = substitute(with_password, "--host 0.0.0.0", "--host 127.0.0.1")

    def serve(line: str) -> tuple[subprocess.Popen[str], str]:
        port = free_port()
        process = subprocess.Popen(["bash", "-c", f"{line} --port {port}"], cwd=work,
                                   env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                   text=True)
        assert process.stdout is not None
        printed = process.stdout.readline()
        assert f"http://127.0.0.1:{port}/" in printed, printed
        return process, f"http://127.0.0.1:{port}"

    for line, actions in ((plain, True), (read_only, False)):
        process, base = serve(line)
        try:
            page = get_when_up(f"{base}/sites/kappa")
            assert page.status_code == 200
            assert ('id="enqueue"' in page.text) is actions, line
            assert ('id="purge"' in page.text) is actions, line
        finally:
            process.terminate()
            process.communicate(timeout=30)
    process, base = serve(with_password)
    try:
        assert get_when_up(f"{base}/sites").status_code == 401
        assert httpx.get(f"{base}/sites", auth=("clerk", "a long secret")).status_code == 200
        assert httpx.get(f"{base}/sites", auth=("clerk", "wrong")).status_code == 401
    finally:
        process.terminate()
        _, err = process.communicate(timeout=30)
    assert "a long secret" not in err


def test_dashboard_on_a_port_in_use_is_one_line(clerk_env: dict[str, str]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        ran = subprocess.run([str(CLERK_BIN), "dashboard", "--port", str(port)],
                             env=subprocess_env(clerk_env), capture_output=True, text=True,
                             timeout=60)
    assert ran.returncode == 1
    assert ran.stderr.strip().splitlines() == [
        f"Error: cannot serve the dashboard on 127.0.0.1:{port}: Address already in use"]
