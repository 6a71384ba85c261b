"""Lease renewal: a running job proves its worker is alive, however long a batch takes.

While a slice runs, a thread in the worker moves the job's ``leased_until`` forward every
``SYNC_LEASE_RENEW_SECONDS``; every committed batch does so too. When the worker dies (SIGKILL,
OOM, a lost host) the renewals stop, the lease expires ``SYNC_LEASE_SECONDS`` later and the
next rescue pass (every ``SYNC_RESCUE_INTERVAL`` seconds, in each cluster's dispatcher) puts
the job back in the queue from its checkpoint. So the lease no longer has to outlast the
longest batch, and a killed sync runs again within a minute instead of after the task timeout.

A renewal only touches a job this worker still holds (``state='running'`` and our
``worker_id``): a job that was rescued meanwhile stays rescued, and the slice finds out at its
next commit (``_LeaseLost``) and stops without writing. Renewals wait at most a few seconds for
a database lock and never raise; a missed one is made up by the next.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta

from django.conf import settings
from django.db import DatabaseError, connection
from django.utils import timezone

from syncqueue.models import SyncJob

log = logging.getLogger(__name__)
LOCK_WAIT_SECONDS = 3.0  # longest wait of one renewal for a database lock (system check E008)


def lock_wait(renew_seconds: float) -> float:
    """How long one renewal may wait for a lock: 3 s, or half the interval if that is shorter."""
    return min(LOCK_WAIT_SECONDS, renew_seconds / 2)


def bound_lock_waits(seconds: float) -> None:
    """On this thread's own connection: never queue behind a long transaction for longer than
    ``seconds`` (a renewal missed is made up by the next one)."""
    milliseconds = max(1, round(seconds * 1000))
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(f"SET lock_timeout = {milliseconds}")
        elif connection.vendor == "sqlite":
            cursor.execute(f"PRAGMA busy_timeout = {milliseconds}")


def renew(job_id: int, worker: str) -> bool:
    """Move the lease of our running job forward; False when it is no longer ours."""
    until = timezone.now() + timedelta(seconds=settings.SYNC_LEASE_SECONDS)
    return bool(
        SyncJob.objects.filter(pk=job_id, state=SyncJob.State.RUNNING, worker_id=worker).update(
            leased_until=until
        )
    )


class LeaseKeeper(threading.Thread):
    """Renews one job's lease until stopped (or until the job is no longer ours: then
    ``lost`` is set, and the slice stops before its next batch)."""

    def __init__(self, job_id: int, worker: str, every: float) -> None:
        super().__init__(name=f"lease-{job_id}", daemon=True)
        self.job_id, self.worker, self.every = job_id, worker, every
        self.stopped = threading.Event()
        self.lost = threading.Event()
        self.renewals = 0

    def run(self) -> None:
        try:
            while not self.stopped.wait(self.every):
                try:
                    if not self.renewals:
                        bound_lock_waits(lock_wait(self.every))
                    if not renew(self.job_id, self.worker):
                        # Rescued, finished or cancelled: say so unless this thread cannot see
                        # the job at all (a transaction not yet committed, as in tests).
                        if (
                            not self.stopped.is_set()
                            and SyncJob.objects.filter(pk=self.job_id).exists()
                        ):
                            self.lost.set()
                        return
                    self.renewals += 1
                except DatabaseError:
                    log.warning("Job %s: could not renew the lease.", self.job_id, exc_info=True)
                    connection.close_if_unusable_or_obsolete()
        finally:
            connection.close()  # this thread's own connection

    def stop(self) -> None:
        self.stopped.set()
        self.join(lock_wait(self.every) + 1)


@contextmanager
def kept(job_id: int, worker: str) -> Iterator[LeaseKeeper]:
    """Keep the lease of ``job_id`` alive for the duration of the block."""
    keeper = LeaseKeeper(job_id, worker, settings.SYNC_LEASE_RENEW_SECONDS)
    keeper.start()
    try:
        yield keeper
    finally:
        keeper.stop()
