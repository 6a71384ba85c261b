"""Connection health after a failed attempt (``policy.health_after``), and its mails."""

from __future__ import annotations

import logging
from datetime import datetime

from integrations.models import Connection
from syncqueue import notifications, policy
from syncqueue.models import SyncJob

log = logging.getLogger("syncqueue.engine")

State = SyncJob.State
Kind = SyncJob.Kind
Priority = SyncJob.Priority


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
