"""The fifth provider: the connector contract against the local feed server, and its reader."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.calfeed.ical import content_lines, read_event, split_line, unescape, vevents
from tests.calfeed.models import FeedEvent
from tests.calfeed.server import USERNAME, FakeFeed
from tests.support.contract import ConnectorContract, Provider
from tests.support.servers import serving


@pytest.fixture
def feed(test_ca: Any, settings: Any) -> Iterator[FakeFeed]:
    with serving(FakeFeed(test_ca), settings) as server:
        yield server


@pytest.fixture
def provider(feed: FakeFeed, test_ca: Any, make_connection: Any) -> Provider:
    def connect() -> Any:
        return make_connection(
            kind="calfeed",
            name="Team calendar",
            config={"url": feed.feed_url, "username": USERNAME, "batch_size": 20},
            secrets={"password": feed.password},
        )

    def break_credentials(conn: Any) -> None:
        feed.password = "changed-on-the-server"

    return Provider(
        connect=connect,
        seed=feed.add_events,
        stored=lambda conn: list(
            FeedEvent.objects.filter(connection=conn, deleted=False).values_list("uid", flat=True)
        ),
        break_credentials=break_credentials,
        forget_position=feed.forget_position,
        throttle=feed.throttle,
        disorder=feed.disorder,
        slow=lambda seconds: feed.slow(seconds * 2),  # per piece of five events
        cluster_env={"SYNC_CA_BUNDLE": test_ca.ca_file},
        kill_items=600,
    )


@pytest.mark.django_db(transaction=True)
class TestCalFeedContract(ConnectorContract):
    pass


def test_folded_lines_quoted_colons_and_escapes() -> None:
    lines = ["BEGIN:VEVENT", "SUMMARY:Board", " meeting", 'ATTENDEE;CN="A: B":mailto:a@b.test']
    assert list(content_lines(lines)) == [
        "BEGIN:VEVENT",
        "SUMMARY:Boardmeeting",
        'ATTENDEE;CN="A: B":mailto:a@b.test',
    ]
    assert split_line('ATTENDEE;CN="A: B":mailto:a@b.test') == ("ATTENDEE", "mailto:a@b.test")
    assert unescape(r"a\, b\; c\nd\\") == "a, b; c\nd\\"


def test_nested_components_do_not_leak_into_the_event() -> None:
    text = [
        "BEGIN:VCALENDAR",
        "BEGIN:VEVENT",
        "UID:1",
        "BEGIN:VALARM",
        "SUMMARY:alarm",
        "END:VALARM",
        "SUMMARY:event",
        "END:VEVENT",
        "BEGIN:VEVENT",
        "SUMMARY:no uid",
        "END:VEVENT",
        "END:VCALENDAR",
    ]
    found = list(vevents(text))
    assert found == [{"UID": "1", "SUMMARY": "event"}, {"SUMMARY": "no uid"}]
    assert read_event(found[0]).summary == "event"
    with pytest.raises(ValueError, match="without a UID"):
        read_event(found[1])


@pytest.mark.django_db
def test_an_event_without_uid_is_a_skipped_item_and_removed_events_are_retired(
    provider: Provider, feed: FakeFeed, work: Any
) -> None:
    from tests.support.jobs import sync_once

    feed.add_events(5)
    conn = provider.connect()
    assert sync_once(conn, work).state == "succeeded"
    del feed.events["event-0@feed.test"]
    feed.without_uid.add("event-1@feed.test")
    job = sync_once(conn, work)
    assert job.state == "succeeded", (job.error_class, job.error_message)
    assert job.skipped_items == 1
    live = set(provider.stored(conn))
    # event-1 could not be read this time: it is not in the pass's UIDs, so it is retired too
    assert live == {f"event-{i}@feed.test" for i in (2, 3, 4)}
    assert FeedEvent.objects.filter(connection=conn, deleted=True).count() == 2


@pytest.mark.django_db
def test_an_answer_that_is_not_a_whole_calendar_removes_nothing(
    provider: Provider, feed: FakeFeed, work: Any
) -> None:
    from tests.support.jobs import sync_once

    feed.add_events(3)
    conn = provider.connect()
    assert sync_once(conn, work).state == "succeeded"
    feed.add_events(1)  # a new version, then the server answers with a sign-in page
    feed.fault(r"\.ics", 200, body="<html>Please sign in</html>", times=5)
    job = sync_once(conn, work)
    assert job.error_class == "Transient" and "not a whole iCalendar document" in job.error_message
    assert len(provider.stored(conn)) == 3  # nothing was retired
