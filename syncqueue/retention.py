"""History retention: keep the newest ``SYNC_KEEP_JOBS`` finished jobs per connection always;
beyond those, succeeded and cancelled jobs go after ``SYNC_KEEP_SUCCEEDED_DAYS`` and failed jobs
after ``SYNC_KEEP_FAILED_DAYS`` (failures are kept longer: they are what people investigate).
django-q2's own Success/Failure rows are pruned on the same clock. Logs go with their jobs."""

from __future__ import annotations

from datetime import datetime, timedelta

from django.conf import settings
from django.db.models import F, Q, Window
from django.db.models.functions import RowNumber
from django_q.models import Failure, Success

from syncqueue.models import SyncJob

State = SyncJob.State
CHUNK = 500


def prune(now: datetime) -> dict[str, int]:
    """Delete expired history; returns how many rows of each kind went."""
    succeeded_cutoff = now - timedelta(days=settings.SYNC_KEEP_SUCCEEDED_DAYS)
    failed_cutoff = now - timedelta(days=settings.SYNC_KEEP_FAILED_DAYS)
    ranked = SyncJob.objects.filter(state__in=SyncJob.FINISHED).annotate(
        rank=Window(RowNumber(), partition_by=[F("connection_id")], order_by=F("id").desc())
    )
    expired = ranked.filter(rank__gt=settings.SYNC_KEEP_JOBS).filter(
        Q(state__in=[State.SUCCEEDED, State.CANCELLED], finished_at__lt=succeeded_cutoff)
        | Q(state=State.FAILED, finished_at__lt=failed_cutoff)
    )
    ids = list(expired.values_list("id", flat=True))
    jobs = 0
    for start in range(0, len(ids), CHUNK):
        jobs += (
            SyncJob.objects.filter(id__in=ids[start : start + CHUNK])
            .delete()[1]
            .get("syncqueue.SyncJob", 0)
        )
    return {
        "jobs": jobs,
        "q_successes": Success.objects.filter(stopped__lt=succeeded_cutoff).delete()[0],
        "q_failures": Failure.objects.filter(stopped__lt=failed_cutoff).delete()[0],
    }
