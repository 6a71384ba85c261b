"""Driving real qclusters from tests: one set of fast settings, waiting for jobs to finish (with
the dispatcher's rescues), killing the worker that runs a job, and finding a cluster's processes
by role (``setproctitle`` names them: "... idle", "... pusher", "... monitor", "qcluster
dispatcher")."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

from syncqueue import dispatcher
from syncqueue.models import SyncJob
from tests.support.processes import descendants, wait_for

# Short timeouts so a killed worker's job is rescued in seconds (the system checks' rules:
# slice < 0.8 x timeout, timeout < retry, lease >= 3 x renewal).
FAST_CLUSTER: dict[str, Any] = {
    "SYNC_WORKERS": 1,
    "SYNC_TASK_TIMEOUT": 10,
    "SYNC_TASK_RETRY": 15,
    "SYNC_SLICE_SECONDS": 4,
    "SYNC_LEASE_SECONDS": 6,
    "SYNC_RESCUE_INTERVAL": 1,
    "SYNC_DISPATCH_INTERVAL": 3,
    "SYNC_CLUSTER_BEAT_SECONDS": 1,
    "SYNC_RETRY_BASE_SECONDS": 1,
    "SYNC_Q_POLL": 0.05,
}


def finished(*job_ids: int, dispatch: bool = True) -> list[SyncJob] | None:
    """The jobs, once all have finished. Each call first runs a dispatcher pass (rescues,
    tickets), unless ``dispatch`` is false: then the jobs must get there with only what the
    clusters do themselves."""
    if dispatch:
        dispatcher.dispatch()
    jobs = list(SyncJob.objects.filter(pk__in=job_ids, state__in=SyncJob.FINISHED))
    return jobs if len(jobs) == len(job_ids) else None


def wait_finished(
    job: SyncJob, timeout: float = 120, *, dispatch: bool = True, every: float = 0.3
) -> SyncJob:
    """``job`` once it has finished (see :func:`finished`); fails after ``timeout`` seconds."""
    found = wait_for(
        lambda: finished(job.pk, dispatch=dispatch), timeout, f"job {job.pk} to finish", every
    )
    return found[0]


def running_with(job: SyncJob, progress: int) -> SyncJob | None:
    """The job, if a worker runs it and it has committed at least ``progress`` items."""
    return (
        SyncJob.objects.filter(pk=job.pk, state=SyncJob.State.RUNNING, progress_done__gte=progress)
        .exclude(worker_id="")
        .first()
    )


def worker_pid(job: SyncJob) -> int:
    """The pid of the worker process running ``job`` (the end of the lease's worker id)."""
    return int(job.worker_id.rsplit(":", 1)[1])


def kill_worker_of(job: SyncJob) -> int:
    """SIGKILL the worker process running ``job``; returns its pid."""
    pid = worker_pid(job)
    os.kill(pid, signal.SIGKILL)
    return pid


def roles(main_pid: int) -> dict[str, list[int]]:
    """A qcluster's processes by role: sentinel, idle/busy workers, pusher, monitor, dispatcher."""
    found: dict[str, list[int]] = {}
    for pid in sorted(descendants(main_pid)):
        try:
            title = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if "qcluster dispatcher" in title:
            role = "dispatcher"
        elif "MainProcess" in title:
            role = "sentinel"
        elif title.rstrip().endswith((" pusher", " monitor", " idle")):
            role = title.split()[-1]
        elif " processing " in title:
            role = "busy"
        else:
            continue
        found.setdefault(role, []).append(pid)
    return found


def wchan(pid: int) -> str:
    """What the kernel says ``pid`` waits on (e.g. ``anon_pipe_read`` — ``pipe_read`` on older
    kernels — or ``futex_do_wait``)."""
    try:
        return Path(f"/proc/{pid}/wchan").read_text()
    except OSError:
        return ""


def task_lock_holder(main_pid: int) -> int | None:
    """The idle worker waiting in ``read()`` on the task pipe: it holds the task queue's read
    lock (``Queue.get`` reads under ``_rlock``); the other idle workers wait on that lock."""
    idle = roles(main_pid).get("idle", [])
    readers = [pid for pid in idle if wchan(pid).endswith("pipe_read")]  # anon_pipe_read, pipe_read
    waiters = [pid for pid in idle if wchan(pid).startswith("futex")]
    if len(readers) == 1 and len(waiters) == len(idle) - 1:
        return readers[0]
    return None


def cluster_beat(main_pid: int) -> Any:
    """The heartbeat row of the cluster whose main process is ``main_pid`` (None if none)."""
    from syncqueue.models import WorkerHeartbeat

    sentinels = roles(main_pid).get("sentinel", [])
    if not sentinels:
        return None
    return WorkerHeartbeat.objects.filter(name__endswith=f":{sentinels[0]}").first()
