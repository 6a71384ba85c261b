"""Queue statistics shared by the dashboard, the JSON API, ``sync_status`` and ``/healthz``."""

from __future__ import annotations

import time
from datetime import datetime, timedelta
from typing import Any

from django.core.cache import cache
from django.db.models import Count, Min
from django.utils import timezone

from syncqueue.models import SyncJob

State = SyncJob.State


OUTCOMES_KEY = "syncqueue:outcomes-24h"
#: below this the 24-hour count is simply recomputed (a small installation sees exact numbers)
CHEAP_SECONDS = 0.05
#: a count that costs more is served from the last one, refreshed by every dispatcher pass
OUTCOMES_MAX_AGE = 300


def outcomes_24h(now: datetime | None = None, *, refresh: bool = False) -> dict[str, int]:
    """Jobs finished in the last 24 hours by state.

    Counting them scans a day of history (about a second at 100,000 connections), so it must
    not run on every /healthz, dashboard view or "Sync now": once the count is expensive, pages
    get the last one (at most a dispatcher pass old; ``refresh`` recomputes it, as the
    dispatcher does each pass). While it is cheap it is recomputed every time."""
    cached = cache.get(OUTCOMES_KEY)
    if (
        not refresh
        and cached is not None
        and cached["cost"] >= CHEAP_SECONDS
        and time.time() - cached["at"] < OUTCOMES_MAX_AGE
    ):
        return dict(cached["counts"])
    now = now or timezone.now()
    started = time.perf_counter()
    counts = dict(
        SyncJob.objects.filter(finished_at__gte=now - timedelta(hours=24))
        .values_list("state")
        .annotate(n=Count("id"))
        .values_list("state", "n")
    )
    cost = time.perf_counter() - started
    cache.set(OUTCOMES_KEY, {"counts": counts, "cost": cost, "at": time.time()}, OUTCOMES_MAX_AGE)
    return counts


def refresh_if_expensive() -> None:
    """The dispatcher's part: keep an expensive 24-hour count fresh for the pages."""
    cached = cache.get(OUTCOMES_KEY)
    if cached is not None and cached["cost"] >= CHEAP_SECONDS:
        outcomes_24h(refresh=True)


def queue_stats(now: datetime | None = None) -> dict[str, Any]:
    """Waiting (queued), running, retrying (backing off) now; failed and succeeded in the last
    24 h; the age in seconds of the oldest waiting job (None when nothing waits). The live
    counts use partial indexes (their cost follows the queue, not the history); the 24-hour
    outcomes come from ``outcomes_24h``."""
    now = now or timezone.now()
    jobs = SyncJob.objects
    recent = outcomes_24h(now)
    oldest = jobs.filter(state=State.QUEUED).aggregate(oldest=Min("run_after"))["oldest"]
    return {
        "waiting": jobs.filter(state=State.QUEUED).count(),
        "running": jobs.filter(state=State.RUNNING).count(),
        "retrying": jobs.filter(state=State.RETRYING).count(),
        "failed": recent.get(State.FAILED, 0),
        "succeeded": recent.get(State.SUCCEEDED, 0),
        "oldest_waiting_seconds": (
            round(max(0.0, (now - oldest).total_seconds()), 1) if oldest else None
        ),
    }


_recent: tuple[float, dict[str, Any]] | None = None


def recent_queue_stats(max_age: float = 1.0) -> dict[str, Any]:
    """``queue_stats()`` at most ``max_age`` seconds old (per process). For answers that only
    give context, like the queue numbers in a "Sync now" response: under a burst of clicks it
    saves five queries per request; the dashboard and /healthz use fresh numbers."""
    global _recent
    now = time.monotonic()
    if _recent is None or now - _recent[0] > max_age:
        _recent = (now, queue_stats())
    return _recent[1]
