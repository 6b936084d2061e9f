"""A real PgBouncer on 127.0.0.1 in front of a test PostgreSQL, in transaction mode.

Its ini and logs go in a temporary directory. It logs in to PostgreSQL as its own role
(`bouncer`, created here), so `pg_stat_activity.usename` tells which backends a client
reached through the pooler and which directly. Run as root, it drops to `postgres`.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from pgqueue.localserver import free_port

PGBOUNCER = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"
BOUNCER_ROLE = "bouncer"


class PgBouncer:
    def __init__(self, server_url: str, directory: Path, *, pool_size: int = 3) -> None:
        """Pool every database of the server at `server_url` (trust auth) as BOUNCER_ROLE."""
        params = conninfo_to_dict(server_url)
        self.server_host = params.get("host", "127.0.0.1")
        self.server_port = int(params.get("port", 5432))
        with psycopg.connect(server_url, autocommit=True) as conn:
            if conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s",
                            (BOUNCER_ROLE,)).fetchone() is None:
                conn.execute(f"CREATE ROLE {BOUNCER_ROLE} LOGIN SUPERUSER")
        self.port = free_port()
        if os.geteuid() == 0:  # it runs as postgres, who cannot enter pytest's tmp_path
            directory = Path(tempfile.mkdtemp(prefix="pgbouncer-"))
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        directory.chmod(0o777)
        self.ini = directory / "pgbouncer.ini"
        self.log = directory / "pgbouncer.log"
        self.ini.write_text(f"""[databases]
* = host={self.server_host} port={self.server_port} user={BOUNCER_ROLE}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {self.port}
unix_socket_dir =
auth_type = any
pool_mode = transaction
default_pool_size = {pool_size}
max_client_conn = 200
server_reset_query =
ignore_startup_parameters = extra_float_digits,options
logfile = {self.log}
pidfile = {directory / "pgbouncer.pid"}
""")
        self.ini.chmod(0o644)
        argv = [PGBOUNCER, str(self.ini)]
        if os.geteuid() == 0:
            argv[1:1] = ["-u", "postgres"]
        self.output = directory / "pgbouncer.out"
        with self.output.open("w") as output:
            self.process = subprocess.Popen(argv, stdout=output, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"pgbouncer exited: {self.output.read_text()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("pgbouncer did not start listening")

    def url(self, direct_url: str) -> str:
        """`direct_url`'s database, through this PgBouncer."""
        params = conninfo_to_dict(direct_url)
        params.update(host="127.0.0.1", port=str(self.port))
        return make_conninfo(**params)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(30)
        if self.directory.name.startswith("pgbouncer-"):
            shutil.rmtree(self.directory, ignore_errors=True)
