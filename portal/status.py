"""What a connection's owner is told: plain-language state and what to do about it, and the
summaries the settings page and the JSON API share (so both always say the same thing)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.utils import timezone

from integrations.models import Connection
from syncproject.safetext import neutral
from syncproject.timewords import next_sync, relative
from syncqueue.heartbeat import WorkerStatus
from syncqueue.models import SyncJob

Status = Connection.Status


@dataclass(frozen=True)
class Notice:
    level: str  # "error" | "warning" | "info"
    message: str
    action: str


def _what_next(conn: Connection, job: SyncJob | None) -> str:
    """What happens next, true for the state the last job is in."""
    if job is not None and job.state == SyncJob.State.RETRYING:
        when = relative(job.run_after) if job.run_after > timezone.now() else "any moment now"
        return f"It is tried again {when}; nothing to do for now."
    if job is not None and job.state in (SyncJob.State.QUEUED, SyncJob.State.RUNNING):
        return "A new attempt is under way."
    if conn.scheduled and conn.next_sync_at:
        return (
            f"It stopped trying; the next scheduled sync ({next_sync(conn)}) "
            "tries again, or use Sync now."
        )
    return "It stopped trying; use Sync now to try again."


def notice(conn: Connection, workers: WorkerStatus, job: SyncJob | None = None) -> Notice | None:
    """The one thing the owner should know about this connection now, if anything. ``job`` is
    the connection's current job (``current_job``): what is said about retries follows it."""
    fix_below = conn.owner_edits_settings
    if not conn.enabled:
        why = f": {conn.disabled_reason}" if conn.disabled_reason else "."
        if conn.disabled_by_staff:
            return Notice(
                "warning",
                f"An administrator turned this connection off{why}",
                "Ask your administrator to turn it on again.",
            )
        return Notice(
            "info", f"This connection is turned off{why}", "Turn it on again to start syncing."
        )
    if not workers.alive:
        return Notice(
            "error",
            "Background workers are not running — your administrator has been notified.",
            "Syncing resumes by itself when they are back; nothing is lost in the meantime.",
        )
    if conn.status == Status.AUTH_REQUIRED:
        message = conn.last_error or "The service rejected your credentials."
        if fix_below:
            return Notice(
                "error",
                message.rstrip(".") + " — update it below.",
                "Enter the current password and save; syncing resumes at once.",
            )
        return Notice(
            "error",
            ADMIN_CREDENTIALS,
            "Your administrator has been told; syncing resumes by itself once they are renewed.",
        )
    if conn.status == Status.FAILING:
        return Notice(
            "error",
            f"Syncing failed {conn.consecutive_failures} times in a row: {conn.last_error}",
            _what_next(conn, job)
            + " If it continues, check the settings"
            + (" below" if fix_below else "")
            + " or ask your administrator.",
        )
    if conn.status == Status.DEGRADED and conn.last_error:
        return Notice(
            "warning", f"The last attempt had a problem: {conn.last_error}", _what_next(conn, job)
        )
    if conn.skipped_items:
        labels = skipped_labels(conn)
        more = conn.skipped_items - len(labels)
        named = ", ".join(labels) + (f" and {more} more" if more > 0 else "")
        return Notice(
            "warning",
            f"{conn.skipped_items} item(s) could not be stored ({named}); everything else is "
            "in step.",
            "They are tried again at every sync; your administrator can see why.",
        )
    return None


def skipped_labels(conn: Connection, limit: int = 3) -> list[str]:
    """The first open skipped items of a connection, in words (remote text: neutralised)."""
    from syncqueue.models import SkippedItem

    rows = SkippedItem.objects.filter(connection=conn, state=SkippedItem.State.OPEN)
    return [neutral(label) for label in rows.order_by("id").values_list("label", flat=True)[:limit]]


def current_job(conn: Connection) -> SyncJob | None:
    """The job to show: the running one, else the newest waiting one, else the latest."""
    jobs = SyncJob.objects.filter(connection=conn)
    return (
        jobs.filter(state=SyncJob.State.RUNNING).first()
        or jobs.filter(state__in=SyncJob.WAITING).order_by("-id").first()
        or jobs.order_by("-id").first()
    )


def _iso(moment: Any) -> str | None:
    return moment.isoformat() if moment else None


#: what a job that failed on credentials the owner cannot change says to them: the error's own
#: text is written for whoever can (it names the fix: "enter the current secret for client …")
ADMIN_CREDENTIALS = (
    "The service no longer accepts the credentials your administrator set up for this connection."
)


def _error_for_owner(job: SyncJob) -> str | None:
    if not job.error_message:
        return None
    if job.error_class == "AuthFailed" and not job.connection.owner_edits_settings:
        return ADMIN_CREDENTIALS
    return neutral(job.error_message)


def job_summary(job: SyncJob) -> dict[str, Any]:
    """State, progress (with items per second while running), counts and a user-safe error
    (for credentials only an administrator can change, what the notice says, not the fix)."""
    per_second = None
    if job.state == SyncJob.State.RUNNING and job.started_at and job.progress_done:
        elapsed = (timezone.now() - job.started_at).total_seconds()
        per_second = round(job.progress_done / elapsed, 1) if elapsed > 0 else None
    return {
        "id": job.pk,
        "kind": job.kind,
        "state": job.state,
        "state_label": job.get_state_display(),
        "active": job.state in SyncJob.ACTIVE,
        "progress": {
            "done": job.progress_done,
            "total": job.progress_total,
            "percent": job.progress_percent,
            "per_second": per_second,
        },
        "skipped_items": job.skipped_items,
        "counts": {
            "created": job.created_count,
            "updated": job.updated_count,
            "deleted": job.deleted_count,
            "unchanged": job.unchanged_count,
        },
        "attempts": job.attempts,
        "max_attempts": job.max_attempts,
        "error": _error_for_owner(job),
        "created_at": _iso(job.created_at),
        "started_at": _iso(job.started_at),
        "finished_at": _iso(job.finished_at),
        "retry_at": _iso(job.run_after) if job.state == SyncJob.State.RETRYING else None,
    }


def connection_summary(conn: Connection, workers: WorkerStatus) -> dict[str, Any]:
    job = current_job(conn)
    note = notice(conn, workers, job)
    return {
        "id": conn.pk,
        "name": neutral(conn.name),
        "kind": conn.kind,
        "enabled": conn.enabled,
        "status": conn.status,
        "health": {
            "status": conn.status,
            "label": conn.get_status_display(),
            "message": neutral(note.message) if note else None,
            "action": note.action if note else None,
            "consecutive_failures": conn.consecutive_failures,
            "workers_running": workers.alive,
        },
        "schedule": conn.schedule,
        "scheduled": conn.scheduled,
        "last_success_at": _iso(conn.last_success_at),
        "next_sync_at": _iso(conn.next_sync_at),
        "skipped_items": conn.skipped_items,
        "job": job_summary(job) if job else None,
    }
