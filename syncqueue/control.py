"""What people can do to connections and jobs: one implementation behind the admin, the settings
page, the JSON API and the commands, so the rules (and their error messages) are the same
everywhere.

Every function takes the acting user (``None`` for the system) and returns what happened; errors
that people can fix are raised as ``ControlError`` with a plain-language message.
"""

from __future__ import annotations

from typing import Any

from django.db import IntegrityError, transaction
from django.utils import timezone

from integrations.models import Connection
from integrations.schedule import InvalidSchedule, parse_schedule
from syncqueue import engine
from syncqueue.models import SyncJob, SyncLog

Status = Connection.Status
State = SyncJob.State


class ControlError(Exception):
    """A request that cannot be done as asked; the message says why."""


class NeedsCredentials(ControlError):
    """The connection waits for new credentials: a sync now could only fail the same way."""


def _refuse_without_credentials(conn: Connection) -> None:
    if conn.status == Status.AUTH_REQUIRED:
        raise NeedsCredentials(
            f"{conn.name} needs new credentials first: enter them in the connection's settings "
            "and save; it syncs at once."
        )


def _save(conn: Connection, *fields: str) -> None:
    conn.save(update_fields=[*fields, "updated_at"])


def after_save(conn: Connection, *, created: bool, user: Any = None) -> SyncJob | None:
    """Keep the schedule in step with an edited connection; a new one gets its initial sync."""
    conn.next_sync_at = conn.compute_next_sync()
    conn.stale_after = conn.compute_stale_after()
    _save(conn, "next_sync_at", "stale_after")
    if created and conn.enabled:
        return engine.enqueue(conn, SyncJob.Kind.INITIAL, requested_by=user)
    return None


def sync_now(conn: Connection, user: Any = None, *, full: bool = False) -> SyncJob:
    """Queue a manual sync (or a full resync); a second request returns the waiting job.
    Refused (``NeedsCredentials``) while the connection waits for new credentials."""
    _refuse_without_credentials(conn)
    try:
        return engine.enqueue(
            conn, SyncJob.Kind.FULL_RESYNC if full else SyncJob.Kind.MANUAL, requested_by=user
        )
    except engine.ConnectionDisabled as exc:
        raise ControlError(exc.message) from None


STAFF_DISABLED = (
    "An administrator turned this connection off{why} Ask your administrator to turn it on again."
)


def staff_disabled_message(conn: Connection) -> str:
    why = f": {conn.disabled_reason.rstrip('.')}." if conn.disabled_reason else "."
    return STAFF_DISABLED.format(why=why)


def enable(conn: Connection, *, by_staff: bool = True) -> None:
    """Turn a connection on again; its health starts afresh and its schedule resumes.

    An owner (``by_staff=False``) cannot undo staff's decision: a connection staff turned off
    raises ``ControlError`` saying so.
    """
    if not by_staff and conn.disabled_by_staff and not conn.enabled:
        raise ControlError(staff_disabled_message(conn))
    with transaction.atomic():
        conn.enabled = True
        conn.disabled_reason = ""
        conn.disabled_by_staff = False
        fields = ["enabled", "disabled_reason", "disabled_by_staff"]
        if conn.status == Status.DISABLED:
            conn.status = Status.OK
            conn.consecutive_failures = 0
            fields += ["status", "consecutive_failures"]
        conn.save(update_fields=[*fields, "updated_at"])
        conn.next_sync_at = conn.compute_next_sync()
        _save(conn, "next_sync_at")


def disable(conn: Connection, reason: str, *, by_staff: bool = True) -> int:
    """Turn a connection off with a reason people will see; waiting jobs are cancelled.
    Returns how many waiting jobs were cancelled (a running one stops at its next batch).

    Staff's decision (``by_staff``) binds the owner: they cannot turn it on again. An owner
    turning off their own connection cannot override staff's reason either.
    """
    if not by_staff and conn.disabled_by_staff and not conn.enabled:
        raise ControlError(staff_disabled_message(conn))
    with transaction.atomic():
        conn.enabled = False
        conn.disabled_reason = reason.strip()[:300]
        conn.disabled_by_staff = by_staff
        conn.status = Status.DISABLED
        conn.next_sync_at = None
        conn.save(
            update_fields=[
                "enabled",
                "disabled_reason",
                "disabled_by_staff",
                "status",
                "next_sync_at",
                "updated_at",
            ]
        )
        cancelled = 0
        for job in SyncJob.objects.filter(connection=conn, state__in=SyncJob.ACTIVE):
            cancelled += cancel_job(job) == "cancelled"
    return cancelled


def credentials_replaced(conn: Connection, user: Any = None) -> SyncJob | None:
    """New credentials: a connection waiting for re-authentication runs again at once (the
    page promised "syncing resumes at once"); returns that sync, if one was queued."""
    if conn.status != Status.AUTH_REQUIRED:
        return None
    conn.status = Status.OK
    conn.last_error = ""
    conn.next_sync_at = conn.compute_next_sync()
    _save(conn, "status", "last_error", "next_sync_at")
    if not conn.enabled or conn.pk is None:
        return None
    try:
        return engine.enqueue(conn, SyncJob.Kind.MANUAL, requested_by=user)
    except engine.ConnectionDisabled:
        return None


def schedule(conn: Connection, action: str, interval: str | None = None, user: Any = None) -> Any:
    """Schedule control: ``start``, ``stop``, ``trigger`` (sync now) or ``update-interval``.

    Raises ``ControlError`` naming the problem for an unknown action or an invalid schedule.
    """
    if action == "start":
        conn.scheduled = True
        _save(conn, "scheduled")
        conn.next_sync_at = conn.compute_next_sync(timezone.now())
        _save(conn, "next_sync_at")
        return conn.next_sync_at
    if action == "stop":
        conn.scheduled = False
        conn.next_sync_at = None
        _save(conn, "scheduled", "next_sync_at")
        return None
    if action == "trigger":
        return sync_now(conn, user)
    if action == "update-interval":
        if not interval:
            raise ControlError("Give the new schedule in 'interval', e.g. '*/15 * * * *'.")
        try:
            parsed = parse_schedule(interval)
        except InvalidSchedule as exc:
            raise ControlError(str(exc)) from None
        conn.schedule = parsed.text
        conn.next_sync_at = conn.compute_next_sync()
        conn.stale_after = conn.compute_stale_after()
        _save(conn, "schedule", "next_sync_at", "stale_after")
        return conn.next_sync_at
    raise ControlError(
        f"Unknown schedule action {action!r}: use start, stop, trigger or update-interval."
    )


# --- Jobs ---------------------------------------------------------------------------------------


def retry_job(job: SyncJob) -> bool:
    """Queue a failed or cancelled job again, keeping its checkpoint; False if not possible.
    Refused (``NeedsCredentials``) while the connection waits for new credentials."""
    _refuse_without_credentials(job.connection)
    if not job.connection.enabled:
        raise engine.ConnectionDisabled(f"{job.connection.name} is turned off.")
    now = timezone.now()
    waiting = SyncJob.objects.filter(
        connection=job.connection, dedupe_key=job.dedupe_key, state=State.QUEUED, slices=0
    ).exclude(pk=job.pk)
    if job.slices == 0 and waiting.exists():
        # it never ran, and the same work already waits (one_new_job_per_stream): that job
        # will do it; queueing this one again would be a duplicate
        return False
    with transaction.atomic():
        try:
            with transaction.atomic():  # savepoint: a new job may have been queued meanwhile
                done = SyncJob.objects.filter(
                    pk=job.pk, state__in=[State.FAILED, State.CANCELLED]
                ).update(
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
        except IntegrityError:
            return False  # the same never-started work already waits
        if done:
            SyncLog.objects.create(
                job=job,
                connection=job.connection,
                level="info",
                message="Queued again by request; resuming from the checkpoint.",
            )
            engine.submit_ticket(job.pk)
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
            engine.announce_finished(job.pk)
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
