"""The sync engine: enqueue, claim, run in slices, and decide outcomes by error class.

How work flows
--------------
``enqueue()`` writes a ``SyncJob`` and, in the same transaction, a django-q2 task carrying only
the job id (a *ticket*). The ORM broker stores tasks in the same database, so the ticket becomes
visible exactly when the job commits: there is no window in which a committed job has no ticket
and no ticket for a job that was rolled back.

A ticket means "there is work". The worker that receives it claims the most urgent runnable job
(highest priority, then oldest) with a conditional UPDATE, so:

- priority works although django-q2's queue is first-in first-out (a manual "Sync now" overtakes
  a backlog of scheduled syncs);
- a duplicate delivery (django-q2 is at-least-once) finds nothing left to claim and exits;
- the database refuses a second running job for a connection (a partial unique index), on SQLite
  and PostgreSQL alike, even with several clusters racing.

A claimed job runs for at most ``SYNC_SLICE_SECONDS`` (well under django-q2's ``timeout``). Each
batch from the connector is committed together with its cursor/checkpoint and a lease renewal,
so a killed worker loses at most the batch in flight. When the budget is spent the job goes back
to ``queued`` with a new ticket and the next slice continues from the checkpoint.

Failures are decided by class (``integrations.errors``): transient → backoff with jitter up to
``max_attempts``; rate-limited → wait ``retry_after`` without spending an attempt; auth → fail at
once and mark the connection ``auth_required``; permanent → fail; cursor reset → restart the
stream inside the same job. Unexpected exceptions are ``Internal`` and retried like transient
ones (bounded), because nothing must be lost to a one-off fault.
"""

from __future__ import annotations

import copy
import hashlib
import logging
import threading
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import IntegrityError, InterfaceError, OperationalError, transaction
from django.db import connection as db
from django.db.models import Exists, F, OuterRef, QuerySet
from django.utils import timezone
from django_q.exceptions import TimeoutException
from django_q.tasks import async_task

from integrations.base import (
    Batch,
    Connector,
    Counts,
    ItemRef,
    NoLongerThere,
    SyncContext,
    Unreadable,
)
from integrations.errors import (
    CursorReset,
    Permanent,
    RateLimited,
    SyncError,
    Transient,
)
from integrations.models import Connection
from syncqueue import heartbeat, identity, lease, notifications, policy
from syncqueue.models import SkippedItem, SyncJob, SyncLog
from syncqueue.redact import redact, secret_values
from syncqueue.signals import job_finished

log = logging.getLogger(__name__)

State = SyncJob.State
Kind = SyncJob.Kind
Priority = SyncJob.Priority

TICKET_FUNC = "syncqueue.tasks.run_sync_job"
CLAIM_ROUNDS = 50
_NOT_FETCHED = object()

# Stream kinds share one waiting job per connection: they all mean "bring the mirror up to date".
STREAM_KEY = "sync"
_DEFAULT_PRIORITY = {
    Kind.INITIAL: Priority.SCHEDULED,
    Kind.INCREMENTAL: Priority.SCHEDULED,
    Kind.MANUAL: Priority.MANUAL,
    Kind.FULL_RESYNC: Priority.MANUAL,
    Kind.PUSH: Priority.PUSH,
    Kind.HISTORICAL: Priority.BACKGROUND,
}


class InternalError(SyncError):
    """An exception no connector classified: retried a bounded number of times."""

    error_class = "Internal"


class ConnectionDisabled(Permanent):
    """Work was requested for a connection that is turned off."""


class _LeaseLost(Exception):
    """Our lease was taken over (the job was rescued); stop without writing anything more."""


class _CancelRequested(Exception):
    """Someone cancelled the running job; stop at this batch boundary."""


def announce_finished(job_id: int) -> None:
    """Send ``job_finished`` once the current transaction commits (see syncqueue.signals)."""

    def send() -> None:
        job = SyncJob.objects.select_related("connection").filter(pk=job_id).first()
        if job is not None:
            job_finished.send(sender=SyncJob, job=job)

    transaction.on_commit(send)


def worker_id() -> str:
    """Identity of this process in leases and heartbeats (``syncqueue.identity``)."""
    return identity.process()


def default_dedupe_key(kind: str) -> str:
    if kind in (Kind.INITIAL, Kind.INCREMENTAL, Kind.MANUAL):
        return STREAM_KEY
    return kind


def backoff_seconds(failed_attempts: int) -> float:
    """The retry delay after ``failed_attempts`` (``policy.backoff_seconds`` on settings)."""
    return policy.backoff_seconds(failed_attempts, policy.Limits.from_settings())


# --- Enqueue -------------------------------------------------------------------------------------


def submit_ticket(job_id: int | None) -> None:
    """Write a django-q2 task that makes a worker claim work. Carries an id, never a secret."""
    async_task(TICKET_FUNC, job_id, task_name=f"sync-job-{job_id or 'any'}", group="sync")


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
    data); push jobs do not, because the running push may carry an older state.

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
        coalesce_running = kind != Kind.PUSH
    now = timezone.now()
    states = SyncJob.ACTIVE if coalesce_running else SyncJob.WAITING
    waiting = SyncJob.objects.filter(
        connection=connection, dedupe_key=key, state__in=states
    ).order_by("id")
    # The common repeated click: the job already waits and needs no promotion. Answer from a
    # plain read, without taking SQLite's single write lock.
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
        job = SyncJob.objects.create(
            connection=connection,
            kind=kind,
            dedupe_key=key,
            priority=priority,
            payload=payload or {},
            requested_by=requested_by if getattr(requested_by, "pk", None) else None,
            run_after=now,
            max_attempts=settings.SYNC_MAX_ATTEMPTS,
        )
        submit_ticket(job.pk)
    return job


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


# --- Claim ---------------------------------------------------------------------------------------


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
    return f"""
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


def _anything_queued(now: datetime) -> bool:
    """Cheap, lock-free pre-check: is any job queued and due at all?"""
    table = SyncJob._meta.db_table
    with db.cursor() as cursor:
        cursor.execute(
            f"SELECT 1 FROM {table} WHERE state = 'queued' AND run_after <= %s LIMIT 1",  # noqa: S608
            [db.ops.adapt_datetimefield_value(now)],
        )
        return cursor.fetchone() is not None


def claim_next(worker: str | None = None, *, peek: bool = True) -> SyncJob | None:
    """Claim the most urgent runnable job; None if there is none.

    The claim is a conditional UPDATE: if another worker took the chosen row first it changes
    nothing, and if another job of the same connection started a moment ago the partial unique
    index refuses it. Either way this worker looks again, so it never returns "nothing" while
    a job it could run is queued.
    """
    worker = worker or worker_id()
    sql = _claim_sql(db.vendor)
    for _ in range(CLAIM_ROUNDS):
        now = timezone.now()
        if peek and not _anything_queued(now):
            return None  # the common case for surplus tickets: a read, no write lock
        stamp = db.ops.adapt_datetimefield_value(now)
        lease = db.ops.adapt_datetimefield_value(
            now + timedelta(seconds=settings.SYNC_LEASE_SECONDS)
        )
        try:
            # One statement is atomic on its own; no BEGIN/COMMIT round trips needed.
            with db.cursor() as cursor:
                cursor.execute(sql, [worker, lease, stamp, stamp, stamp])
                row = cursor.fetchone()
        except IntegrityError:
            continue  # another job of the same connection started a moment ago
        if row is not None:
            return SyncJob.objects.select_related("connection", "connection__organization").get(
                pk=row[0]
            )
        if not runnable_jobs(now).exists():
            return None
    return None


def process_ticket(job_id: int | None = None) -> str:
    """Entry point of a django-q2 ticket: claim and run jobs for one slice budget.

    The first claimed job gets the whole budget. When it finishes early the worker claims the
    next most urgent job while at least half the budget is left, so a backlog of short jobs
    does not pay django-q2's per-task round trip (pusher, lock, acknowledgement) for every
    job. A ticket therefore runs for at most one budget plus one batch, well under the task
    timeout. Returns a short summary (django-q2 stores it for failed tasks only).
    """
    heartbeat.beat_worker()
    budget = settings.SYNC_SLICE_SECONDS
    deadline = time.monotonic() + budget
    outcomes: list[str] = []
    while True:
        job = claim_next(peek=not outcomes)  # after a success, expect more work: skip the peek
        if job is None:
            break
        outcomes.append(f"job {job.pk}: {execute(job, deadline=deadline)}")
        if deadline - time.monotonic() < budget / 2:
            # Out of budget with work possibly left (e.g. a job that waited for the one this
            # ticket just ran on the same connection): hand it to a fresh ticket.
            if runnable_jobs(timezone.now()).exists():
                submit_ticket(None)
            break
    if not outcomes:
        return "nothing to claim"
    if len(outcomes) > 3:
        return f"{len(outcomes)} jobs; last {outcomes[-1]}"
    return "; ".join(outcomes)


# --- Run -----------------------------------------------------------------------------------------


@dataclass
class _Run:
    """Per-slice state shared by the helpers below."""

    job: SyncJob
    connection: Connection
    worker: str
    deadline: float
    logs: list[SyncLog]
    counts: Counts = field(default_factory=Counts)  # this slice's changes, committed so far
    done: int = 0  # progress_done as last committed
    skipped: int = 0  # items this slice could not store (committed so far)
    ctx: SyncContext | None = None
    lease_lost: threading.Event | None = None  # set by the lease keeper when it lost the job

    def log(self, level: str, message: str, **data: Any) -> None:
        self.logs.append(
            SyncLog(
                job_id=self.job.pk,
                connection_id=self.connection.pk,
                level=level,
                message=message,
                data=data,
            )
        )

    def flush_logs(self) -> None:
        if self.logs:
            SyncLog.objects.bulk_create(self.logs)
            self.logs.clear()


def execute(job: SyncJob, deadline: float | None = None) -> str:
    """Run one slice of a claimed job (until ``deadline``, a ``time.monotonic()`` value) and
    record the outcome. Returns a short summary. A thread renews the job's lease meanwhile
    (``syncqueue.lease``), so a dead worker's job is rescued within a minute."""
    with lease.kept(job.pk, job.worker_id) as keeper:
        return _execute(job, deadline, keeper.lost)


def _execute(job: SyncJob, deadline: float | None, lease_lost: threading.Event) -> str:
    run = _Run(
        job=job,
        connection=job.connection,
        worker=job.worker_id,
        deadline=deadline
        if deadline is not None
        else time.monotonic() + settings.SYNC_SLICE_SECONDS,
        logs=[],
        done=job.progress_done,  # a new slice or a retry counts on from what was committed
        lease_lost=lease_lost,
    )
    try:
        connector = job.connection.build_connector()
        if job.kind == Kind.FULL_RESYNC and not job.checkpoint.get("cursor_cleared"):
            _clear_cursor(run, "Full resync requested: starting from nothing.")
        finished = _run_batches(run, connector)
    except _LeaseLost:
        log.warning("Job %s: lease lost to a rescue; this slice stops without writing.", job.pk)
        return "lease lost"
    except _CancelRequested:
        _finish(run, State.CANCELLED, "Cancelled at a batch boundary; committed data is kept.")
        return "cancelled"
    except TimeoutException:
        # django-q2 is killing this slice (a single batch outlived the task timeout). Record a
        # transient failure so the job retries from its checkpoint, then let the kill proceed.
        _fail(run, Transient(f"A batch took longer than the worker timeout{_where(run)}."))
        raise
    except SyncError as exc:
        _fail(run, exc)
        return f"{exc.error_class}: {exc.message}"
    except (OperationalError, InterfaceError) as exc:
        _fail(
            run,
            Transient("The database was unavailable.", detail=repr(exc)),
        )
        return "database error"
    except Exception as exc:
        _fail(
            run,
            InternalError(
                f"An unexpected error ({type(exc).__name__}) stopped the sync{_where(run)}.",
                detail=traceback.format_exc(),
            ),
        )
        log.exception("Job %s failed unexpectedly: %s", job.pk, type(exc).__name__)
        return "internal error"
    if finished:
        return "succeeded"
    _requeue_slice(run)
    return "continues in a new slice"


def _where(run: _Run) -> str:
    """ " while reading INBOX UID 4711": what the connector said it was working on."""
    return f" while reading {run.ctx.working_on}" if run.ctx and run.ctx.working_on else ""


RETRY_SKIPPED_PER_SLICE = 100


def _retry_list(run: _Run) -> list[ItemRef]:
    """Skipped items to read again in this slice (stream syncs only; none most of the time,
    and then no query is made)."""
    if run.connection.skipped_items <= 0 or run.job.kind in (Kind.PUSH, Kind.HISTORICAL):
        return []
    rows = (
        SkippedItem.objects.filter(connection_id=run.connection.pk, state=SkippedItem.State.OPEN)
        .order_by("last_tried_at")
        .values_list("key", "label")[:RETRY_SKIPPED_PER_SLICE]
    )
    return [ItemRef(key, label) for key, label in rows]


def _work(run: _Run, connector: Connector) -> Iterator[Batch]:
    run.ctx = SyncContext(
        job_id=run.job.pk,
        job_kind=run.job.kind,
        payload=run.job.payload,
        cursor=copy.deepcopy(run.connection.cursor),
        checkpoint=copy.deepcopy(run.job.checkpoint),
        deadline=run.deadline,
        log=run.log,
        progress_done=run.done,
        retry=_retry_list(run),
    )
    ctx = run.ctx
    return connector.push(ctx) if run.job.kind == Kind.PUSH else connector.sync(ctx)


def _run_batches(run: _Run, connector: Connector) -> bool:
    """Commit batches until the connector is done (True: the job's success is committed) or the
    slice budget is spent (False)."""
    resets = 0
    while True:
        batches = _work(run, connector)
        try:
            batch = _advance(run, batches)
            while batch is not None:
                following: Batch | object | None = _NOT_FETCHED
                if batch.final:
                    # The connector says this is its last batch: confirm, then commit the batch
                    # and the job's success in one transaction.
                    following = _advance(run, batches)
                    if following is None:
                        _commit(run, connector, batch, finish=True)
                        return True
                _commit(run, connector, batch)
                if time.monotonic() >= run.deadline:
                    return False
                batch = _advance(run, batches) if following is _NOT_FETCHED else following
            _commit(run, connector, Batch(), finish=True)
            return True
        except CursorReset as reset:
            resets += 1
            if resets > policy.MAX_RESETS_PER_SLICE:
                raise Transient(
                    "The provider kept rejecting the sync position; the sync will be retried.",
                    detail=reset.message,
                ) from reset
            _clear_cursor(
                run,
                f"Sync position rejected ({reset.message}); resyncing.",
                replacement=reset.cursor,
            )
        except RateLimited as limited:
            wait = limited.retry_after
            if not policy.wait_inline(wait, run.deadline - time.monotonic(), _limits(run)):
                raise
            run.log("info", f"Rate limited by the provider; waiting {wait:g}s.", wait=wait)
            time.sleep(wait)
        finally:
            batches.close()  # lets the connector's finally blocks log out / close sockets


def _advance(run: _Run, batches: Iterator[Batch]) -> Batch | None:
    """The connector's next batch, unless this slice no longer holds the job: the lease keeper
    found it rescued, or (before an outbound push, whose calls change the remote side) the job
    row says so. A slice that lost its job stops without writing or sending anything more."""
    if run.lease_lost is not None and run.lease_lost.is_set():
        raise _LeaseLost
    if run.job.kind == Kind.PUSH and not _holds(run):
        raise _CancelRequested if _is_cancelled(run.job.pk, run.worker) else _LeaseLost
    return next(batches, None)


def _holds(run: _Run, *, lock: bool = False) -> bool:
    """Whether this slice still holds its running job (``lock``: and lock its row until the
    transaction ends, so a rescued slice and its successor never write the same rows at once)."""
    rows = SyncJob.objects.filter(
        pk=run.job.pk, state=State.RUNNING, worker_id=run.worker, cancel_requested=False
    )
    return (rows.select_for_update() if lock else rows).exists()


def _commit(run: _Run, connector: Connector, batch: Batch, *, finish: bool = False) -> None:
    """Write one batch with its cursor/checkpoint, progress and a lease renewal atomically;
    with ``finish`` the same transaction also marks the job succeeded and the connection
    healthy (and schedules its next sync).

    Counts are written as absolute values: only the lease holder writes a running job, and the
    conditional UPDATE proves we still hold it — a worker whose job was rescued rolls back.
    """
    job, conn = run.job, run.connection
    now = timezone.now()
    with transaction.atomic():
        if db.vendor == "postgresql" and not _holds(run, lock=True):
            # Rescued meanwhile: do not race the new holder on the same rows (SQLite writers
            # are serialized; the conditional UPDATE below rolls back a lost slice there).
            raise _CancelRequested if _is_cancelled(job.pk, run.worker) else _LeaseLost
        skipped_before = run.skipped
        counts = _store(run, connector, batch)
        total = run.counts + counts
        updates: dict[str, Any] = {
            "created_count": job.created_count + total.created,
            "updated_count": job.updated_count + total.updated,
            "deleted_count": job.deleted_count + total.deleted,
            "unchanged_count": job.unchanged_count + total.unchanged,
            "updated_at": now,
        }
        if run.skipped:
            updates["skipped_items"] = job.skipped_items + run.skipped
        if batch.done is not None:
            run.done = batch.done
        else:
            run.done += len(batch.records) + len(batch.deleted)
        updates["progress_done"] = run.done
        if batch.total is not None:
            updates["progress_total"] = batch.total
        if batch.checkpoint is not None:
            updates["checkpoint"] = batch.checkpoint
        if finish:
            updates.update(state=State.SUCCEEDED, finished_at=now, leased_until=None, worker_id="")
            announce_finished(job.pk)
        else:
            updates["leased_until"] = now + timedelta(seconds=settings.SYNC_LEASE_SECONDS)
        owned = SyncJob.objects.filter(
            pk=job.pk, state=State.RUNNING, worker_id=run.worker, cancel_requested=False
        ).update(**updates)
        if not owned:
            run.skipped = skipped_before  # rolled back with the rest
            raise _CancelRequested if _is_cancelled(job.pk, run.worker) else _LeaseLost
        conn_updates: dict[str, Any] = {}
        if batch.cursor is not None:
            conn_updates["cursor"] = batch.cursor
        if finish:
            # From the copy loaded at claim time: no other job of this connection can run, and
            # what an admin may change meanwhile (enabled, scheduled) is re-checked by the
            # dispatcher before it queues anything.
            conn_updates.update(
                status=Connection.Status.OK,
                last_success_at=now,
                last_attempt_at=now,
                last_error="",
                consecutive_failures=0,
                next_sync_at=conn.compute_next_sync(now),
                stale_after=conn.compute_stale_after(now),
                updated_at=now,
            )
        if conn_updates:
            Connection.objects.filter(pk=conn.pk).update(**conn_updates)
        if batch.note:
            run.log("info", batch.note, **counts.as_dict())
        changed = any(
            updates[f"{name}_count"] for name in ("created", "updated", "deleted", "unchanged")
        )
        if finish and (changed or job.slices > 1 or job.attempts or run.logs):
            # A run that found nothing new is recorded on the job row only: a log line per
            # no-op sync would be most of the table (10k connections x every 15 minutes).
            elapsed = (now - job.started_at).total_seconds() if job.started_at else 0.0
            run.log(
                "info",
                f"Finished in {elapsed:.1f}s on {run.worker}: "
                f"{updates['created_count']} created, {updates['updated_count']} updated, "
                f"{updates['deleted_count']} deleted, {updates['unchanged_count']} unchanged.",
                created=updates["created_count"],
                updated=updates["updated_count"],
                deleted=updates["deleted_count"],
                unchanged=updates["unchanged_count"],
            )
        run.flush_logs()
    if batch.cursor is not None:
        conn.cursor = batch.cursor
    if batch.checkpoint is not None:
        job.checkpoint = batch.checkpoint
    run.counts = total


# --- Poison items --------------------------------------------------------------------------------

# Failures that are about the connection or the database, not about one item: they stop the
# slice and are decided by class, as before.
_NOT_ABOUT_ONE_ITEM = (SyncError, OperationalError, InterfaceError, TimeoutException)
_LOGGED_SKIPS_PER_SLICE = 20
SYSTEMIC_AFTER = 10  # items in a batch that all failing alike means "not the items"


def _store(run: _Run, connector: Connector, batch: Batch) -> Counts:
    """Write a batch's records (inside ``_commit``'s transaction).

    When that fails for a reason that is not about the connection — a bug, a constraint, a
    shape nobody expected — the batch is stored again item by item (``connector.items``), each
    in its own savepoint, and the items that fail are listed as skipped items with what went
    wrong: one poison item must not stop the sync, and the checkpoint still moves on. Records
    the connector could not even read (``Unreadable``) are listed the same way.
    """
    special = (Unreadable, NoLongerThere)
    for record in batch.records:
        if isinstance(record, Unreadable):
            _skip(run, record.ref, record.error_class, record.message, record.detail)
        elif isinstance(record, NoLongerThere):
            _settle(run, [record.ref.key], SkippedItem.State.GONE)
    if any(isinstance(r, special) for r in batch.records):
        batch = replace(batch, records=[r for r in batch.records if not isinstance(r, special)])
    if not (batch.records or batch.deleted):
        return Counts()
    mark = len(run.logs)  # log lines of an apply that is rolled back go with it
    try:
        with transaction.atomic():
            counts = connector.apply(batch, run.log)
    except _NOT_ABOUT_ONE_ITEM:
        raise
    except Exception as whole:
        del run.logs[mark:]
        counts = Counts()
        stored = []
        failures: list[tuple[ItemRef, str, str, str]] = []
        parts = connector.items(batch)
        for part in parts:
            mark = len(run.logs)
            try:
                with transaction.atomic():
                    counts += connector.apply(part, run.log)
            except _NOT_ABOUT_ONE_ITEM:
                raise
            except Exception as exc:
                del run.logs[mark:]
                ref = connector.describe(part) or _unknown_item(part)
                failures.append((ref, type(exc).__name__, str(exc), traceback.format_exc()))
            else:
                stored.append(part)
        if len(parts) >= SYSTEMIC_AFTER and len(failures) == len(parts):
            kinds = {error for _, error, _, _ in failures}
            if len(kinds) == 1:
                # Every one of many items failed the same way: that is our bug or our
                # database, not the items. Skipping them all would report a sync that stored
                # nothing as a success; the job fails and says why instead.
                raise InternalError(
                    f"Every item of a batch of {len(parts)} failed to be stored the same way "
                    f"({failures[0][1]}: {failures[0][2][:200]}); nothing was skipped.",
                    detail=failures[0][3],
                ) from whole
        for ref, error, message, detail in failures:
            _skip(run, ref, error, message, detail)
        if run.connection.skipped_items > 0:
            _settle(run, _keys(connector, stored), SkippedItem.State.RESOLVED)
        return counts
    if run.connection.skipped_items > 0:
        _settle(run, _keys(connector, connector.items(batch)), SkippedItem.State.RESOLVED)
    return counts


def _keys(connector: Connector, parts: list[Batch]) -> list[str]:
    refs = (connector.describe(part) for part in parts)
    return [ref.key for ref in refs if ref is not None]


def _unknown_item(part: Batch) -> ItemRef:
    record = (list(part.records) + list(part.deleted) or [None])[0]
    kind = type(record).__name__
    return ItemRef(f"{kind}:{hashlib.sha256(repr(record).encode()).hexdigest()[:20]}", f"a {kind}")


def _skip(run: _Run, ref: ItemRef, error_class: str, message: str, detail: str) -> None:
    """List one item as skipped (or count another failure of an open one)."""
    now = timezone.now()
    message, detail = _scrub(run, message)[:500], _scrub(run, detail)
    found = SkippedItem.objects.filter(
        connection_id=run.connection.pk, key=ref.key[:500], state=SkippedItem.State.OPEN
    ).update(
        job_id=run.job.pk,
        error_class=error_class[:100],
        message=message,
        detail=detail,
        attempts=F("attempts") + 1,
        last_tried_at=now,
    )
    if not found:
        SkippedItem.objects.create(
            connection_id=run.connection.pk,
            job_id=run.job.pk,
            key=ref.key[:500],
            label=ref.label[:500],
            error_class=error_class[:100],
            message=message,
            detail=detail,
            last_tried_at=now,
        )
        _recount_skipped(run)
    run.skipped += 1
    if run.skipped <= _LOGGED_SKIPS_PER_SLICE:
        run.log(
            "warning",
            f"Skipped {ref.label}: {error_class}: {message[:200]}. The sync goes on; the item is "
            "tried again at the next sync.",
            item=ref.key[:200],
        )


def _settle(run: _Run, keys: list[str], state: str) -> None:
    """Skipped items stored after all (or gone from the server) are no longer open."""
    if not keys:
        return
    settled = SkippedItem.objects.filter(
        connection_id=run.connection.pk, state=SkippedItem.State.OPEN, key__in=keys
    ).update(state=state, resolved_at=timezone.now())
    if settled:
        run.log("info", f"{settled} skipped item(s) {'stored' if state == 'resolved' else 'gone'}.")
        _recount_skipped(run)


def _recount_skipped(run: _Run) -> None:
    count = SkippedItem.objects.filter(
        connection_id=run.connection.pk, state=SkippedItem.State.OPEN
    ).count()
    Connection.objects.filter(pk=run.connection.pk).update(skipped_items=count)
    run.connection.skipped_items = count


def _is_cancelled(job_id: int, worker: str) -> bool:
    return SyncJob.objects.filter(
        pk=job_id, state=State.RUNNING, worker_id=worker, cancel_requested=True
    ).exists()


def _clear_cursor(run: _Run, message: str, replacement: dict[str, Any] | None = None) -> None:
    with transaction.atomic():
        if not _holds(run, lock=True):
            raise _LeaseLost  # the new holder's cursor and checkpoint are not ours to touch
        cursor = replacement or {}
        Connection.objects.filter(pk=run.connection.pk).update(cursor=cursor)
        run.connection.cursor = cursor
        if run.job.kind == Kind.FULL_RESYNC:
            run.job.checkpoint = {**run.job.checkpoint, "cursor_cleared": True}
            SyncJob.objects.filter(pk=run.job.pk).update(checkpoint=run.job.checkpoint)
        run.log("warning", message)
        run.flush_logs()


# --- Outcomes ------------------------------------------------------------------------------------


def _release(run: _Run, **updates: Any) -> bool:
    """Move our running job to a new state; False if it is no longer ours."""
    now = timezone.now()
    return bool(
        SyncJob.objects.filter(pk=run.job.pk, state=State.RUNNING, worker_id=run.worker).update(
            leased_until=None, updated_at=now, **updates
        )
    )


def _requeue_slice(run: _Run) -> None:
    with transaction.atomic():
        if _release(run, state=State.QUEUED, worker_id="", run_after=timezone.now()):
            run.log("info", "Slice time budget reached; continuing from the checkpoint.")
            run.flush_logs()
            submit_ticket(run.job.pk)


def _finish(run: _Run, state: str, message: str) -> None:
    with transaction.atomic():
        if not _release(run, state=state, finished_at=timezone.now(), worker_id=""):
            return
        announce_finished(run.job.pk)
        run.log("warning", message)
        run.flush_logs()


def _scrub(run: _Run, text: str) -> str:
    try:
        values = secret_values(run.connection.get_secrets())
    except SyncError:
        values = []
    return redact(text, values)


def _limits(run: _Run) -> policy.Limits:
    return policy.Limits.from_settings(max_attempts=run.job.max_attempts)


def _fail(run: _Run, exc: SyncError) -> None:
    """Record a failed slice as the retry policy decides (``syncqueue.policy``): retry later
    or fail the job; and update the connection's health."""
    job = run.job
    now = timezone.now()
    message = _scrub(run, exc.message)[:500]
    detail = _scrub(run, "\n".join(p for p in (exc.code, exc.detail) if p))
    with transaction.atomic():
        current = SyncJob.objects.filter(pk=job.pk).values_list("attempts", flat=True).first()
        outcome = policy.after_failure(
            exc.error_class,
            current or 0,
            _limits(run),
            retry_after=getattr(exc, "retry_after", 0.0),
        )
        common = {
            "error_class": exc.error_class,
            "error_message": _outcome(message, outcome.what_next),
            "error_detail": detail,
            "worker_id": "",
            "attempts": outcome.attempts,
        }
        if outcome.state == State.FAILED:
            ok = _release(run, state=State.FAILED, finished_at=now, **common)
            announce_finished(job.pk)
            run.log("error", f"{exc.error_class}: {message}", detail=detail[:2000])
        else:
            ok = _release(
                run,
                state=outcome.state,
                run_after=now + timedelta(seconds=outcome.wait),
                **common,
            )
            if isinstance(exc, RateLimited):
                run.log(
                    "info",
                    f"Rate limited; resuming in {outcome.wait:.0f}s without spending an attempt.",
                )
            else:
                run.log(
                    "warning",
                    f"{exc.error_class}: {message} Retry {outcome.attempts + 1} of "
                    f"{job.max_attempts} in {outcome.wait:.0f}s.",
                    detail=detail[:2000],
                    retry_in=round(outcome.wait),
                )
        if not ok:
            return
        record_connection_outcome(
            run.connection.pk, exc.error_class, message, job_failed=outcome.job_failed, now=now
        )
        run.flush_logs()
    log.warning(
        "Job %s (%s) on connection %s: %s: %s",
        job.pk,
        job.kind,
        run.connection.pk,
        exc.error_class,
        message,
    )


def _outcome(message: str, what_next: str) -> str:
    """The job's error as people read it: the cause, then what happens next — true for the
    state the job is left in (a failed job never says it will be retried)."""
    return f"{message.rstrip()} {what_next}".strip()[:500]


def record_connection_outcome(
    connection_id: int, error_class: str, message: str, *, job_failed: bool, now: datetime
) -> None:
    """Update a connection's health after a failed attempt (inside the caller's transaction),
    as ``policy.health_after`` decides. Becoming ``auth_required`` or disabled is mailed to the
    owner after commit (``syncqueue.notifications``)."""
    conn = Connection.objects.select_for_update().get(pk=connection_id)
    health = policy.health_after(
        conn.status,
        conn.consecutive_failures,
        error_class,
        job_failed,
        policy.Limits.from_settings(),
    )
    if health is None:
        return
    was_status, was_enabled = conn.status, conn.enabled
    conn.last_error = message
    conn.status = health.status
    fields = ["last_error", "status", "updated_at"]
    if job_failed:
        conn.consecutive_failures = health.consecutive_failures
        conn.last_attempt_at = now
        fields += ["consecutive_failures", "last_attempt_at", "next_sync_at"]
        if health.disabled:
            conn.enabled = False
            conn.disabled_reason = (
                f"Turned off after {conn.consecutive_failures} failed syncs in a row. "
                f"Last error: {message}"
            )[:300]
            fields += ["enabled", "disabled_reason"]
        conn.next_sync_at = conn.compute_next_sync(now)
    conn.save(update_fields=fields)
    notifications.connection_changed(conn, was_status=was_status, was_enabled=was_enabled)


# --- Operations on jobs (admin, API, commands) -------------------------------------------------


def retry_job(job: SyncJob) -> bool:
    """Queue a failed or cancelled job again, keeping its checkpoint; False if not possible."""
    if not job.connection.enabled:
        raise ConnectionDisabled(f"{job.connection.name} is turned off.")
    now = timezone.now()
    with transaction.atomic():
        done = SyncJob.objects.filter(pk=job.pk, state__in=[State.FAILED, State.CANCELLED]).update(
            state=State.QUEUED,
            attempts=0,
            run_after=now,
            finished_at=None,
            cancel_requested=False,
            error_class="",
            error_message="",
            error_detail="",
            updated_at=now,
        )
        if done:
            SyncLog.objects.create(
                job=job,
                connection=job.connection,
                level="info",
                message="Queued again by request; resuming from the checkpoint.",
            )
            submit_ticket(job.pk)
    return bool(done)


def cancel_job(job: SyncJob) -> str:
    """Cancel a waiting job now, or ask a running one to stop at its next batch boundary.

    Returns ``"cancelled"``, ``"stopping"`` or ``"finished"`` (nothing to cancel).
    """
    now = timezone.now()
    with transaction.atomic():
        if SyncJob.objects.filter(pk=job.pk, state__in=SyncJob.WAITING).update(
            state=State.CANCELLED, finished_at=now, updated_at=now
        ):
            announce_finished(job.pk)
            SyncLog.objects.create(
                job=job,
                connection_id=job.connection_id,
                level="warning",
                message="Cancelled before it ran.",
            )
            return "cancelled"
        if SyncJob.objects.filter(pk=job.pk, state=State.RUNNING).update(
            cancel_requested=True, updated_at=now
        ):
            return "stopping"
    return "finished"
