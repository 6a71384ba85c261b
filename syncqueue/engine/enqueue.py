"""Enqueue: a ``SyncJob`` and, in the same transaction, its ticket (a django-q2 task carrying
only the job id). A second request for the same work returns the waiting job, raising its
priority if needed."""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from contextlib import nullcontext
from datetime import datetime
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db import connection as db
from django.db.models import Field
from django.utils import timezone
from django_q.conf import Conf
from django_q.models import OrmQ
from django_q.tasks import async_task

from integrations.errors import (
    Permanent,
)
from integrations.models import Connection
from syncqueue import broker
from syncqueue.engine.rows import columns, fetch_one, from_row
from syncqueue.models import SyncJob

log = logging.getLogger("syncqueue.engine")

State = SyncJob.State
Kind = SyncJob.Kind
Priority = SyncJob.Priority


TICKET_FUNC = "syncqueue.entrypoints.run_sync_job"


# Stream kinds share one waiting job per connection: they all mean "bring the mirror up to date".
STREAM_KEY = "sync"


_DEFAULT_PRIORITY = {
    Kind.INITIAL: Priority.SCHEDULED,
    Kind.INCREMENTAL: Priority.SCHEDULED,
    Kind.MANUAL: Priority.MANUAL,
    Kind.FULL_RESYNC: Priority.MANUAL,
    Kind.PUSH: Priority.PUSH,
    Kind.HISTORICAL: Priority.BACKGROUND,
    Kind.NOTIFIED: Priority.PUSH,  # the server told us something changed: sooner than a poll
}


class ConnectionDisabled(Permanent):
    """Work was requested for a connection that is turned off."""


def default_dedupe_key(kind: str) -> str:
    if kind in (Kind.INITIAL, Kind.INCREMENTAL, Kind.MANUAL, Kind.NOTIFIED):
        return STREAM_KEY
    return kind


def submit_ticket(job_id: int | None) -> None:
    """Write a django-q2 task that makes a worker claim work. Carries an id, never a secret.

    With the ORM broker the ticket commits with the caller's transaction; another broker gets
    it once that transaction has committed (``syncqueue.broker``)."""

    def send() -> None:
        async_task(TICKET_FUNC, job_id, task_name=f"sync-job-{job_id or 'any'}", group="sync")

    if broker.tickets_commit_with_jobs():
        send()
    else:
        transaction.on_commit(send)


def submit_tickets(job_ids: Sequence[int | None]) -> None:
    """Tickets for many jobs at once (a dispatcher batch): with the ORM broker, one INSERT for
    all of them, each signed exactly as ``async_task`` signs it and committed with the caller's
    transaction; other brokers (and django-q2's sync mode) get them one by one."""
    if Conf.SYNC or not broker.tickets_commit_with_jobs():
        for job_id in job_ids:
            submit_ticket(job_id)
        return
    now = timezone.now()
    OrmQ.objects.using(Conf.ORM).bulk_create(
        [
            OrmQ(
                key=Conf.CLUSTER_NAME,
                payload=_ticket_package(job_id, f"sync-job-{job_id or 'any'}"),
                lock=now,
            )
            for job_id in job_ids
        ],
        batch_size=500,
    )


def enqueue(
    connection: Connection,
    kind: str,
    *,
    priority: int | None = None,
    payload: dict[str, Any] | None = None,
    dedupe_key: str | None = None,
    requested_by: Any = None,
    coalesce_running: bool | None = None,
) -> SyncJob:
    """Queue work for ``connection`` and return its job; returns in milliseconds.

    A waiting job with the same ``dedupe_key`` (stream syncs share one) is returned instead of a
    new one — a second "Sync now" gets the same job — and is promoted to the higher priority.
    Stream, resync and history jobs also coalesce with a *running* job (it will see the new
    data); push jobs do not, because the running push may carry an older state, nor do change
    notifications, which may be about a change the running sync has already passed.

    Raises ``ConnectionDisabled`` for a disabled connection.
    """
    kind = Kind(kind)
    if not connection.enabled:
        raise ConnectionDisabled(
            f"{connection.name} is turned off"
            + (f": {connection.disabled_reason}" if connection.disabled_reason else ".")
        )
    if payload and not all(isinstance(v, int | str | bool | None) for v in payload.values()):
        raise ValueError("Job payloads hold ids and flags only, never objects or credentials.")
    priority = _DEFAULT_PRIORITY[kind] if priority is None else priority
    key = dedupe_key or default_dedupe_key(kind)
    if coalesce_running is None:
        # a notification may be about a change the running sync has already passed
        coalesce_running = kind not in (Kind.PUSH, Kind.NOTIFIED)
    now = timezone.now()
    states = SyncJob.ACTIVE if coalesce_running else SyncJob.WAITING
    job = SyncJob(
        connection=connection,
        kind=kind,
        dedupe_key=key,
        priority=priority,
        payload=payload or {},
        requested_by=requested_by if getattr(requested_by, "pk", None) else None,
        run_after=now,
        max_attempts=settings.SYNC_MAX_ATTEMPTS,
    )
    # PostgreSQL: one statement finds the waiting job or inserts this one with its ticket.
    # SQLite: the common repeated click (the job already waits and needs no promotion) is
    # answered from a plain read, without taking the single write lock.
    if db.vendor == "postgresql" and not Conf.SYNC:
        made, found = _insert_or_find(job, states)
        if made is not None:
            if not broker.tickets_commit_with_jobs():
                submit_ticket(made.pk)
            return made
        if found is not None and not _promotion(found, kind, priority, now):
            return found
        # A promotion, or another enqueue inserted the same job a moment ago: the locked path.
    # (built only here: the one-statement path above is most enqueues on PostgreSQL)
    waiting = SyncJob.objects.filter(
        connection=connection, dedupe_key=key, state__in=states
    ).order_by("id")
    if db.vendor == "sqlite":
        existing = waiting.first()
        if existing is not None and not _promotion(existing, kind, priority, now):
            return existing
    with transaction.atomic():
        # Serialise enqueues per connection so two clicks cannot both create a job. SQLite has
        # no row locks; its IMMEDIATE transactions already serialise writers.
        if db.features.has_select_for_update:
            list(Connection.objects.select_for_update().filter(pk=connection.pk).values_list("pk"))
        existing = waiting.first()
        if existing is not None:
            return _promote(existing, kind, priority, now)
        # PostgreSQL: a savepoint, since the one-statement path takes no lock. SQLite has only
        # this path, serialised by its IMMEDIATE transactions: nothing can race it there.
        savepoint = transaction.atomic() if db.vendor == "postgresql" else nullcontext()
        try:
            with savepoint:
                job.save(force_insert=True)
        except IntegrityError:
            # one_new_job_per_stream: a concurrent one-statement enqueue made it a moment ago
            existing = waiting.first()
            if existing is None:
                raise
            return _promote(existing, kind, priority, now)
        submit_ticket(job.pk)
    return job


class _Capture:
    """A stand-in broker for ``async_task``: keeps the signed ticket instead of sending it."""

    list_key = Conf.CLUSTER_NAME
    package = ""

    def enqueue(self, package: str) -> str:
        self.package = package
        return "(written with its job)"


def _ticket_package(job_id: int | None, name: str) -> str:
    """A ticket signed exactly as ``async_task`` signs it, to be written by our own INSERT."""
    capture = _Capture()
    async_task(TICKET_FUNC, job_id, task_name=name, group="sync", broker=capture)
    return capture.package


@functools.cache
def _insert_or_find_sql(
    with_ticket: bool, states: tuple[str, ...]
) -> tuple[str, tuple[Field[Any, Any], ...]]:
    """The statement of ``_insert_or_find`` and the fields its values are for (worked out once
    per process: it depends on the model only).

    The states are written into it, not passed as a parameter: a plan made once for every
    call (a prepared statement's) can then prove that they lie within the partial index of
    unfinished jobs and use it; with ``state = ANY($3)`` it could not."""
    table = SyncJob._meta.db_table
    wanted = ", ".join(f"'{State(state).value}'" for state in states)  # our constants, checked
    fields = tuple(f for f in SyncJob._meta.concrete_fields if not f.primary_key)
    names = ", ".join(db.ops.quote_name(f.column) for f in fields)
    every = columns(SyncJob)
    ticket = ""
    if with_ticket:
        queue = OrmQ._meta.db_table
        ticket = (
            f", ticket AS (INSERT INTO {queue} (key, payload, lock) SELECT %s, %s, %s FROM made)"  # noqa: S608
        )
    # Interpolated: table and column names from the model, placeholders; values are parameters.
    sql = f"""
        WITH found AS (
            SELECT {every} FROM {table}
             WHERE connection_id = %s AND dedupe_key = %s AND state IN ({wanted})
             ORDER BY id LIMIT 1
        ), made AS (
            INSERT INTO {table} ({names})
            SELECT {", ".join(["%s"] * len(fields))} WHERE NOT EXISTS (SELECT 1 FROM found)
            ON CONFLICT (connection_id, dedupe_key) WHERE state = 'queued' AND slices = 0
            DO NOTHING
            RETURNING id
        ){ticket}
        SELECT (SELECT id FROM made), found.* FROM (SELECT) AS one LEFT JOIN found ON true"""  # noqa: S608
    return sql, fields


def _insert_or_find(job: SyncJob, states: Sequence[str]) -> tuple[SyncJob | None, SyncJob | None]:
    """PostgreSQL: in one statement (one round trip, atomic on its own), return the waiting job
    this request merges into, or insert ``job`` and — with the ORM broker — its ticket.

    Returns (inserted, found); both None when another enqueue inserted the same job between
    this statement's snapshot and its insert (the ``one_new_job_per_stream`` index refused it).
    """
    with_ticket = broker.tickets_commit_with_jobs()
    sql, fields = _insert_or_find_sql(with_ticket, tuple(states))
    wrapper = transaction.get_connection()  # the thread's connection, looked up once
    values = [f.get_db_prep_save(f.pre_save(job, True), wrapper) for f in fields]
    ticket_params: list[Any] = []
    if with_ticket:
        package = _ticket_package(None, f"sync-connection-{job.connection_id}")
        ticket_params = [Conf.CLUSTER_NAME, package, job.run_after]
    row = fetch_one(sql, [job.connection_id, job.dedupe_key, *values, *ticket_params])
    # one row: (the new job's id, the waiting job's columns), each NULL when there is none
    made_id, found = (row[0], row[1:]) if row is not None else (None, (None,))
    if made_id is not None:  # inserted: the job is what was sent, now with its id
        job.pk = made_id
        job._state.adding = False
        job._state.db = wrapper.alias
        return job, None
    if found[0] is None:
        return None, None
    result = from_row(SyncJob, found, "j")
    result.connection = job.connection
    return None, result


def _promotion(job: SyncJob, kind: str, priority: int, now: datetime) -> dict[str, Any]:
    """What merging a new request into ``job`` changes: a higher priority; and a person's
    "Sync now" skips a retry's backoff."""
    updates: dict[str, Any] = {}
    if priority > job.priority:
        updates["priority"] = priority
        if kind == Kind.MANUAL and job.kind == Kind.INCREMENTAL:
            updates["kind"] = Kind.MANUAL
    if kind == Kind.MANUAL and job.state == State.RETRYING:
        updates.update(state=State.QUEUED, run_after=now)
    return updates


def _promote(job: SyncJob, kind: str, priority: int, now: datetime) -> SyncJob:
    """Merge a new request into an existing job (inside the enqueue transaction)."""
    updates = _promotion(job, kind, priority, now)
    if updates:
        SyncJob.objects.filter(pk=job.pk, state=job.state).update(**updates, updated_at=now)
        for field_name, value in updates.items():
            setattr(job, field_name, value)
        if job.state == State.QUEUED:
            submit_ticket(job.pk)
    return job


def enqueue_notified(connection_id: int, why: str) -> SyncJob | None:
    """A provider said something changed (IMAP IDLE, a Graph notification): queue a sync of
    that connection, or join the waiting one. Nothing for a connection that is gone, turned
    off or waiting for new credentials — the hint is dropped, polling carries on."""
    conn = Connection.objects.filter(pk=connection_id).first()
    if conn is None or not conn.enabled or conn.status == Connection.Status.AUTH_REQUIRED:
        return None
    try:
        job = enqueue(conn, Kind.NOTIFIED)
    except ConnectionDisabled:
        return None
    log.info("%s: %s; sync #%s queued.", conn.name, why, job.pk)
    return job
