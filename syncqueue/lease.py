"""Lease renewal: a running job proves its worker is alive, however long a batch takes.

While a slice runs, a thread in the worker (one per process, for every slice it runs) moves the
job's ``leased_until`` forward every
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
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
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


@dataclass(eq=False)
class Held:
    """A slice's lease as the keeper renews it. ``lost`` is set when the job is no longer ours
    (rescued, cancelled): the slice then stops before its next batch."""

    job_id: int
    worker: str
    every: float
    due: float  # time.monotonic() of the next renewal
    lost: threading.Event = field(default_factory=threading.Event)
    stopped: bool = False
    renewals: int = 0


class LeaseKeeper(threading.Thread):
    """One thread per process renews the leases of the slices this process runs. Started once
    (again after a fork: threads do not survive one), not per job: a no-op job finishes long
    before its first renewal is due, and starting and joining a thread per job cost more than
    the job. Its database connection is closed whenever no slice runs."""

    def __init__(self) -> None:
        super().__init__(name="lease-keeper", daemon=True)
        self.held: dict[int, Held] = {}
        self.changed = threading.Condition()
        self.bounded = False

    def run(self) -> None:
        while True:
            with self.changed:
                now = time.monotonic()
                due = [h for h in self.held.values() if h.due <= now]
                if not due:
                    if not self.held and connection.connection is not None:
                        connection.close()  # nothing runs: give the connection back
                        self.bounded = False
                    soonest = min((h.due for h in self.held.values()), default=None)
                    self.changed.wait(None if soonest is None else soonest - now)
                    continue
                for held in due:
                    held.due = now + held.every
            for held in due:
                self._renew(held)

    def _renew(self, held: Held) -> None:
        try:
            if not self.bounded:
                bound_lock_waits(lock_wait(held.every))
                self.bounded = True
            if renew(held.job_id, held.worker):
                held.renewals += 1
                return
            # Rescued, finished or cancelled: say so unless the slice ended meanwhile or this
            # thread cannot see the job at all (a transaction not yet committed, as in tests).
            if not held.stopped and SyncJob.objects.filter(pk=held.job_id).exists():
                held.lost.set()
            with self.changed:
                if self.held.get(held.job_id) is held:
                    del self.held[held.job_id]
        except DatabaseError:
            log.warning("Job %s: could not renew the lease.", held.job_id, exc_info=True)
            connection.close_if_unusable_or_obsolete()
            self.bounded = connection.connection is not None and self.bounded


_keeper: LeaseKeeper | None = None
_keeper_started = threading.Lock()


def keeper() -> LeaseKeeper:
    """This process's lease keeper, started on first use."""
    global _keeper
    with _keeper_started:
        if _keeper is None or not _keeper.is_alive():
            _keeper = LeaseKeeper()
            _keeper.start()
        return _keeper


@contextmanager
def kept(job_id: int, worker: str) -> Iterator[Held]:
    """Keep the lease of ``job_id`` alive for the duration of the block."""
    every = settings.SYNC_LEASE_RENEW_SECONDS
    held = Held(job_id, worker, every, time.monotonic() + every)
    renewer = keeper()
    with renewer.changed:
        renewer.held[job_id] = held
        renewer.changed.notify()
    try:
        yield held
    finally:
        held.stopped = True
        with renewer.changed:
            if renewer.held.get(job_id) is held:
                del renewer.held[job_id]
            renewer.changed.notify()
