"""Per-person limits on actions that cost the server or reach other systems: "Sync now", a
connection test, creating a task, asking for an address confirmation mail.

Counting is django-ratelimit's (fixed windows per person, in the shared cache: the database
cache by default, so every web process and host counts together). A connection test also runs
at most once at a time per person (``one_at_a_time``), so nobody can tie up the web workers with
slow tests in parallel. Rates come from the environment (``SYNC_RATE_*``).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.core.cache import cache
from django.http import HttpRequest
from django_ratelimit.core import get_usage

WHAT = {
    "sync_now": "sync requests",
    "connection_test": "connection tests",
    "task_create": "new tasks",
    "address_confirmation": "confirmation mails",
    "password_reset": "password reset mails for this address",
}


@dataclass(frozen=True)
class Limited:
    """The person is over a limit: how long until they may try again, in plain words too."""

    retry_after: int
    message: str


def _rate(action: str) -> str:
    return str(settings.SYNC_RATE_LIMITS[action])


def _seconds(seconds: int) -> str:
    return f"{seconds} second{'s' if seconds != 1 else ''}"


def hit(request: HttpRequest, action: str, key: str | None = None) -> Limited | None:
    """Count one ``action`` by this person (or, given ``key``, for that key: a password reset
    counts per address); a ``Limited`` when they are over its rate."""
    usage = get_usage(
        request,
        group=f"sync.{action}",
        key="user_or_ip" if key is None else (lambda group, request: key),
        rate=_rate(action),
        increment=True,
    )
    if usage is None or not usage["should_limit"]:
        return None
    wait = max(1, int(usage["time_left"]))
    return Limited(
        wait,
        f"Too many {WHAT.get(action, 'requests')} in a short time: try again in {_seconds(wait)}.",
    )


class Busy(Exception):
    """The person already has one of these running."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@contextmanager
def one_at_a_time(request: HttpRequest, action: str, longest: float) -> Iterator[None]:
    """Run the block only if this person has no other ``action`` running (across processes).
    The marker expires after ``longest`` seconds in case a process dies holding it."""
    who: Any = request.user.pk if request.user.is_authenticated else request.META["REMOTE_ADDR"]
    key = f"sync.running.{action}.{who}"
    if not cache.add(key, 1, timeout=max(1, int(longest) + 1)):
        raise Busy(
            f"One of your {WHAT.get(action, 'requests')} is still running: wait for its result."
        )
    try:
        yield
    finally:
        cache.delete(key)
