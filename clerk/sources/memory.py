"""A site's index pages remembered in the database between runs (clerk migration 0007):
the validators to ask with (ETag, Last-Modified), the body's sha256, and what was parsed
from it, so a re-run of a site whose page did not change costs one conditional request."""

from __future__ import annotations

import json
from typing import Any

from clerk.db import CLERK_SCHEMA
from clerk.sources.index import IndexPage
from pgqueue import Queue
from pgqueue.db import query
from pgqueue.sql import Statements, sql_root

_STATEMENTS = Statements(CLERK_SCHEMA, sql_root() / "clerk" / "sources.sql")


class SiteMemory:
    """`PageMemory` for one site, through the queue's connections."""

    def __init__(self, queue: Queue, site: str) -> None:
        self.queue = queue
        self.site = site

    def load(self, url: str) -> IndexPage | None:
        with self.queue.session(atomic=False) as conn:
            row: dict[str, Any] | None = query(conn, _STATEMENTS.index_page,
                                               {"site": self.site, "url": url}).fetchone()
        if row is None:
            return None
        return IndexPage(row["url"], row["etag"], row["last_modified"], row["sha256"],
                         IndexPage.result_from_json(row["result"]))

    def save(self, page: IndexPage) -> None:
        with self.queue.session(atomic=False) as conn:
            query(conn, _STATEMENTS.save_index_page, {
                "site": self.site, "url": page.url, "etag": page.etag,
                "last_modified": page.last_modified, "sha256": page.sha256,
                "result": json.dumps(page.result_json())})


__all__ = ["SiteMemory"]
