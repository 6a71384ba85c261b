"""Queue statistics shared by the dashboard, the JSON API, ``sync_status`` and ``/healthz``."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from django.db.models import Count, Min
from django.utils import timezone

from syncqueue.models import SyncJob

State = SyncJob.State


def queue_stats(now: datetime | None = None) -> dict[str, Any]:
    """Waiting, running, retrying now; failed and succeeded in the last 24 h; the age in seconds
    of the oldest waiting job (None when nothing waits). Three indexed queries."""
    now = now or timezone.now()
    active = dict(
        SyncJob.objects.filter(state__in=SyncJob.ACTIVE)
        .values_list("state")
        .annotate(n=Count("id"))
        .values_list("state", "n")
    )
    recent = dict(
        SyncJob.objects.filter(
            state__in=[State.SUCCEEDED, State.FAILED], finished_at__gte=now - timedelta(hours=24)
        )
        .values_list("state")
        .annotate(n=Count("id"))
        .values_list("state", "n")
    )
    oldest = SyncJob.objects.filter(state=State.QUEUED, run_after__lte=now).aggregate(
        oldest=Min("run_after")
    )["oldest"]
    return {
        "waiting": active.get(State.QUEUED, 0),
        "running": active.get(State.RUNNING, 0),
        "retrying": active.get(State.RETRYING, 0),
        "failed": recent.get(State.FAILED, 0),
        "succeeded": recent.get(State.SUCCEEDED, 0),
        "oldest_waiting_seconds": round((now - oldest).total_seconds(), 1) if oldest else None,
    }
