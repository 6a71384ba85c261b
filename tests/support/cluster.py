"""Driving real qclusters from tests: one set of fast settings, waiting for jobs to finish (with
the dispatcher's rescues), and killing the worker that runs a job."""

from __future__ import annotations

import os
import signal
from typing import Any

from syncqueue import dispatcher
from syncqueue.models import SyncJob
from tests.support.processes import wait_for

# Short timeouts so a killed worker's job is rescued in seconds (the system checks' rules:
# slice < 0.8 x timeout < lease, timeout < retry).
FAST_CLUSTER: dict[str, Any] = {
    "SYNC_WORKERS": 1,
    "SYNC_TASK_TIMEOUT": 10,
    "SYNC_TASK_RETRY": 15,
    "SYNC_SLICE_SECONDS": 4,
    "SYNC_LEASE_SECONDS": 12,
    "SYNC_RETRY_BASE_SECONDS": 1,
    "SYNC_Q_POLL": 0.05,
}


def finished(*job_ids: int) -> list[SyncJob] | None:
    """The jobs, once all have finished (runs a dispatcher pass each time: rescues, tickets)."""
    dispatcher.dispatch()
    jobs = list(SyncJob.objects.filter(pk__in=job_ids, state__in=SyncJob.FINISHED))
    return jobs if len(jobs) == len(job_ids) else None


def wait_finished(job: SyncJob, timeout: float = 120) -> SyncJob:
    found = wait_for(lambda: finished(job.pk), timeout, f"job {job.pk} to finish", every=0.3)
    return found[0]


def running_with(job: SyncJob, progress: int) -> SyncJob | None:
    """The job, if a worker runs it and it has committed at least ``progress`` items."""
    return (
        SyncJob.objects.filter(pk=job.pk, state=SyncJob.State.RUNNING, progress_done__gte=progress)
        .exclude(worker_id="")
        .first()
    )


def kill_worker_of(job: SyncJob) -> int:
    """SIGKILL the worker process running ``job`` (its id is in the lease); returns its pid."""
    pid = int(job.worker_id.rsplit(":", 1)[1])
    os.kill(pid, signal.SIGKILL)
    return pid
