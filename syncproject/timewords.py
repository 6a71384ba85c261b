"""One way to say when: "in 16 minutes", "16 minutes ago", "just now" — on every page, in the
admin and in the settings page's script (portal/static/portal/settings.js says the same)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.utils import timezone
from django.utils.timesince import timesince, timeuntil

JUST_NOW_SECONDS = 5
DUE = "due — waiting for a worker"


def relative(moment: datetime | None, empty: str = "never", now: datetime | None = None) -> str:
    if moment is None:
        return empty
    now = now or timezone.now()
    seconds = (moment - now).total_seconds()
    if abs(seconds) < JUST_NOW_SECONDS:
        return "just now" if seconds <= 0 else "in a moment"
    if abs(seconds) < 60:  # Django's timesince says "0 minutes" here
        count = int(abs(seconds))
        return f"{count} seconds ago" if seconds < 0 else f"in {count} seconds"
    if seconds < 0:
        return f"{_largest_unit(timesince(moment, now))} ago"
    return f"in {_largest_unit(timeuntil(moment, now))}"


def next_sync(conn: Any, now: datetime | None = None) -> str:
    """When a connection syncs next, in words; a time already passed is "due", not "ago"."""
    if not conn.enabled:
        return "off"
    if conn.next_sync_at is None:
        return "not scheduled"
    if conn.next_sync_at <= (now or timezone.now()):
        return DUE
    return relative(conn.next_sync_at, now=now)


def _largest_unit(text: str) -> str:
    return text.split(",")[0].replace("\xa0", " ")
