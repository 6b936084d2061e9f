"""The platform sources against servers on 127.0.0.1: CivicPlus AgendaCenter replayed from
real recorded responses, Legistar and PrimeGov built from their documented shapes."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator

import pytest
import requests

from clerk.config import Settings, load_settings
from clerk.network import AddressPolicy, guarded_session
from clerk.sources import SourceError, TransientSourceError, civicplus, legistar, primegov
from clerk.sources.platform import SourceRequest, user_agent
from tests.support.platforms import (
    Answer,
    LegistarClient,
    PlatformServer,
    civicplus_view_files,
    legistar_event,
    replay_search,
    serve_legistar,
    serve_primegov,
    serve_unknown_legistar_client,
)

TODAY = dt.date(2024, 3, 1)


@pytest.fixture
def make_server() -> Iterator[Callable[[], PlatformServer]]:
    made: list[PlatformServer] = []

    def make() -> PlatformServer:
        made.append(PlatformServer())
        return made[-1]
    yield make
    for server in made:
        server.close()


@pytest.fixture
def settings() -> Settings:
    return load_settings(None, {"CLERK_ALLOW_PRIVATE_HOSTS": "127.0.0.1", "CLERK_HTTP_TIMEOUT": "5",
                                "CLERK_CONTACT": "records@example.org"})


@pytest.fixture
def session() -> Iterator[requests.Session]:
    with guarded_session(AddressPolicy.parse("127.0.0.1")) as session:
        yield session


def request_for(url: str, session: requests.Session, settings: Settings, **options: object
                ) -> SourceRequest:
    return SourceRequest(url, session, settings, today=TODAY, **options)  # type: ignore[arg-type]


# ------------------------------------------------------------------ CivicPlus


def test_civicplus_reads_a_recorded_search(make_server: Callable[[], PlatformServer],
                                           session: requests.Session, settings: Settings) -> None:
    server = make_server()
    replay_search(server, "nash-county-nc-search-2020-05.yaml",
                  hosts={"http://nc-nashcounty.civicplus.com": server.base})
    found = civicplus.discover_platform(request_for(server.base + "/", session, settings))
    assert found.meetings == 2
    assert [(d.meeting, d.date, d.kind, d.url.removeprefix(server.base)) for d in found.documents] == [
        ("Board of Commissioners", "2020-05-05", "agenda", "/AgendaCenter/ViewFile/Agenda/_05052020-382"),
        ("Board of Commissioners", "2020-05-05", "minutes", "/AgendaCenter/ViewFile/Minutes/_05052020-382"),
        ("Board of Commissioners", "2020-05-04", "agenda", "/AgendaCenter/ViewFile/Agenda/_05042020-381"),
        ("Board of Commissioners", "2020-05-04", "minutes", "/AgendaCenter/ViewFile/Minutes/_05042020-381"),
    ]
    # the documents it lists are the ones the recording downloaded next
    assert sorted(d.url.removeprefix(server.base) for d in found.documents) == \
        sorted(civicplus_view_files("nash-county-nc-search-2020-05.yaml"))
    (search,) = server.requests_to("/AgendaCenter/Search/")
    assert search.query["CIDs"] == "all"
    assert (search.query["startDate"], search.query["endDate"]) == ("03/02/2023", "04/30/2024")
    assert search.headers["User-Agent"] == user_agent(settings)
    assert "records@example.org" in search.headers["User-Agent"]


def test_civicplus_follows_the_redirect_to_the_citys_own_domain(
        make_server: Callable[[], PlatformServer], session: requests.Session,
        settings: Settings) -> None:
    platform, city = make_server(), make_server()
    recorded = "columbus-wi-search-2020-10.yaml"
    replay_search(city, recorded, hosts={"https://www.cityofcolumbuswi.com": city.base})
    platform.on("/AgendaCenter/Search/", lambda query, headers: Answer(
        302, b"moved", "text/html", {"Location": city.base + "/AgendaCenter/Search/?term=&CIDs=all"}))
    found = civicplus.discover_platform(request_for(platform.base, session, settings))
    assert found.meetings == 7
    assert len(found.documents) == 10
    # resolved against where the search answered: no redirect per document
    assert all(d.url.startswith(city.base + "/AgendaCenter/ViewFile/") for d in found.documents)
    assert {d.meeting for d in found.documents} >= {"Cable Commission", "City Council",
                                                   "Historic Landmarks & Preservation Commission"}


def test_civicplus_no_meetings_is_a_result_and_a_changed_layout_is_an_error(
        make_server: Callable[[], PlatformServer], session: requests.Session,
        settings: Settings) -> None:
    server = make_server()
    replay_search(server, "search-with-no-meetings.yaml",
                  hosts={"https://nm-lascruces.civicplus.com": server.base})
    found = civicplus.discover_platform(request_for(server.base, session, settings))
    assert (found.meetings, found.documents) == (0, [])

    changed = make_server()
    changed.on("/AgendaCenter/Search/", lambda query, headers: Answer(
        200, b"<html><body><div class='agenda-list-v2'>Council, May 5</div></body></html>",
        "text/html"))
    with pytest.raises(SourceError, match="not an AgendaCenter search page"):
        civicplus.discover_platform(request_for(changed.base, session, settings))


def test_civicplus_client_names_and_search_urls() -> None:
    assert civicplus.client_url("nc-nashcounty") == "https://nc-nashcounty.civicplus.com/"
    with pytest.raises(SourceError, match="not a CivicPlus site name"):
        civicplus.client_url("../etc")
    assert civicplus.search_url("https://www.city.gov/AgendaCenter/Council-3") == \
        "https://www.city.gov/AgendaCenter/Search/"
    assert civicplus.search_url("https://www.city.gov/gov/") == "https://www.city.gov/gov/AgendaCenter/Search/"


# ------------------------------------------------------------------ Legistar


def test_legistar_pages_past_the_1000_row_cap(make_server: Callable[[], PlatformServer],
                                              session: requests.Session, settings: Settings) -> None:
    server = make_server()
    events = [legistar_event(i, "City Council", "2024-01-09") for i in range(1, 2501)]
    events[0] = legistar_event(1, "City Council", "2024-01-09", agenda=server.base + "/a1.pdf",
                               minutes=server.base + "/m1.pdf")
    events[1700] = legistar_event(1701, "Planning Commission", "2024-02-13",
                                  agenda=server.base + "/a1701.pdf")
    events[2499] = legistar_event(2500, "Parks Board", "2024-02-20", minutes="ftp://city/m.pdf")
    url = serve_legistar(server, LegistarClient("oakland", events))
    found = legistar.discover_platform(request_for(url, session, settings))
    assert found.meetings == 2500  # events without files are meetings with nothing yet
    assert [(d.meeting, d.date, d.kind) for d in found.documents] == [
        ("City Council", "2024-01-09", "agenda"), ("City Council", "2024-01-09", "minutes"),
        ("Planning Commission", "2024-02-13", "agenda")]
    (refused,) = found.rejected
    assert refused.url == "ftp://city/m.pdf" and "ftp" in refused.reason
    pages = server.requests_to("/v1/oakland/events")
    assert [p.query["$skip"] for p in pages] == ["0", "1000", "2000"]
    assert all(p.query["$orderby"] == "EventId" for p in pages)
    assert pages[0].query["$filter"] == ("EventDate ge datetime'2023-03-02T00:00:00' and "
                                         "EventDate le datetime'2024-04-30T00:00:00'")
    assert pages[0].headers["Accept"] == "application/json"
    assert found.complete


def test_legistar_asks_only_for_what_changed_since_the_last_success(
        make_server: Callable[[], PlatformServer], session: requests.Session,
        settings: Settings) -> None:
    server = make_server()
    url = serve_legistar(server, LegistarClient("oakland", [
        legistar_event(7, "City Council", "2024-02-27", agenda=server.base + "/a7.pdf")]))
    since = dt.datetime(2024, 2, 28, 3, 0, tzinfo=dt.UTC)
    found = legistar.discover_platform(request_for(url, session, settings, since=since))
    assert not found.complete
    (page,) = server.requests_to("/v1/oakland/events")
    moment = "datetime'2024-02-14T03:00:00'"  # less SOURCE_BACK_WINDOW_DAYS (14)
    assert page.query["$filter"] == (f"EventLastModifiedUtc ge {moment} or "
                                     f"EventAgendaLastPublishedUTC ge {moment} or "
                                     f"EventMinutesLastPublishedUTC ge {moment}")
    assert [d.kind for d in found.documents] == ["agenda"]


def test_legistar_xml_replies_read_like_json(make_server: Callable[[], PlatformServer],
                                             session: requests.Session, settings: Settings) -> None:
    server = make_server()
    events = [legistar_event(1, "City Council", "2024-01-09", agenda=server.base + "/a.pdf?x=1&y=2"),
              legistar_event(2, "Budget & Finance", "2024-01-10")]
    as_json = legistar.discover_platform(request_for(
        serve_legistar(server, LegistarClient("json", events)), session, settings))
    as_xml = legistar.discover_platform(request_for(
        serve_legistar(server, LegistarClient("xml", events, xml=True)), session, settings))
    assert as_xml.documents == as_json.documents
    assert as_xml.documents[0].url == server.base + "/a.pdf?x=1&y=2"
    assert as_xml.meetings == as_json.meetings == 2


def test_legistar_token_unknown_client_and_changed_api_are_one_line_errors(
        make_server: Callable[[], PlatformServer], session: requests.Session,
        settings: Settings) -> None:
    server = make_server()
    events = [legistar_event(1, "City Council", "2024-01-09", agenda=server.base + "/a.pdf")]
    url = serve_legistar(server, LegistarClient("secure", events, token="s3cret"))
    with pytest.raises(SourceError, match=r"requires an API token: clerk site add SITE --token") as error:
        legistar.discover_platform(request_for(url, session, settings))
    assert not isinstance(error.value, TransientSourceError)
    with pytest.raises(SourceError, match="the token was refused"):
        legistar.discover_platform(request_for(url, session, settings, token="wrong"))
    found = legistar.discover_platform(request_for(url, session, settings, token="s3cret"))
    assert len(found.documents) == 1
    assert server.requests_to("/v1/secure/events")[-1].query["token"] == "s3cret"

    unknown = serve_unknown_legistar_client(server, "nowhere")
    with pytest.raises(SourceError, match="no such Legistar client") as error:
        legistar.discover_platform(request_for(unknown, session, settings))
    assert not isinstance(error.value, TransientSourceError)  # a 500, but it will not pass

    changed = serve_legistar(server, LegistarClient("changed", events, broken=True))
    with pytest.raises(SourceError, match="has the API changed"):
        legistar.discover_platform(request_for(changed, session, settings))

    server.on("/v1/down/events", lambda query, headers: Answer(503, b"busy", "text/plain"))
    with pytest.raises(TransientSourceError, match="HTTP 503"):
        legistar.discover_platform(request_for(server.base + "/v1/down", session, settings))

    server.on("/v1/html/events", lambda query, headers: Answer(200, b"<!DOCTYPE html><html>sign in</html>",
                                                                 "text/html"))
    with pytest.raises(SourceError, match="expected events, got an HTML page"):
        legistar.discover_platform(request_for(server.base + "/v1/html", session, settings))


def test_legistar_client_names() -> None:
    assert legistar.client_url("oakland") == "https://webapi.legistar.com/v1/oakland"
    for bad in ("../etc", "a'; drop", "", "x" * 80):
        with pytest.raises(SourceError, match="not a Legistar client name"):
            legistar.client_url(bad)


# ------------------------------------------------------------------ PrimeGov


def primegov_meeting(meeting_id: int, title: str, when: str, documents: list[dict[str, object]],
                     *, shape: str = "documentList") -> dict[str, object]:
    if shape == "documentList":
        return {"id": meeting_id, "title": title, "dateTime": when, "documentList": documents}
    templates: dict[str, list[dict[str, object]]] = {}
    for document in documents:
        templates.setdefault(str(document["templateName"]), []).append(
            {"id": document["id"], "compileOutputType": document["compileOutputType"]})
    return {"id": meeting_id, "title": title, "dateTime": when,
            "templates": [{"title": name, "compiledMeetingDocumentFiles": files}
                          for name, files in templates.items()]}


@pytest.mark.parametrize("shape", ["documentList", "templates"])
def test_primegov_reads_archived_and_upcoming_meetings(
        shape: str, make_server: Callable[[], PlatformServer], session: requests.Session,
        settings: Settings) -> None:
    server = make_server()
    council = primegov_meeting(11, "City Council Regular Meeting", "2024-01-09T18:00:00", [
        {"id": 101, "templateName": "Agenda", "compileOutputType": 1},
        {"id": 102, "templateName": "Agenda", "compileOutputType": 3},  # the HTML rendering
        {"id": 103, "templateName": "Minutes", "compileOutputType": 1},
        {"id": 104, "templateName": "Action Summary", "compileOutputType": 1}], shape=shape)
    old = primegov_meeting(9, "City Council", "2022-01-04T18:00:00", [
        {"id": 90, "templateName": "Agenda", "compileOutputType": 1}], shape=shape)
    coming = primegov_meeting(12, "Planning Commission", "2024-03-12T18:00:00", [
        {"id": 121, "templateName": "Agenda Packet", "compileOutputType": 1}], shape=shape)
    url = serve_primegov(server, {2022: [old], 2023: [], 2024: [council]}, [coming, council])
    found = primegov.discover_platform(request_for(url, session, settings))
    assert [(d.meeting, d.date, d.kind, d.url.removeprefix(server.base)) for d in found.documents] == [
        ("City Council Regular Meeting", "2024-01-09", "agenda",
         "/Portal/MeetingPreview?compiledMeetingDocumentFileId=101"),
        ("City Council Regular Meeting", "2024-01-09", "minutes",
         "/Portal/MeetingPreview?compiledMeetingDocumentFileId=103"),
        ("Planning Commission", "2024-03-12", "agenda",
         "/Portal/MeetingPreview?compiledMeetingDocumentFileId=121")]
    assert found.meetings == 2  # 2022 is before SOURCE_HISTORY_DAYS
    assert [r.reason for r in found.rejected] == [
        "template 'Action Summary' is neither an agenda nor minutes"]
    years = [s.query["year"] for s in server.requests_to("/api/v2/PublicPortal/ListArchivedMeetings")]
    assert years == ["2023", "2024"]


def test_primegov_changed_portal_is_an_error(make_server: Callable[[], PlatformServer],
                                             session: requests.Session, settings: Settings) -> None:
    server = make_server()
    url = serve_primegov(server, {2023: [], 2024: [{"meetingId": 1, "name": "Council"}]}, [])
    with pytest.raises(SourceError, match="a meeting without id/dateTime"):
        primegov.discover_platform(request_for(url, session, settings))
    server.on("/api/v2/PublicPortal/ListArchivedMeetings",
              lambda query, headers: Answer(200, b"<html>maintenance</html>", "text/html"))
    with pytest.raises(SourceError, match="expected JSON, got text/html"):
        primegov.discover_platform(request_for(url, session, settings))


def test_a_later_run_searches_from_the_last_success_less_the_back_window(
        make_server: Callable[[], PlatformServer], session: requests.Session,
        settings: Settings) -> None:
    server = make_server()
    replay_search(server, "search-with-no-meetings.yaml",
                  hosts={"https://nm-lascruces.civicplus.com": server.base})
    since = dt.datetime(2024, 2, 28, 3, 0, tzinfo=dt.UTC)
    found = civicplus.discover_platform(request_for(server.base, session, settings, since=since))
    (search,) = server.requests_to("/AgendaCenter/Search/")
    assert (search.query["startDate"], search.query["endDate"]) == ("02/14/2024", "04/30/2024")
    assert not found.complete  # what is older than the window is not listed again
