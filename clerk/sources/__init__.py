"""Source kinds: where a site's meeting documents are listed, as plugins.

Every kind is a module with one function,
`discover(source_url, session, settings) -> list[DocumentRef]`, registered by name in
`SOURCES` below; nothing else in clerk knows which kinds exist. A module may offer more:

- `discover_index(...)` (the `index` kind) also returns the links it refused and why;
- `discover_platform(request: SourceRequest) -> Discovery` (Legistar, CivicPlus, PrimeGov;
  see clerk.sources.platform) is also given the site's credential and its last successful
  run, for incremental listings, and says how many meetings it saw, so "0 meetings" is
  told apart from "could not read the reply";
- `client_url(client) -> str` turns `clerk site add --client NAME` into the source URL;
- `CREDENTIAL = "token"` says the site's credential is an API token for the source, not a
  user:password for HTTP basic auth.

A new platform is one module here and one line in `SOURCES`.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Literal, Protocol

import requests

from clerk.config import Settings

Kind = Literal["agenda", "minutes"]

# name -> module holding `discover`; imported only when asked for.
SOURCES: dict[str, str] = {
    "index": "clerk.sources.index",
    "manifest": "clerk.sources.manifest",
    "legistar": "clerk.sources.legistar",
    "civicplus": "clerk.sources.civicplus",
    "primegov": "clerk.sources.primegov",
}


class SourceError(Exception):
    """A source that could not be read or understood; the message says which and why."""


class TransientSourceError(SourceError):
    """A failure that may pass (5xx, 429, a timeout, a refused connection): worth a retry."""


@dataclass(frozen=True)
class DocumentRef:
    """One document a source lists: where to fetch it and what it is."""

    url: str
    meeting: str
    date: str  # ISO YYYY-MM-DD
    kind: Kind

    def as_dict(self) -> dict[str, str]:
        return {"url": self.url, "meeting": self.meeting, "date": self.date, "kind": self.kind}


class Source(Protocol):
    """What a source module provides."""

    def discover(
        self, source_url: str, session: requests.Session, settings: Settings
    ) -> list[DocumentRef]: ...


def get_source(kind: str) -> Source:
    """The source plugin registered under `kind` (a module with `discover`)."""
    try:
        module_name = SOURCES[kind]
    except KeyError:
        known = ", ".join(sorted(SOURCES))
        raise SourceError(f"unknown source kind {kind!r}; known: {known}") from None
    module = importlib.import_module(module_name)
    return module  # type: ignore[return-value]


__all__ = ["SOURCES", "DocumentRef", "Kind", "Source", "SourceError", "TransientSourceError",
           "get_source"]
