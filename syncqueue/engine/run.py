"""Run: a ticket claims jobs and runs each for one slice, committing every batch with its
cursor/checkpoint, progress and lease renewal; a thread renews the lease meanwhile."""

from __future__ import annotations

import copy
import functools
import logging
import threading
import time
import traceback
from collections.abc import Iterator
from contextlib import nullcontext
from datetime import timedelta
from typing import Any, cast

from django.conf import settings
from django.db import InterfaceError, OperationalError, transaction
from django.db import connection as db
from django.db.models import Field, Model
from django.utils import timezone
from django_q.exceptions import TimeoutException

from integrations.base import (
    Batch,
    Connector,
    ItemRef,
    SyncContext,
)
from integrations.errors import (
    CursorReset,
    RateLimited,
    SyncError,
    Transient,
)
from integrations.models import Connection
from syncproject.sqlite.base import batch_writes
from syncqueue import broker, heartbeat, lease, policy
from syncqueue.engine.claim import claim_next, runnable_jobs
from syncqueue.engine.enqueue import submit_ticket
from syncqueue.engine.items import StoreItemByItem, _store
from syncqueue.engine.outcome import _fail, _finish, _limits, _requeue_slice, announce_finished
from syncqueue.engine.state import InternalError, _CancelRequested, _LeaseLost, _Run
from syncqueue.models import SkippedItem, SyncJob

log = logging.getLogger("syncqueue.engine")

State = SyncJob.State
Kind = SyncJob.Kind
Priority = SyncJob.Priority


_NOT_FETCHED = object()


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
        # after a success, expect more work (skip the peek) but do not insist on finding it
        job = claim_next(peek=not outcomes, settle=not outcomes)
        if job is None:
            break
        if outcomes:
            broker.absorb_ticket()  # this job's own ticket would find nothing: withdraw one
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
                batch = (
                    _advance(run, batches)
                    if following is _NOT_FETCHED
                    else cast("Batch | None", following)
                )
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
            # a generator's close() lets the connector's finally blocks log out / close sockets
            close = getattr(batches, "close", None)
            if close is not None:
                close()


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

    A batch that cannot be stored whole (``StoreItemByItem``) is committed again, item by item
    (``_store``): its first transaction is rolled back, and what it had noted in memory (log
    lines, skipped items) with it.
    """
    before = (len(run.logs), run.skipped, run.connection.skipped_items)
    try:
        _commit_once(run, connector, batch, finish=finish)
    except StoreItemByItem as failed:
        del run.logs[before[0] :]
        run.skipped, run.connection.skipped_items = before[1], before[2]
        _commit_once(run, connector, batch, finish=finish, whole=failed.whole)


def _commit_once(
    run: _Run,
    connector: Connector,
    batch: Batch,
    *,
    finish: bool = False,
    whole: Exception | None = None,
) -> None:
    job, conn = run.job, run.connection
    now = timezone.now()
    # A sync that found nothing (the common scheduled run): the job's success and the
    # connection's health are one statement on PostgreSQL, with no transaction around it.
    quiet = (
        finish
        and db.vendor == "postgresql"
        and not (batch.records or batch.deleted or batch.note or run.logs or run.skipped)
        and not (job.slices > 1 or job.attempts)
        and not any(run.counts.as_dict().values())
    )
    writes = bool(batch.records or batch.deleted)
    with (
        batch_writes(db) if writes else nullcontext(),
        nullcontext() if quiet else transaction.atomic(),
    ):
        if db.vendor == "postgresql" and writes and not _holds(run, lock=True):
            # Rescued meanwhile: do not race the new holder on the same rows (SQLite writers
            # are serialized; the conditional UPDATE below rolls back a lost slice there, as it
            # does for a batch that stores nothing).
            raise _CancelRequested if _is_cancelled(job.pk, run.worker) else _LeaseLost
        skipped_before = run.skipped
        counts = _store(run, connector, batch, whole)
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
        if batch.progress:
            updates["position"] = batch.progress[:200]
        if finish:
            updates.update(state=State.SUCCEEDED, finished_at=now, leased_until=None, worker_id="")
            if not quiet:  # quiet: announced once the statement has run (no transaction)
                announce_finished(job.pk, job=job, updates=updates)
        else:
            updates["leased_until"] = now + timedelta(seconds=settings.SYNC_LEASE_SECONDS)
        conn_updates: dict[str, Any] = {}
        if batch.cursor is not None:
            conn_updates["cursor"] = batch.cursor
        if finish:
            # From the copy loaded at claim time: no other job of this connection can run, and
            # what an admin may change meanwhile (enabled, scheduled) is re-checked by the
            # dispatcher before it queues anything. Push may have started or stopped during the
            # sync, though: read afresh when it can change the next run (one query, only then).
            if settings.SYNC_PUSHED_POLL_FACTOR > 1:  # (None if the row went meanwhile)
                conn.push_until = (
                    Connection.objects.filter(pk=conn.pk)
                    .values_list("push_until", flat=True)
                    .first()
                )
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
        if quiet:
            owned = _finish_quietly(run, updates, conn_updates)
            if owned:
                announce_finished(job.pk, job=job, updates=updates)
        else:
            owned = bool(
                SyncJob.objects.filter(
                    pk=job.pk, state=State.RUNNING, worker_id=run.worker, cancel_requested=False
                ).update(**updates)
            )
        if not owned:
            run.skipped = skipped_before  # rolled back with the rest
            raise _CancelRequested if _is_cancelled(job.pk, run.worker) else _LeaseLost
        if conn_updates and not quiet:
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


def _concrete(model: type[Model], name: str) -> Field[Any, Any]:
    return cast("Field[Any, Any]", model._meta.get_field(name))


@functools.cache
def _quiet_finish_sql(job_keys: tuple[str, ...], conn_keys: tuple[str, ...]) -> str:
    """The statement of ``_finish_quietly`` for these columns (worked out once per process)."""
    quote = db.ops.quote_name

    def assignments(model: type[Model], keys: tuple[str, ...]) -> str:
        return ", ".join(f"{quote(_concrete(model, k).column)} = %s" for k in keys)

    job_table = quote(SyncJob._meta.db_table)
    conn_table = quote(Connection._meta.db_table)
    # Interpolated: table and column names from the models; the values are parameters.
    return f"""
        WITH j AS (
            UPDATE {job_table} SET {assignments(SyncJob, job_keys)}
             WHERE id = %s AND state = 'running' AND worker_id = %s AND NOT cancel_requested
            RETURNING 1
        ), o AS (
            UPDATE {conn_table} SET {assignments(Connection, conn_keys)}
             WHERE id = %s AND EXISTS (SELECT 1 FROM j)
            RETURNING 1
        )
        SELECT count(*) FROM j"""  # noqa: S608


def _finish_quietly(run: _Run, job_values: dict[str, Any], conn_values: dict[str, Any]) -> bool:
    """PostgreSQL: the job's success (if this slice still holds it) and then the connection's
    health, in one statement — atomic without a transaction, one round trip instead of four
    (BEGIN, two UPDATEs, COMMIT). False when the job was no longer ours (nothing written)."""
    sql = _quiet_finish_sql(tuple(job_values), tuple(conn_values))
    wrapper = transaction.get_connection()

    def prepared(model: type[Model], values: dict[str, Any]) -> list[Any]:
        return [_concrete(model, k).get_db_prep_save(v, wrapper) for k, v in values.items()]

    params = [
        *prepared(SyncJob, job_values),
        run.job.pk,
        run.worker,
        *prepared(Connection, conn_values),
        run.connection.pk,
    ]
    with wrapper.cursor() as cursor:
        cursor.execute(sql, params)
        return bool(cursor.fetchone()[0])


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
