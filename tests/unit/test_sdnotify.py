"""sd_notify against a real AF_UNIX datagram socket standing in for systemd."""

from __future__ import annotations

import array
import os
import shutil
import signal
import socket
import struct
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from pgqueue import sdnotify
from tests.unit.supervisor_harness import HarnessProcess

pytestmark = pytest.mark.timeout(60)


class FakeSystemd:
    """A bound datagram socket that records each message with the sender's pid."""

    def __init__(self, address: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        # SO_PASSCRED makes the kernel attach the sender's pid, as systemd reads it
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.sock.bind(address)
        self.sock.settimeout(10)

    def receive(self) -> tuple[str, int | None]:
        credentials = array.array("i", [0, 0, 0])
        data, ancillary, _, _ = self.sock.recvmsg(4096, socket.CMSG_SPACE(credentials.itemsize
                                                                           * 3))
        pid = None
        for level, kind, payload in ancillary:
            if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                pid = struct.unpack("iII", payload[:12])[0]
        return data.decode(), pid

    def receive_until(self, text: str) -> list[tuple[str, int | None]]:
        seen = []
        while True:
            message = self.receive()
            seen.append(message)
            if message[0] == text:
                return seen


@pytest.fixture
def short_dir() -> Iterator[Path]:
    # AF_UNIX paths are limited to 107 bytes; pytest's tmp_path can be longer
    path = Path(tempfile.mkdtemp(prefix="sdn-", dir="/tmp"))
    yield path
    shutil.rmtree(path)


@pytest.fixture
def systemd(short_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeSystemd]:
    path = short_dir / "notify"
    fake = FakeSystemd(str(path))
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    yield fake
    fake.sock.close()


def test_outside_systemd_everything_is_a_quiet_no_op(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    assert sdnotify.ready() is False
    assert sdnotify.watchdog() is False
    assert sdnotify.watchdog_interval() is None


def test_messages_reach_a_filesystem_socket(systemd: FakeSystemd) -> None:
    assert sdnotify.ready() is True
    assert systemd.receive() == ("READY=1", os.getpid())
    assert sdnotify.watchdog()
    assert systemd.receive()[0] == "WATCHDOG=1"
    assert sdnotify.status("3 workers\nrunning")
    assert systemd.receive()[0] == "STATUS=3 workers running"
    assert sdnotify.stopping()
    assert systemd.receive()[0] == "STOPPING=1"


def test_abstract_namespace_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"pgqueue-test-{os.getpid()}-{os.urandom(4).hex()}"
    fake = FakeSystemd("\0" + name)
    try:
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        assert sdnotify.ready()
        assert fake.receive()[0] == "READY=1"
    finally:
        fake.sock.close()


def test_missing_socket_is_reported_not_raised(short_dir: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", str(short_dir / "nobody-listens"))
    assert sdnotify.ready() is False


def test_watchdog_interval(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "60000000")
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    assert sdnotify.watchdog_interval() == 60.0
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    assert sdnotify.watchdog_interval() == 60.0
    monkeypatch.setenv("WATCHDOG_PID", "1")  # meant for another process
    assert sdnotify.watchdog_interval() is None
    monkeypatch.delenv("WATCHDOG_PID")
    monkeypatch.setenv("WATCHDOG_USEC", "soon")
    assert sdnotify.watchdog_interval() is None


def test_supervisor_reports_ready_pings_watchdog_and_stopping(
        systemd: FakeSystemd, tmp_path: Path) -> None:
    harness = HarnessProcess(
        {"pools": {"a": {"size": 2, "behaviour": "sleeper"}}, "grace": 10.0},
        tmp_path / "stderr.log",
        env={"WATCHDOG_USEC": "200000"},  # a ping every 0.1 s while nothing else happens
    )
    try:
        messages = systemd.receive_until("READY=1")
        assert harness.expect("ready")
        children = [harness.expect("child_ready")["pid"] for _ in range(2)]
        messages += systemd.receive_until("WATCHDOG=1")
        messages += systemd.receive_until("WATCHDOG=1")
        harness.signal(signal.SIGTERM)
        messages += systemd.receive_until("STOPPING=1")
        assert harness.wait(20) == 0
        senders = {pid for _, pid in messages}
        assert senders == {harness.pid}  # children lost NOTIFY_SOCKET
        assert not senders & set(children)
    finally:
        harness.close()
