"""The worker cluster: django-q2's cluster, made to heal itself and to prove it works.

``manage.py qcluster`` (our command, see ``syncqueue/management/commands/qcluster.py``) starts
:class:`SafeCluster`, whose sentinel is :class:`SafeSentinel`. What it adds to django-q2 1.11:

**The frozen-cluster bug** (django-q2 #23, Koed00/django-q #200 and #394; still open upstream).
A cluster's workers share one ``multiprocessing.Queue``. An idle worker waits in ``get()``
*holding the queue's read lock* (a POSIX semaphore with no owner). SIGKILL that worker (the OOM
killer, ``kill -9``) and the lock is never released: the replacement worker and the survivors
wait on it forever, no task runs again, and SIGTERM hangs because ``Sentinel.stop()`` waits
without a bound. The monitor has the same bug on the result queue (its results are never saved
or acknowledged, so every ticket is delivered again and again), and a worker killed inside
``with timer.get_lock()`` blocks the sentinel itself.

What the sentinel does about it:

1. After every reincarnation it checks the locks the dead process could have held. A lock is
   *orphaned* when it stays taken for :data:`CHECK_WINDOW` seconds while no live process that
   may hold it is blocked in ``read()``/``write()`` on that queue's pipe
   (``/proc/<pid>/task/*/syscall``).
2. A stall detector catches what the lock check cannot see: tickets waiting in the task queue, a
   worker free and nothing started for ``SYNC_STALL_SECONDS``; results waiting and none saved;
   a pusher that stopped polling the broker.
3. Either starts a *new generation*: a fresh task queue (and result queue + monitor when the
   result side is broken), a fresh pusher and fresh workers. Old workers are retired, not killed:
   a busy one finishes its slice; an idle one leaves through SIGUSR1 -> SystemExit. Complete
   tickets still in the old pipe move to the new queue; anything else comes back from the broker
   after ``retry`` (it was never acknowledged). Tickets are hints, so that is harmless.
4. ``stop()`` is bounded: nothing waits forever on a process or a queue.
5. More than ``SYNC_CLUSTER_MAX_HEALS`` generations within ten minutes: the sentinel gives up
   and exits 3, and so does ``qcluster``, for systemd or ``make run`` to restart it.

**Proving work, not processes.** Each guard cycle the sentinel decides whether the cluster is
healthy (no stall condition held for more than a few seconds). Only then does it write its
``cluster:<host>:<pid>`` heartbeat (what ``/healthz``, the dashboard, ``sync_doctor`` and the
alert mails read) and send ``WATCHDOG=1`` to ``$NOTIFY_SOCKET``. A frozen cluster therefore
looks dead within seconds, and a supervisor whose watchdog stops hearing from it restarts it.

**A dispatcher that does not depend on tickets.** Each cluster runs the dispatcher loop in its
own process (:func:`dispatcher_loop`): rescues every ``SYNC_RESCUE_INTERVAL`` seconds, a full
pass every ``SYNC_DISPATCH_INTERVAL`` seconds, coordinated across clusters through the
database. It keeps running while any cluster is up, even when that cluster's workers are stuck.

The module leans on private internals (``multiprocessing.Queue._rlock`` and friends, copies of
``Sentinel.guard``/``stop``). :func:`check_internals` fails loudly at start-up when an upgrade
changes them, and ``tests/syncqueue/test_frozen_cluster.py`` runs the stock cluster next to
ours, so the day upstream fixes #23 the test says so.
"""

from __future__ import annotations

import contextlib
import logging
import os
import platform
import select
import signal
import struct
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing import Array, Event, Value
from multiprocessing.process import BaseProcess
from multiprocessing.reduction import ForkingPickler
from multiprocessing.synchronize import Event as EventType
from pathlib import Path
from queue import Full
from typing import Any

from django import db
from django.conf import settings
from django_q import cluster as q_cluster
from django_q.cluster import Cluster, Sentinel, get_mp_context
from django_q.conf import Conf
from django_q.monitor import monitor
from django_q.pusher import pusher
from django_q.queues import Queue
from django_q.scheduler import scheduler
from django_q.signals import post_execute, post_execute_in_worker, pre_execute
from django_q.status import Stat
from django_q.worker import worker

from syncqueue import identity, watchdog
from syncqueue.broker import ack_ticket, take_tickets, tickets_commit_with_jobs

log = logging.getLogger("syncqueue.cluster")

RETIRE_SIGNAL = signal.SIGUSR1
CHECK_WINDOW = 2.0  # seconds a lock must stay taken, with no live holder in a syscall
RETIRE_GRACE = 5.0  # seconds an idle retiring worker gets between SIGUSR1 and SIGKILL
HEAL_WINDOW = 600.0  # SYNC_CLUSTER_MAX_HEALS counts generations within this many seconds
GIVE_UP_EXIT_CODE = 3
UNHEALTHY_AFTER = 5.0  # seconds a stall condition may hold before the cluster stops beating
GATE_POLL = 0.05  # longest the pusher waits for a free worker without being woken
EMPTY, IDLE, BUSY = 0, 1, 2  # a worker slot's state
_SYSCALLS = {
    "x86_64": {"read": 0, "write": 1, "futex": 202},
    "aarch64": {"read": 63, "write": 64, "futex": 98},
}.get(platform.machine(), {})


def check_internals() -> None:
    """Refuse to start if the private parts this module relies on are not there."""
    probe = Queue()
    try:
        for name in ("_rlock", "_wlock", "_reader", "_writer", "size"):
            if not hasattr(probe, name):
                raise RuntimeError(
                    f"multiprocessing/django-q2 changed: Queue.{name} is gone; "
                    "syncqueue.cluster must be reviewed before this version is used."
                )
    finally:
        probe.close()
        probe.join_thread()
    for name in ("guard", "stop", "reincarnate", "spawn_cluster", "spawn_pusher"):
        if not hasattr(Sentinel, name):
            raise RuntimeError(f"django-q2 changed: Sentinel.{name} is gone.")


# --- child processes -----------------------------------------------------------------------------


def retirable_worker(
    task_queue: Queue,
    result_queue: Queue,
    timer: Any,
    timeout: int,
    started: Any,
    slots: Any,
    slot: int,
    wake: int,
) -> None:
    """django-q2's worker plus: its state in ``slots[slot]`` (busy from the moment it takes a
    ticket, which is what the pusher's gate and the stall detector read; a byte written to the
    ``wake`` pipe when it is free again wakes the pusher at once), a count of started tasks
    (the timer stays -1 during a task without timeout), and a quiet exit on
    :data:`RETIRE_SIGNAL` when no task runs (SystemExit -> normal exit -> the result queue's
    feeder thread is joined, so results already put are flushed). No lock anywhere: a killed
    process cannot leave one taken."""
    slots[slot] = IDLE
    notify(wake)
    take = task_queue.get

    def get(*args: Any, **kwargs: Any) -> Any:
        item = take(*args, **kwargs)
        slots[slot] = BUSY
        return item

    task_queue.get = get

    def on_pre_execute(**kwargs: Any) -> None:
        started.value += 1

    def on_post_execute(**kwargs: Any) -> None:
        slots[slot] = IDLE
        notify(wake)

    def on_retire(signum: int, frame: Any) -> None:
        if slots[slot] != BUSY and timer.get_obj().value < 0:  # -1 idle, -2 recycling
            raise SystemExit(0)

    pre_execute.connect(on_pre_execute, weak=False, dispatch_uid="syncqueue-started")
    post_execute_in_worker.connect(on_post_execute, weak=False, dispatch_uid="syncqueue-idle")
    signal.signal(RETIRE_SIGNAL, on_retire)
    worker(task_queue, result_queue, timer, timeout)


def counting_monitor(result_queue: Queue, broker: Any, saved: Any) -> None:
    """django-q2's monitor plus a count of saved results."""

    def on_post_execute(**kwargs: Any) -> None:
        saved.value += 1

    post_execute.connect(on_post_execute, weak=False, dispatch_uid="syncqueue-saved")
    if tickets_commit_with_jobs():
        broker.acknowledge = ack_ticket  # one statement instead of three
    monitor(result_queue, broker)


def notify(wake: int) -> None:
    """Wake the pusher: one byte into a non-blocking pipe. No lock, so a process killed here
    leaves nothing taken; a full pipe already means "wake up"."""
    with contextlib.suppress(BlockingIOError, OSError):
        os.write(wake, b"\0")


def wait_for_wake(wake: int, seconds: float) -> None:
    """Sleep until a worker writes to the wake pipe (or ``seconds`` pass), then empty it."""
    ready, _, _ = select.select([wake], [], [], seconds)
    if ready:
        with contextlib.suppress(BlockingIOError, OSError):
            os.read(wake, 4096)


def wake_pipe() -> tuple[int, int]:
    """(read end, write end), both non-blocking, inherited by the cluster's children."""
    read, write = os.pipe()
    os.set_blocking(read, False)
    os.set_blocking(write, False)
    return read, write


def gated_pusher(
    task_queue: Queue, event: EventType, broker: Any, polled: Any, slots: Any, wake: int
) -> None:
    """django-q2's pusher, taking tickets from the database only for workers that are free.

    Stock django-q2 fetches ``bulk`` tickets whenever its in-memory queue has room: a cluster
    whose workers are all busy for minutes holds tickets that an idle worker of another cluster
    could run now (a rescued sync waited up to a whole slice that way). Here a ticket is
    fetched only when a worker of this cluster is free to take it, as pg-boss and BullMQ
    workers do. A worker that becomes free wakes it through a pipe, so the gate costs no
    polling delay. It also counts its polls: a pusher stuck anywhere stops counting."""
    dequeue = broker.dequeue
    orm = tickets_commit_with_jobs()  # our one-statement dequeue; else the broker's own
    bulk = Conf.BULK
    counter = task_queue.size.count.get_obj()  # read without the lock

    def gated() -> Any:
        while True:
            polled.value += 1
            if event.is_set():
                return None  # stopping or replaced: fetch nothing more
            free = sum(1 for state in slots if state == IDLE) - counter.value
            if free > 0:
                if orm:
                    return take_tickets(min(bulk, free))
                Conf.BULK = min(bulk, free)  # this process's copy; read per dequeue
                return dequeue()
            wait_for_wake(wake, GATE_POLL)

    broker.dequeue = gated
    pusher(task_queue, event, broker)


def dispatcher_loop(stop: EventType) -> None:
    """The dispatcher, in its own process: see :func:`syncqueue.dispatcher.tick`."""
    from django_q.conf import setproctitle

    from syncqueue import dispatcher

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    if setproctitle:
        setproctitle.setproctitle("qcluster dispatcher")
    log.info("Dispatcher loop running in process %s.", os.getpid())
    while not stop.is_set():
        try:
            dispatcher.tick()
        except Exception:
            log.exception("Dispatcher pass failed; trying again shortly.")
        finally:
            db.connections.close_all()
        stop.wait(settings.SYNC_RESCUE_INTERVAL)


def size(queue: Queue) -> int:
    """A django-q2 queue's length, read without its lock (a process killed while holding that
    lock must not block the sentinel; a value off by one for a moment does no harm)."""
    return int(queue.size.count.get_obj().value)


def busy(process: Any) -> bool:
    """Whether a worker has taken a ticket it has not finished."""
    return bool(process.slots[process.slot] == BUSY)


# --- /proc ---------------------------------------------------------------------------------------


def in_syscall(pids: list[int], name: str, fd: int | None) -> bool | None:
    """True if a thread of one of ``pids`` is blocked in syscall ``name`` on ``fd`` (any fd
    when None); None when /proc could not tell."""
    number = _SYSCALLS.get(name)
    if number is None:
        return None
    unknown = False
    for pid in pids:
        try:
            threads = list(Path(f"/proc/{pid}/task").iterdir())
        except OSError:
            continue  # gone
        for thread in threads:
            try:
                fields = (thread / "syscall").read_text().split()
            except PermissionError:
                unknown = True
                continue
            except OSError:
                continue
            if (
                len(fields) > 1
                and fields[0] == str(number)
                and (fd is None or int(fields[1], 16) == fd)
            ):
                return True
    return None if unknown else False


def lock_orphaned(
    lock: Any,
    holders: Callable[[], list[int]],
    syscall: str | None = None,
    fd: int | None = None,
    window: float = CHECK_WINDOW,
) -> bool:
    """True if ``lock`` stays taken for ``window`` seconds while no live possible holder is
    blocked in ``syscall`` on ``fd`` (a live reader holds the read lock while it waits in
    ``read()``). Where /proc cannot tell, the answer is False: the stall detector decides."""
    deadline = time.monotonic() + window
    while time.monotonic() < deadline:
        if syscall:
            seen = in_syscall(holders(), syscall, fd)
            if seen is None or seen:
                return False
        if lock.acquire(timeout=0.05):
            lock.release()
            return False
    return True


def syscalls_visible() -> bool:
    """Whether /proc shows this machine's processes blocked in read() (not on every
    architecture, kernel or sandbox): a child that waits on a pipe must be seen doing so."""
    reader, writer = os.pipe()
    child = get_mp_context().Process(target=os.read, args=(reader, 1), daemon=True)
    child.start()
    try:
        deadline = time.monotonic() + 2
        while time.monotonic() < deadline:
            if in_syscall([child.pid], "read", reader):
                return True
            time.sleep(0.01)
        return False
    finally:
        os.write(writer, b"x")
        child.join(2)
        if child.is_alive():
            child.kill()
        os.close(reader)
        os.close(writer)


def read_frames(conn: Any, buf: bytearray) -> list[bytes]:
    """Complete ``multiprocessing.Connection`` frames available on ``conn`` now; never blocks
    (as long as nobody else reads the pipe). A partial frame stays in ``buf``."""
    fd = conn.fileno()
    while conn.poll(0):
        chunk = os.read(fd, 1 << 16)
        if not chunk:
            break
        buf += chunk
    frames = []
    while len(buf) >= 4:
        (size,) = struct.unpack("!i", buf[:4])
        head = 4
        if size == -1:
            if len(buf) < 12:
                break
            (size,) = struct.unpack("!Q", buf[4:12])
            head = 12
        if len(buf) < head + size:
            break
        frames.append(bytes(buf[head : head + size]))
        del buf[: head + size]
    return frames


# --- the sentinel --------------------------------------------------------------------------------


@dataclass
class _OldGeneration:
    """A replaced task queue (and maybe result queue) being wound down."""

    task_queue: Queue
    pusher: BaseProcess
    since: float
    task_rlock_orphaned: bool
    result_queue: Queue | None = None
    monitor: BaseProcess | None = None
    task_buf: bytearray = field(default_factory=bytearray)
    result_buf: bytearray = field(default_factory=bytearray)
    pending: list[Any] = field(default_factory=list)


class SafeSentinel(Sentinel):
    """django-q2's Sentinel that heals a frozen cluster (see the module docstring)."""

    # set by Sentinel (django-q2 has no type information); workers carry extra attributes
    # (timer, started, slots, slot) so the pool holds Any
    pool: list[Any]
    task_queue: Queue
    result_queue: Queue
    event_out: EventType
    pusher: Any
    monitor: Any

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # Sentinel.__init__ ends in start() -> guard(), so our state comes first.
        self.generation = 0
        self.retiring: list[BaseProcess] = []
        self.old: list[_OldGeneration] = []
        self.heals: list[float] = []
        self.heal_log: list[dict[str, Any]] = []
        self.gave_up = False
        self.saved = Value("L", 0, lock=False)
        self.polled = Value("L", 0, lock=False)
        # per generation; twice the pool, so a timed-out worker that is still dying keeps its own
        self.slots = Array("b", 2 * max(1, Conf.WORKERS), lock=False)
        self.wake_read, self.wake_write = wake_pipe()  # shared by every generation
        self.stall_seconds = float(settings.SYNC_STALL_SECONDS)
        self.max_heals = int(settings.SYNC_CLUSTER_MAX_HEALS)
        self.beat_every = float(settings.SYNC_CLUSTER_BEAT_SECONDS)
        self._stalls: dict[str, tuple[float, int]] = {}
        self._last_beat = 0.0
        self.dispatcher: BaseProcess | None = None
        self.dispatcher_stop = Event()
        self.beat_name = f"cluster:{identity.process()}"
        self.dying: list[BaseProcess] = []  # timed-out workers told to stop, not yet gone
        self.closing = False
        self.lock_check = syscalls_visible()
        if not self.lock_check:
            log.warning(
                "/proc does not show what processes wait on here: a worker that dies holding "
                "a queue lock is found by the stall detector (SYNC_STALL_SECONDS) only."
            )
        super().__init__(*args, **kwargs)
        if self.gave_up:
            raise SystemExit(GIVE_UP_EXIT_CODE)

    # -- spawning ---------------------------------------------------------------------------

    def _new_task_queue(self) -> Queue:
        return Queue(maxsize=Conf.QUEUE_LIMIT) if Conf.QUEUE_LIMIT else Queue()

    def _process(self, target: Callable[..., None], *args: Any) -> BaseProcess:
        process = get_mp_context().Process(
            target=target, args=args, name=f"Process-{uuid.uuid4().hex}"
        )
        process.daemon = True
        return process

    def spawn_worker(self) -> None:
        timer = Value("f", -1)
        started = Value("L", 0, lock=False)
        taken = {p.slot for p in self.pool + self.dying if p.slots is self.slots}
        slot = next(i for i in range(len(self.slots)) if i not in taken)
        self.slots[slot] = EMPTY  # until the new worker says it is ready
        process = self._process(
            retirable_worker,
            self.task_queue,
            self.result_queue,
            timer,
            self.timeout,
            started,
            self.slots,
            slot,
            self.wake_write,
        )
        process.daemon = Conf.DAEMONIZE_WORKERS
        process.timer = timer  # type: ignore[attr-defined]
        process.started = started  # type: ignore[attr-defined]
        process.slots, process.slot = self.slots, slot  # type: ignore[attr-defined]
        self.pool.append(process)
        process.start()

    def spawn_monitor(self) -> BaseProcess:
        process = self._process(counting_monitor, self.result_queue, self.broker, self.saved)
        process.start()
        return process

    def spawn_pusher(self) -> BaseProcess:
        process = self._process(
            gated_pusher,
            self.task_queue,
            self.event_out,
            self.broker,
            self.polled,
            self.slots,
            self.wake_read,
        )
        process.start()
        return process

    def spawn_dispatcher(self) -> BaseProcess:
        if not Conf.SYNC:
            db.connections.close_all()
        process = self._process(dispatcher_loop, self.dispatcher_stop)
        process.start()
        return process

    def spawn_cluster(self) -> None:
        super().spawn_cluster()
        self.dispatcher = self.spawn_dispatcher()

    # -- detection --------------------------------------------------------------------------

    @staticmethod
    def _live(processes: list[Any]) -> list[int]:
        return [p.pid for p in processes if p is not None and p.is_alive()]

    def broken_locks(self) -> dict[str, bool]:
        """The queue locks a dead process left taken ({} when healthy), by name."""
        tq, rq = self.task_queue, self.result_queue
        pool = lambda: self._live(self.pool)  # noqa: E731
        writers = lambda: self._live(self.pool + self.retiring)  # noqa: E731
        checks: list[tuple[str, Any, Callable[[], list[int]], str | None, int | None]] = [
            ("task_queue._rlock", tq._rlock, pool, "read", tq._reader.fileno()),
            (
                "task_queue._wlock",
                tq._wlock,
                lambda: self._live([self.pusher]),
                "write",
                tq._writer.fileno(),
            ),
            ("task_queue.size", tq.size.count.get_lock(), list, None, None),
            (
                "result_queue._rlock",
                rq._rlock,
                lambda: self._live([self.monitor]),
                "read",
                rq._reader.fileno(),
            ),
            ("result_queue._wlock", rq._wlock, writers, "write", rq._writer.fileno()),
            ("result_queue.size", rq.size.count.get_lock(), list, None, None),
        ]
        broken = {}
        for name, lock, holders, syscall, fd in checks:
            if lock_orphaned(lock, holders, syscall, fd):
                broken[name] = True
        return broken

    def reincarnate(self, process: Any) -> None:
        if process is self.dispatcher:
            self.dispatcher = self.spawn_dispatcher()
            log.critical("Reincarnated the dispatcher process after its death.")
            return
        was_worker = process in self.pool
        super().reincarnate(process)
        if was_worker:
            if process.is_alive():  # timed out: terminated, its job handed back once it is gone
                self.dying.append(process)
            else:
                self.rescue_jobs_of(process)
        if self.stop_event.is_set() or not self.lock_check:
            return
        broken = self.broken_locks()
        if broken:
            self.new_generation(
                f"{', '.join(broken)} left taken by dead process {process.pid} (django-q2 #23)",
                results=any(name.startswith("result_queue") for name in broken),
                task_rlock_orphaned="task_queue._rlock" in broken,
            )

    def _held(self, key: str, condition: bool, progress: int, now: float) -> float:
        """Seconds ``condition`` has held without ``progress`` changing (0 if it does not)."""
        if not condition:
            self._stalls.pop(key, None)
            return 0.0
        since, seen = self._stalls.get(key, (now, progress))
        if progress != seen:
            since, seen = now, progress
        self._stalls[key] = (since, seen)
        return now - since

    def tasks_started(self) -> int:
        return sum(p.started.value for p in self.pool + self.retiring)

    def stalls(self, now: float) -> dict[str, float]:
        """How long each stall condition has held: tickets waiting with a worker free and none
        started; results waiting and none saved; a pusher that stopped polling the broker
        while the task queue has room."""
        idle = any(p.is_alive() and not busy(p) for p in self.pool)
        tasks_waiting = size(self.task_queue)
        room = not Conf.QUEUE_LIMIT or tasks_waiting < Conf.QUEUE_LIMIT
        return {
            "tasks": self._held("tasks", tasks_waiting > 0 and idle, self.tasks_started(), now),
            "results": self._held(
                "results",
                size(self.result_queue) > 0 and self.monitor.is_alive(),
                self.saved.value,
                now,
            ),
            "pusher": self._held("pusher", room and self.pusher.is_alive(), self.polled.value, now),
        }

    def check_stalls(self) -> bool:
        """Heal a stalled cluster; True when it is healthy enough to say so."""
        now = time.monotonic()
        held = self.stalls(now)
        if held["tasks"] >= self.stall_seconds:
            self.new_generation(
                f"{size(self.task_queue)} ticket(s) waiting, a worker free and no task "
                f"started for {self.stall_seconds:.0f}s"
            )
        elif held["results"] >= self.stall_seconds:
            self.new_generation(
                f"{size(self.result_queue)} result(s) waiting and none saved for "
                f"{self.stall_seconds:.0f}s",
                results=True,
            )
        elif held["pusher"] >= self.stall_seconds:
            self.new_generation(f"the pusher stopped polling for {self.stall_seconds:.0f}s")
        else:
            return max(held.values()) < UNHEALTHY_AFTER
        return False

    # -- healing ----------------------------------------------------------------------------

    def new_generation(
        self, reason: str, *, results: bool = False, task_rlock_orphaned: bool = False
    ) -> None:
        now = time.monotonic()
        self.heals = [t for t in self.heals if now - t < HEAL_WINDOW] + [now]
        self.heal_log = [*self.heal_log[-4:], {"at": time.time(), "reason": reason}]
        if len(self.heals) > self.max_heals:
            log.critical(
                "Cluster %s: %s; %d queue replacements within %.0f minutes, giving up so that "
                "the supervisor restarts the whole cluster (exit code %d).",
                self.beat_name,
                reason,
                len(self.heals),
                HEAL_WINDOW / 60,
                GIVE_UP_EXIT_CODE,
            )
            self.gave_up = True
            self.stop_event.set()
            return
        self.generation += 1
        log.critical(
            "Cluster %s healed itself: %s -> generation %d: new task queue%s, pusher and %d "
            "workers; retiring %d old workers (busy ones finish their slice).",
            self.beat_name,
            reason,
            self.generation,
            " + result queue + monitor" if results else "",
            self.pool_size,
            len(self.pool),
        )
        old = _OldGeneration(
            task_queue=self.task_queue,
            pusher=self.pusher,
            since=now,
            task_rlock_orphaned=task_rlock_orphaned,
        )
        self.event_out.set()  # the old pusher leaves at its next loop
        self.event_out = Event()
        self.task_queue = self._new_task_queue()
        if results:
            old.result_queue, old.monitor = self.result_queue, self.monitor
            self.result_queue = Queue()
        if not Conf.SYNC:
            db.connections.close_all()
        self.retiring += self.pool
        self.pool = []
        self.slots = Array("b", 2 * max(1, self.pool_size), lock=False)
        for __ in range(self.pool_size):
            self.spawn_worker()
        if results:
            self.monitor = self.spawn_monitor()
        self.pusher = self.spawn_pusher()
        self.old.append(old)
        self._stalls.clear()

    def tend_retiring(self, cycle: float) -> None:
        """Old-generation workers: enforce their timeout, let busy ones finish, retire idle
        ones (SIGUSR1, then SIGKILL after :data:`RETIRE_GRACE`)."""
        now = time.monotonic()
        for p in list(self.retiring):
            if not p.is_alive():
                p.join(0)
                self.retiring.remove(p)
                log.info("Old worker %s left (exit code %s).", p.pid, p.exitcode)
                if p.exitcode:
                    self.rescue_jobs_of(p)
                continue
            t = p.timer.get_obj().value  # type: ignore[attr-defined]
            if t == 0 or 0 < t <= cycle:
                p.terminate()
            elif t > 0:
                p.timer.get_obj().value = t - cycle  # type: ignore[attr-defined]
            elif busy(p):
                continue
            else:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(p.pid, RETIRE_SIGNAL)  # type: ignore[arg-type]
                first = getattr(p, "retire_at", None) or now
                p.retire_at = first  # type: ignore[attr-defined]
                if now - first > RETIRE_GRACE:
                    p.kill()

    def tend_old(self) -> None:
        """Wind down replaced queues: stop their pusher, move their tickets, close them."""
        now = time.monotonic()
        for old in list(self.old):
            if old.pusher.is_alive() and now - old.since > Conf.POLL + 5:
                old.pusher.kill()  # stuck in put() on a queue nobody reads
            readers = [p for p in self.retiring if p.is_alive()]
            self._forward(old, bool(readers))
            if old.monitor is not None and old.monitor.is_alive():
                # stuck on a broken result queue; kill it only while it waits, never mid-save
                pid = old.monitor.pid
                if in_syscall([pid], "read", None) or in_syscall([pid], "futex", None):  # type: ignore[list-item]
                    old.monitor.kill()
            if (
                not readers
                and not old.pusher.is_alive()
                and not (old.monitor is not None and old.monitor.is_alive())
            ):
                self._forward(old, False)
                for q in (old.task_queue, old.result_queue):
                    if q is not None:
                        q._reader.close()
                        q._writer.close()
                self.old.remove(old)

    def _forward(self, old: _OldGeneration, readers_alive: bool) -> None:
        """Move complete tickets (and results) out of the old pipes into the new queues, reading
        only when nobody else can: the old read lock is orphaned, no old reader is alive, or we
        hold the lock ourselves."""
        q = old.task_queue
        got_lock = False
        if old.task_rlock_orphaned or not readers_alive or (got_lock := q._rlock.acquire(False)):
            try:
                for frame in read_frames(q._reader, old.task_buf):
                    old.pending.append(ForkingPickler.loads(frame))
            except Exception:
                log.exception("Could not read the old task queue; the broker redelivers.")
                old.task_buf.clear()
            finally:
                if got_lock:
                    q._rlock.release()
        while old.pending and not self.closing:
            task = old.pending[0]
            if task != "STOP":
                try:
                    self.task_queue.put(task, block=False)
                except Full:
                    break
                log.warning("Moved ticket %s to the new task queue.", task.get("name"))
            old.pending.pop(0)
        if old.result_queue is not None and not (old.monitor and old.monitor.is_alive()):
            try:
                for frame in read_frames(old.result_queue._reader, old.result_buf):
                    self.result_queue.put(ForkingPickler.loads(frame))
            except Exception:
                log.exception("Could not read the old result queue.")
                old.result_buf.clear()

    def rescue_jobs_of(self, process: Any) -> None:
        """A worker died: its sync goes back to the queue now, from its checkpoint, instead of
        when its lease expires (the lease stays the rule for a lost host or cluster)."""
        from syncqueue.dispatcher import rescue_dead_worker

        try:
            rescue_dead_worker(identity.process(process.pid))
        except Exception:
            log.exception("Could not hand back the jobs of dead worker %s.", process.pid)

    # -- proving work -----------------------------------------------------------------------

    def prove_alive(self, now: float) -> None:
        """Heartbeat and watchdog ping: only called when the cluster is healthy."""
        if now - self._last_beat < self.beat_every:
            return
        self._last_beat = now
        watchdog.notify("WATCHDOG=1")
        from django.db import DatabaseError

        from syncqueue.heartbeat import beat

        working = sum(1 for p in self.pool if p.is_alive() and busy(p))
        try:
            beat(
                self.beat_name,
                kind="cluster",
                pid=os.getpid(),
                workers=len(self.pool),
                worker_ids=[identity.process(p.pid) for p in self.pool if p.pid],
                busy=working,
                generation=self.generation,
                heals=self.heal_log,
                tasks_started=self.tasks_started(),
            )
        except DatabaseError:
            log.warning("Could not write the cluster heartbeat.", exc_info=True)

    # -- the loop ---------------------------------------------------------------------------

    def guard(self) -> None:
        """``Sentinel.guard`` (django-q2 1.11 cluster.py:328-375) plus: a bounded wait for a
        worker's timer lock (a worker killed inside ``with timer.get_lock()`` never releases
        it), the stall checks, retiring old generations, heartbeat and watchdog ping."""
        log.info("Cluster %s guarding %s workers.", self.beat_name, self.pool_size)
        self.start_event.set()
        Stat(self).save()
        watchdog.notify(f"READY=1\nSTATUS=guarding {self.pool_size} workers")
        counter = 0.0
        cycle = Conf.GUARD_CYCLE
        while True:
            for p in list(self.pool):  # a copy: reincarnate() and new_generation() edit it
                if p not in self.pool:
                    continue
                lock = p.timer.get_lock()
                if not lock.acquire(timeout=1.0):
                    if not p.is_alive():
                        # Sentinel.reincarnate reads p.timer.value, which takes that lock
                        p.timer = Value("f", p.timer.get_obj().value)
                        self.reincarnate(p)
                    continue
                try:
                    if not p.is_alive() or p.timer.value == 0:
                        self.reincarnate(p)
                        continue
                    if p.timer.value > 0:
                        p.timer.value -= cycle
                finally:
                    lock.release()
            for p in list(self.dying):
                if not p.is_alive():
                    p.join(0)
                    self.dying.remove(p)
                    self.rescue_jobs_of(p)
            if not self.monitor.is_alive():
                self.reincarnate(self.monitor)
            if not self.pusher.is_alive():
                self.reincarnate(self.pusher)
            if self.dispatcher is not None and not self.dispatcher.is_alive():
                self.reincarnate(self.dispatcher)
            healthy = not self.stop_event.is_set() and self.check_stalls()
            self.tend_retiring(cycle)
            self.tend_old()
            counter += cycle
            if counter >= 30 and Conf.SCHEDULER:
                counter = 0
                scheduler(broker=self.broker)
            Stat(self).save()
            if healthy:
                self.prove_alive(time.monotonic())
            if self.stop_event.wait(cycle):
                break
        self.stop()

    def stop(self) -> None:
        """``Sentinel.stop`` with every wait bounded (stock waits forever on a pusher stuck in
        ``put()``, on workers that cannot read their STOP, and on queue feeder threads)."""
        Stat(self).save()
        watchdog.notify("STOPPING=1")
        log.info("Cluster %s stopping.", self.beat_name)
        timeout = self.timeout or 30
        self.event_out.set()
        self.dispatcher_stop.set()
        pushers = [self.pusher, *(o.pusher for o in self.old)]
        self._wait(pushers, Conf.POLL + 5)
        for p in pushers:
            if p.is_alive():
                p.kill()
        for __ in range(len(self.pool)):
            try:
                self.task_queue.put("STOP", timeout=1)
            except Full:
                break
        self.closing = True  # tickets left in old queues come back from the broker
        self._close(self.task_queue)
        deadline = time.monotonic() + timeout + 5
        idle_since: dict[int, float] = {}
        while time.monotonic() < deadline:
            alive = [p for p in self.pool + self.retiring if p.is_alive()]
            if not alive:
                break
            now = time.monotonic()
            for p in alive:
                t = p.timer.get_obj().value
                if t == 0:
                    p.terminate()
                elif t < 0 and not busy(p):
                    # an idle worker that cannot read its STOP (orphaned lock): retire it
                    since = idle_since.setdefault(p.pid, now)
                    if now - since > 3:
                        with contextlib.suppress(ProcessLookupError):
                            os.kill(p.pid, RETIRE_SIGNAL)
                    if now - since > 3 + RETIRE_GRACE:
                        p.kill()
            self.tend_old()
            time.sleep(0.1)
        for p in self.pool + self.retiring + self.dying:
            if p.is_alive():
                log.error("Worker %s did not stop in time; killed.", p.pid)
                p.kill()
        self.pool, self.retiring = [], []
        self.tend_old()
        with contextlib.suppress(Full):
            self.result_queue.put("STOP", timeout=1)
        self._close(self.result_queue)
        self._wait([self.monitor], timeout)
        if self.monitor.is_alive():
            log.error("The monitor did not stop in time; killed.")
            self.monitor.kill()
        for old in self.old:
            for p in (old.pusher, old.monitor):
                if p is not None and p.is_alive():
                    p.kill()
        if self.dispatcher is not None:
            self._wait([self.dispatcher], 10)
            if self.dispatcher.is_alive():
                self.dispatcher.kill()
        if not self.gave_up:
            self.mark_stopped()  # a clean stop is not a lost cluster
        Stat(self).save()

    def mark_stopped(self) -> None:
        from django.db import DatabaseError

        from syncqueue.models import WorkerHeartbeat

        try:
            beat = WorkerHeartbeat.objects.filter(name=self.beat_name).first()
            if beat is not None:
                beat.info = {**beat.info, "stopped": True}
                beat.save(update_fields=["info"])
        except DatabaseError:
            log.warning("Could not record the cluster's stop.", exc_info=True)

    @staticmethod
    def _wait(processes: list[Any], seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and any(p.is_alive() for p in processes):
            time.sleep(0.1)

    @staticmethod
    def _close(q: Queue, seconds: float = 5) -> None:
        q.close()
        thread = q._thread
        if thread is not None:
            thread.join(seconds)
            if thread.is_alive():  # its write lock is orphaned or nobody reads
                q.cancel_join_thread()


class SafeCluster(Cluster):
    """django-q2's Cluster starting :class:`SafeSentinel`, with a bounded stop."""

    STOP_GRACE = 30.0  # seconds beyond the task timeout before the sentinel is killed

    def start(self) -> int:
        check_internals()
        original = q_cluster.Sentinel
        q_cluster.Sentinel = SafeSentinel  # Cluster.start looks the name up at call time
        try:
            return int(super().start())
        finally:
            q_cluster.Sentinel = original

    def stop(self) -> bool:
        if self.sentinel is None or not self.sentinel.is_alive():
            return False
        log.info("Cluster stopping.")
        self.stop_event.set()
        self.sentinel.join((self.timeout or Conf.TIMEOUT or 30) + self.STOP_GRACE)
        if self.sentinel.is_alive():
            log.error("The sentinel did not stop in time; killing the cluster's processes.")
            kill_tree(self.sentinel.pid)
        return True


def kill_tree(pid: int) -> None:
    """SIGKILL ``pid`` and everything below it (read from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(parent, []).append(int(entry.name))
    todo, found = [pid], []
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(children.get(current, []))
    for each in found:
        with contextlib.suppress(ProcessLookupError):
            os.kill(each, signal.SIGKILL)
