"""The dispatcher: one periodic pass (every ``SYNC_DISPATCH_INTERVAL`` seconds) that

1. rescues running jobs whose lease expired (their worker died) from their checkpoint;
2. puts retrying jobs whose backoff is over back in the queue;
3. queues a sync for every connection that is due (indexed, in batches, bulk writes; every
   cluster's dispatcher does this part each tick, sharing the due connections safely);
4. makes sure every runnable job has a ticket — due retries, jobs that waited behind a running
   job of their connection, tickets lost with a killed worker;
5. writes the dispatcher heartbeat;
6. prunes history every few minutes.

Only one pass runs at a time across all clusters (an expiring ``EngineLock`` row).

It runs in a process of its own in every qcluster (``syncqueue.cluster.dispatcher_loop``), not
as a django-q2 task: a task needs a working cluster to run it, and the dispatcher is what must
keep going when one is stuck. Each cluster's loop calls :func:`tick` every
``SYNC_RESCUE_INTERVAL`` seconds: a full pass when one is due (at most one per interval across
all clusters), otherwise just the rescue of expired leases. ``manage.py sync_dispatch`` runs one
full pass by hand or from cron.
"""

from __future__ import annotations

import logging
import random
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from integrations.models import Connection
from syncqueue import broker, engine, heartbeat, notifications, policy, retention, signals, stats
from syncqueue.locks import hold_lock
from syncqueue.models import SyncJob, SyncLog

log = logging.getLogger(__name__)

State = SyncJob.State
PRUNE_EVERY = timedelta(minutes=10)
MAX_TICKETS_PER_PASS = 5000


@dataclass
class DispatchReport:
    """What one pass did (returned to django-q2 and printed by ``sync_dispatch``)."""

    rescued: int = 0
    failed_after_rescue: int = 0
    retries: int = 0
    enqueued: int = 0
    already_queued: int = 0
    tickets: int = 0
    pruned: dict[str, int] | None = None
    skipped: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def dispatch(now: datetime | None = None) -> DispatchReport:
    """Run one dispatcher pass (see the module docstring)."""
    now = now or timezone.now()
    report = DispatchReport()
    with hold_lock("dispatcher", seconds=120) as acquired:
        if not acquired:
            report.skipped = "another dispatcher pass is running"
            return report
        heartbeat.beat("dispatcher")
        report.rescued, report.failed_after_rescue = rescue_expired(now)
        report.retries = engine.requeue_due_retries(now)
        report.enqueued, report.already_queued = enqueue_due(now)
        report.tickets = top_up_tickets(now)
        stats.refresh_if_expensive()
        for receiver, result in signals.dispatcher_pass.send_robust(sender=None, now=now):
            if isinstance(result, Exception):
                log.error("Dispatcher housekeeping %r failed: %r", receiver, result)
    with hold_lock("prune", seconds=int(PRUNE_EVERY.total_seconds()), release=False) as due:
        if due:
            report.pruned = retention.prune(now)
            heartbeat.prune_heartbeats(now)
    try:
        notifications.run_due(now)
    except Exception:
        # Mail is a side channel: a broken mail server or template must never stop syncing.
        log.exception("Notifications failed; dispatching goes on.")
    return report


def tick(now: datetime | None = None) -> DispatchReport:
    """One turn of a cluster's dispatcher loop (see the module docstring)."""
    now = now or timezone.now()
    interval = max(1, round(settings.SYNC_DISPATCH_INTERVAL) - 1)
    with hold_lock("dispatch-due", seconds=interval, release=False) as due:
        if due:
            return dispatch(now)
    report = DispatchReport(skipped="rescues and due syncs only; the full pass is not due")
    # Safe without the dispatcher lock: each rescue is a conditional UPDATE that one wins, and
    # due connections are taken in batches no two dispatchers share (enqueue_due). So every
    # cluster queues due syncs each tick: the work is shared and a due sync waits seconds.
    report.rescued, report.failed_after_rescue = rescue_expired(now)
    report.enqueued, report.already_queued = enqueue_due(now)
    return report


def rescue_expired(now: datetime) -> tuple[int, int]:
    """Put running jobs with an expired lease back in the queue (their worker stopped renewing
    it: killed, or its host is gone). Returns (rescued, failed for good)."""
    return _rescue(Q(leased_until__lt=now), now, "stopped responding (lease expired)")


def rescue_dead_worker(worker: str, now: datetime | None = None) -> tuple[int, int]:
    """The cluster saw worker process ``worker`` (host:pid) die: put its jobs back now rather
    than when their lease expires. Safe because the process is gone: it cannot write again."""
    return _rescue(Q(worker_id=worker), now or timezone.now(), "died")


def _rescue(which: Q, now: datetime, how: str) -> tuple[int, int]:
    """Put running jobs matching ``which`` back as the retry policy decides for a lost worker
    (``policy.after_failure("WorkerLost", ...)``: the first time at once, from the checkpoint;
    again after a backoff; failed after ``max_attempts``, as a job that kills its worker every
    time must not loop forever). Each is a conditional UPDATE: when clusters race, one wins."""
    rescued = failed = 0
    candidates = SyncJob.objects.filter(which, state=State.RUNNING).values_list(
        "pk", "connection_id", "attempts", "max_attempts", "worker_id"
    )
    for pk, connection_id, attempts, max_attempts, worker in candidates:
        outcome = policy.after_failure(
            policy.WORKER_LOST, attempts, policy.Limits.from_settings(max_attempts=max_attempts)
        )
        cause = f"Worker {worker} {how}"
        with transaction.atomic():
            still = SyncJob.objects.filter(which, pk=pk, state=State.RUNNING, worker_id=worker)
            changes: dict[str, Any] = {
                "attempts": outcome.attempts,
                "leased_until": None,
                "worker_id": "",
                "updated_at": now,
            }
            if outcome.state == State.FAILED:
                changes.update(
                    state=State.FAILED,
                    finished_at=now,
                    error_class=policy.WORKER_LOST,
                    error_message=outcome.what_next[:500],
                )
            else:
                changes.update(state=outcome.state, run_after=now + timedelta(seconds=outcome.wait))
            if not still.update(**changes):
                continue
            if outcome.job_failed:
                engine.record_connection_outcome(
                    connection_id, policy.WORKER_LOST, outcome.what_next, job_failed=True, now=now
                )
                engine.announce_finished(pk)
                level, text = "error", f"{cause}. {outcome.what_next}"
                failed += 1
            else:
                if outcome.state == State.QUEUED:
                    engine.submit_ticket(pk)
                next_step = outcome.what_next[:1].lower() + outcome.what_next[1:]
                level, text = "warning", f"{cause}; {next_step}"
                rescued += 1
            SyncLog.objects.create(
                job_id=pk, connection_id=connection_id, level=level, message=text
            )
    if rescued or failed:
        log.warning("Rescued %d job(s) whose worker %s; %d failed for good.", rescued, how, failed)
    return rescued, failed


DUE_BATCH = 500


def enqueue_due(now: datetime) -> tuple[int, int]:
    """Queue a scheduled sync for each due connection, in batches; returns (queued, already
    waiting). Safe to run in several dispatchers at once: each batch takes its due connections
    with ``FOR UPDATE SKIP LOCKED`` on PostgreSQL (SQLite runs writers one at a time), so the
    clusters share the work and none queues a connection twice. The cost follows the number due,
    not the number of connections (the partial index on ``next_sync_at``)."""
    queued = waiting = 0
    while queued + waiting < settings.SYNC_DISPATCH_LIMIT:
        batch = min(DUE_BATCH, settings.SYNC_DISPATCH_LIMIT - queued - waiting)
        new, already = _enqueue_due_batch(now, batch)
        queued, waiting = queued + new, waiting + already
        if new + already < batch:
            break
    return queued, waiting


def _enqueue_due_batch(now: datetime, limit: int) -> tuple[int, int]:
    with transaction.atomic():
        due_rows = (
            Connection.objects.filter(next_sync_at__lte=now, enabled=True, scheduled=True)
            .select_related("organization")
            .order_by("next_sync_at")
        )
        if transaction.get_connection().features.has_select_for_update_skip_locked:
            due_rows = due_rows.select_for_update(skip_locked=True, of=("self",))
        due = list(due_rows[:limit])
        if not due:
            return 0, 0
        busy = set(
            SyncJob.objects.filter(
                connection_id__in=[conn.pk for conn in due],
                dedupe_key=engine.STREAM_KEY,
                state__in=SyncJob.ACTIVE,
            ).values_list("connection_id", flat=True)
        )
        jobs = [
            SyncJob(
                connection=conn,
                kind=SyncJob.Kind.INCREMENTAL if conn.last_success_at else SyncJob.Kind.INITIAL,
                dedupe_key=engine.STREAM_KEY,
                priority=SyncJob.Priority.SCHEDULED,
                run_after=now,
                max_attempts=settings.SYNC_MAX_ATTEMPTS,
            )
            for conn in due
            if conn.pk not in busy
        ]
        # A "Sync now" committed after this pass's read may have queued the same new job:
        # the one_new_job_per_stream index refuses the duplicate, which is simply not made.
        SyncJob.objects.bulk_create(jobs, batch_size=500, ignore_conflicts=True)
        for conn in due:
            # From *now*: a window missed while workers were down runs once, not N times.
            conn.next_sync_at = conn.compute_next_sync(now)
        Connection.objects.bulk_update(due, ["next_sync_at"], batch_size=500)
        # Shuffle so connections due at the same second do not always start in the same order.
        order = [job.pk for job in jobs]
        random.shuffle(order)
        engine.submit_tickets(order)
    return len(jobs), len(due) - len(jobs)


def top_up_tickets(now: datetime) -> int:
    """Submit tickets so that queued tickets are at least as many as runnable jobs.

    Extra tickets are harmless (they find nothing to claim); a missing one would leave a job
    waiting, so this errs on the side of more.
    """
    runnable = engine.runnable_jobs(now).count()
    if not runnable:
        return 0
    # Tickets not yet taken by a worker, in whichever broker carries them. Measured at this
    # instant, so tickets written earlier in this pass count.
    waiting_tickets = broker.waiting_tickets()
    missing = max(0, min(runnable - waiting_tickets, MAX_TICKETS_PER_PASS))
    engine.submit_tickets([None] * missing)
    return missing
