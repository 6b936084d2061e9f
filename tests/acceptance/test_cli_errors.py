"""Every ordinary mistake is one line and a non-zero exit, from the real `clerk` and `clerkd`.

These run the installed executables in a subprocess, in a working directory of their own,
against the test PostgreSQL: what a user types, what a user sees. "One line" is checked
literally (stderr has exactly one line, and no "Traceback" anywhere).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from clerk.pipeline import Pipeline
from tests.acceptance.conftest import CLERK_BIN, REPO, CitySite, Cli, subprocess_env

pytestmark = pytest.mark.timeout(180)

CLERKD_BIN = CLERK_BIN.parent / "clerkd"
UPGRADE = "database not migrated: run `clerk db upgrade` (as the owner)"


class Run:
    """`clerk` / `clerkd` as a user runs them: a subprocess in `cwd`, with `env`."""

    def __init__(self, env: dict[str, str], cwd: Path) -> None:
        self.env = env
        self.cwd = cwd

    def __call__(self, *args: str, program: Path = CLERK_BIN, env: dict[str, str] | None = None,
                 timeout: float = 120) -> subprocess.CompletedProcess[str]:
        result = subprocess.run([str(program), *args], cwd=self.cwd, capture_output=True,
                                text=True, timeout=timeout, env={**self.env, **(env or {})})
        assert "Traceback" not in result.stdout + result.stderr, result.stderr
        return result

    def error(self, *args: str, code: int = 1, program: Path = CLERK_BIN,
              env: dict[str, str] | None = None) -> str:
        """Run a command that must fail with `code` and exactly one line on stderr."""
        result = self(*args, program=program, env=env)
        assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, result.stderr
        assert lines[0].startswith("Error: "), lines[0]
        return lines[0]

    def ok(self, *args: str, program: Path = CLERK_BIN, env: dict[str, str] | None = None
           ) -> subprocess.CompletedProcess[str]:
        result = self(*args, program=program, env=env)
        assert result.returncode == 0, (result.stdout, result.stderr)
        return result


@pytest.fixture
def run(clerk_env: dict[str, str], tmp_path: Path) -> Run:
    work = tmp_path / "work"
    work.mkdir()
    # the bare names a user writes (OCR_DPI, not CLERK_OCR_DPI, which would win over a
    # test's OCR_DPI), and no CLERK_ENV_FILE: the default `.env` of the working directory
    env = subprocess_env({key.removeprefix("CLERK_"): value for key, value in clerk_env.items()
                          if key != "CLERK_ENV_FILE"})
    env.update(PYTHONPATH=str(REPO), HOME=str(tmp_path / "home"),
               XDG_CONFIG_HOME=str(tmp_path / "home" / ".config"))
    return Run(env, work)


def schemas(url: str) -> list[str]:
    with psycopg.connect(url) as conn:
        return [row[0] for row in conn.execute(
            "SELECT nspname FROM pg_namespace WHERE nspname IN ('pgqueue', 'clerk')")]


def test_a_named_env_file_must_exist(run: Run) -> None:
    line = run.error("--env-file", "prod.evn", "status")
    assert line == "Error: configuration: env file prod.evn does not exist"
    assert "is a directory" in run.error("--env-file", ".", "status")
    # only the implicit default may be absent
    assert "database:" in run.ok("status").stdout


def test_help_and_doctor_work_with_a_bad_env_file(run: Run) -> None:
    (run.cwd / ".env").write_text("OCR_WORKERS=abc\n")
    assert run.error("status") == \
        "Error: configuration: OCR_WORKERS='abc' is not a valid int"
    assert "Usage: clerk status" in run.ok("status", "--help").stdout
    assert "Usage: clerk status" in run.ok("status", "-h").stdout
    assert "Usage: clerk [OPTIONS]" in run.ok("--help").stdout
    assert "nothing to remove" in run.ok("uninstall-workers").stdout  # needs no settings
    doctor = run("doctor")
    assert doctor.returncode == 1
    assert "✗ configuration: OCR_WORKERS='abc' is not a valid int" in doctor.stdout
    assert "✓ database: " in doctor.stdout  # the valid settings are still checked


@pytest.mark.parametrize(("name", "value", "message"), [
    ("LOG_LEVEL", "verbose", "is not one of DEBUG, INFO, WARNING, ERROR"),
    ("LOG_FORMAT", "xml", "is not one of text, json"),
    ("OCR_WORKERS", "-3", "must be >= 0"),
    ("OCR_DPI", "-5", "must be > 0"),
    ("POLL_INTERVAL", "0", "must be > 0"),
    ("SHUTDOWN_GRACE", "nan", "is not a valid number"),
    ("METRICS_PORT", "99999", "must be between 0 and 65535 (0 turns the endpoint off)"),
    ("DEFAULT_OCR_BACKEND", "bogus", "is not a known OCR backend (pytesseract, tesseract, tesserocr)"),
])
def test_a_bad_setting_is_one_line(run: Run, name: str, value: str, message: str) -> None:
    expected = f"Error: configuration: {name}={value!r} {message}"
    assert run.error("status", env={name: value}) == expected


@pytest.mark.parametrize(("name", "value"), [
    ("LOG_LEVEL", "verbose"), ("OCR_WORKERS", "-3"), ("METRICS_PORT", "99999")])
def test_clerkd_refuses_a_bad_setting_in_one_line(run: Run, name: str, value: str) -> None:
    line = run.error(program=CLERKD_BIN, env={name: value})
    assert line.startswith(f"Error: configuration: {name}={value!r} ")


def test_clerkd_with_a_busy_metrics_port_is_one_line(run: Run) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        line = run.error("--burst", program=CLERKD_BIN, env={"METRICS_PORT": str(port)})
    assert f"127.0.0.1:{port}" in line and "in use" in line


def test_clerkd_without_pools_says_so(run: Run) -> None:
    pools = {f"{queue.upper()}_WORKERS": "0" for queue in
             ("fetch", "ocr", "extraction", "compilation", "deploy")}
    with subprocess.Popen([str(CLERKD_BIN)], cwd=run.cwd, env={**run.env, **pools},
                          stderr=subprocess.PIPE, text=True) as daemon:
        try:
            assert daemon.stderr is not None
            first = daemon.stderr.readline()  # bounded by the test's timeout
            assert "WARNING" in first and "no worker pools configured" in first, first
        finally:
            daemon.terminate()
        daemon.wait(60)  # (a SIGTERM this early, before its handlers, kills it)


def test_nonsense_numbers_are_refused_by_the_options(run: Run) -> None:
    for args, option in ((("failed", "--limit", "-1"), "--limit"),
                         (("worker", "ocr", "-n", "0"), "--concurrency"),
                         (("purge-queue", "nosuchq", "--yes"), "QUEUE")):
        result = run(*args)
        assert result.returncode == 2, result.stderr
        assert f"Error: Invalid value for '{option}'" in result.stderr \
            or f"/ '{option}'" in result.stderr, result.stderr
    assert "'fetch', 'ocr'" in run("purge-queue", "nosuchq", "--yes").stderr


def test_read_only_commands_never_migrate(run: Run, empty_db_url: str) -> None:
    env = {"DATABASE_URL": empty_db_url}
    for command in (["status"], ["site", "list"], ["failed"], ["db", "current"],
                    ["status", "--subdomain", "springfield"], ["purge", "springfield"],
                    ["site", "add", "springfield", "--url", "http://127.0.0.1:9/i.html"]):
        assert run.error(*command, env=env) == f"Error: {UPGRADE}", command
    assert run.error("db", "history", env=env) == \
        "Error: no migrations applied: run `clerk db upgrade` (as the owner)"
    assert schemas(empty_db_url) == []  # nothing was written
    assert "applied: " in run.ok("db", "upgrade", env=env).stdout
    assert "no sites" in run.ok("site", "list", env=env).stdout
    assert sorted(schemas(empty_db_url)) == ["clerk", "pgqueue"]


@pytest.fixture
def role_without_create(admin_url: str, empty_db_url: str) -> Iterator[str]:
    """A login role that may connect to an empty database but not create schemas in it."""
    role = f"test_nocreate_{os.getpid()}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
    params = conninfo_to_dict(empty_db_url)
    params["user"] = role
    yield make_conninfo(**params)
    with psycopg.connect(empty_db_url, autocommit=True) as conn:  # its sessions end first
        conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s",
                     (role,))
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


def test_migrating_without_create_privilege_says_to_migrate_as_the_owner(
        run: Run, role_without_create: str) -> None:
    env = {"DATABASE_URL": role_without_create}
    for program, args in ((CLERK_BIN, ("db", "upgrade")), (CLERKD_BIN, ("--burst",))):
        line = run.error(*args, program=program, env=env)
        assert line.startswith("Error: database error: permission denied for database "), line
        assert line.endswith(": migrate as the owner (see sql/roles.sql)"), line


def test_enqueue_checks_every_site_before_enqueueing_any(run: Run, db_url: str) -> None:
    for site in ("alpha", "gamma"):
        run.ok("site", "add", site, "--url", f"http://127.0.0.1:9/{site}.html")
    line = run.error("enqueue", "alpha", "nosuch", "gamma")
    assert "no site 'nosuch'" in line and "nothing was enqueued" in line
    with psycopg.connect(db_url) as conn:
        assert conn.execute("SELECT count(*) FROM pgqueue.jobs").fetchone() == (0,)


def test_purge_of_an_unknown_site_is_an_error(run: Run) -> None:
    assert "no site 'nosuch'" in run.error("purge", "nosuch")
    run.ok("site", "add", "alpha", "--url", "http://127.0.0.1:9/a.html")
    assert "alpha: 0 queued jobs cancelled" in run.ok("purge", "alpha").stdout


def unit_path(run: Run) -> Path:
    return Path(run.env["XDG_CONFIG_HOME"]) / "systemd" / "user" / "clerkd.service"


def test_install_workers_without_an_env_file(run: Run) -> None:
    dry = run.ok("install-workers", "--dry-run")
    assert "[Service]" in dry.stdout and "\nExecStart=" in dry.stdout  # the unit itself
    assert "\nEnvironmentFile=" not in dry.stdout
    assert not unit_path(run).exists()
    installed = run.ok("install-workers")
    assert f"wrote {unit_path(run)}" in installed.stdout
    assert "no .env here, so the unit has no EnvironmentFile=" in installed.stdout
    assert "INFO" not in installed.stderr  # said once, not again as a log line
    assert "\nEnvironmentFile=" not in unit_path(run).read_text()


def test_install_workers_passes_a_named_env_file_to_clerkd(run: Run, tmp_path: Path) -> None:
    prod = tmp_path / "prod.env"
    prod.write_text("OCR_WORKERS=2\n")
    run.ok("--env-file", str(prod), "install-workers")
    unit = unit_path(run).read_text().splitlines()
    [exec_start] = [line for line in unit if line.startswith("ExecStart=")]
    assert exec_start.endswith(f'clerkd" "--env-file" "{prod}"'), exec_start
    assert f"EnvironmentFile={prod}" in unit
    assert 'Environment="OCR_WORKERS=2"' in unit
    assert "does not exist" in run.error("--env-file", "nope.env", "install-workers")


def test_uninstall_workers(run: Run) -> None:
    assert run.ok("uninstall-workers").stdout.startswith("nothing to remove")
    run.ok("install-workers")
    unit = unit_path(run)
    wants = unit.parent / "default.target.wants"
    wants.mkdir()
    (wants / unit.name).symlink_to(unit)  # what `systemctl --user enable` leaves
    line = run.error("uninstall-workers")
    assert "first run `systemctl --user disable --now clerkd`" in line
    assert unit.exists()
    (wants / unit.name).unlink()
    removed = run.ok("uninstall-workers").stdout
    assert f"removed {unit}" in removed and "systemctl --user daemon-reload" in removed
    assert not unit.exists()


def test_version_and_short_help(run: Run) -> None:
    for program in (CLERK_BIN, CLERKD_BIN):
        assert "version" in run.ok("--version", program=program).stdout
        assert "Usage:" in run.ok("-h", program=program).stdout


# -- smaller things, in-process ---------------------------------------------------------------

def test_site_add_checks_the_url_and_updates_only_what_is_given(cli: Cli) -> None:
    for url in ("http://", "http:// bad url", "https:///path"):
        assert "needs a host" in cli("site", "add", "foo", "--url", url, ok=False).output
    cli("site", "add", "foo", "--url", "http://127.0.0.1:9/a.html", "--name", "Foo Town",
        "--kind", "index")
    cli("site", "add", "foo", "--url", "http://127.0.0.1:9/b.html")
    listed = cli("site", "list").output
    assert "http://127.0.0.1:9/b.html" in listed
    [row] = json.loads(cli("site", "list", "--json").output)
    assert (row["name"], row["source_kind"]) == ("Foo Town", "index")
    assert "--url is needed" in cli("site", "add", "bar", ok=False).output


def test_site_list_shows_a_failed_fetch_iso_times_and_no_password(
        city: CitySite, cli: Cli, pipeline: Pipeline) -> None:
    city.server.status(city.index_path, 404)
    cli("site", "add", "springfield", "--url", city.url)
    cli("site", "add", "foo", "--url", "http://alice:hunter2@127.0.0.1:9/a.html")
    cli("enqueue", "springfield")
    pipeline.queue.work(["fetch"], burst=True, poll_interval=0.2, install_signals=False)
    listed = cli("site", "list").output
    assert "hunter2" not in listed
    assert "last fetch never, last success never" in listed  # foo
    [line] = [line for line in listed.splitlines() if line.startswith("springfield ")]
    assert re.search(r"last fetch failed at \d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d\d:\d\d "
                     r"\(cannot read its source: http://\S+: HTTP 404\), last success never$",
                     line), line
    shown = cli("site", "list", "--json").output
    assert "hunter2" not in shown
    rows = {row["subdomain"]: row for row in json.loads(shown)}
    assert rows["springfield"]["last_fetch_failure"]["error"].endswith("HTTP 404")
    assert rows["foo"]["last_fetch_failure"] is None


def test_failed_retry_json(cli: Cli) -> None:
    assert json.loads(cli("failed", "--retry", "--json").output) == {"requeued": 0}


def old_python() -> str | None:
    """A Python older than 3.11 that runs, if this machine has one."""
    candidates = [shutil.which(f"python3.{minor}") for minor in (10, 9, 8)]
    candidates += sorted(str(p) for p in Path.home().glob(".pyenv/versions/3.[89]*/bin/python3"))
    candidates += sorted(str(p) for p in Path.home().glob(".pyenv/versions/3.10*/bin/python3"))
    for candidate in filter(None, candidates):
        probe = subprocess.run([candidate, "-c", "import sys; print(sys.version_info < (3, 11))"],
                               capture_output=True, text=True, timeout=30)
        if probe.stdout.strip() == "True":
            return candidate
    return None


def test_setup_refuses_an_old_python_before_installing_anything(tmp_path: Path) -> None:
    old = old_python()
    if old is None:
        pytest.skip("no Python older than 3.11 on this machine")
    # a copy in an empty directory: were the check broken, the script would build its
    # virtualenv there (and fail for want of a pyproject.toml), never in this checkout's .venv
    (tmp_path / ".ci").mkdir()
    setup = [str(shutil.copy(REPO / ".ci" / "setup", tmp_path / ".ci" / "setup"))]
    result = subprocess.run(["bash", *setup], capture_output=True, text=True, timeout=60,
                            env={**os.environ, "PYTHON": old})
    assert result.returncode == 1
    assert f"clerk needs Python 3.11 or newer; {old} is 3." in result.stderr
    assert "PYTHON=python3.11 bash .ci/setup" in result.stderr
    missing = subprocess.run(["bash", *setup], capture_output=True, text=True, timeout=60,
                             env={**os.environ, "PYTHON": "no-such-python"})
    assert missing.returncode == 1 and "no-such-python does not run" in missing.stderr


def test_doctor_checks_migrations_directories_and_backend(run: Run, empty_db_url: str,
                                                          tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    result = run("doctor", env={"DATABASE_URL": empty_db_url,
                                "STORAGE_DIR": str(blocker / "sites"),
                                "DEPLOY_DIR": str(tmp_path / "deploy")})
    assert result.returncode == 1
    assert "✗ migrations: database not migrated\n    fix: clerk db upgrade" in result.stdout
    assert f"✗ STORAGE_DIR: {blocker} is not a directory" in result.stdout
    assert f"✓ DEPLOY_DIR: {tmp_path / 'deploy'} (will be created)" in result.stdout
    assert "✓ ocr backend: tesseract" in result.stdout
    assert schemas(empty_db_url) == []  # doctor looks, it does not migrate


def test_doctor_names_the_password_when_authentication_fails() -> None:
    from clerk.doctor import _database_fix
    # PostgreSQL's own words, as psycopg passes them on
    refused = ('cannot connect to PostgreSQL at 127.0.0.1:5432/clerk: connection failed: '
               'FATAL:  password authentication failed for user "clerk"')
    assert "password" in _database_fix(refused) and "start PostgreSQL" not in _database_fix(refused)
    assert "start PostgreSQL" in _database_fix("connection refused")
