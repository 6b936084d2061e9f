"""Docs, packaging and schema stay true: README's command blocks (each one run, in order,
as sqlite-utils and Datasette test their docs), its CLI reference on any machine,
monitoring queries, the public API, the schema snapshot, and the wheel (with its SQL)
installing on its own."""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import psycopg
import pytest

import pgqueue
from pgqueue.localserver import find_binary
from pgqueue.sql import parse_named

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"


def readme_blocks() -> list[tuple[str, str, str]]:
    """(section title, language, code) of each fenced block of README.md that names a
    language; the section is the nearest heading above it."""
    blocks: list[tuple[str, str, str]] = []
    section, language, lines = "", None, []
    for line in README.read_text().splitlines():
        if language is None:
            if line.startswith("#"):
                section = line.lstrip("#").strip()
            elif line.startswith("```") and line[3:].strip():
                language, lines = line[3:].strip(), []
        elif line.startswith("```"):
            blocks.append((section, language, "\n".join(lines) + "\n"))
            language = None
        else:
            lines.append(line)
    return blocks


def block(section: str, language: str) -> str:
    (code,) = [c for s, lang, c in readme_blocks() if s == section and lang == language]
    return code


def substitute(code: str, old: str, new: str) -> str:
    """Replace what the README shows by what the test runs, and fail if the README no longer
    shows it (so a test never reaches the README's example hosts)."""
    assert old in code, f"README block no longer contains {old!r}:\n{code}"
    return code.replace(old, new)


LIBRARY = "Using pgqueue as a library"
ASYNC = "Async: enqueue from a coroutine, `async def` tasks"
WHO_RUNS_NEXT = "Who runs next: pause, fair order, limits"
RUNNERS = {  # every block of the README, and the test that runs it
    ("clerk and pgqueue", "bash"): "test_readme_opens_with_the_demo_and_the_tests (the demo: "
                                   "tests/acceptance/test_demo.py; pytest: CI)",
    ("Using clerk", "bash"): "test_readme_using_clerk_runs_in_order",
    ("City platforms as sources", "bash"): "test_readme_platform_sites_are_added",
    ("Many sites: import, export, schedules", "bash"): "test_readme_many_sites_runs",
    ("Dashboard", "bash"): "test_readme_dashboard_block_runs (tests/web/test_clerk_pages.py)",
    (LIBRARY, "bash"): "test_readme_library_section_runs",
    (LIBRARY, "python"): "test_readme_library_section_runs",
    (LIBRARY, "sql"): "test_readme_library_section_runs",
    (ASYNC, "python"): "test_readme_async_example_runs",
    (WHO_RUNS_NEXT, "python"): "test_readme_who_runs_next_runs",
    ("Development", "bash"): "test_readme_development_commands_exist",
    ("What the full path extracts", "sql"): "test_readme_person_votes_query_runs",
}


def test_every_readme_block_is_run_by_a_test() -> None:
    found = [(section, language) for section, language, _ in readme_blocks()]
    assert sorted(found) == sorted(RUNNERS), (
        "a README block without a test (add it to RUNNERS, with a test that runs it), "
        f"or a block gone: {sorted(set(found) ^ set(RUNNERS))}")


def cog_check(tmp_path: Path, cpu_count: int) -> subprocess.CompletedProcess[str]:
    """`cog --check README.md` in a Python whose os.cpu_count() says `cpu_count`, with
    another HOME and user, as on someone else's machine."""
    fake = tmp_path / f"cpus{cpu_count}"
    fake.mkdir()
    (fake / "sitecustomize.py").write_text(f"import os\nos.cpu_count = lambda: {cpu_count}\n")
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("CLERK_", "PGQUEUE_")) and k != "DATABASE_URL"}
    path = os.pathsep.join(filter(None, [str(fake), os.environ.get("PYTHONPATH")]))
    env.update(PYTHONPATH=path, HOME=str(tmp_path / "someone"), USER="someone",
               LOGNAME="someone")
    return subprocess.run([sys.executable, "-m", "cogapp", "--check", "README.md"], cwd=ROOT,
                          capture_output=True, text=True, env=env, timeout=300)


def test_readme_command_reference_is_current() -> None:
    result = subprocess.run([sys.executable, "-m", "cogapp", "--check", "README.md"], cwd=ROOT,
                            capture_output=True, text=True)
    assert result.returncode == 0, "README is stale: run `.venv/bin/cog -r README.md`\n" + \
        result.stdout + result.stderr


@pytest.mark.parametrize("cpu_count", [1, 16])
def test_readme_command_reference_is_the_same_on_any_machine(tmp_path: Path,
                                                             cpu_count: int) -> None:
    """The reference shows no value of the machine that generated it (audit 2: it showed
    `[default: 2]`, the CPU count, so pytest failed on every machine without 2 CPUs)."""
    result = cog_check(tmp_path, cpu_count)
    assert result.returncode == 0, (
        f"with os.cpu_count() = {cpu_count} the generated reference differs: a help text "
        "shows a value of this machine (say `default: CPU count`)\n"
        + result.stdout + result.stderr)


def test_readme_opens_with_the_demo_and_the_tests() -> None:
    commands = [line.split("#")[0].strip() for line in block("clerk and pgqueue", "bash").splitlines()]
    assert commands == ["bash .ci/setup && .venv/bin/clerk demo",
                        "bash .ci/setup && .venv/bin/pytest"]
    assert (ROOT / ".ci" / "setup").is_file()
    assert ".venv/bin/pytest" in (ROOT / ".ci" / "run").read_text()



def clean_env(home: Path) -> dict[str, str]:
    """The environment of a new user: no clerk or pgqueue settings, a HOME of its own."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("CLERK_", "PGQUEUE_")) and k not in ("DATABASE_URL", "HOME")}
    home.mkdir(parents=True, exist_ok=True)
    env["HOME"] = str(home)
    return env


def run_script(script: str, *, cwd: Path, env: dict[str, str], timeout: float
               ) -> tuple[int, str, str]:
    """bash -euo pipefail on `script`, in its own session: whatever it leaves running in
    the background (clerkd) is killed at the end, even when the script fails or hangs."""
    wrapped = ("set -euo pipefail\n"
               "trap 'kill $(jobs -p) 2>/dev/null || true; wait' EXIT\n"
               f"{script}\nwait\n")
    process = subprocess.Popen(["bash", "-c", wrapped], cwd=cwd, env=env, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               start_new_session=True)
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        out, err = process.communicate()
        err += f"\n(killed after {timeout:g} s)"
    finally:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return process.returncode, out, err


def test_readme_using_clerk_runs_in_order(empty_db_url: str, tmp_path: Path) -> None:
    """The "Using clerk" block, line by line as a new user types it: the workers start
    before `enqueue --wait` (audit 1), which returns once the run is done. The test's
    database stands for DATABASE_URL, the sample site on 127.0.0.1 for the city's site
    (allowed by ALLOW_PRIVATE_HOSTS, as the internet is by default), and a fresh HOME for
    the user's; `.venv` is this checkout's."""
    from clerk.demo import sample_site_dir, serve_directory

    work = tmp_path / "work"
    work.mkdir()
    (work / ".venv").symlink_to(ROOT / ".venv")
    home = tmp_path / "home"
    with serve_directory(sample_site_dir()) as url:
        script = block("Using clerk", "bash")
        script = re.sub(r"^export DATABASE_URL=\S+", "export DATABASE_URL=" +
                        shlex.quote(empty_db_url), script, count=1, flags=re.M)
        assert shlex.quote(empty_db_url) in script, "the block no longer sets DATABASE_URL"
        script = substitute(script, "https://www.pleasanton.gov/meetings/", url + "index.html")
        env = {**clean_env(home), "ALLOW_PRIVATE_HOSTS": url.split("/")[2]}
        code, out, err = run_script(script, cwd=work, env=env, timeout=900)
    log = (work / "clerkd.log").read_text() if (work / "clerkd.log").exists() else ""
    assert code == 0, f"stdout:\n{out}\nstderr:\n{err}\nclerkd.log:\n{log}"
    assert "Traceback" not in out + err + log
    database = home / ".local" / "share" / "clerk" / "sites" / "pleasanton" / "meetings.db"
    assert database.is_file()
    assert re.search(r"^City Council\s+2024-01-09\s+1$", out, re.M), out  # the FTS search
    assert "pleasanton" in out


def test_readme_platform_sites_are_added(empty_db_url: str, tmp_path: Path) -> None:
    """The platform examples as written: adding a site reaches no network, so the block
    runs as it is, and each site's source URL is the platform's address for that client
    (the sources themselves: tests/integration/test_platform_sources.py)."""
    work = tmp_path / "work"
    work.mkdir()
    (work / ".venv").symlink_to(ROOT / ".venv")
    env = {**clean_env(tmp_path / "home"), "DATABASE_URL": empty_db_url}
    subprocess.run([str(ROOT / ".venv" / "bin" / "clerk"), "db", "upgrade"], env=env, check=True,
                   capture_output=True, timeout=120)
    code, out, err = run_script(block("City platforms as sources", "bash"), cwd=work, env=env,
                                timeout=120)
    assert code == 0, f"stdout:\n{out}\nstderr:\n{err}"
    for site, kind, url in [
            ("oakland", "legistar", "https://webapi.legistar.com/v1/oakland"),
            ("nash-county.nc", "civicplus", "https://nc-nashcounty.civicplus.com/"),
            ("paloalto", "primegov", "https://cityofpaloalto.primegov.com/")]:
        assert re.search(rf"^{re.escape(site)}\s+{kind}\s+{re.escape(url)}\s", out, re.M), out


def test_readme_many_sites_runs(empty_db_url: str, tmp_path: Path) -> None:
    """The bulk block as written: no network (enqueue only queues the runs)."""
    work = tmp_path / "work"
    work.mkdir()
    (work / ".venv").symlink_to(ROOT / ".venv")
    env = {**clean_env(tmp_path / "home"), "DATABASE_URL": empty_db_url}
    subprocess.run([str(ROOT / ".venv" / "bin" / "clerk"), "db", "upgrade"], env=env, check=True,
                   capture_output=True, timeout=120)
    code, out, err = run_script(block("Many sites: import, export, schedules", "bash"), cwd=work,
                                env=env, timeout=120)
    assert code == 0, f"stdout:\n{out}\nstderr:\n{err}"
    assert "3 added, 0 updated, 0 unchanged, 0 rows refused" in out
    assert "0 added, 0 updated, 3 unchanged, 0 rows refused" in out
    assert "(refresh 30 5 * * *, next " in out
    assert "3 sites: 3 runs started (priority normal), 0 joined" in out
    assert "3 sites not refreshed since" in out and "0 runs started" in out
    exported = [json.loads(line) for line in (work / "sites.jsonl").read_text().splitlines()]
    assert [(row["subdomain"], row["refresh"]) for row in exported] == [
        ("alameda.ca", "weekly"), ("oakland", "0 6 * * 1"), ("pleasanton", "daily")]


def test_readme_library_section_runs(empty_db_url: str, tmp_path: Path) -> None:
    """The library section: its install line in a virtualenv of its own (offline: the
    dependencies come from this checkout's .venv), then its example as a script run by
    that virtualenv's Python, then its SQL."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    purelib = Path(subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True, capture_output=True, text=True).stdout.strip())
    (purelib / "checkout_dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")

    (install,) = [line.split("#")[0].strip() for line in block(LIBRARY, "bash").splitlines()]
    assert install == "pip install pgqueue-py"  # not released yet: the wheel built here
    argv = [str(venv / "bin" / "pip"), "install", str(ROOT / "packaging" / "pgqueue"),
            "--no-index", "--no-build-isolation", "--no-deps", "--quiet"]
    installed = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert installed.returncode == 0, installed.stdout + installed.stderr
    env = {k: v for k, v in clean_env(tmp_path / "home").items() if k != "PYTHONPATH"}
    where = subprocess.run([str(venv / "bin" / "python"), "-c", "import pgqueue; print(pgqueue.__file__)"],
                           cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert where.stdout.startswith(str(purelib)), where.stdout + where.stderr  # the installed copy

    example = substitute(block(LIBRARY, "python"), '"postgresql://app:secret@db.example.org/app"',
                         repr(empty_db_url))
    (tmp_path / "example.py").write_text(example)
    ran = subprocess.run([str(venv / "bin" / "python"), "example.py"], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=600)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert ran.stdout.splitlines() == ["succeeded", "[]"], ran.stdout + ran.stderr

    with psycopg.connect(empty_db_url) as conn:
        (job_id,) = conn.execute(block(LIBRARY, "sql")).fetchone()
        assert conn.execute("SELECT queue, task FROM pgqueue.jobs WHERE id = %s",
                            (job_id,)).fetchone() == ("ocr", "clerk.ocr_page")


def test_readme_who_runs_next_runs(empty_db_url: str, tmp_path: Path) -> None:
    """The pause / fair order / limits example as a script, in this checkout's Python."""
    example = substitute(block(WHO_RUNS_NEXT, "python"),
                         '"postgresql://app:secret@db.example.org/app"', repr(empty_db_url))
    (tmp_path / "example.py").write_text(example)
    env = {**clean_env(tmp_path / "home"), "PYTHONPATH": str(ROOT)}
    ran = subprocess.run([sys.executable, "example.py"], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=600)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert ran.stdout.splitlines() == ["['ocr']", "[('city.example.org', 2, 1)]"], (
        ran.stdout + ran.stderr)


def test_readme_async_example_runs(empty_db_url: str, tmp_path: Path) -> None:
    """The async example as a script: enqueue from coroutines (one, a COPY of 500, a group),
    a worker runs the async def tasks, the result is awaited."""
    example = substitute(block(ASYNC, "python"), '"postgresql://app:secret@db.example.org/app"',
                         repr(empty_db_url))
    (tmp_path / "example.py").write_text(example)
    env = {**clean_env(tmp_path / "home"), "PYTHONPATH": str(ROOT)}
    ran = subprocess.run([sys.executable, "example.py"], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=600)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert ran.stdout.splitlines() == [
        "{'url': 'https://example.org', 'title': 'Example Domain'}", "succeeded"], ran.stderr
    with psycopg.connect(empty_db_url) as conn:
        states = conn.execute("SELECT state::text, count(*) FROM pgqueue.job_history "
                              "GROUP BY 1").fetchall()
    assert states == [("succeeded", 512)]  # 1 + 500 + 10 members + the group's follow-up


def test_readme_development_commands_exist() -> None:
    """Each development command names a program, module and options that exist (run with
    --help: running the suite from the suite would recurse), and every extra it installs
    is one pyproject.toml defines (audit 39: `python -m bench` needs the bench extra)."""
    code = block("Development", "bash")
    extras = set(re.findall(r"^(\w+) = \[", (ROOT / "pyproject.toml").read_text().split(
        "[project.optional-dependencies]")[1].split("\n[")[0], re.M))
    for extra in re.findall(r"\.\[([\w,]+)\]", code):
        assert set(extra.split(",")) <= extras, f"no extra {extra!r} in pyproject.toml"
    assert "pip install -e '.[bench]'" in code.split("-m bench")[0], \
        "install the bench extra before running the benchmarks"
    for line in code.splitlines():
        for command in line.split("#")[0].split("&&"):
            words = shlex.split(command)
            if not words:
                continue
            env = dict(os.environ)
            while "=" in words[0]:  # VAR=value prefixes
                name, value = words.pop(0).split("=", 1)
                env[name] = value
            result = subprocess.run([*words, "--help"], cwd=ROOT, env=env,
                                    capture_output=True, text=True, timeout=300)
            assert result.returncode == 0, f"{command.strip()} --help: {result.stderr}"

def test_public_api_is_pinned() -> None:
    assert pgqueue.__all__ == [
        "AsyncGroup", "AsyncQueue", "Backoff", "CancelResult", "ConfigurationError", "DatabaseError",
        "DatabaseUnavailable",
        "DuplicateJob", "Group", "GroupError", "GroupExists", "GroupProgress", "GroupSealed",
        "InvalidJobSpec", "Job", "JobCancelled", "JobContext", "JobFailed", "JobInterrupted",
        "JobNotFound",
        "JobSpec", "JobState", "JobTimeout", "Limit", "MigrationChecksumMismatch", "MigrationError",
        "PermanentFailure", "PgQueueError", "Queue", "SerializationError", "Task",
        "UnknownTask", "WaitTimeout", "current_job"]
    for name in pgqueue.__all__:
        assert getattr(pgqueue, name) is not None
    # Every exception a user can meet is importable from the package itself.
    from pgqueue import errors as error_module
    errors = {name for name, value in vars(error_module).items()
              if isinstance(value, type) and issubclass(value, pgqueue.PgQueueError)}
    assert errors <= set(pgqueue.__all__), errors - set(pgqueue.__all__)


def test_monitoring_queries_run(db_url: str) -> None:
    text = (ROOT / "sql" / "monitoring.sql").read_text()
    statements = [s.strip() for s in re.sub(r"--[^\n]*", "", text).split(";") if s.strip()]
    assert len(statements) >= 8
    with psycopg.connect(db_url) as conn:
        for statement in statements:
            conn.execute(statement).fetchall()


def test_every_named_statement_parses(db_url: str) -> None:
    """Each statement of queries.sql is valid SQL against the migrated schema (PREPARE
    checks names and types without running it)."""
    from pgqueue.sql import Statements, sql_root
    statements = Statements("pgqueue")
    clerk = Statements("clerk", sql_root() / "clerk" / "queries.sql")
    stored = Statements("clerk", sql_root() / "clerk" / "blobs.sql")  # issue 16
    names = parse_named((sql_root() / "pgqueue" / "queries.sql").read_text())
    assert set(names) == set(statements.names())
    with psycopg.connect(db_url) as conn:
        for source in (statements, clerk, stored):
            for name in source.names():
                text = getattr(source, name).as_string(conn)
                if text.startswith("COPY"):
                    continue  # not preparable; exercised by every bulk enqueue
                text = re.sub(r"%\((\w+)\)s", "NULL", text)
                conn.execute(f"PREPARE check_{name} AS {text}")
                conn.execute(f"DEALLOCATE check_{name}")


def dump_schema(db_url: str) -> str:
    result = subprocess.run([find_binary("pg_dump"), "--schema-only", "--no-owner",
                             "--no-privileges", "--schema=pgqueue", "--schema=clerk", db_url],
                            capture_output=True, text=True, check=True)
    lines = [line for line in result.stdout.splitlines()
             if line and not line.startswith(("--", "SET ", "SELECT pg_catalog.set_config",
                                                      "\\restrict", "\\unrestrict"))]
    return "\n".join(lines) + "\n"


def test_schema_snapshot_matches_the_migrations(db_url: str) -> None:
    snapshot = ROOT / "sql" / "schema.snapshot.sql"
    current = dump_schema(db_url)
    if not snapshot.exists():
        pytest.fail(f"no snapshot: write it with the schema below\n{current}")
    assert current == snapshot.read_text(), (
        "the migrated schema changed: review the diff, then refresh sql/schema.snapshot.sql "
        "(python -c 'from tests.test_docs import refresh_snapshot; refresh_snapshot()')")


def test_wheel_ships_its_sql_and_migrates_on_its_own(tmp_path: Path, empty_db_url: str) -> None:
    names: set[str] = set()
    for project in (ROOT / "packaging" / "pgqueue", ROOT):  # pgqueue-py, then clerk
        build = subprocess.run([sys.executable, "-m", "build", "--wheel", "--no-isolation",
                                "--outdir", str(tmp_path / "dist"), str(project)],
                               capture_output=True, text=True, timeout=300)
        assert build.returncode == 0, build.stdout + build.stderr
    for wheel in (tmp_path / "dist").glob("*.whl"):
        with zipfile.ZipFile(wheel) as archive:
            names |= set(archive.namelist())
            archive.extractall(tmp_path / "site")
    assert "pgqueue/sql/pgqueue/migrations/0001_jobs.sql" in names
    assert "pgqueue/sql/clerk/queries.sql" in names
    assert "clerk/service_templates/systemd/clerkd.service" in names
    assert "clerk/sample_site/index.html" in names
    site = tmp_path / "site"
    script = ("import sys; sys.path.insert(0, sys.argv[1]); import pgqueue, clerk.db;"
              "assert pgqueue.__file__.startswith(sys.argv[1]), pgqueue.__file__;"
              "print(pgqueue.Queue(sys.argv[2]).migrate(), clerk.db.migrate_clerk(sys.argv[2]))")
    run = subprocess.run([sys.executable, "-c", script, str(site), empty_db_url],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert "0001_jobs" in run.stdout and "0001_sites" in run.stdout


def refresh_snapshot() -> None:  # pragma: no cover - a maintainer's helper
    from pgqueue.localserver import LocalServer
    from tests.support.postgres import migrate_application
    with LocalServer() as server:
        url = server.url()
        pgqueue.Queue(url).migrate()
        migrate_application(url)
        (ROOT / "sql" / "schema.snapshot.sql").write_text(dump_schema(url))


def test_readme_person_votes_query_runs(tmp_path: Path) -> None:
    """The README's "how did my council member vote?" query, on a site compiled from minutes
    in two styles (a roll call on lines of its own, and one on a single line)."""
    import sqlite3

    from clerk.compile import compile_site
    from clerk.config import Settings
    from clerk.extract import extract_site
    from clerk.ocr import write_page_text
    from clerk.storage import Document

    minutes = [("2024-01-05", "Present: Mayor Patricia Alvarez, Councilmembers Grace Lindqvist,"
                " Helen Tran\nMoved by Councilmember Lindqvist, seconded by Councilmember Tran,"
                " to approve the consent\ncalendar.\nAYES: Alvarez, Lindqvist, Tran\nNOES: None\n"
                "Motion carried 3-0.\n"),
               ("2024-02-02", "Moved by Mayor Alvarez, seconded by Councilmember Lindqvist, to"
                " introduce Ordinance No. 12.\nAyes: Alvarez, Lindqvist. Noes: Tran."
                " Motion carried 2-1.\n")]
    for date, text in minutes:
        write_page_text(Document("town", "minutes", "City Council", date).page_text_path(tmp_path, 1),
                        text)
    extract_site(tmp_path / "town", Settings(storage_dir=tmp_path))
    result = compile_site(tmp_path / "town", entities=True, document_urls={})
    with sqlite3.connect(result.path) as db:
        rows = db.execute(block("What the full path extracts", "sql")).fetchall()
    assert [(row[1], row[3], row[4], row[6]) for row in rows] == [
        ("aye", "passed", "3-0", "2024-01-05"), ("no", "passed", "2-1", "2024-02-02")]


def test_every_mutation_still_finds_the_text_it_breaks() -> None:
    """The mutation suite runs for 13 minutes in CI and stops at a drifted edit (code that
    changed under its search text): said here in a second, where a change is made."""
    from tests.mutations.catalog import MUTATIONS
    from tests.mutations.run import drift

    assert drift(ROOT, MUTATIONS) == []


def test_guarantees_table_and_mutation_catalog_agree() -> None:
    """Every mutation the README's Guarantees table names exists in the catalog, every one
    in the catalog is named by a promise, and every test a row or a mutation cites exists."""
    from tests.mutations.catalog import MUTATIONS

    text = README.read_text()
    table = text[text.index("## Guarantees"):]
    table = table[:table.index("\n## ", 1)]
    rows = [line for line in table.splitlines() if line.startswith("| **")]
    named = {name for row in rows for name in re.findall(r"`([a-z0-9-]+)`", row.rsplit("|", 2)[-2])}
    catalog = {mutation.id for mutation in MUTATIONS}
    assert named - catalog == set(), "README names mutations the catalog lacks"
    assert catalog - named == set(), "catalog mutations no README promise names"
    cited = {path for row in rows for path in re.findall(r"`(tests/[^`:]+)", row)}
    cited |= {test.split("::")[0] for mutation in MUTATIONS for test in mutation.tests}
    missing = sorted(path for path in cited if not (ROOT / path).exists())
    assert missing == [], f"cited tests that do not exist: {missing}"
