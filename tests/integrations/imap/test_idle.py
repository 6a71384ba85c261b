"""IMAP IDLE with real processes: a real Dovecot, a real ``manage.py sync_listen`` and a real
qcluster. New mail is stored without any scheduled sync; a server that drops the session is
re-joined; a listener killed with SIGKILL and started again loses nothing."""

from __future__ import annotations

import signal
from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone

from integrations.models import Connection
from mail.models import MailMessage
from syncqueue import engine, heartbeat
from syncqueue.models import SyncJob
from tests.support.cluster import FAST_CLUSTER
from tests.support.mailfactory import message
from tests.support.processes import listener, qcluster, wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.process]
Kind = SyncJob.Kind


def synced_once(make_imap_connection: Any, dovecot: Any, imap_user: str) -> Connection:
    """A mailbox with one message, synced, whose schedule will not run during the test."""
    dovecot.deliver(imap_user, [message(subject="before")])
    conn = make_imap_connection()
    engine.enqueue(conn, Kind.INITIAL)
    engine.process_ticket()
    Connection.objects.filter(pk=conn.pk).update(
        next_sync_at=timezone.now() + timedelta(days=1), schedule="every 1d"
    )
    assert MailMessage.objects.filter(connection=conn).count() == 1
    return conn


def stored(conn: Connection, subject: str) -> bool:
    return MailMessage.objects.filter(connection=conn, subject=subject).exists()


def idling() -> int:
    status = heartbeat.listener_status()
    return status.idling if status.alive else 0


def test_new_mail_is_stored_by_push_not_by_the_schedule(make_imap_connection, dovecot, imap_user):
    conn = synced_once(make_imap_connection, dovecot, imap_user)
    with qcluster("idle", **FAST_CLUSTER), listener("idle"):
        wait_for(idling, 30, "the listener to be in IDLE")
        dovecot.drop(imap_user, [message(subject="pushed")])  # local delivery into Maildir
        wait_for(lambda: stored(conn, "pushed"), 30, "the new message to be stored")
        # a burst: five messages at once end in the mirror too, without a flood of jobs
        dovecot.deliver(imap_user, [message(subject=f"burst {i}") for i in range(5)])
        wait_for(lambda: MailMessage.objects.filter(connection=conn).count() == 7, 30, "the burst")
    kinds = set(SyncJob.objects.filter(connection=conn).values_list("kind", flat=True))
    assert kinds == {Kind.INITIAL, Kind.NOTIFIED}  # no scheduled sync ran
    assert SyncJob.objects.filter(connection=conn, kind=Kind.NOTIFIED).count() <= 7


def test_a_dropped_session_is_rejoined(make_imap_connection, dovecot, imap_user):
    conn = synced_once(make_imap_connection, dovecot, imap_user)
    with qcluster("idle-drop", **FAST_CLUSTER), listener("idle-drop"):
        wait_for(idling, 30, "the listener to be in IDLE")
        dovecot.kill()  # every session dropped without a goodbye
        dovecot.start()
        dovecot.drop(imap_user, [message(subject="after the restart")])
        wait_for(lambda: stored(conn, "after the restart"), 60, "the message after the drop")
        wait_for(idling, 30, "the listener to be in IDLE again")
        dovecot.drop(imap_user, [message(subject="pushed again")])
        wait_for(lambda: stored(conn, "pushed again"), 30, "the next pushed message")


def test_a_listener_killed_and_restarted_loses_nothing(make_imap_connection, dovecot, imap_user):
    conn = synced_once(make_imap_connection, dovecot, imap_user)
    with qcluster("idle-kill", **FAST_CLUSTER):
        with listener("idle-kill-1") as first:
            wait_for(idling, 30, "the listener to be in IDLE")
            first.send_signal(signal.SIGKILL)
            first.wait()
        dovecot.drop(imap_user, [message(subject=f"while down {i}") for i in range(3)])
        with listener("idle-kill-2"):
            wait_for(
                lambda: MailMessage.objects.filter(connection=conn).count() == 4,
                30,
                "the mail delivered while no listener ran",
            )
    uids = list(MailMessage.objects.filter(connection=conn).values_list("uid", flat=True))
    assert len(uids) == len(set(uids)) == 4  # nothing twice


def test_only_a_mailbox_in_idle_has_its_polls_stretched(
    make_imap_connection, dovecot, imap_user, settings
):
    """SYNC_PUSHED_POLL_FACTOR makes the poll the slower safety net of a mailbox the listener
    really watches: not of one whose listener is not running or has stopped."""
    settings.SYNC_PUSHED_POLL_FACTOR, settings.SYNC_SCHEDULE_JITTER = 4, 0
    conn = synced_once(make_imap_connection, dovecot, imap_user)
    unwatched = make_imap_connection(idle=False)
    Connection.objects.filter(pk__in=[conn.pk, unwatched.pk]).update(schedule="every 15m")

    def next_poll(connection: Connection) -> timedelta:
        connection.refresh_from_db()
        now = timezone.now()
        nxt = connection.compute_next_sync(now)
        assert nxt is not None
        return nxt - now

    assert next_poll(conn) == timedelta(minutes=15)  # no listener: as scheduled
    with listener("idle-stretch") as running:
        wait_for(idling, 30, "the listener to be in IDLE")
        wait_for(lambda: next_poll(conn) == timedelta(minutes=60), 10, "the stretched poll")
        assert next_poll(unwatched) == timedelta(minutes=15)
        running.send_signal(signal.SIGKILL)
        running.wait()
    conn.refresh_from_db()
    assert conn.push_until is not None
    lapsed = conn.push_until + timedelta(seconds=1)
    assert not conn.pushed(lapsed) and conn.push_until < timezone.now() + timedelta(minutes=3)
    assert conn.compute_next_sync(lapsed) == lapsed + timedelta(minutes=15)


def test_disabled_and_auth_required_connections_are_not_watched(
    make_imap_connection, dovecot, imap_user
):
    conn = synced_once(make_imap_connection, dovecot, imap_user)
    Connection.objects.filter(pk=conn.pk).update(enabled=False)
    with listener("idle-off"):
        wait_for(lambda: heartbeat.listener_status().alive, 30, "the listener's heartbeat")
        assert heartbeat.listener_status().watched == 0
        Connection.objects.filter(pk=conn.pk).update(
            enabled=True, status=Connection.Status.AUTH_REQUIRED
        )
        dovecot.drop(imap_user, [message(subject="not watched")])
        wait_for(lambda: heartbeat.listener_status().alive, 30, "another heartbeat")
        assert heartbeat.listener_status().watched == 0
    assert not SyncJob.objects.filter(connection=conn, kind=Kind.NOTIFIED).exists()


def test_a_starting_listener_opens_a_few_sessions_at_a_time(make_connection):
    """Starting (or after a server came back), the listener opens its sessions to a server a
    few at a time: hundreds at once were a burst of logins for the server, and for the listener
    a memory peak it kept (bench/push.py --mailboxes 500: 147 to 203 MB resident, against
    115 MB). A server that does not answer holds up only its own sessions."""
    from integrations.imap.listener import OPENING_AT_ONCE
    from tests.support.listener import Listener

    # both accept and never greet: every session hangs while it is being opened
    with Listener(hold=60) as busy, Listener(hold=60) as other:
        for server, mailboxes in ((busy, 3 * OPENING_AT_ONCE), (other, 3)):
            for i in range(mailboxes):
                make_connection(
                    kind="imap",
                    name=f"mailbox {server.port}-{i}",
                    config={
                        "host": "127.0.0.1",
                        "port": server.port,
                        "security": "none",
                        "username": f"user{i}",
                    },
                    secrets={"password": "not-sent"},
                )
        with listener("opening"):
            wait_for(lambda: busy.peak >= OPENING_AT_ONCE, 30, "sessions being opened")
            wait_for(lambda: other.peak >= 3, 30, "the other server's sessions being opened")
            wait_for(lambda: heartbeat.listener_status().alive, 30, "the listener's heartbeat")
            assert heartbeat.listener_status().watched == 3 * OPENING_AT_ONCE + 3
        assert busy.peak == OPENING_AT_ONCE, busy.peak


def test_a_watch_stopped_while_waiting_for_its_turn_does_not_log_in(monkeypatch):
    """A watch waiting for its turn may be stopped (the connection turned off, its password or
    server changed): it must not log in with what it had. And a server whose sessions hang
    holds the others up for ``OPENING_WAIT_SECONDS`` at most."""
    import threading

    from integrations.imap import listener as module

    server = "hanging.example:993"
    held = [module.opening(server, threading.Event()) for _ in range(module.OPENING_AT_ONCE)]
    assert all(turn.__enter__() for turn in held)  # every turn taken, by hanging sessions
    try:
        stop = threading.Event()
        threading.Timer(0.3, stop.set).start()
        with module.opening(server, stop) as go:
            assert go is False
        monkeypatch.setattr(module, "OPENING_WAIT_SECONDS", 0.5)
        went: list[bool] = []

        def wait_for_a_turn() -> None:
            with module.opening(server, threading.Event()) as go:
                went.append(go)

        waiting = threading.Thread(target=wait_for_a_turn, daemon=True)
        waiting.start()
        waiting.join(60)  # (a limit on a hang, not on speed: it goes after 0.5 s)
        assert went == [True], "a session waited for its turn beyond OPENING_WAIT_SECONDS"
        with module.opening("other.example:993", threading.Event()) as go:
            assert go is True  # another server's turns are its own
    finally:
        for turn in held:
            turn.__exit__(None, None, None)
