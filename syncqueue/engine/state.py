"""What one slice of a running job carries between the engine's parts, and the signals
(exceptions) by which a slice learns it must stop."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from typing import Any

from integrations.base import (
    Counts,
    SyncContext,
)
from integrations.errors import (
    SyncError,
)
from integrations.models import Connection
from syncproject.safetext import storable
from syncqueue.models import SyncJob, SyncLog

log = logging.getLogger("syncqueue.engine")

State = SyncJob.State
Kind = SyncJob.Kind
Priority = SyncJob.Priority


class InternalError(SyncError):
    """An exception no connector classified: retried a bounded number of times."""

    error_class = "Internal"


class _LeaseLost(Exception):
    """Our lease was taken over (the job was rescued); stop without writing anything more."""


class _CancelRequested(Exception):
    """Someone cancelled the running job; stop at this batch boundary."""


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
        """Queue a log line; remote text in it (a subject, say) is made storable first, so a
        message nobody can store cannot stop the sync through its log line."""
        self.logs.append(
            SyncLog(
                job_id=self.job.pk,
                connection_id=self.connection.pk,
                level=level,
                message=storable(message),
                data={k: storable(v) if isinstance(v, str) else v for k, v in data.items()},
            )
        )

    def flush_logs(self) -> None:
        if self.logs:
            SyncLog.objects.bulk_create(self.logs)
            self.logs.clear()
