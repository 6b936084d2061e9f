"""The systemd notification protocol (sd_notify), without libsystemd.

systemd passes `NOTIFY_SOCKET` (a filesystem path, or `@name` for the abstract namespace)
to a `Type=notify` service; the service sends newline-separated `KEY=VALUE` datagrams to
it. `READY=1` ends start-up, `WATCHDOG=1` proves the main loop is alive within
`WatchdogSec=`, `STOPPING=1` and `STATUS=...` show up in `systemctl status`.

Outside systemd every function is a no-op that returns False, so callers never branch.
"""

from __future__ import annotations

import logging
import os
import socket

__all__ = [
    "forget_environment",
    "notify",
    "ready",
    "status",
    "stopping",
    "watchdog",
    "watchdog_interval",
]

logger = logging.getLogger(__name__)

_ENVIRONMENT = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")


def notify(state: str) -> bool:
    """Send one notification; True if a socket was there and took it."""
    path = os.environ.get("NOTIFY_SOCKET", "")
    if not path:
        return False
    if path.startswith("@"):
        address = "\0" + path[1:]
    elif path.startswith("/"):
        address = path
    else:  # vsock:... and other transports are not used for local services
        logger.debug("unsupported NOTIFY_SOCKET %r", path)
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall(state.encode())
    except OSError as error:
        logger.warning("sd_notify %r failed: %s", state, error, extra={"action": "sd_notify"})
        return False
    return True


def ready() -> bool:
    """Start-up is complete (children are running)."""
    return notify("READY=1")


def stopping() -> bool:
    """A stop has begun; systemd then waits up to TimeoutStopSec= before SIGKILL."""
    return notify("STOPPING=1")


def watchdog() -> bool:
    """The main loop is alive."""
    return notify("WATCHDOG=1")


def status(text: str) -> bool:
    """A one-line status for `systemctl status`; newlines would end the message."""
    return notify("STATUS=" + " ".join(text.split()))


def watchdog_interval() -> float | None:
    """Seconds within which systemd expects `WATCHDOG=1`, or None without a watchdog.

    Ping at half this interval, as sd_watchdog_enabled(3) recommends. WATCHDOG_PID, when
    set, names the process the watchdog is meant for; other processes get None.
    """
    usec = os.environ.get("WATCHDOG_USEC", "")
    pid = os.environ.get("WATCHDOG_PID", "")
    if pid and pid != str(os.getpid()):
        return None
    try:
        value = int(usec)
    except ValueError:
        return None
    return value / 1_000_000 if value > 0 else None


def forget_environment() -> None:
    """Drop the notification variables, so a child process cannot speak for the service."""
    for name in _ENVIRONMENT:
        os.environ.pop(name, None)
