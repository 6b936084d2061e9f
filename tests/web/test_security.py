"""Who may reach the dashboard: loopback without a password; anywhere else only with
DASHBOARD_PASSWORD (HTTP Basic), refused in one line otherwise."""

from __future__ import annotations

import base64
import os
import socket
import subprocess
import sys
import time

import httpx
import pytest
from starlette.testclient import TestClient

from pgqueue import ConfigurationError, Queue
from pgqueue.web import bind_check, create_app, protect


@pytest.mark.parametrize("host", ["0.0.0.0", "", "192.168.1.5", "::", "dashboard.example"])
def test_off_loopback_without_a_password_is_refused_in_one_line(host: str) -> None:
    with pytest.raises(ConfigurationError) as refused:
        bind_check(host, environ={})
    message = str(refused.value)
    assert "\n" not in message and "DASHBOARD_PASSWORD" in message and "127.0.0.1" in message


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "::1", "localhost"])
def test_loopback_needs_no_password(host: str) -> None:
    assert bind_check(host, environ={}) is None


def test_names_of_the_variables_are_parameters() -> None:
    env = {"MY_PASS": "s3cret", "MY_USER": "ops"}
    assert bind_check("0.0.0.0", password_env="MY_PASS", user_env="MY_USER",
                      environ=env) == ("ops", "s3cret")
    assert bind_check("0.0.0.0", environ={"DASHBOARD_PASSWORD": "pw"}) == ("clerk", "pw")
    with pytest.raises(ConfigurationError, match="MY_PASS"):
        bind_check("0.0.0.0", password_env="MY_PASS", environ={"DASHBOARD_PASSWORD": "pw"})


def _basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def test_with_a_password_every_request_needs_http_basic(wq: Queue) -> None:
    guarded = protect(create_app(wq), "0.0.0.0", environ={"DASHBOARD_PASSWORD": "pw",
                                                          "DASHBOARD_USER": "ops"})
    with TestClient(guarded) as client:
        for headers in ({}, _basic("ops", "wrong"), _basic("clerk", "pw"), _basic("ops", "pw1"),
                        {"Authorization": "Basic !!!"}, {"Authorization": "Bearer pw"}):
            answer = client.get("/", headers=headers)
            assert answer.status_code == 401, headers
            assert answer.headers["www-authenticate"].startswith("Basic ")
            assert "pw" not in answer.text
        assert client.get("/", headers=_basic("ops", "pw")).status_code == 200
        assert client.get("/static/htmx.min.js").status_code == 401


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


SERVE = """
import sys
from pgqueue import Queue, ConfigurationError
from pgqueue.web import create_app, serve
try:
    serve(create_app(Queue(sys.argv[1])), host=sys.argv[2], port=int(sys.argv[3]))
except ConfigurationError as error:
    print(error, file=sys.stderr)
    sys.exit(2)
"""


def test_serve_refuses_before_binding_and_serves_behind_basic(db_url: str) -> None:
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("DASHBOARD_")}
    refused = subprocess.run([sys.executable, "-c", SERVE, db_url, "0.0.0.0", str(port)],
                             env=env, capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2
    assert refused.stderr.count("\n") == 1 and "DASHBOARD_PASSWORD" in refused.stderr
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))  # nothing was bound

    server = subprocess.Popen([sys.executable, "-c", SERVE, db_url, "127.0.0.1", str(port)],
                              env={**env, "DASHBOARD_PASSWORD": "hunter2"},
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                answer = httpx.get(f"http://127.0.0.1:{port}/", timeout=5)
                break
            except httpx.TransportError:
                assert server.poll() is None, server.communicate()
                assert time.monotonic() < deadline, "the dashboard did not start"
                time.sleep(0.2)
        assert answer.status_code == 401
        ok = httpx.get(f"http://127.0.0.1:{port}/", headers=_basic("clerk", "hunter2"),
                       timeout=10)
        assert ok.status_code == 200 and "Overview" in ok.text
    finally:
        server.terminate()
        out, err = server.communicate(timeout=30)
    assert "hunter2" not in out + err


def test_an_unreachable_database_is_a_503_line_without_the_password() -> None:
    port = _free_port()  # nothing listens there
    queue = Queue(f"postgresql://dash:s3cretpw@127.0.0.1:{port}/nowhere_test")
    try:
        with TestClient(create_app(queue)) as client:
            answer = client.get("/jobs")  # fails as soon as the pool's first attempt has
            assert answer.status_code == 503
            assert "cannot connect" in answer.text and "Traceback" not in answer.text
            assert "Connection refused" in answer.text  # PostgreSQL's reason, not just "no"
            assert "s3cretpw" not in answer.text
            as_json = client.get("/", params={"format": "json"}).json()
            assert as_json["status"] == 503 and "s3cretpw" not in as_json["error"]
            assert "Connection refused" in as_json["error"]
    finally:
        queue.close()
