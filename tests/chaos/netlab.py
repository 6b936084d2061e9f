"""Network namespaces as machines: one for PostgreSQL, two worker hosts, veth links.

    root ns (the test) --- veth 10.231.3.0/24 ---+
    host A             --- veth 10.231.1.0/24 ---+-- db ns: PostgreSQL, scram-sha-256
    host B             --- veth 10.231.2.0/24 ---+

Cutting a host's link (`cut`) takes its veth down on the database side: the host sees
silence, as when a machine or its switch port dies, not a polite connection refusal.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from pgqueue.localserver import LocalServer

SUBNET = "10.231"


def ip(*argv: str, namespace: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    prefix = ["ip", "netns", "exec", namespace] if namespace else []
    return subprocess.run([*prefix, "ip", *argv], check=check, capture_output=True, text=True,
                          timeout=30)


def netns_unavailable() -> str | None:
    """Why this machine cannot run the namespace test, or None if it can."""
    if os.geteuid() != 0:
        return "needs root (ip netns add)"
    probe = f"chaos-probe-{os.getpid()}"
    try:
        added = ip("netns", "add", probe, check=False)
    except (OSError, subprocess.SubprocessError) as error:
        return f"ip netns unavailable: {error}"
    if added.returncode != 0:
        return f"ip netns add failed: {added.stderr.strip()}"
    ip("netns", "delete", probe, check=False)
    return None


@dataclass
class NamespacedServer(LocalServer):
    """A LocalServer whose pg_ctl (and so the postmaster) runs inside a network namespace."""

    namespace: str = ""

    def _run(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        command = list(argv)
        if self.as_root:
            command = ["runuser", "-u", self.user, "--", *command]
        return subprocess.run(["ip", "netns", "exec", self.namespace, *command], check=check,
                              capture_output=True, text=True, timeout=120)

    def admin_conninfo(self, dbname: str = "postgres") -> str:
        """Over the Unix socket (a path, so it crosses namespaces): the owner, trusted."""
        return f"host={self.socket_dir} port={self.port} user={self.user} dbname={dbname}"


@dataclass
class NetLab:
    tag: str = field(default_factory=lambda: str(os.getpid() % 100000))
    created: list[str] = field(default_factory=list)

    @property
    def db(self) -> str:
        return f"chaos-db-{self.tag}"

    def host(self, name: str) -> str:
        return f"chaos-{name}-{self.tag}"

    def _link(self, other: str | None, index: int) -> None:
        """A veth pair: `cx<tag>d<index>` in the db namespace, `cx<tag>h<index>` in `other`."""
        db_side, far_side = f"cx{self.tag}d{index}", f"cx{self.tag}h{index}"
        ip("link", "add", db_side, "type", "veth", "peer", "name", far_side)
        ip("link", "set", db_side, "netns", self.db)
        ip("addr", "add", f"{SUBNET}.{index}.1/24", "dev", db_side, namespace=self.db)
        ip("link", "set", db_side, "up", namespace=self.db)
        if other is not None:
            ip("link", "set", far_side, "netns", other)
        ip("addr", "add", f"{SUBNET}.{index}.2/24", "dev", far_side, namespace=other)
        ip("link", "set", far_side, "up", namespace=other)

    def build(self) -> None:
        for namespace in (self.db, self.host("a"), self.host("b")):
            ip("netns", "add", namespace)
            self.created.append(namespace)
            ip("link", "set", "lo", "up", namespace=namespace)
        self._link(self.host("a"), 1)
        self._link(self.host("b"), 2)
        self._link(None, 3)  # the test process, in the root namespace

    def db_address(self, index: int) -> str:
        return f"{SUBNET}.{index}.1"

    def cut(self, index: int) -> None:
        ip("link", "set", f"cx{self.tag}d{index}", "down", namespace=self.db)

    def exec_prefix(self, namespace: str) -> tuple[str, ...]:
        return ("ip", "netns", "exec", namespace)

    def teardown(self) -> None:
        for namespace in reversed(self.created):
            pids = subprocess.run(["ip", "netns", "pids", namespace], capture_output=True,
                                  text=True, check=False).stdout.split()
            for pid in pids:  # anything the test started there and did not stop
                try:
                    os.kill(int(pid), 9)
                except ProcessLookupError:
                    pass
            ip("netns", "delete", namespace, check=False)
        # The root end of link 3 goes when its peer's namespace goes; be sure anyway.
        ip("link", "delete", f"cx{self.tag}h3", check=False)
        self.created.clear()


def write_hba(data_dir: Path, user: str) -> None:
    """Password (scram-sha-256) for every TCP connection; the owner trusted on the socket only."""
    (data_dir / "pg_hba.conf").write_text(
        f"local all {user} trust\n"
        "host all all 0.0.0.0/0 scram-sha-256\n")
