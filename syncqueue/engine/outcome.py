"""Outcomes: a slice ends succeeded, requeued (budget spent), cancelled, or failed — and then
the retry policy (``syncqueue.policy``) says what happens next."""

from __future__ import annotations

import copy
import logging
from datetime import timedelta
from typing import Any

from django.db import transaction
from django.utils import timezone

from integrations.errors import (
    RateLimited,
    SyncError,
)
from syncqueue import policy
from syncqueue.engine.enqueue import submit_ticket
from syncqueue.engine.health import record_connection_outcome
from syncqueue.engine.state import _Run
from syncqueue.models import SyncJob
from syncqueue.redact import redact, secret_values
from syncqueue.signals import job_finished

log = logging.getLogger("syncqueue.engine")

State = SyncJob.State
Kind = SyncJob.Kind
Priority = SyncJob.Priority


def announce_finished(
    job_id: int, *, job: SyncJob | None = None, updates: dict[str, Any] | None = None
) -> None:
    """Send ``job_finished`` once the current transaction commits (see syncqueue.signals).

    The engine passes the job it holds and the ``updates`` it committed, so the hot path does
    not read the row back; other callers let it be read after the commit."""
    if not job_finished.has_listeners(SyncJob):
        return

    def send() -> None:
        if job is not None:
            finished = copy.copy(job)
            for name, value in (updates or {}).items():
                setattr(finished, name, value)
        else:
            found = SyncJob.objects.select_related("connection").filter(pk=job_id).first()
            if found is None:
                return
            finished = found
        job_finished.send(sender=SyncJob, job=finished)

    transaction.on_commit(send)


def backoff_seconds(failed_attempts: int) -> float:
    """The retry delay after ``failed_attempts`` (``policy.backoff_seconds`` on settings)."""
    return policy.backoff_seconds(failed_attempts, policy.Limits.from_settings())


def _release(run: _Run, **updates: Any) -> bool:
    """Move our running job to a new state; False if it is no longer ours. ``updated_at``
    defaults to now; a caller that timed the outcome from an earlier moment passes that one."""
    updates.setdefault("updated_at", timezone.now())
    return bool(
        SyncJob.objects.filter(pk=run.job.pk, state=State.RUNNING, worker_id=run.worker).update(
            leased_until=None, **updates
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
            # the moment the wait is counted from: run_after - updated_at is the wait decided
            "updated_at": now,
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
