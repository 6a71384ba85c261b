"""Claim: the most urgent runnable job, marked running with a lease in one conditional UPDATE
(``FOR UPDATE SKIP LOCKED`` on PostgreSQL); a partial unique index refuses a second running job
of one connection."""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import IntegrityError
from django.db import connection as db
from django.db.models import Exists, OuterRef, QuerySet
from django.utils import timezone

from integrations.models import Connection
from syncqueue import identity
from syncqueue.engine.rows import columns, fetch_one, from_row
from syncqueue.models import SyncJob
from workspace.models import Organization

log = logging.getLogger("syncqueue.engine")

State = SyncJob.State
Kind = SyncJob.Kind
Priority = SyncJob.Priority


CLAIM_ROUNDS = 50


def worker_id() -> str:
    """Identity of this process in leases and heartbeats (``syncqueue.identity``)."""
    return identity.process()


def runnable_jobs(now: datetime) -> QuerySet[SyncJob]:
    """Queued jobs that may start now: due, and their connection has nothing running.

    Only ``queued`` is claimable: a ``retrying`` job is backing off and is moved back to
    ``queued`` when its time comes (``requeue_due_retries``). Keeping the claim condition a single
    equality lets SQLite walk the partial index in claim order instead of sorting every waiting
    job on each claim.
    """
    running = SyncJob.objects.filter(connection_id=OuterRef("connection_id"), state=State.RUNNING)
    return SyncJob.objects.filter(state=State.QUEUED, run_after__lte=now).exclude(Exists(running))


def requeue_due_retries(now: datetime) -> int:
    """Move retrying jobs whose backoff is over back into the queue (tickets come separately)."""
    return SyncJob.objects.filter(state=State.RETRYING, run_after__lte=now).update(
        state=State.QUEUED, updated_at=now
    )


@functools.cache
def _claim_sql(vendor: str) -> str:
    """One statement that picks the most urgent runnable job and marks it running.

    Written as SQL because it is the hottest statement of the engine (the ORM version took three
    round trips and ten times the CPU) and because PostgreSQL's ``SKIP LOCKED`` lets racing
    clusters pass over each other's rows. The state literals match the partial indexes, so
    SQLite walks ``syncjob_claim_idx`` in claim order.
    """
    table = SyncJob._meta.db_table
    skip_locked = " FOR UPDATE SKIP LOCKED" if vendor == "postgresql" else ""
    # The only interpolations are the model's table name and a fixed clause: no input.
    claim = f"""
        UPDATE {table}
           SET state = 'running', worker_id = %s, leased_until = %s,
               started_at = COALESCE(started_at, %s), slices = slices + 1, updated_at = %s
         WHERE state = 'queued' AND id = (
               SELECT c.id FROM {table} c
                WHERE c.state = 'queued' AND c.run_after <= %s
                  AND NOT EXISTS (SELECT 1 FROM {table} r
                                   WHERE r.connection_id = c.connection_id
                                     AND r.state = 'running')
                ORDER BY c.priority DESC, c.run_after, c.id
                LIMIT 1{skip_locked})
     RETURNING id"""  # noqa: S608
    if vendor != "postgresql":
        return claim
    # PostgreSQL: the claimed row comes back with its connection and organization in the same
    # statement (a SELECT after the claim was a round trip and most of a no-op job's ORM CPU).
    # The connection and organization rows are not changed by the claim, so reading them next
    # to it is exact; the job's columns are the ones RETURNING gives, after the update.
    conn_table, org_table = Connection._meta.db_table, Organization._meta.db_table
    selected = ", ".join(
        columns(model, alias)
        for alias, model in (("j", SyncJob), ("c", Connection), ("o", Organization))
    )
    return f"""
        WITH j AS ({claim.replace("RETURNING id", "RETURNING *")})
        SELECT {selected} FROM j
          JOIN {conn_table} c ON c.id = j.connection_id
          LEFT JOIN {org_table} o ON o.id = c.organization_id"""  # noqa: S608


def _claimed(row: Sequence[Any]) -> SyncJob:
    """The claimed job with its connection and organization, from one row of the claim."""
    n_job, n_conn = len(SyncJob._meta.concrete_fields), len(Connection._meta.concrete_fields)
    job = from_row(SyncJob, row[:n_job], "j")
    conn = from_row(Connection, row[n_job : n_job + n_conn], "c")
    if conn.organization_id is not None:
        conn.organization = from_row(Organization, row[n_job + n_conn :], "o")
    else:
        conn.organization = None
    job.connection = conn
    return job


def _anything_queued(now: datetime) -> bool:
    """Cheap, lock-free pre-check: is any job queued and due at all?"""
    table = SyncJob._meta.db_table
    with db.cursor() as cursor:
        cursor.execute(
            f"SELECT 1 FROM {table} WHERE state = 'queued' AND run_after <= %s LIMIT 1",  # noqa: S608
            [db.ops.adapt_datetimefield_value(now)],
        )
        return cursor.fetchone() is not None


def claim_next(
    worker: str | None = None, *, peek: bool = True, settle: bool = True
) -> SyncJob | None:
    """Claim the most urgent runnable job; None if there is none.

    The claim is a conditional UPDATE: if another worker took the chosen row first it changes
    nothing, and if another job of the same connection started a moment ago the partial unique
    index refuses it. Either way this worker looks again, so it never returns "nothing" while
    a job it could run is queued. ``settle=False`` (a ticket looking for more work after its
    own job, while every other job still has a ticket of its own): on PostgreSQL an empty claim
    is taken as the answer, without the read that tells a row another transaction held locked
    from an empty queue.
    """
    worker = worker or worker_id()
    sql = _claim_sql(db.vendor)
    for _ in range(CLAIM_ROUNDS):
        now = timezone.now()
        # SQLite: the common case for surplus tickets is answered by a read, without the single
        # write lock. PostgreSQL's claim skips locked rows and blocks nobody: no pre-check.
        if peek and db.vendor == "sqlite" and not _anything_queued(now):
            return None
        stamp = db.ops.adapt_datetimefield_value(now)
        lease = db.ops.adapt_datetimefield_value(
            now + timedelta(seconds=settings.SYNC_LEASE_SECONDS)
        )
        try:
            # One statement is atomic on its own; no BEGIN/COMMIT round trips needed.
            row = fetch_one(sql, [worker, lease, stamp, stamp, stamp])
        except IntegrityError:
            continue  # another job of the same connection started a moment ago
        if row is not None and len(row) > 1:
            return _claimed(row)
        if row is not None:
            return SyncJob.objects.select_related("connection", "connection__organization").get(
                pk=row[0]
            )
        # Nothing claimed. SQLite runs writers one at a time, so nothing was runnable. On
        # PostgreSQL a racing cluster may have taken the chosen row first: look again if so.
        if db.vendor == "sqlite" or not settle or not runnable_jobs(now).exists():
            return None
    return None
