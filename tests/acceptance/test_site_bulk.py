"""Bulk site operations and refresh schedules, through the `clerk` command line:
`site import` / `site export`, `enqueue --all` / `--stale`, `site add --refresh`."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
from psycopg.rows import dict_row

from tests.acceptance.conftest import CLERK_BIN, CitySite, Cli, subprocess_env

BAD_LINES = {101: "Bad Subdomain!", 502: "ftp://example.org/x", 903: "kind"}


def _rows(db_url: str, sql: str, params: Any = None) -> list[dict[str, Any]]:
    with psycopg.connect(db_url, autocommit=True, row_factory=dict_row) as conn:
        return conn.execute(sql, params).fetchall()  # type: ignore[arg-type]


def _thousand_rows(path: Path) -> Path:
    """1,000 sites as CSV (header on line 1), three of them bad, at known lines."""
    lines = ["subdomain,name,url,kind,refresh"]
    for number in range(2, 1002):
        subdomain, url, kind = f"city-{number}.st", f"https://city{number}.example.org/m/", "index"
        if number == 101:
            subdomain = "Bad Subdomain!"
        elif number == 502:
            url = "ftp://example.org/x"
        elif number == 903:
            kind = "gopher"
        refresh = ("daily", "weekly", "", "0 5 * * 1")[number % 4]
        lines.append(f'{subdomain},"City {number}, State",{url},{kind},{refresh}')
    path.write_text("\n".join(lines) + "\n")
    return path


def _site_versions(db_url: str) -> dict[str, str]:
    """Each site row's version (xmin changes with any UPDATE), and its schedule's."""
    sites = {row["subdomain"]: row["xmin"] for row in _rows(
        db_url, "SELECT subdomain, xmin::text FROM clerk.sites")}
    schedules = {row["name"]: row["xmin"] for row in _rows(
        db_url, "SELECT name, xmin::text FROM pgqueue.periodic")}
    return {**sites, **schedules}


def test_import_of_1000_rows_with_3_bad_ones(cli: Cli, db_url: str, tmp_path: Path) -> None:
    path = _thousand_rows(tmp_path / "sites.csv")
    result = cli("site", "import", str(path), ok=False)
    assert "997 added, 0 updated, 0 unchanged, 3 rows refused" in result.stdout
    refused = [line for line in result.stderr.splitlines() if line.startswith(f"{path}:")]
    assert [int(line.split(":")[1]) for line in refused] == sorted(BAD_LINES), result.stderr
    assert "invalid subdomain" in refused[0] and "http or https" in refused[1] \
        and "'gopher' is not one of" in refused[2]
    assert _rows(db_url, "SELECT count(*) AS n FROM clerk.sites")[0]["n"] == 997
    # every refreshed site has its schedule ('' follows REFRESH, off by default)
    assert _rows(db_url, "SELECT count(*) AS n FROM pgqueue.periodic")[0]["n"] == 997 - 249
    assert _rows(db_url, "SELECT name FROM clerk.sites WHERE subdomain = 'city-7.st'")[0][
        "name"] == "City 7, State"

    before = _site_versions(db_url)
    again = cli("site", "import", str(path), ok=False)
    assert "0 added, 0 updated, 997 unchanged, 3 rows refused" in again.stdout
    assert _site_versions(db_url) == before  # not one row written


def test_import_json_lines_reports_bad_lines_and_keeps_blank_fields(
        cli: Cli, db_url: str, tmp_path: Path) -> None:
    cli("site", "add", "springfield", "--url", "https://springfield.example.org/",
        "--name", "Springfield", "--refresh", "weekly")
    path = tmp_path / "sites.jsonl"
    path.write_text("\n".join([
        json.dumps({"subdomain": "springfield", "url": "https://new.example.org/m"}),
        "{not json",
        json.dumps({"subdomain": "shelbyville"}),  # new, without a url
        json.dumps({"subdomain": "ogdenville", "url": "https://o.example.org/", "size": "3"}),
        "",
        json.dumps({"subdomain": "capital-city", "url": "https://c.example.org/",
                    "refresh": "*/5 * * * * *"}),
        json.dumps({"subdomain": "capital-city", "url": "https://d.example.org/"}),
    ]) + "\n")
    result = cli("site", "import", str(path), ok=False)
    assert "1 added, 1 updated, 0 unchanged, 4 rows refused" in result.stdout
    lines = {int(line.split(":")[1]): line for line in result.stderr.splitlines()
             if line.startswith(str(path))}
    assert sorted(lines) == [2, 3, 4, 7]
    assert "url is needed" in lines[3] and "'size'" in lines[4] and "line 6" in lines[7]
    site = _rows(db_url, "SELECT * FROM clerk.sites WHERE subdomain = 'springfield'")[0]
    assert (site["name"], site["source_url"], site["refresh"]) == (
        "Springfield", "https://new.example.org/m", "weekly")


def test_a_file_without_a_subdomain_column_is_one_clear_error(cli: Cli, tmp_path: Path) -> None:
    path = tmp_path / "sites.csv"
    path.write_text("site,url\nspringfield,https://s.example.org/\n")
    result = cli("site", "import", str(path), ok=False)
    assert "the CSV header must name the columns" in result.output
    assert "Traceback" not in result.output
    missing = cli("site", "import", str(tmp_path / "none.csv"), ok=False).output
    assert missing.strip().endswith("cannot be read: No such file or directory")
    (tmp_path / "latin1.csv").write_bytes("subdomain,name\nspringfield,M\xfcnchen\n".encode("latin-1"))
    assert "is not UTF-8 text" in cli("site", "import", str(tmp_path / "latin1.csv"),
                                      ok=False).output
    (tmp_path / "excel.csv").write_bytes(b"\xef\xbb\xbfsubdomain,url\nspringfield,https://s.example.org/\n")
    assert "1 added" in cli("site", "import", str(tmp_path / "excel.csv")).stdout  # a BOM


def test_export_then_import_round_trips(cli: Cli, db_url: str, tmp_path: Path) -> None:
    source = tmp_path / "in.csv"
    source.write_text(
        "subdomain,name,url,kind,refresh\n"
        'alameda.ca,"Alameda, CA",https://alameda.example.org/meetings/,index,daily\n'
        "oakland,Oakland,https://webapi.legistar.com/v1/oakland,legistar,0 4 * * 1\n"
        "lenox.mi,Lenox,https://user:pw@lenox.example.org/,index,\n")
    cli("site", "import", str(source))
    for fmt in ("csv", "jsonl"):
        exported = cli("site", "export", "--format", fmt).stdout
        assert "pw" not in exported  # the credential stays in the database
        before = _site_versions(db_url)
        path = tmp_path / f"out.{fmt}"
        path.write_text(exported)
        assert "0 added, 0 updated, 3 unchanged" in cli("site", "import", str(path)).stdout
        assert _site_versions(db_url) == before
        # into an empty site table: the same sites come back, the same export
        with psycopg.connect(db_url, autocommit=True) as conn:
            conn.execute("DELETE FROM clerk.sites")
        assert "3 added" in cli("site", "import", str(path)).stdout
        assert cli("site", "export", "--format", fmt).stdout == exported
    rows = [json.loads(line) for line in cli("site", "export", "--format", "jsonl")
            .stdout.splitlines()]
    assert [(r["subdomain"], r["refresh"]) for r in rows] == [
        ("alameda.ca", "daily"), ("lenox.mi", "default"), ("oakland", "0 4 * * 1")]


def _fetch_jobs(db_url: str) -> list[dict[str, Any]]:
    return _rows(db_url, "SELECT tag, state::text FROM pgqueue.all_jobs "
                         "WHERE task = 'clerk.fetch' ORDER BY tag")


def test_enqueue_all_enqueues_each_site_once(cli: Cli, db_url: str, tmp_path: Path) -> None:
    path = tmp_path / "sites.csv"
    path.write_text("subdomain,url\n" + "".join(
        f"town-{n},https://town{n}.example.org/\n" for n in range(250)))
    cli("site", "import", str(path))
    cli("enqueue", "town-7")  # a run in progress at its fetch: joined, not doubled
    with psycopg.connect(db_url, autocommit=True) as conn:  # one past its fetch (pages)
        conn.execute("INSERT INTO pgqueue.jobs (queue, task, tag) "
                     "VALUES ('ocr', 'clerk.ocr_page', 'town-8')")
    result = cli("enqueue", "--all")
    assert "250 sites: 248 runs started (priority normal), 2 joined" in result.stdout
    jobs = _fetch_jobs(db_url)
    assert sorted(job["tag"] for job in jobs) == sorted(f"town-{n}" for n in range(250)
                                                        if n != 8)
    again = cli("enqueue", "--all", "--priority", "high")
    assert "0 runs started (priority high), 250 joined" in again.stdout
    assert len(_fetch_jobs(db_url)) == 249
    assert "not both" in cli("enqueue", "town-1", "--all", ok=False).output
    assert "--all or --stale" in cli("enqueue", ok=False).output


def test_enqueue_stale_picks_sites_not_refreshed_since(cli: Cli, db_url: str,
                                                       tmp_path: Path) -> None:
    path = tmp_path / "sites.csv"
    path.write_text("subdomain,url\n" + "".join(
        f"{name},https://{name}.example.org/\n" for name in ("fresh", "old", "never")))
    cli("site", "import", str(path))
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("UPDATE clerk.sites SET last_success_at = now() - interval '1 day' "
                     "WHERE subdomain = 'fresh'")
        conn.execute("UPDATE clerk.sites SET last_success_at = now() - interval '10 days' "
                     "WHERE subdomain = 'old'")
    result = cli("enqueue", "--stale", "7d")
    assert "2 sites not refreshed since" in result.stdout
    assert [job["tag"] for job in _fetch_jobs(db_url)] == ["never", "old"]
    since = (datetime.now(UTC) - timedelta(days=30)).date().isoformat()
    older = cli("enqueue", "--stale", since).stdout  # only 'never' is older than 30 days
    assert "1 site not refreshed since" in older and "0 runs started" in older
    assert "give a date" in cli("enqueue", "--stale", "last tuesday", ok=False).output


def test_site_refresh_enqueues_a_run_on_schedule(city: CitySite, cli: Cli, db_url: str,
                                                 clerk_env: dict[str, str]) -> None:
    """A seconds-level cron: a fetch worker (the maintenance leader) enqueues the refresh,
    whose job starts the site's run; status shows the next scheduled run."""
    city.link("agenda.pdf", "Agenda")  # a link only: the run's fetch is not what is tested
    assert "--refresh" in cli("site", "add", "springfield", "--url", city.url, "--refresh",
                              "every day", ok=False).output
    added = cli("site", "add", "springfield", "--url", city.url, "--refresh", "*/2 * * * * *")
    assert "refresh */2 * * * * *, next " in added.stdout
    assert "next scheduled run: " in cli("status", "--subdomain", "springfield").stdout
    assert "refresh: 1 site on a schedule, next springfield at " in cli("status").stdout
    worker = subprocess.Popen([str(CLERK_BIN), "worker", "fetch"],
                              env=subprocess_env(clerk_env), stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not _rows(db_url, "SELECT 1 FROM pgqueue.all_jobs WHERE task = 'clerk.fetch' "
                                "AND tag = 'springfield'"):
            assert time.monotonic() < deadline, "no run started by the schedule"
            assert worker.poll() is None, "the worker exited"
            time.sleep(0.2)
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=60)
    refreshes = _rows(db_url, "SELECT dedupe_key, state::text FROM pgqueue.all_jobs "
                              "WHERE task = 'clerk.refresh'")
    assert refreshes and all(r["dedupe_key"].startswith("pgqueue:periodic:clerk.refresh:"
                                                        "springfield:") for r in refreshes)
    assert len({r["dedupe_key"] for r in refreshes}) == len(refreshes)
    # off: the schedule goes; a removed site's schedule goes too
    cli("site", "add", "springfield", "--refresh", "off")
    assert _rows(db_url, "SELECT count(*) AS n FROM pgqueue.periodic")[0]["n"] == 0
    cli("site", "add", "springfield", "--refresh", "daily")
    cli("site", "remove", "springfield")
    assert _rows(db_url, "SELECT count(*) AS n FROM pgqueue.periodic")[0]["n"] == 0
