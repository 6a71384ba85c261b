"""One way to say when, everywhere: "in 16 minutes", "16 minutes ago", "just now", "in a
moment", and a scheduled time already passed is "due — waiting for a worker", never "46
seconds ago"."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest
from django.test import Client
from django.utils import timezone

from integrations.models import Connection
from syncproject.timewords import DUE, next_sync, relative

NOW = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("offset", "words"),
    [
        (timedelta(minutes=16, seconds=10), "in 16 minutes"),
        (-timedelta(minutes=16), "16 minutes ago"),
        (-timedelta(days=2, hours=3), "2 days ago"),
        (timedelta(seconds=2), "in a moment"),  # not "just now": it has not happened yet
        (-timedelta(seconds=3), "just now"),
        (-timedelta(seconds=46), "46 seconds ago"),
        (timedelta(seconds=20), "in 20 seconds"),
    ],
)
def test_relative(offset: timedelta, words: str) -> None:
    assert relative(NOW + offset, now=NOW) == words


def test_next_sync_in_words() -> None:
    conn = SimpleNamespace(enabled=True, next_sync_at=NOW - timedelta(seconds=46))
    assert next_sync(conn, NOW) == DUE == "due — waiting for a worker"
    conn.next_sync_at = NOW + timedelta(minutes=15, seconds=30)
    assert next_sync(conn, NOW) == "in 15 minutes"
    conn.next_sync_at = None
    assert next_sync(conn, NOW) == "not scheduled"
    conn.enabled = False
    assert next_sync(conn, NOW) == "off"


@pytest.mark.django_db
def test_the_settings_page_says_due_not_ago(client: Client, owner, make_connection) -> None:
    conn = make_connection(name="Due one")
    Connection.objects.filter(pk=conn.pk).update(
        next_sync_at=timezone.now() - timedelta(seconds=46),
        last_success_at=timezone.now() - timedelta(minutes=16, seconds=5),
    )
    client.force_login(owner)
    page = client.get("/settings/sync/").content.decode()
    assert "due — waiting for a worker" in page and "46 seconds ago" not in page
    assert "16 minutes ago" in page and "from now" not in page
