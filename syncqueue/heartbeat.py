"""Liveness: heartbeats that prove work is being done, read by every surface.

Two writers prove work: each qcluster's sentinel (``cluster:<host>:<pid>``, only while the
cluster takes and runs tickets: ``syncqueue.cluster``) and each worker when it takes a ticket
(``worker:<host>:<pid>``). A process that merely exists proves nothing, so a frozen cluster goes
stale. The dispatcher's own row (``dispatcher``: its last full pass) is shown, but does not make
workers look alive: it runs in its own process and keeps going while workers are stuck.

A PENDING pile-up must never be silent: when the newest proof of work is older than
``SYNC_HEARTBEAT_STALE_SECONDS`` the admin, the settings page, ``/healthz``, the alert mails and
``manage.py sync_doctor`` all say that workers are not running and how to start them.
"""

from __future__ import annotations

import gc
import logging
import os
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from django.conf import settings
from django.db.models import Max, QuerySet
from django.utils import timezone

from syncqueue import identity
from syncqueue.models import WorkerHeartbeat

log = logging.getLogger(__name__)
DISPATCHER = "dispatcher"
CLUSTER_PREFIX = "cluster:"
LISTENER_PREFIX = "listener:"  # the IMAP IDLE listener (integrations.imap.listener)
LISTEN_COMMAND = "python manage.py sync_listen"
START_COMMAND = "manage.py qcluster"  # on each worker host (make run starts them too)
_START = f"{START_COMMAND} on each worker host (make run starts them with the web server)."
_WORKER_BEAT_EVERY = 15.0  # seconds between heartbeats from one busy worker process
_last_worker_beat = 0.0


def beat(name: str, **info: object) -> None:
    """Record that ``name`` is alive now."""
    WorkerHeartbeat.objects.update_or_create(
        name=name, defaults={"seen_at": timezone.now(), "info": info}
    )


def beat_worker(force: bool = False) -> None:
    """Heartbeat from a worker process, at most every few seconds (it runs on every ticket)."""
    global _last_worker_beat
    now = time.monotonic()
    if force or now - _last_worker_beat >= _WORKER_BEAT_EVERY:
        beat(f"worker:{identity.process()}", pid=os.getpid())
        _last_worker_beat = now


def prepare_worker_process() -> None:
    """Once a worker process has imported everything: move those objects out of the cyclic
    garbage collector's reach. Parsing mail creates many short-lived containers, and every
    full collection would otherwise rescan all of Django (about 12 % of a large mail sync)."""
    gc.freeze()


def on_worker_spawn(**kwargs: object) -> None:
    """django-q2 ``post_spawn`` handler. No heartbeat here: a process that started has proved
    nothing (the cluster's sentinel beats once it takes work)."""
    prepare_worker_process()


@dataclass(frozen=True)
class WorkerStatus:
    """What to tell people about the workers."""

    alive: bool
    last_seen: datetime | None
    age_seconds: float | None

    @property
    def message(self) -> str:
        if self.alive:
            return f"Workers are running (last heartbeat {self.age_seconds:.0f}s ago)."
        if self.last_seen is None:
            return (
                f"Background workers have never run, so no sync will happen. Start them: {_START}"
            )
        minutes = (self.age_seconds or 0) / 60
        return (
            f"Background workers are not running: the last heartbeat was {minutes:.0f} minutes "
            f"ago, so queued syncs are not being processed. Start them: {_START}"
        )


def proofs_of_work() -> QuerySet[WorkerHeartbeat]:
    """Heartbeats of clusters and workers (not the dispatcher's, nor the listener's)."""
    return WorkerHeartbeat.objects.exclude(name=DISPATCHER).exclude(
        name__startswith=LISTENER_PREFIX
    )


@dataclass(frozen=True)
class ListenerStatus:
    """The IMAP IDLE listener, from its newest heartbeat."""

    alive: bool
    last_seen: datetime | None
    age_seconds: float | None
    watched: int
    idling: int

    @property
    def message(self) -> str:
        if self.alive:
            return (
                f"The IMAP listener watches {self.watched} folder(s), {self.idling} in IDLE "
                f"(last heartbeat {self.age_seconds:.0f}s ago): new mail arrives within seconds."
            )
        if self.last_seen is None:
            return (
                "No IMAP listener has run: IMAP mail arrives on the schedule only. "
                f"Start one with: {LISTEN_COMMAND}"
            )
        minutes = (self.age_seconds or 0) / 60
        return (
            f"The IMAP listener is not running (last heartbeat {minutes:.0f} minutes ago): IMAP "
            f"mail arrives on the schedule only. Start it with: {LISTEN_COMMAND}"
        )


def listener_status(now: datetime | None = None) -> ListenerStatus:
    """Liveness of the IMAP listener(s): alive if any beat recently and did not stop."""
    now = now or timezone.now()
    rows = list(WorkerHeartbeat.objects.filter(name__startswith=LISTENER_PREFIX))
    live = [r for r in rows if not r.info.get("stopped")]
    newest = max((r.seen_at for r in rows), default=None)
    fresh = [
        r
        for r in live
        if (now - r.seen_at).total_seconds() <= settings.SYNC_HEARTBEAT_STALE_SECONDS
    ]
    return ListenerStatus(
        alive=bool(fresh),
        last_seen=newest,
        age_seconds=(now - newest).total_seconds() if newest else None,
        watched=sum(int(r.info.get("watched", 0)) for r in fresh),
        idling=sum(int(r.info.get("idling", 0)) for r in fresh),
    )


def worker_status(now: datetime | None = None) -> WorkerStatus:
    """Liveness from the newest proof of work (one aggregate query)."""
    now = now or timezone.now()
    last = proofs_of_work().aggregate(last=Max("seen_at"))["last"]
    if last is None:
        return WorkerStatus(alive=False, last_seen=None, age_seconds=None)
    age = (now - last).total_seconds()
    return WorkerStatus(
        alive=age <= settings.SYNC_HEARTBEAT_STALE_SECONDS, last_seen=last, age_seconds=age
    )


def prune_heartbeats(now: datetime) -> int:
    """Forget processes not seen for a day (worker pids change on every restart)."""
    cutoff = now - timedelta(days=1)
    return WorkerHeartbeat.objects.filter(seen_at__lt=cutoff).exclude(name=DISPATCHER).delete()[0]


@dataclass(frozen=True)
class ClusterState:
    """One qcluster as its last heartbeat describes it."""

    name: str
    seen_at: datetime
    age_seconds: float
    stale: bool
    workers: int
    busy: int
    heals: list[dict[str, Any]]  # the last few: {"at": epoch seconds, "reason": ...}
    heal_count: int  # since the cluster started
    stopped: bool  # shut down cleanly (not lost)

    @property
    def last_heal(self) -> dict[str, Any] | None:
        return self.heals[-1] if self.heals else None

    @property
    def last_heal_at(self) -> datetime | None:
        heal = self.last_heal
        return datetime.fromtimestamp(heal["at"], tz=UTC) if heal and "at" in heal else None

    @property
    def lost(self) -> bool:
        """Went silent without shutting down: frozen, killed, or its host is gone."""
        return self.stale and not self.stopped


def clusters(now: datetime | None = None) -> list[ClusterState]:
    """Every cluster seen in the last day, newest first."""
    now = now or timezone.now()
    stale_after = settings.SYNC_HEARTBEAT_STALE_SECONDS
    found = []
    for name, seen_at, info in WorkerHeartbeat.objects.filter(
        name__startswith=CLUSTER_PREFIX
    ).values_list("name", "seen_at", "info"):
        age = (now - seen_at).total_seconds()
        info = info if isinstance(info, dict) else {}
        found.append(
            ClusterState(
                name=name[len(CLUSTER_PREFIX) :],
                seen_at=seen_at,
                age_seconds=age,
                stale=age > stale_after,
                workers=int(info.get("workers") or 0),
                busy=int(info.get("busy") or 0),
                heals=list(info.get("heals") or []),
                heal_count=int(info.get("generation") or 0),
                stopped=bool(info.get("stopped")),
            )
        )
    return sorted(found, key=lambda c: c.age_seconds)
