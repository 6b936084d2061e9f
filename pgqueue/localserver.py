"""A throwaway PostgreSQL cluster on 127.0.0.1, started with `initdb` and `pg_ctl`.

Used by the test set-up and the benchmarks, never by a deployment. When run as root, the
cluster runs as the `postgres` user (PostgreSQL refuses to run as root).
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

SEARCH_DIRS = ("/usr/lib/postgresql/15/bin", "/usr/lib/postgresql/16/bin",
               "/usr/lib/postgresql/17/bin", "/usr/local/bin", "/usr/bin")


def find_binary(name: str) -> str:
    for directory in SEARCH_DIRS:
        candidate = Path(directory) / name
        if candidate.is_file():
            return str(candidate)
    found = shutil.which(name)
    if found is None:
        raise FileNotFoundError(f"{name} not found: install PostgreSQL (apt-get install postgresql)")
    return found


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class LocalServer:
    """One cluster. `start()` initialises and starts it; `stop()` stops and removes it."""

    base_dir: Path | None = None
    port: int = field(default_factory=free_port)
    settings: dict[str, str] = field(default_factory=dict)
    user: str = "postgres"
    data_dir: Path = field(init=False)
    log_file: Path = field(init=False)
    _owns_base: bool = field(init=False, default=False)

    def __post_init__(self) -> None:
        if self.base_dir is None:
            self.base_dir = Path(tempfile.mkdtemp(prefix="pgqueue-pg-"))
            self._owns_base = True
        self.data_dir = self.base_dir / "data"
        self.log_file = self.base_dir / "postgres.log"

    @property
    def as_root(self) -> bool:
        return os.geteuid() == 0

    def _run(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        command = list(argv)
        if self.as_root:
            command = ["runuser", "-u", self.user, "--", *command]
        result = subprocess.run(command, check=False, capture_output=True, text=True,
                                timeout=120)
        if check and result.returncode != 0:  # say why: pg_ctl's own words, and the log's
            log_tail = ""
            if self.log_file is not None and self.log_file.is_file():
                log_tail = "\n".join(self.log_file.read_text(errors="replace").splitlines()[-15:])
            raise RuntimeError(f"{' '.join(command)} exited {result.returncode}: "
                               f"{result.stdout}{result.stderr}\n--- server log ---\n{log_tail}")
        return result

    @property
    def socket_dir(self) -> Path:
        assert self.base_dir is not None
        return self.base_dir

    def url(self, dbname: str = "postgres", user: str | None = None,
            password: str | None = None) -> str:
        role = user or self.user
        secret = f":{password}" if password else ""
        return f"postgresql://{role}{secret}@127.0.0.1:{self.port}/{dbname}"

    def start(self) -> LocalServer:
        assert self.base_dir is not None
        self.base_dir.mkdir(parents=True, exist_ok=True)
        if self.as_root:
            entry = pwd.getpwnam(self.user)
            os.chown(self.base_dir, entry.pw_uid, entry.pw_gid)
            os.chmod(self.base_dir, 0o755)  # noqa: S103 - postgres must enter its own directory
            path = self.base_dir.parent
            while path != path.parent:  # every parent must be traversable by postgres
                mode = path.stat().st_mode
                if not mode & 0o001:
                    os.chmod(path, mode | 0o001)
                path = path.parent
        if not (self.data_dir / "PG_VERSION").exists():
            self._run(find_binary("initdb"), "-D", str(self.data_dir), "-U", self.user,
                      "--auth=trust", "--encoding=UTF8", "--locale=C.UTF-8", "--no-sync")
        options = {
            "listen_addresses": "127.0.0.1",
            "port": str(self.port),
            "unix_socket_directories": str(self.socket_dir),
            "max_connections": "200",
            **self.settings,
        }
        flags = " ".join(f"-c {key}={value}" for key, value in options.items())
        self._run(find_binary("pg_ctl"), "-D", str(self.data_dir), "-l", str(self.log_file),
                  "-o", flags, "-w", "-t", "60", "start")
        return self

    def restart(self, mode: str = "fast") -> None:
        """Stop (`fast` or `immediate`, the latter as a crash would) and start again."""
        self.stop_server(mode)
        # pg_ctl's wait can give up first on a loaded machine: a start while the old
        # postmaster still exits would fail with "another server might be running".
        deadline = time.monotonic() + 120
        while (self.data_dir / "postmaster.pid").exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        self.start()

    def stop_server(self, mode: str = "fast") -> None:
        self._run(find_binary("pg_ctl"), "-D", str(self.data_dir), "-m", mode, "-w", "stop",
                  check=False)

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._run(find_binary("pg_isready"), "-h", "127.0.0.1", "-p", str(self.port),
                         check=False).returncode == 0:
                return
            time.sleep(0.1)
        raise TimeoutError(f"PostgreSQL on port {self.port} did not become ready")

    def stop(self) -> None:
        self.stop_server("immediate")
        if self._owns_base and self.base_dir is not None:
            shutil.rmtree(self.base_dir, ignore_errors=True)

    def __enter__(self) -> LocalServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
