"""clerkd's lifecycle as a real process: its workers die with it, even when it is SIGKILLed
(audit 20), and `--env-file` is checked at start and re-read on SIGHUP (audit 18)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest

VENV_BIN = Path(sys.executable).parent
POOLS = ("FETCH_WORKERS", "OCR_WORKERS", "EXTRACTION_WORKERS", "COMPILATION_WORKERS",
         "DEPLOY_WORKERS")


def wait_for(condition: Callable[[], object], what: str, timeout: float = 90.0) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")


def ocr_slots(db_url: str) -> list[int]:
    """The slots of each active OCR worker."""
    with psycopg.connect(db_url) as conn:
        return [n for (n,) in conn.execute(
            "SELECT concurrency FROM pgqueue.active_workers WHERE 'ocr' = ANY (queues)")]


def worker_queues(db_url: str) -> list[str]:
    """The queue of every worker registered in the database, sorted."""
    with psycopg.connect(db_url) as conn:
        return sorted(queue for (queues,) in conn.execute(
            "SELECT queues FROM pgqueue.active_workers").fetchall() for queue in queues)


def children(pid: int) -> list[int]:
    """Live child processes of `pid`, from /proc (zombies count as gone)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        state, ppid = stat.rsplit(")", 1)[1].split()[:2]
        if int(ppid) == pid and state != "Z":
            found.append(int(entry.name))
    return found


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@pytest.fixture
def env(db_url: str, tmp_path: Path) -> dict[str, str]:
    clean = {key: value for key, value in os.environ.items()
             if not key.startswith(("CLERK_", "PGQUEUE_")) and key != "DATABASE_URL"
             and key not in POOLS}
    clean.update({"DATABASE_URL": db_url, "CLERK_STORAGE_DIR": str(tmp_path / "sites"),
                  "CLERK_DEPLOY_DIR": str(tmp_path / "deploy"), "CLERK_POLL_INTERVAL": "0.5",
                  "CLERK_SHUTDOWN_GRACE": "30"})
    return clean


@pytest.fixture
def started() -> Iterator[list[subprocess.Popen[bytes]]]:
    processes: list[subprocess.Popen[bytes]] = []
    yield processes
    for process in processes:  # the whole session, workers included, whatever the test did
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.wait(10)


def start_clerkd(env: dict[str, str], started: list[subprocess.Popen[bytes]], log: Path,
                 *args: str, cwd: Path | None = None) -> subprocess.Popen[bytes]:
    with log.open("w") as output:
        process = subprocess.Popen([str(VENV_BIN / "clerkd"), *args], env=env, cwd=cwd,
                                   stdout=output, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    started.append(process)
    return process


def test_a_sigkilled_clerkd_leaves_no_worker_running(env: dict[str, str], db_url: str,
                                                     tmp_path: Path,
                                                     started: list[subprocess.Popen[bytes]]
                                                     ) -> None:
    pools = {"FETCH_WORKERS": "1", "OCR_WORKERS": "2", "EXTRACTION_WORKERS": "0",
             "COMPILATION_WORKERS": "0", "DEPLOY_WORKERS": "0"}
    log = tmp_path / "clerkd.log"
    clerkd = start_clerkd({**env, **pools}, started, log)
    # One worker process per queue (the OCR one with two slots: issue 21).
    wait_for(lambda: worker_queues(db_url) == ["fetch", "ocr"],
             "two workers registered", timeout=120)
    workers = children(clerkd.pid)
    assert len(workers) == 2, (workers, log.read_text())

    os.kill(clerkd.pid, signal.SIGKILL)  # no cleanup runs in clerkd: the kernel must act
    clerkd.wait(10)
    wait_for(lambda: not any(alive(pid) for pid in workers),
             f"the workers {workers} to exit after their clerkd died", timeout=90)
    wait_for(lambda: worker_queues(db_url) == [], "the workers to deregister", timeout=60)


def test_a_child_whose_parent_already_died_exits_at_once() -> None:
    """The race PR_SET_PDEATHSIG cannot cover: the parent died before the child asked."""
    script = ("from pgqueue.supervisor import die_with_parent\n"
              "die_with_parent(parent_pid=-1)\n"
              "print('still running')\n")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""


@pytest.mark.parametrize("name", ["missing.env", "."])
def test_a_named_env_file_that_is_not_a_file_is_one_line(env: dict[str, str], tmp_path: Path,
                                                         name: str) -> None:
    result = subprocess.run([str(VENV_BIN / "clerkd"), "--env-file", name], env=env,
                            cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    reason = "is not a file" if name == "." else "does not exist"
    assert result.stderr.splitlines() == [f"Error: env file {name} {reason}"]


def test_sighup_rereads_the_named_env_file(env: dict[str, str], db_url: str, tmp_path: Path,
                                           started: list[subprocess.Popen[bytes]]) -> None:
    settings = tmp_path / "etc" / "clerk.env"
    settings.parent.mkdir()
    sizes = {"FETCH_WORKERS": 0, "OCR_WORKERS": 1, "EXTRACTION_WORKERS": 0,
             "COMPILATION_WORKERS": 0, "DEPLOY_WORKERS": 0}
    settings.write_text("".join(f"{k}={v}\n" for k, v in sizes.items()))
    # The working directory's own .env is not the named file: it must not be read.
    workdir = tmp_path / "work"
    workdir.mkdir()
    (workdir / ".env").write_text("OCR_WORKERS=3\nFETCH_WORKERS=3\n")
    log = tmp_path / "clerkd.log"
    clerkd = start_clerkd(env, started, log, "--env-file", str(settings), cwd=workdir)
    wait_for(lambda: worker_queues(db_url) == ["ocr"], "one ocr worker", timeout=120)

    settings.write_text(settings.read_text().replace("OCR_WORKERS=1", "OCR_WORKERS=2"))
    clerkd.send_signal(signal.SIGHUP)
    # One worker process per queue, with the new number of slots (issue 21).
    wait_for(lambda: ocr_slots(db_url) == [2], "an ocr worker of two slots after SIGHUP",
             timeout=120)
    clerkd.send_signal(signal.SIGTERM)
    assert clerkd.wait(90) == 0, log.read_text()
    text = log.read_text()
    assert "Traceback" not in text
    assert "pool=None" not in text and "exit=None" not in text  # audit 35's noise
