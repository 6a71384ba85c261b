"""History retention: keep the newest ``SYNC_KEEP_JOBS`` finished jobs per connection always;
beyond those, succeeded and cancelled jobs go after ``SYNC_KEEP_SUCCEEDED_DAYS`` and failed jobs
after ``SYNC_KEEP_FAILED_DAYS`` (failures are kept longer: they are what people investigate).
django-q2's own Success/Failure rows are pruned on the same clock. Logs go with their jobs."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django_q.models import Failure, Success

from syncqueue.models import SyncJob

State = SyncJob.State
CHUNK = 500


def expired_job_ids(now: datetime) -> list[int]:
    """Finished jobs past their time that are not among their connection's newest
    ``SYNC_KEEP_JOBS`` finished jobs. The rank is over *all* finished jobs of a connection and
    the time test comes after it (filtering first would keep the newest old jobs as well)."""
    table = connection.ops.quote_name(SyncJob._meta.db_table)
    finished = list(SyncJob.FINISHED)
    sql = f"""
        SELECT id FROM (
            SELECT id, state, finished_at,
                   ROW_NUMBER() OVER (PARTITION BY connection_id ORDER BY id DESC) AS newest
            FROM {table}
            WHERE state IN ({", ".join(["%s"] * len(finished))})
        ) ranked
        WHERE newest > %s
          AND ((state IN (%s, %s) AND finished_at < %s) OR (state = %s AND finished_at < %s))
        ORDER BY id
    """  # noqa: S608 - the table name is ours, every value is a parameter
    params: list[Any] = [
        *finished,
        settings.SYNC_KEEP_JOBS,
        State.SUCCEEDED,
        State.CANCELLED,
        now - timedelta(days=settings.SYNC_KEEP_SUCCEEDED_DAYS),
        State.FAILED,
        now - timedelta(days=settings.SYNC_KEEP_FAILED_DAYS),
    ]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return [row[0] for row in cursor.fetchall()]


def prune(now: datetime) -> dict[str, int]:
    """Delete expired history in chunks of ``CHUNK`` jobs, each in its own short transaction
    (a claim never waits long behind it); returns how many rows of each kind went."""
    succeeded_cutoff = now - timedelta(days=settings.SYNC_KEEP_SUCCEEDED_DAYS)
    failed_cutoff = now - timedelta(days=settings.SYNC_KEEP_FAILED_DAYS)
    ids = expired_job_ids(now)
    jobs = 0
    for start in range(0, len(ids), CHUNK):
        with transaction.atomic():  # logs go with their jobs; skipped items forget the job
            deleted = SyncJob.objects.filter(id__in=ids[start : start + CHUNK]).delete()[1]
            jobs += deleted.get("syncqueue.SyncJob", 0)
    return {
        "jobs": jobs,
        "q_successes": Success.objects.filter(stopped__lt=succeeded_cutoff).delete()[0],
        "q_failures": Failure.objects.filter(stopped__lt=failed_cutoff).delete()[0],
    }
