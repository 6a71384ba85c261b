"""Queue statistics shared by the dashboard, the JSON API, ``sync_status`` and ``/healthz``."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, TypeVar, cast

from django.conf import settings
from django.core.cache import cache
from django.db.models import Count, Min
from django.utils import timezone

from syncqueue.models import SyncJob

State = SyncJob.State
T = TypeVar("T")


#: Below ``SYNC_LIVE_FIGURE_MS`` a figure over history is simply recomputed (a small
#: installation sees exact numbers at once). The dashboard shows five such figures and must
#: answer within 50 ms at 100,000 connections, so each may take a few milliseconds at most: at
#: 100,000 connections with 200,000 jobs of history, counted live they took 90 ms of SQL per
#: view (each under the 50 ms it was allowed until then). A figure that costs more is served
#: from the last one, refreshed by every dispatcher pass.
ROLLUP_MAX_AGE = 300
ROLLUPS: dict[str, Callable[[], Any]] = {}
#: figures with their own threshold (seconds) instead of ``SYNC_LIVE_FIGURE_MS``
CHEAP: dict[str, float] = {}
#: the dispatcher refreshes a figure once it is this many times its cost old, so that keeping
#: figures fresh takes at most a tenth of the database's time (a 2 s count over 10M jobs: every
#: 20 s at most; a 50 ms one: every pass)
REFRESH_AFTER_COSTS = 10.0


def _key(name: str) -> str:
    return f"syncqueue:rollup:{name}"


def rollup(name: str, compute: Callable[[], T], *, refresh: bool = False) -> T:
    """``compute()`` (a figure over history: a day of outcomes, a week of failures) — or, once
    computing it is expensive (about a second at 100,000 connections), its last value, at most
    a dispatcher pass old: /healthz, the dashboard and "Sync now" must not scan history on
    every request. ``refresh`` recomputes, as the dispatcher does each pass
    (``refresh_if_expensive``)."""
    cached = cache.get(_key(name))
    if (
        not refresh
        and cached is not None
        and _expensive(name, cached)
        and time.time() - cached["at"] < ROLLUP_MAX_AGE
    ):
        return cast(T, cached["value"])
    started = time.perf_counter()
    value = compute()
    cost = time.perf_counter() - started
    entry = {
        "value": value,
        "cost": cost,
        "prior": cached["cost"] if cached is not None else 0.0,
        "at": time.time(),
    }
    cache.set(_key(name), entry, ROLLUP_MAX_AGE)
    return value


def recount(*names: str) -> None:
    """Count again now the figures a change has made wrong (a retried failure group) that
    are served from a last count; the caller's request pays for it, once, and the figure
    keeps being served from the dispatcher's refresh afterwards."""
    for name in names:
        if cache.get(_key(name)) is not None:
            rollup(name, ROLLUPS[name], refresh=True)


def _expensive(name: str, cached: dict[str, Any]) -> bool:
    """Whether the figure's last two computations both cost at least its threshold. One slow
    count alone (a busy moment: a start-up, a backup) does not make a cheap figure stale for
    a dispatcher pass; a history that is really large is slow twice running, and from then on
    served from the dispatcher's refresh."""
    cost = min(cached["cost"], cached.get("prior", 0.0))
    return cost >= CHEAP.get(name, settings.SYNC_LIVE_FIGURE_MS / 1000)


def rollup_of(
    name: str, *, cheap: float | None = None
) -> Callable[[Callable[[], T]], Callable[[], T]]:
    """Register a figure's computation at import, so every dispatcher process knows it and
    can keep it fresh (``refresh_if_expensive``), whether or not it ever served a page.
    ``cheap``: this figure's own threshold (seconds) instead of ``SYNC_LIVE_FIGURE_MS``."""

    def register(compute: Callable[[], T]) -> Callable[[], T]:
        ROLLUPS[name] = compute
        if cheap is not None:
            CHEAP[name] = cheap
        return compute

    return register


def refresh_if_expensive() -> None:
    """The dispatcher's part: keep the expensive figures fresh for the pages."""
    for name, compute in list(ROLLUPS.items()):
        cached = cache.get(_key(name))
        if (
            cached is not None
            and _expensive(name, cached)
            # and before readers would find it too old and count it themselves
            and time.time() - cached["at"]
            >= min(REFRESH_AFTER_COSTS * cached["cost"], ROLLUP_MAX_AGE / 2)
        ):
            rollup(name, compute, refresh=True)


def outcomes_24h() -> dict[str, int]:
    """Jobs finished in the last 24 hours by state (a ``rollup``)."""
    return rollup("outcomes-24h", _count_outcomes_24h)


@rollup_of("outcomes-24h")
def _count_outcomes_24h() -> dict[str, int]:
    return dict(
        SyncJob.objects.filter(finished_at__gte=timezone.now() - timedelta(hours=24))
        .values_list("state")
        .annotate(n=Count("id"))
        .values_list("state", "n")
    )


def queue_stats(now: datetime | None = None) -> dict[str, Any]:
    """Waiting (queued), running, retrying (backing off) now; failed and succeeded in the last
    24 h; the age in seconds of the oldest waiting job (None when nothing waits). The live
    counts use partial indexes (their cost follows the queue, not the history); the 24-hour
    outcomes come from ``outcomes_24h``."""
    now = now or timezone.now()
    jobs = SyncJob.objects
    recent = outcomes_24h()
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
