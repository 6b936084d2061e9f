"""A DSN with a real password, for tests that assert a password is never shown.

The session cluster trusts its clients, so a password in the DSN is never needed to log
in; it is there to be leaked. `password_url` creates a login role with this password (once
per cluster) and returns a URL for it: `postgresql://role:SECRET@127.0.0.1:port/dbname`.
An assertion that `SECRET` is absent from some output can then fail.
"""

from __future__ import annotations

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

SECRET = "Pa55-S3cret-w0rd"
ROLE = "clerk_with_password"


def password_url(db_url: str, role: str = ROLE) -> str:
    params = conninfo_to_dict(db_url)
    with psycopg.connect(db_url, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone()
        if not exists:
            conn.execute(sql.SQL("CREATE ROLE {} LOGIN SUPERUSER PASSWORD {}").format(
                sql.Identifier(role), sql.Literal(SECRET)))
    port = params.get("port") or "5432"
    return f"postgresql://{role}:{SECRET}@127.0.0.1:{port}/{params['dbname']}"
