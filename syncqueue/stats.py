"""Queue statistics shared by the dashboard, the JSON API, ``sync_status`` and ``/healthz``."""

from __future__ import annotations

import time
from datetime import datetime, timedelta
from typing import Any

from django.db.models import Count, Min
from django.utils import timezone

from syncqueue.models import SyncJob

State = SyncJob.State


def queue_stats(now: datetime | None = None) -> dict[str, Any]:
    """Waiting (queued), running, retrying (backing off) now; failed and succeeded in the last
    24 h; the age in seconds of the oldest waiting job (None when nothing waits). Each query
    uses its own (partial) index."""
    now = now or timezone.now()
    jobs = SyncJob.objects
    recent = dict(
        jobs.filter(finished_at__gte=now - timedelta(hours=24))
        .values_list("state")
        .annotate(n=Count("id"))
        .values_list("state", "n")
    )
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
