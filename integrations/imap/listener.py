"""IMAP IDLE (RFC 2177): new mail within seconds, with polling as the safety net.

``manage.py sync_listen`` runs :class:`Listener`: one thread per watched folder (INBOX unless the
connection says otherwise) of every enabled IMAP connection whose server offers IDLE. A thread
holds a session in IDLE and, when the server reports a change (EXISTS, EXPUNGE, FETCH), queues a
``notified`` sync of that connection; the engine merges a burst into one waiting job. The
notification is only a hint: the sync itself finds what changed, exactly as a scheduled one.

- IDLE is ended and started again every ``SYNC_IDLE_RENEW_SECONDS`` (RFC 2177: servers may drop
  a client idle for 30 minutes).
- On every (re)connect the folder's STATUS is compared with what the last sync saw; if it
  differs — mail arrived while nobody listened (a listener killed, a dropped connection) — a
  sync is queued at once. So a lost notification costs seconds, and a dead listener costs
  freshness until the next scheduled poll, never data.
- While every watched folder of a connection idles, its ``push_until`` says so (renewed on
  the passes, lapsing two minutes after the last): only then may ``SYNC_PUSHED_POLL_FACTOR``
  stretch its polls. A mailbox whose server has no IDLE, whose session keeps dropping, or
  whose listener is not running is polled as scheduled.
- A dropped session reconnects after an exponential backoff with jitter (at most
  ``SYNC_LISTEN_MAX_BACKOFF``). A refused login, unreadable credentials or settings the
  credentials were not entered for stop the watch until the connection changes; a connection
  that is disabled or needs new credentials is not watched at all.
- Sessions use the sync's own rules (``ImapConnector.session``): TLS, the pinned public
  address for servers typed in by ordinary users, the same timeouts.
- Threads speak IMAP only; the listener's own thread reads the database and queues the syncs
  (one database connection for any number of watches).
- The listener's heartbeat (``listener:<host>:<pid>``) says how many folders it watches; the
  dashboard, ``/healthz`` and ``sync_doctor`` show it like the workers'.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import queue
import random
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import connections
from django.db.models import Q
from django.utils import timezone
from imapclient.exceptions import IMAPClientError

from integrations.errors import AuthFailed, ConfigError, SyncError
from integrations.models import Connection
from syncqueue import heartbeat, identity
from syncqueue.engine import enqueue_notified

log = logging.getLogger("integrations.imap.listener")

CHECK_SECONDS = 5.0  # longest a thread waits in IDLE before looking whether it should stop
PUSHED_SECONDS = 120  # an idling connection counts as pushed this long after a pass saw it
KEEPALIVE_IDLE = 60  # seconds of silence before TCP keepalive probes start
KEEPALIVE_INTERVAL = 10  # seconds between probes (3 unanswered: the session is dead)
CHANGES = {b"EXISTS", b"EXPUNGE", b"FETCH", b"VANISHED"}
CHANGE_NAMES = [name.decode() for name in sorted(CHANGES)]  # imaplib's keys


def fingerprint(conn: Connection) -> str:
    """What a watch depends on: settings and credentials (not status, cursor or timestamps)."""
    text = json.dumps([conn.config, conn.secret, conn.enabled], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def watched_folders(conn: Connection) -> list[str]:
    config = conn.config or {}
    if not config.get("idle", True):
        return []
    return [str(f) for f in config.get("idle_folders") or ["INBOX"]]


def behind(cursor: dict[str, Any] | None, folder: str, status: dict[bytes, Any]) -> bool:
    """Does the server's STATUS differ from what the last sync of ``folder`` saw?"""
    state = ((cursor or {}).get("folders") or {}).get(folder)
    if not state or not state.get("initial_done"):
        return True
    seen = {k.decode().lower(): int(v) for k, v in status.items() if v is not None}
    return any(state.get(key) != value for key, value in seen.items())


def keep_alive(sock: socket.socket) -> None:
    """TCP keepalive on an idling session: a peer that vanished without closing (a NAT that
    forgot us, a host that lost power) is noticed within about KEEPALIVE_IDLE + 3 probes,
    not at the next IDLE renewal, and the watch reconnects."""
    with contextlib.suppress(OSError, AttributeError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, KEEPALIVE_IDLE)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, KEEPALIVE_INTERVAL)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, 3)


def _changes(responses: list[Any]) -> bool:
    """Does any of these parsed IDLE responses say the mailbox changed?"""
    return any(len(r) > 1 and r[1] in CHANGES for r in responses)


class NoIdle(Exception):
    """The server does not offer IDLE: this connection is polled only."""


@dataclass(frozen=True)
class Event:
    """What a watch thread tells the listener: ``changed`` (the server said so) or ``status``
    (a fresh session's STATUS, to compare with what the last sync saw)."""

    connection_id: int
    folder: str
    kind: str
    status: dict[bytes, Any] | None = None


@dataclass
class Watch:
    """One folder of one connection, watched by its own thread.

    The thread speaks IMAP only: the listener opens the connector (settings, credentials) for
    it and does every database write from its own thread, so hundreds of watches share one
    database connection and little memory."""

    connection_id: int
    folder: str
    fingerprint: str
    session: Callable[[], Any]  # ImapConnector.session of a connector made by the listener
    server: str  # host:port, whose sessions are opened a few at a time (``opening``)
    events: queue.SimpleQueue[Event]
    stop: threading.Event = field(default_factory=threading.Event)
    state: str = "starting"  # idling, reconnecting, no_idle, stopped
    failures: int = 0
    thread: threading.Thread | None = None

    def start(self) -> None:
        self.thread = threading.Thread(
            target=self.run, name=f"idle-{self.connection_id}-{self.folder}", daemon=True
        )
        self.thread.start()

    def run(self) -> None:
        try:
            while not self.stop.is_set():
                try:
                    self.watch()
                    self.failures = 0
                except NoIdle:
                    self.state = "no_idle"
                    log.info("Connection %s: no IDLE on its server; polled.", self.connection_id)
                    self.stop.wait()  # until the connection changes
                except (AuthFailed, ConfigError) as exc:
                    # a refused login: retrying would only add failed logins (and may lock the
                    # account); the watch starts again when the settings or password change
                    self.state = "refused"
                    log.warning("Connection %s: not watched: %s", self.connection_id, exc)
                    self.stop.wait()
                except Exception as exc:
                    self.failures += 1
                    self.state = "reconnecting"
                    delay = self.backoff()
                    log.info(
                        "Connection %s (%s): %s; reconnecting in %.0fs.",
                        self.connection_id,
                        self.folder,
                        exc if isinstance(exc, SyncError) else type(exc).__name__,
                        delay,
                    )
                    self.stop.wait(delay)
        finally:
            self.state = "stopped"

    def backoff(self) -> float:
        ceiling = min(settings.SYNC_LISTEN_MAX_BACKOFF, 2.0 ** min(self.failures, 16))
        return ceiling * random.uniform(0.5, 1.0)

    def watch(self) -> None:
        with contextlib.ExitStack() as session:
            with opening(self.server, self.stop) as go:
                if not go:
                    return  # stopped while waiting: a new watch has the current settings
                client = session.enter_context(self.session())
                if b"IDLE" not in client.capabilities():
                    raise NoIdle()
                keep_alive(client.socket())
                # What the folder holds, from the EXAMINE that starts the watch (no separate
                # STATUS: mail arriving between the two would be in neither)
                selected = client.select_folder(self.folder, readonly=True)
            status = {
                b"UIDVALIDITY": selected.get(b"UIDVALIDITY"),
                b"UIDNEXT": selected.get(b"UIDNEXT"),
                b"MESSAGES": selected.get(b"EXISTS"),
            }
            self.events.put(Event(self.connection_id, self.folder, "status", status))
            self.failures = 0
            while not self.stop.is_set():
                self.state = "idling"
                if self.idle_once(client):
                    self.events.put(Event(self.connection_id, self.folder, "changed"))

    def idle_once(self, client: Any) -> bool:
        """One IDLE, until a change, the renewal time, or stop. True if something changed.

        No change may fall between two IDLEs: one reported while DONE is answered comes back
        from ``idle_done``, and one reported before the server's "+ idling" is left by imaplib
        among its untagged responses."""
        imap = client._imap
        untagged = imap.untagged_responses
        for kind in CHANGE_NAMES:  # answers to earlier commands (SELECT's EXISTS): not news
            untagged.pop(kind, None)
        # imapclient's idle() gives up on an untagged line before "+ idling" (Dovecot reports
        # pending changes there); imaplib files such lines under untagged_responses
        tag = client._idle_tag = imap._command("IDLE")
        while imap._get_response() is not None:
            if imap.tagged_commands.get(tag) is not None:  # refused (NO/BAD) instead of "+"
                raise IMAPClientError(f"IDLE refused: {imap.tagged_commands[tag]!r}"[:200])
        changed = any(untagged.pop(kind, None) for kind in CHANGE_NAMES)
        ends = time.monotonic() + settings.SYNC_IDLE_RENEW_SECONDS
        try:
            while not changed and not self.stop.is_set() and time.monotonic() < ends:
                asked = time.monotonic()
                responses = client.idle_check(timeout=CHECK_SECONDS)
                if _changes(responses):
                    changed = True
                    break
                if not responses and time.monotonic() - asked < CHECK_SECONDS / 2:
                    # Woken without a whole response: imapclient swallows EOF here, so a
                    # dropped session looks like this. Ending IDLE tells (it raises if so).
                    break
        finally:
            _, responses = client.idle_done()
        return changed or _changes(responses)


#: sessions opened at once per server (connect, TLS, login, EXAMINE); the others wait their turn
OPENING_AT_ONCE = 8
#: longest a session waits for its turn: sessions hanging on a server (a wrong port, say, until
#: their read timeout) hold up the others to it no longer than this
OPENING_WAIT_SECONDS = 30.0
_opening: dict[str, threading.BoundedSemaphore] = {}
_opening_lock = threading.Lock()


@contextlib.contextmanager
def opening(server: str, stop: threading.Event) -> Iterator[bool]:
    """Open sessions to one server a few at a time; yields False when the watch was stopped
    while it waited (its settings or password may be outdated: it must not log in).

    A listener starting (or a server coming back) would otherwise open hundreds at once: a
    burst of logins for the server, and for this process a memory peak it keeps — each
    thread's handshake takes memory in its own malloc arena, and that memory stays with the
    process (500 sessions opened at once: 147 to 203 MB resident once idling, against 115 MB;
    docs/deployment.md). Per server, and for ``OPENING_WAIT_SECONDS`` at most."""
    with _opening_lock:
        turns = _opening.setdefault(server, threading.BoundedSemaphore(OPENING_AT_ONCE))
    gives_up = time.monotonic() + OPENING_WAIT_SECONDS
    turn = False
    while not stop.is_set() and not turn and time.monotonic() < gives_up:
        turn = turns.acquire(timeout=min(1.0, max(0.0, gives_up - time.monotonic())))
    try:
        yield not stop.is_set()
    finally:
        if turn:
            turns.release()


class Listener:
    """Keeps one :class:`Watch` per watched folder, in step with the database, and turns
    their events into syncs."""

    def __init__(self) -> None:
        self.watches: dict[tuple[int, str], Watch] = {}
        self.refused: dict[tuple[int, str], str] = {}  # key -> fingerprint, until it changes
        self.events: queue.SimpleQueue[Event] = queue.SimpleQueue()
        self.notified = 0
        self.name = f"{heartbeat.LISTENER_PREFIX}{identity.process()}"

    def wanted(self) -> dict[tuple[int, str], tuple[str, Connection]]:
        found: dict[tuple[int, str], tuple[str, Connection]] = {}
        candidates = Connection.objects.filter(kind="imap", enabled=True).exclude(
            status=Connection.Status.AUTH_REQUIRED
        )
        # the owner too: the session checks it (public addresses only for ordinary users), and
        # watch threads must not query the database
        for conn in candidates.select_related("owner").defer("cursor").iterator(chunk_size=2000):
            print_ = fingerprint(conn)
            for folder in watched_folders(conn):
                found[(conn.pk, folder)] = (print_, conn)
        return found

    def reconcile(self) -> None:
        wanted = self.wanted()
        for key, watch in list(self.watches.items()):
            if key not in wanted or wanted[key][0] != watch.fingerprint:
                watch.stop.set()  # gone, disabled, or changed: its thread ends within seconds
                del self.watches[key]
        for key, (print_, conn) in wanted.items():
            if key in self.watches or self.refused.get(key) == print_:
                continue
            try:
                connector = conn.build_connector()
                connector.secrets  # noqa: B018 - unreadable or not for this server: raises
            except (AuthFailed, ConfigError) as exc:
                self.refused[key] = print_
                log.warning("%s: not watched: %s", conn.name, exc)
                continue
            watch = Watch(
                connection_id=key[0],
                folder=key[1],
                fingerprint=print_,
                session=connector.session,  # type: ignore[attr-defined]
                server=f"{connector.config.host.lower()}:{connector.config.effective_port}",
                events=self.events,
            )
            self.watches[key] = watch
            watch.start()
        self.mark_pushed()
        self.beat()

    def mark_pushed(self) -> None:
        """``push_until`` of the connections whose every watched folder is in IDLE now: a
        little beyond the next pass, so it lapses soon after this listener stops or the session
        drops. Written only when half used up (one short UPDATE per batch, most passes none)."""
        idling: dict[int, bool] = {}
        for (connection_id, _folder), watch in self.watches.items():
            idling[connection_id] = idling.get(connection_id, True) and watch.state == "idling"
        live = sorted(pk for pk, yes in idling.items() if yes)
        now = timezone.now()
        ttl = timedelta(seconds=max(PUSHED_SECONDS, 6 * settings.SYNC_LISTEN_RECONCILE_SECONDS))
        for start in range(0, len(live), 500):
            Connection.objects.filter(pk__in=live[start : start + 500]).filter(
                Q(push_until__isnull=True) | Q(push_until__lt=now + ttl / 2)
            ).update(push_until=now + ttl)

    def handle(self, event: Event) -> None:
        """Database work for a watch's event (in the listener's thread)."""
        why = "the server reported a change"
        if event.kind == "status":
            cursor = (
                Connection.objects.filter(pk=event.connection_id)
                .values_list("cursor", flat=True)
                .first()
            )
            if not behind(cursor, event.folder, event.status or {}):
                return
            why = "changed while not watched"
        if enqueue_notified(event.connection_id, f"{event.folder}: {why}"):
            self.notified += 1

    def counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for watch in self.watches.values():
            counts[watch.state] = counts.get(watch.state, 0) + 1
        if self.refused:
            counts["refused"] = len(self.refused)
        return counts

    def beat(self) -> None:
        counts = self.counts()
        heartbeat.beat(
            self.name,
            watched=len(self.watches),
            idling=counts.get("idling", 0),
            states=counts,
            notified=self.notified,
        )

    def run(self, stop: threading.Event) -> None:
        log.info("IMAP listener %s running.", self.name)
        next_pass = 0.0
        while not stop.is_set():
            try:
                if time.monotonic() >= next_pass:
                    self.reconcile()
                    next_pass = time.monotonic() + settings.SYNC_LISTEN_RECONCILE_SECONDS
                try:
                    event = self.events.get(timeout=max(0.05, next_pass - time.monotonic()))
                except queue.Empty:
                    continue
                self.handle(event)
            except Exception:
                log.exception("Listener pass failed; trying again shortly.")
                connections.close_all()
                stop.wait(1)
        for watch in self.watches.values():
            watch.stop.set()
        heartbeat.beat(self.name, watched=0, stopped=True)
        connections.close_all()
