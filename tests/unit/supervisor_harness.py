"""A supervisor in its own process, for tests that send it real signals.

Run as `python -m tests.unit.supervisor_harness '<json config>'`. Every supervisor event
and every child's progress is one JSON line on stdout, written with a single os.write so
lines from many processes never interleave; tests wait on those lines, not on sleeps.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from pgqueue.signals import install_worker_handlers
from pgqueue.supervisor import PoolSpec, Supervisor, SupervisorEvent, WorkerSlot


def say(kind: str, **fields: Any) -> None:
    os.write(1, (json.dumps({"kind": kind, **fields}) + "\n").encode())


def child_says(kind: str, slot: WorkerSlot) -> None:
    say(kind, pool=slot.pool, index=slot.index, generation=slot.generation, pid=os.getpid())


def sleeper(slot: WorkerSlot) -> int:
    """A worker that finishes its (empty) job on the first SIGTERM."""
    stop = threading.Event()
    install_worker_handlers(stop)
    child_says("child_ready", slot)
    stop.wait()
    child_says("child_stopping", slot)
    return 0


def recycle_once(slot: WorkerSlot) -> int:
    if slot.generation == 0:
        child_says("child_ready", slot)
        return 0
    return sleeper(slot)


def crash(slot: WorkerSlot) -> int:
    child_says("child_ready", slot)
    return 3


def crash_once(slot: WorkerSlot) -> int:
    if slot.generation == 0:
        child_says("child_ready", slot)
        return 1
    return sleeper(slot)


def stubborn(slot: WorkerSlot) -> int:
    """A worker stuck in a job that ignores SIGTERM: only SIGKILL ends it."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    child_says("child_ready", slot)
    while True:
        signal.pause()


BEHAVIOURS = {f.__name__: f for f in (sleeper, recycle_once, crash, crash_once, stubborn)}


class Target:
    """Dispatches each pool to its behaviour; inherited by the forked children."""

    def __init__(self, behaviours: dict[str, str]) -> None:
        self.behaviours = behaviours

    def __call__(self, slot: WorkerSlot) -> int:
        return BEHAVIOURS[self.behaviours.get(slot.pool, "sleeper")](slot)


def main() -> int:
    config = json.loads(sys.argv[1])
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(process)d %(levelname)s %(message)s")
    behaviours = {name: pool["behaviour"] for name, pool in config["pools"].items()}
    resize_file = config.get("resize_file")
    supervisor: Supervisor

    def on_event(event: SupervisorEvent) -> None:
        say(event.kind, pool=event.pool, index=event.index, pid=event.pid,
            exitcode=event.exitcode, delay=event.delay, status=supervisor.status())

    def on_reload() -> None:
        if resize_file:
            sizes = json.loads(Path(resize_file).read_text())
            supervisor.resize({name: PoolSpec(name, size) for name, size in sizes.items()})

    supervisor = Supervisor(
        {name: PoolSpec(name, pool["size"]) for name, pool in config["pools"].items()},
        Target(behaviours),
        grace=config.get("grace", 10.0),
        restart_backoff=tuple(config.get("backoff", (0.05, 1.0))),
        crash_loop_threshold=config.get("threshold", 5),
        crash_loop_window=config.get("window", 60.0),
        on_event=on_event,
        on_reload=on_reload,
    )
    code = supervisor.run()
    say("exit", code=code)
    return code


if __name__ == "__main__":
    sys.exit(main())


EXPECT_SECONDS = 10.0
READY_SECONDS = 45.0  # below the supervisor tests' 60 s pytest timeout


class HarnessProcess:
    """The test side: start the harness, read its JSON lines, wait for one that matches."""

    def __init__(self, config: dict[str, Any], stderr_path: Path,
                 env: dict[str, str] | None = None) -> None:
        import subprocess

        self.stderr_path = stderr_path
        self._stderr = stderr_path.open("wb")
        root = Path(__file__).resolve().parents[2]
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.unit.supervisor_harness", json.dumps(config)],
            stdout=subprocess.PIPE, stderr=self._stderr, cwd=root,
            env={**os.environ, **(env or {})},
        )
        self.lines: list[dict[str, Any]] = []
        self._buffer = b""
        self._taken: set[int] = set()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def expect(self, kind: str, timeout: float | None = None, **match: Any) -> dict[str, Any]:
        """The first line of this kind with these fields not returned by an earlier call.

        Lines from the supervisor and its children race each other, so matching does not
        depend on their order, only on each line being returned once. The default bound is
        EXPECT_SECONDS, and READY_SECONDS for "ready": that one waits for a cold interpreter
        to start and import, which takes well over 10 s on a loaded machine.
        """
        import select
        import time

        if timeout is None:
            timeout = READY_SECONDS if kind == "ready" else EXPECT_SECONDS
        deadline = time.monotonic() + timeout
        while True:
            for number, line in enumerate(self.lines):
                if number in self._taken or line["kind"] != kind:
                    continue
                if all(line.get(key) == value for key, value in match.items()):
                    self._taken.add(number)
                    return line
            remaining = deadline - time.monotonic()
            assert self.proc.stdout is not None
            if remaining <= 0 or not select.select([self.proc.stdout], [], [], remaining)[0]:
                raise AssertionError(f"no {kind} {match} within {timeout} s; saw "
                                     f"{[x['kind'] for x in self.lines]}\n{self.stderr()}")
            chunk = os.read(self.proc.stdout.fileno(), 65536)
            if not chunk:
                raise AssertionError(f"harness exited before {kind} {match}; saw "
                                     f"{[x['kind'] for x in self.lines]}\n{self.stderr()}")
            self._buffer += chunk
            *complete, self._buffer = self._buffer.split(b"\n")
            self.lines.extend(json.loads(text) for text in complete if text)

    def signal(self, signum: int) -> None:
        os.kill(self.proc.pid, signum)

    def wait(self, timeout: float) -> int:
        return self.proc.wait(timeout)

    def stderr(self) -> str:
        self._stderr.flush()
        return self.stderr_path.read_text(errors="replace")

    def close(self) -> None:
        """Kill the harness and every child it left (tests must not leak processes)."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        gone = {line["pid"] for line in self.lines
                if line["kind"] in ("exited", "crashed", "retired")}
        for line in self.lines:
            pid = line.get("pid")
            if line["kind"] != "child_ready" or pid in gone:
                continue
            try:  # only a process that is still one of ours: pids get reused
                if b"supervisor_harness" not in Path(f"/proc/{pid}/cmdline").read_bytes():
                    continue
                os.kill(pid, signal.SIGKILL)
            except (FileNotFoundError, ProcessLookupError):
                pass
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self._stderr.close()
