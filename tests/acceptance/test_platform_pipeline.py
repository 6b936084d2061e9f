"""A whole site of each platform kind through the pipeline to a searchable database:
CivicPlus AgendaCenter (a real recorded search, with a scanned minutes page that only OCR
can read), Legistar behind an API token (and its second run asking only for what changed),
and PrimeGov."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from clerk.compile import DATABASE_FILE
from clerk.pipeline import Pipeline
from pgqueue.db import connect
from tests.acceptance.conftest import Cli, pages, run_workers, search
from tests.support.pipeline import PdfFactory
from tests.support.platforms import (
    LegistarClient,
    PlatformServer,
    civicplus_view_files,
    legistar_event,
    replay_search,
    serve_legistar,
    serve_primegov,
    serve_primegov_documents,
)


@pytest.fixture
def platforms() -> Iterator[tuple[PlatformServer, PlatformServer, PlatformServer]]:
    made = (PlatformServer(), PlatformServer(), PlatformServer())
    yield made
    for server in made:
        server.close()


def test_a_site_of_each_platform_becomes_a_searchable_database(
        platforms: tuple[PlatformServer, PlatformServer, PlatformServer], pdf_factory: PdfFactory,
        cli: Cli, pipeline: Pipeline, tmp_path: Path) -> None:
    civic, granicus, prime = platforms
    recorded = "nash-county-nc-search-2020-05.yaml"
    replay_search(civic, recorded, hosts={"http://nc-nashcounty.civicplus.com": civic.base})
    texts = {
        "/AgendaCenter/ViewFile/Agenda/_05052020-382": ("text", "Budget work session: courthouse roof"),
        "/AgendaCenter/ViewFile/Minutes/_05052020-382": ("scan", "Minutes: pelican dredging approved"),
        "/AgendaCenter/ViewFile/Agenda/_05042020-381": ("text", "Regular meeting: broadband grant"),
        "/AgendaCenter/ViewFile/Minutes/_05042020-381": ("text", "Minutes: broadband grant accepted"),
    }
    assert sorted(texts) == sorted(civicplus_view_files(recorded))
    for number, (path, (kind, text)) in enumerate(texts.items()):
        make = pdf_factory.scanned_pdf if kind == "scan" else pdf_factory.text_pdf
        civic.pdf(path, make(f"civic{number}.pdf", [text]).read_bytes())

    today = dt.date.today()
    recent = (today - dt.timedelta(days=20)).isoformat()
    events = [legistar_event(i, "City Council", recent) for i in range(1, 1201)]
    events[1099] = legistar_event(1100, "City Council", recent,
                                  agenda=granicus.pdf("/files/A1100.pdf", pdf_factory.text_pdf(
                                      "a1100.pdf", ["Council agenda: lighthouse repairs"]).read_bytes()),
                                  minutes=granicus.pdf("/files/M1100.pdf", pdf_factory.text_pdf(
                                      "m1100.pdf", ["Council minutes: lighthouse repairs funded"]
                                  ).read_bytes()))
    legistar_url = serve_legistar(granicus, LegistarClient("springfield", events, token="tok-123"))

    meeting_day = today - dt.timedelta(days=30)
    serve_primegov_documents(prime, {
        501: pdf_factory.text_pdf("p501.pdf", ["Planning agenda: orchard rezoning"]).read_bytes(),
        502: pdf_factory.text_pdf("p502.pdf", ["Planning minutes: orchard rezoning denied"]).read_bytes()})
    primegov_url = serve_primegov(prime, {meeting_day.year: [{
        "id": 50, "title": "Planning Commission", "dateTime": f"{meeting_day.isoformat()}T18:00:00",
        "documentList": [{"id": 501, "templateName": "Agenda", "compileOutputType": 1},
                         {"id": 502, "templateName": "Minutes", "compileOutputType": 1}]}]}, [])

    cli("site", "add", "nash-county.nc", "--kind", "civicplus", "--url", civic.base + "/")
    cli("site", "add", "springfield", "--kind", "legistar", "--url", legistar_url,
        "--token", "tok-123")
    cli("site", "add", "paloalto", "--kind", "primegov", "--url", primegov_url)
    listed = cli("site", "list", "--json").output
    assert "tok-123" not in listed
    for site in ("nash-county.nc", "springfield", "paloalto"):
        cli("enqueue", site)
    run_workers(pipeline)

    storage = tmp_path / "storage"
    nash = storage / "nash-county.nc" / DATABASE_FILE
    assert [(p["meeting"], p["date"]) for p in pages(nash, "agendas")] == [
        ("Board of Commissioners", "2020-05-04"), ("Board of Commissioners", "2020-05-05")]
    assert len(search(nash, "minutes", "pelican dredging")) == 1  # read by OCR
    assert len(search(nash, "agendas", "courthouse")) == 1

    springfield = storage / "springfield" / DATABASE_FILE
    assert [(p["meeting"], p["date"]) for p in pages(springfield, "minutes")] == [("City Council", recent)]
    assert len(search(springfield, "minutes", "lighthouse funded")) == 1
    first = granicus.requests_to("/v1/springfield/events")
    assert [r.query["$skip"] for r in first] == ["0", "1000"]
    assert all(r.query["token"] == "tok-123" for r in first)

    paloalto = storage / "paloalto" / DATABASE_FILE
    assert len(search(paloalto, "agendas", "orchard")) == 1
    assert len(search(paloalto, "minutes", "denied")) == 1

    status = json.loads(cli("status", "--subdomain", "springfield", "--json").output)
    assert status["last_result"].startswith("1200 meetings, 2 documents listed")

    # The next run asks Legistar only for what changed since the last success.
    cli("enqueue", "springfield")
    run_workers(pipeline)
    again = granicus.requests_to("/v1/springfield/events")[len(first):]
    assert again and all("EventLastModifiedUtc ge datetime'" in r.query["$filter"] for r in again)


def test_site_add_client_names_are_checked_in_one_line(cli: Cli, db_url: str) -> None:
    for args, expected in [
            (("--kind", "legistar", "--client", "a'; drop"), "not a Legistar client name"),
            (("--kind", "civicplus", "--client", "../etc"), "not a CivicPlus site name"),
            (("--kind", "primegov", "--client", "Palo Alto"), "not a PrimeGov portal name"),
            (("--client", "oakland"), "--client is for a platform kind"),
            (("--kind", "legistar", "--client", "oakland", "--url", "https://x.org/"),
             "give --url or --client, not both")]:
        result = cli("site", "add", "somewhere", *args, ok=False)
        assert expected in result.output
        assert len(result.output.strip().splitlines()) == 1, result.output
    cli("site", "add", "oakland", "--kind", "legistar", "--client", "oakland", "--token", "t0k")
    cli("site", "add", "oakland", "--name", "Oakland")  # an update without --token keeps it
    listed = cli("site", "list", "--json").output
    assert "t0k" not in listed
    (site,) = json.loads(listed)
    assert (site["name"], site["source_url"]) == ("Oakland", "https://webapi.legistar.com/v1/oakland")
    with connect(db_url) as conn:
        stored = conn.execute("SELECT source_auth FROM clerk.sites WHERE subdomain = 'oakland'").fetchone()
    assert stored["source_auth"] == "t0k"
