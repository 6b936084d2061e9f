"""The supervisor with real processes: restarts, backoff, crash loops, signals, resizing.

Each test runs a supervisor in a subprocess (tests/unit/supervisor_harness.py) and waits
for the JSON lines it and its children print; no test sleeps to synchronise. Time bounds
are generous upper limits for liveness only.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pgqueue.signals import ColdStop, StopLevel, install_worker_handlers
from pgqueue.supervisor import PoolSpec, Supervisor, pools_from_sizes
from tests.unit.supervisor_harness import HarnessProcess

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Any]:
    started: list[HarnessProcess] = []

    def start(pools: dict[str, tuple[int, str]], **options: Any) -> HarnessProcess:
        config = {"pools": {name: {"size": size, "behaviour": behaviour}
                            for name, (size, behaviour) in pools.items()}, **options}
        harness = HarnessProcess(config, tmp_path / f"stderr-{len(started)}.log")
        started.append(harness)
        harness.expect("ready")
        return harness

    yield start
    for harness in started:
        harness.close()


def stop_cleanly(harness: HarnessProcess) -> None:
    harness.signal(signal.SIGTERM)
    assert harness.wait(15) == 0, harness.stderr()


def test_clean_exit_is_restarted_at_once_and_not_counted_as_a_crash(start: Any) -> None:
    harness = start({"a": (1, "recycle_once")}, backoff=[30.0, 60.0])
    first = harness.expect("child_ready", generation=0)
    exited = harness.expect("exited", pid=first["pid"])
    assert exited["exitcode"] == 0
    # with a 30 s first backoff, a restart within the timeout proves there was none
    harness.expect("child_ready", generation=1, timeout=10)
    assert not [line for line in harness.lines if line["kind"] == "crashed"]
    stop_cleanly(harness)


def test_crashed_child_is_restarted_after_backoff(start: Any) -> None:
    harness = start({"a": (1, "crash_once")}, backoff=[0.2, 5.0])
    first = harness.expect("child_ready", generation=0)
    crashed = harness.expect("crashed", pid=first["pid"])
    assert crashed["exitcode"] == 1
    assert crashed["delay"] == pytest.approx(0.2)
    started = time.monotonic()
    harness.expect("child_ready", generation=1)
    assert time.monotonic() - started >= 0.1  # it did wait (lower bound, never tight)
    stop_cleanly(harness)


def test_backoff_doubles_for_each_crash_in_a_row(start: Any) -> None:
    harness = start({"a": (1, "crash")}, backoff=[0.01, 0.04], threshold=100)
    delays = [harness.expect("crashed")["delay"] for _ in range(4)]
    assert delays == pytest.approx([0.01, 0.02, 0.04, 0.04])
    stop_cleanly(harness)


def test_sigkilled_child_is_replaced(start: Any) -> None:
    harness = start({"a": (2, "sleeper")})
    victim = harness.expect("child_ready", index=1)
    harness.expect("child_ready", index=0)
    os.kill(victim["pid"], signal.SIGKILL)
    crashed = harness.expect("crashed", pid=victim["pid"])
    assert crashed["exitcode"] == -signal.SIGKILL
    replacement = harness.expect("child_ready", index=1)
    assert replacement["pid"] != victim["pid"]
    assert replacement["generation"] == 1
    stop_cleanly(harness)


def test_crash_loop_is_reported_in_status_and_still_retried(start: Any) -> None:
    harness = start({"a": (1, "crash"), "b": (1, "sleeper")},
                    backoff=[0.01, 0.05], threshold=3)
    looping = harness.expect("crash_loop")
    status = looping["status"]
    assert status["crash_loops"] == ["a/0"]
    assert status["pools"]["a"]["crash_loop"] is True
    assert status["pools"]["b"]["crash_loop"] is False
    assert looping["delay"] == pytest.approx(0.05)  # longest backoff, but still retrying
    harness.expect("child_ready", pool="a")
    harness.expect("crashed", pool="a")
    assert "crash-looping" in harness.stderr()
    stop_cleanly(harness)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_stop_signal_is_relayed_and_supervisor_exits_0_within_grace(
        start: Any, signum: int) -> None:
    harness = start({"a": (2, "sleeper"), "b": (1, "sleeper")}, grace=20.0)
    children = {harness.expect("child_ready")["pid"] for _ in range(3)}
    began = time.monotonic()
    harness.signal(signum)
    stopped = {harness.expect("child_stopping")["pid"] for _ in range(3)}
    assert stopped == children
    assert harness.wait(20) == 0
    assert time.monotonic() - began < 20
    assert not [line for line in harness.lines if line["kind"] in ("killed", "crashed")]


def test_child_ignoring_sigterm_is_killed_after_grace(start: Any) -> None:
    harness = start({"stuck": (1, "stubborn"), "fine": (1, "sleeper")}, grace=0.5)
    stuck = harness.expect("child_ready", pool="stuck")
    harness.expect("child_ready", pool="fine")
    harness.signal(signal.SIGTERM)
    harness.expect("child_stopping", pool="fine")
    killed = harness.expect("killed")
    assert killed["pid"] == stuck["pid"]
    assert harness.wait(15) == 0


def test_second_stop_signal_kills_children_at_once(start: Any) -> None:
    harness = start({"stuck": (1, "stubborn")}, grace=300.0)
    harness.expect("child_ready")
    began = time.monotonic()
    harness.signal(signal.SIGTERM)
    harness.expect("stopping")
    harness.signal(signal.SIGTERM)
    harness.expect("killed")
    assert harness.wait(15) == 1
    assert time.monotonic() - began < 60  # far below the 300 s grace


def test_sighup_resizes_pools_up_and_down(start: Any, tmp_path: Path) -> None:
    sizes = tmp_path / "sizes.json"
    harness = start({"a": (1, "sleeper")}, resize_file=str(sizes))
    keeper = harness.expect("child_ready", index=0)

    sizes.write_text(json.dumps({"a": 3, "b": 1}))
    harness.signal(signal.SIGHUP)
    harness.expect("reload")
    grown = {(line["pool"], line["index"])
             for line in (harness.expect("child_ready") for _ in range(3))}
    assert grown == {("a", 1), ("a", 2), ("b", 0)}

    sizes.write_text(json.dumps({"a": 1}))
    harness.signal(signal.SIGHUP)
    retired = {(line["pool"], line["index"])
               for line in (harness.expect("retired") for _ in range(3))}
    assert retired == {("a", 1), ("a", 2), ("b", 0)}
    stopping = [line for line in harness.lines if line["kind"] == "child_stopping"]
    assert keeper["pid"] not in {line["pid"] for line in stopping}
    status = harness.lines[-1]["status"]
    assert status["pools"]["a"]["size"] == 1
    assert [row["pid"] for row in status["pools"]["a"]["slots"]] == [keeper["pid"]]
    assert "b" not in status["pools"]
    stop_cleanly(harness)


def test_pool_of_size_zero_starts_nothing(start: Any) -> None:
    harness = start({"a": (0, "sleeper"), "b": (1, "sleeper")})
    ready = harness.expect("child_ready")
    assert ready["pool"] == "b"
    stop_cleanly(harness)
    assert not [line for line in harness.lines
                if line["kind"] == "child_ready" and line["pool"] == "a"]


def test_worker_handlers_first_signal_sets_event_second_raises() -> None:
    stop = threading.Event()
    previous = {signum: signal.getsignal(signum) for signum in (signal.SIGTERM, signal.SIGINT)}
    try:
        state = install_worker_handlers(stop)
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.wait(5)
        assert state.level is StopLevel.WARM
        with pytest.raises(ColdStop) as raised:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(5)  # the handler raises in this thread long before this ends
        assert raised.value.code == 128 + signal.SIGINT
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def test_worker_handlers_leave_an_ignored_signal_ignored() -> None:
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        install_worker_handlers(threading.Event())
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, previous)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def test_pool_specs_are_validated() -> None:
    with pytest.raises(ValueError, match="size"):
        PoolSpec("ocr", -1)
    assert pools_from_sizes({"ocr": 2}) == {"ocr": PoolSpec("ocr", 2)}
    with pytest.raises(ValueError, match="backoff"):
        Supervisor({}, lambda slot: 0, grace=1.0, restart_backoff=(5.0, 1.0))
