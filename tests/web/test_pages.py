"""Every page in HTML and JSON, filters, keyset paging, escaping."""

from __future__ import annotations

from starlette.testclient import TestClient

from pgqueue import Queue
from tests.web.conftest import run_all


def test_smoke(wq: Queue, client: TestClient) -> None:
    ok, boom = wq.tasks["web.ok"], wq.tasks["web.boom"]
    ok.enqueue(n=1)
    boom.enqueue(message="<script>alert(1)</script>")
    run_all(wq)
    for path in ["/", "/jobs", "/workers", "/groups", "/_/overview", "/_/jobs"]:
        r = client.get(path)
        assert r.status_code == 200, (path, r.text[:2000])
        j = client.get(path, params={"format": "json"})
        assert j.status_code == 200, (path, j.text[:2000])
    print(client.get("/", params={"format": "json"}).json())
