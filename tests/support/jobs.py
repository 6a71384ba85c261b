"""Running one job in this test process (with the ``work`` fixture's in-process worker loop)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from integrations.models import Connection
from syncqueue import engine
from syncqueue.models import SyncJob


def sync_once(
    conn: Connection,
    work: Callable[..., Any],
    kind: str = SyncJob.Kind.MANUAL,
    *,
    succeed: bool = False,
) -> SyncJob:
    """Queue a ``kind`` job for ``conn``, run tickets until nothing is claimable, and return the
    job as it ended. With ``succeed``, fail unless it succeeded (showing its error)."""
    job = engine.enqueue(conn, kind)
    work()
    job.refresh_from_db()
    if succeed:
        assert job.state == SyncJob.State.SUCCEEDED, (job.error_class, job.error_message)
    return job
