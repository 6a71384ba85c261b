"""Mirroring a real Dovecot mailbox: initial and incremental syncs, flags, expunges, UIDVALIDITY,
read-only access, attachments, malformed mail, and the error classes."""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Callable, Iterator
from hashlib import sha256
from pathlib import Path
from typing import Any

import pytest
from django.utils import timezone
from imapclient import IMAPClient

from integrations.models import Connection
from mail.models import MailAttachment, MailMessage
from syncqueue import engine
from syncqueue.models import SyncJob, SyncLog
from tests.support.jobs import sync_once
from tests.support.mailfactory import MALFORMED, message

pytestmark = pytest.mark.django_db(transaction=True)
Kind, State = SyncJob.Kind, SyncJob.State


def stored(conn: Connection, **filters) -> dict[int | None, MailMessage]:
    return {m.uid: m for m in MailMessage.objects.filter(connection=conn, **filters)}


QRESYNC = None  # Dovecot's own capability list
CONDSTORE_ONLY = "IMAP4rev1 SASL-IR ID ENABLE IDLE UIDPLUS CONDSTORE LITERAL+"
NO_MODSEQ = "IMAP4rev1 SASL-IR ID ENABLE IDLE UIDPLUS LITERAL+"


@contextlib.contextmanager
def own_dovecot(
    make_connection: Callable[..., Connection], capabilities: str | None, **config: Any
) -> Iterator[tuple[Any, Connection]]:
    """A private Dovecot advertising ``capabilities`` (None: its own list), with one account
    ("box") and an IMAP connection to it; stopped afterwards."""
    from sandbox.dovecot import Dovecot

    server = Dovecot(capabilities=capabilities)
    try:
        server.start()
        server.add_user("box")
        conn = make_connection(
            kind="imap",
            name="Private server",
            config={**server.connection_config("box"), **config},
            secrets={"password": server.users["box"]},
        )
        yield server, conn
    finally:
        server.cleanup()


def test_initial_sync_mirrors_the_mailbox(make_imap_connection, dovecot, imap_user, work):
    uids = dovecot.deliver(
        imap_user,
        [message(subject=f"Message {i}", body=f"Body {i}") for i in range(12)],
    )
    conn = make_imap_connection(batch_size=5)
    job = sync_once(conn, work, Kind.INITIAL)

    assert job.state == State.SUCCEEDED, job.error_message
    assert (job.created_count, job.progress_done, job.progress_total) == (12, 12, 12)
    mirror = stored(conn)
    assert sorted(mirror) == uids
    first = mirror[uids[0]]
    assert first.subject == "Message 0" and first.text_body.strip() == "Body 0"
    assert first.from_address == "ann@example.com" and first.to[0]["address"] == "bob@example.org"
    assert first.received_at is not None and first.message_id.endswith("@example.com")
    conn.refresh_from_db()
    state = conn.cursor["folders"]["INBOX"]
    assert state["last_uid"] == uids[-1] and state["initial_done"] is True
    # progress goes on the job (its position), not a log line per batch: the log keeps events
    assert job.position == f"INBOX: up to UID {uids[-1]:,}"
    assert not SyncLog.objects.filter(job=job, message__startswith="INBOX:").exists()
    assert SyncLog.objects.filter(job=job).count() == 1  # "Finished in …"
    # the connection page says where it is, in words
    from integrations.imap.connector import ImapConnector

    [line] = ImapConnector.describe_position(conn.cursor)
    assert line.startswith(f"INBOX: up to UID {uids[-1]:,}, UIDVALIDITY ")
    stats = ImapConnector.stats(conn)
    assert (stats["Messages"], stats["Folders"]) == (12, 1)


def test_default_window_is_the_last_30_days(make_imap_connection, dovecot, imap_user, work):
    now = timezone.now()
    dovecot.deliver(imap_user, [message(subject="old")], when=now - dt.timedelta(days=90))
    dovecot.deliver(imap_user, [message(subject="recent")], when=now - dt.timedelta(days=2))
    conn = make_imap_connection(history_days=30)
    sync_once(conn, work, Kind.INITIAL)
    assert [m.subject for m in stored(conn).values()] == ["recent"]
    # later syncs bring new mail (any date) but never the history outside the window
    dovecot.deliver(imap_user, [message(subject="new")])
    sync_once(conn, work)
    assert sorted(m.subject for m in stored(conn).values()) == ["new", "recent"]

    everything = make_imap_connection(history_days=None)
    sync_once(everything, work, Kind.INITIAL)
    assert sorted(m.subject for m in stored(everything).values()) == ["new", "old", "recent"]


def test_older_mail_after_the_newest_in_the_window_stays_outside_it(
    make_imap_connection, dovecot, imap_user, work
):
    """UIDs follow arrival, not date: old mail filed after the newest message of the window
    has a higher UID. The first sync leaves it out, and so does every later one."""
    now = timezone.now()
    dovecot.deliver(imap_user, [message(subject="recent")], when=now - dt.timedelta(days=2))
    dovecot.deliver(imap_user, [message(subject="filed late")], when=now - dt.timedelta(days=90))
    conn = make_imap_connection(history_days=30)
    sync_once(conn, work, Kind.INITIAL)
    sync_once(conn, work)
    assert [m.subject for m in stored(conn).values()] == ["recent"]
    dovecot.deliver(imap_user, [message(subject="new")])
    sync_once(conn, work)
    assert sorted(m.subject for m in stored(conn).values()) == ["new", "recent"]


def test_incremental_sync_fetches_only_new_mail(make_imap_connection, dovecot, imap_user, work):
    dovecot.deliver(imap_user, [message(subject=f"a{i}") for i in range(3)])
    conn = make_imap_connection()
    sync_once(conn, work)
    new = dovecot.deliver(imap_user, [message(subject=f"b{i}") for i in range(2)])
    job = sync_once(conn, work)
    assert (job.created_count, job.updated_count, job.progress_total) == (2, 0, 2)
    assert set(new) <= set(stored(conn))


def test_unchanged_folders_are_skipped_after_a_status_probe(
    make_imap_connection, dovecot, imap_user, work
) -> None:
    dovecot.deliver(imap_user, [message()])
    conn = make_imap_connection(folders=["INBOX", "Archive"])
    dovecot.deliver(imap_user, [message(subject="archived")], folder="Archive")
    sync_once(conn, work)
    dovecot.record_commands(imap_user)
    job = sync_once(conn, work)
    opened = [c for c in dovecot.commands(imap_user) if c.startswith(("SELECT", "EXAMINE"))]
    assert job.state == State.SUCCEEDED and opened == []  # no folder was even opened
    dovecot.deliver(imap_user, [message(subject="only the archive changed")], folder="Archive")
    dovecot.record_commands(imap_user)
    sync_once(conn, work)
    opened = [c for c in dovecot.commands(imap_user) if c.startswith(("SELECT", "EXAMINE"))]
    assert [c.split()[:2] for c in opened] == [["EXAMINE", '"Archive"']]  # read-only, only it


def test_flag_changes_come_back_with_condstore(make_imap_connection, dovecot, imap_user, work):
    [uid] = dovecot.deliver(imap_user, [message()])
    conn = make_imap_connection()
    sync_once(conn, work)
    assert stored(conn)[uid].flags == []
    client = dovecot.client(imap_user)
    client.select_folder("INBOX")
    client.add_flags([uid], [b"\\Flagged", b"\\Seen"])
    client.logout()
    job = sync_once(conn, work)
    assert job.updated_count == 1
    assert stored(conn)[uid].flags == ["\\Flagged", "\\Seen"]


def test_flag_changes_without_condstore_use_the_bounded_fallback(
    make_imap_connection, dovecot, imap_user, work, monkeypatch
):
    uids = dovecot.deliver(imap_user, [message(subject=str(i)) for i in range(5)])
    original = IMAPClient.capabilities
    monkeypatch.setattr(
        IMAPClient,
        "capabilities",
        lambda self: tuple(c for c in original(self) if c not in (b"CONDSTORE", b"QRESYNC")),
    )
    conn = make_imap_connection(flag_window=2)
    sync_once(conn, work)
    client = dovecot.client(imap_user)
    client.select_folder("INBOX")
    client.add_flags(uids, [b"\\Answered"])
    client.logout()
    dovecot.deliver(imap_user, [message(subject="wake the probe")])
    sync_once(conn, work)
    mirror = stored(conn)
    # only the newest `flag_window` messages held before this sync are re-checked
    assert [mirror[u].flags for u in uids] == [[], [], [], ["\\Answered"], ["\\Answered"]]


def test_expunged_messages_are_marked_deleted_not_destroyed(
    make_imap_connection, dovecot, imap_user, work
):
    uids = dovecot.deliver(imap_user, [message(subject=str(i)) for i in range(4)])
    conn = make_imap_connection()
    sync_once(conn, work)
    client = dovecot.client(imap_user)
    client.select_folder("INBOX")
    client.delete_messages(uids[1:3])
    client.expunge()
    client.logout()
    job = sync_once(conn, work)
    assert job.deleted_count == 2
    mirror = stored(conn)
    assert len(mirror) == 4
    assert [mirror[u].deleted for u in uids] == [False, True, True, False]
    assert mirror[uids[1]].deleted_at is not None


def test_with_qresync_expunges_and_flag_changes_come_with_opening_the_folder(
    make_imap_connection, dovecot, imap_user, work
):
    """RFC 7162: EXAMINE with the stored UIDVALIDITY and HIGHESTMODSEQ is answered with the
    UIDs expunged since (VANISHED) and the changed flags (FETCH): neither side walks the
    folder — no SEARCH ALL, no SEARCH MODSEQ."""
    uids = dovecot.deliver(imap_user, [message(subject=str(i)) for i in range(5)])
    conn = make_imap_connection()
    sync_once(conn, work)
    client = dovecot.client(imap_user)
    client.select_folder("INBOX")
    client.add_flags([uids[0]], [b"\\Flagged"])
    client.delete_messages(uids[1:3])
    client.expunge()
    client.logout()
    [new] = dovecot.deliver(imap_user, [message(subject="new")])
    dovecot.record_commands(imap_user)
    job = sync_once(conn, work)
    assert (job.deleted_count, job.created_count) == (2, 1)
    mirror = stored(conn)
    assert [mirror[u].deleted for u in [*uids, new]] == [False, True, True, False, False, False]
    assert mirror[uids[0]].flags == ["\\Flagged"]
    sent = dovecot.commands(imap_user)
    [examine] = [c for c in sent if c.startswith(("EXAMINE", "SELECT"))]
    assert examine.startswith('EXAMINE "INBOX" (QRESYNC (')
    assert not any(" ALL" in c or "MODSEQ" in c for c in sent if "SEARCH" in c), sent


def test_without_qresync_expunges_are_found_by_diffing_and_flags_by_modseq(make_connection, work):
    with own_dovecot(make_connection, CONDSTORE_ONLY) as (server, conn):
        uids = server.deliver("box", [message(subject=str(i)) for i in range(4)])
        sync_once(conn, work)
        server.add_flags("box", [uids[0]], [b"\\Seen"])
        server.expunge("box", [uids[3]])
        server.record_commands("box")
        job = sync_once(conn, work)
        sent = server.commands("box")
    assert job.deleted_count == 1
    mirror = stored(conn)
    assert [mirror[u].deleted for u in uids] == [False, False, False, True]
    assert mirror[uids[0]].flags == ["\\Seen"]
    assert not any("QRESYNC" in c for c in sent)
    assert any("SEARCH" in c and "MODSEQ" in c for c in sent)
    assert any("SEARCH" in c and c.endswith("ALL") for c in sent)


def test_changed_uidvalidity_resyncs_the_folder_without_duplicates(
    make_imap_connection, dovecot, imap_user, work
):
    uids = dovecot.deliver(imap_user, [message(subject=str(i)) for i in range(6)])
    conn = make_imap_connection()
    sync_once(conn, work)
    ids_before = set(MailMessage.objects.filter(connection=conn).values_list("id", flat=True))
    # the server renumbers: UIDVALIDITY changes and one message is gone meanwhile
    client = dovecot.client(imap_user)
    client.select_folder("INBOX")
    client.delete_messages([uids[0]])
    client.expunge()
    client.logout()
    new_validity = dovecot.bump_uidvalidity(imap_user)

    job = sync_once(conn, work)

    assert job.state == State.SUCCEEDED
    rows = MailMessage.objects.filter(connection=conn)
    assert rows.count() == 6  # re-linked, not duplicated
    assert set(rows.values_list("id", flat=True)) == ids_before
    live = rows.filter(deleted=False)
    assert set(live.values_list("uidvalidity", flat=True)) == {new_validity}
    assert sorted(live.values_list("subject", flat=True)) == ["1", "2", "3", "4", "5"]
    assert rows.get(subject="0").deleted
    assert SyncLog.objects.filter(job=job, message__contains="UIDVALIDITY changed").exists()


def test_a_changed_uidvalidity_marks_deleted_only_what_the_re_read_could_have_found(
    make_imap_connection, dovecot, imap_user, work
):
    """Mail held from before today's history window is still there after the server
    renumbers: the folder is read again as far back as the first sync read it (the window
    was widened to all mail after that sync), and a message whose date is older than any
    re-read (it came in by UID, with an old date) is left as it was, not marked deleted."""
    long_ago = timezone.now() - dt.timedelta(days=200)
    [old] = dovecot.deliver(imap_user, [message(subject="old")], when=long_ago)
    [recent] = dovecot.deliver(imap_user, [message(subject="recent")])
    conn = make_imap_connection(history_days=None)
    sync_once(conn, work)  # all mail
    conn.config = {**conn.config, "history_days": 30}
    conn.save()
    windowed = make_imap_connection(history_days=30)
    sync_once(windowed, work)  # "recent" only
    [moved_in] = dovecot.deliver(imap_user, [message(subject="moved in")], when=long_ago)
    # and one dated the day before the window starts (SINCE compares dates in the server's
    # time zone: it may or may not have been looked for, so it is not deleted)
    edge = timezone.now() - dt.timedelta(days=31)
    [on_the_edge] = dovecot.deliver(imap_user, [message(subject="on the edge")], when=edge)
    sync_once(conn, work)
    sync_once(windowed, work)  # new by UID, old by date
    assert {m.subject for m in stored(windowed).values()} == {"recent", "moved in", "on the edge"}
    dovecot.bump_uidvalidity(imap_user)
    sync_once(conn, work)
    sync_once(windowed, work)
    everything = stored(conn)
    assert sorted(everything) == sorted([recent, old, moved_in, on_the_edge])
    assert not any(m.deleted for m in everything.values())
    assert not any(m.deleted for m in stored(windowed).values())


def test_the_server_is_never_changed_by_any_sync(make_imap_connection, dovecot, imap_user, work):
    dovecot.deliver(imap_user, [message(subject=str(i)) for i in range(5)])
    dovecot.deliver(imap_user, [message(subject="flagged")], flags=(b"\\Flagged",))
    before = dovecot.server_view(imap_user)
    conn = make_imap_connection(batch_size=2)
    for kind in (Kind.INITIAL, Kind.MANUAL, Kind.FULL_RESYNC):
        sync_once(conn, work, kind)
    dovecot.deliver(imap_user, [message(subject="new")])
    after_delivery = dovecot.server_view(imap_user)
    sync_once(conn, work)
    assert dovecot.server_view(imap_user) == after_delivery
    assert {u: f for u, f in after_delivery.items() if u in before} == before
    assert all(b"\\Seen" not in flags for flags in after_delivery.values())


def test_attachments_are_stored_with_metadata_and_limits(
    make_imap_connection, dovecot, imap_user, work, settings
):
    settings.MAIL_MAX_ATTACHMENT_BYTES = 50_000
    dovecot.deliver(
        imap_user,
        [
            message(
                attachments=[
                    ("small.pdf", "application/pdf", b"%PDF-small" * 10),
                    ("big.bin", "application/octet-stream", b"x" * 80_000),
                ]
            )
        ],
    )
    conn = make_imap_connection()
    sync_once(conn, work)
    msg = MailMessage.objects.get(connection=conn)
    assert msg.has_attachments and msg.truncated
    small = msg.attachments.get(filename="small.pdf")
    assert small.size == 100 and small.file.read() == b"%PDF-small" * 10
    big = msg.attachments.get(filename="big.bin")
    assert big.size == 80_000 and not big.file and "attachment limit" in big.note
    assert any("big.bin" in d for d in msg.defects)


def test_every_body_is_fetched_once_in_few_round_trips(
    make_imap_connection, dovecot, imap_user, work
):
    """The sizes come first (one metadata FETCH), then the bodies in FETCHes of up to
    FETCH_BYTES: a large message is not sent twice (a first slice, then whole), and does not
    cost a round trip of its own unless it alone fills one (small and large messages are read
    in FETCHes of their own kind). A single new message comes whole with its metadata."""
    small = [message(subject=f"small {i}", body="s" * 2_000) for i in range(30)]
    large = [message(subject=f"large {i}", body="L" * 150_000) for i in range(6)]
    mixed = [m for pair in zip(small, large * 5, strict=True) for m in pair]
    uids = dovecot.deliver(imap_user, mixed)
    conn = make_imap_connection()
    dovecot.record_commands(imap_user)
    job = sync_once(conn, work)
    assert job.state == State.SUCCEEDED, job.error_message
    assert sorted(stored(conn)) == uids
    assert {m.subject for m in stored(conn).values() if m.size > 150_000} == {
        f"large {i}" for i in range(6)
    }
    fetches = [c for c in dovecot.commands(imap_user) if c.upper().startswith("UID FETCH")]
    bodies = [c for c in fetches if "BODY.PEEK[]" in c.upper()]
    sent = [
        uid
        for c in bodies
        for part in c.split()[2].split(",")
        for uid in range(int(part.partition(":")[0]), int(part.rpartition(":")[2]) + 1)
    ]
    assert sorted(sent) == uids  # each body asked for exactly once
    # the sizes, then the 30 small bodies in one FETCH and the 30 large ones (4.5 MB) in another
    assert len(fetches) == 3
    # one new message (as IDLE announces it): one round trip for it all
    [new] = dovecot.deliver(imap_user, [message(subject="new", body="N" * 100_000)])
    dovecot.record_commands(imap_user)
    sync_once(conn, work)
    fetches = [c for c in dovecot.commands(imap_user) if c.upper().startswith("UID FETCH")]
    assert [c.split()[2] for c in fetches] == [str(new)] and "BODY.PEEK[]" in fetches[0]
    assert stored(conn)[new].size > 100_000 and not stored(conn)[new].truncated


def test_oversized_message_is_stored_from_its_beginning_and_marked(
    make_imap_connection, dovecot, imap_user, work, settings
):
    settings.MAIL_MAX_MESSAGE_BYTES = 20_000
    dovecot.deliver(imap_user, [message(subject="huge", body="y" * 60_000)])
    conn = make_imap_connection()
    sync_once(conn, work)
    msg = MailMessage.objects.get(connection=conn)
    assert msg.subject == "huge" and msg.truncated and msg.size > 60_000
    assert any("cut to the first" in d for d in msg.defects)


def test_malformed_mail_is_all_accounted_for(make_imap_connection, dovecot, imap_user, work):
    uids = dovecot.deliver(imap_user, list(MALFORMED.values()))
    conn = make_imap_connection(batch_size=4)
    job = sync_once(conn, work)
    assert job.state == State.SUCCEEDED, job.error_message
    mirror = stored(conn)
    assert sorted(mirror) == uids  # every one stored, none lost
    by_subject = {m.subject: m for m in mirror.values()}
    assert by_subject["Grüße aus Köln"].from_name == "Jürgen Müller"
    assert by_subject["exchange id"].message_id.startswith("[b378dfc5")
    assert by_subject["nested"].text_body.strip() == "innermost text"
    with_defects = [m for m in mirror.values() if m.defects]
    assert len(with_defects) >= 10
    notes = " ".join(SyncLog.objects.filter(job=job).values_list("message", flat=True))
    assert "had defects (stored as well as possible)" in notes


def test_a_second_fetch_of_the_same_batch_stores_nothing_twice(
    make_imap_connection, dovecot, imap_user, work
):
    dovecot.deliver(imap_user, [message(subject=str(i)) for i in range(3)])
    conn = make_imap_connection()
    sync_once(conn, work)
    Connection.objects.filter(pk=conn.pk).update(cursor={})  # as if the checkpoint was lost
    job = sync_once(conn, work)
    assert (job.created_count, job.unchanged_count) == (0, 3)
    assert MailMessage.objects.filter(connection=conn).count() == 3
    assert MailAttachment.objects.count() == 0


def test_wrong_password_fails_once_and_asks_for_new_credentials(
    make_imap_connection, work, settings
):
    conn = make_imap_connection(password="not-the-password")
    job = sync_once(conn, work)
    conn.refresh_from_db()
    assert job.state == State.FAILED and job.attempts == 1 and job.error_class == "AuthFailed"
    assert conn.status == Connection.Status.AUTH_REQUIRED
    assert conn.last_error == "The mail server rejected the username or password."
    assert conn.next_sync_at is None  # no retry storm, no account lockout


def test_unreachable_server_is_transient(make_imap_connection, work):
    from sandbox.dovecot import free_port

    conn = make_imap_connection(port=free_port())
    job = sync_once(conn, work)
    assert job.state == State.RETRYING and job.error_class == "Transient"
    assert "refused the connection" in job.error_message


def test_a_message_moved_between_synced_folders(make_imap_connection, dovecot, imap_user, work):
    [uid] = dovecot.deliver(imap_user, [message(subject="to be filed")])
    dovecot.deliver(imap_user, [message(subject="already filed")], folder="Archive")
    conn = make_imap_connection(folders=["INBOX", "Archive"])
    sync_once(conn, work)
    client = dovecot.client(imap_user)
    client.select_folder("INBOX")
    client.move([uid], "Archive")
    client.logout()
    job = sync_once(conn, work)
    assert (job.created_count, job.deleted_count) == (1, 1)
    rows = MailMessage.objects.filter(connection=conn, subject="to be filed")
    assert sorted((m.folder, m.deleted) for m in rows) == [("Archive", False), ("INBOX", True)]


def test_a_folder_gone_from_the_server_has_its_messages_marked_deleted(
    make_imap_connection, dovecot, imap_user, work
):
    """All folders: one deleted and one renamed on the server. The deleted one's messages
    are marked deleted (kept); the renamed one is read under its new name and its old
    rows are marked deleted — nothing stays live twice."""
    dovecot.deliver(imap_user, [message(subject="inbox")])
    dovecot.deliver(imap_user, [message(subject="old project")], folder="Projects")
    dovecot.deliver(imap_user, [message(subject="receipt")], folder="Receipts")
    conn = make_imap_connection(all_folders=True)
    sync_once(conn, work)
    client = dovecot.client(imap_user)
    client.delete_folder("Projects")
    client.rename_folder("Receipts", "Paperwork")
    client.logout()
    job = sync_once(conn, work)
    assert job.state == State.SUCCEEDED
    rows = MailMessage.objects.filter(connection=conn)
    assert sorted((m.folder, m.subject, m.deleted) for m in rows) == [
        ("INBOX", "inbox", False),
        ("Paperwork", "receipt", False),
        ("Projects", "old project", True),
        ("Receipts", "receipt", True),
    ]
    assert SyncLog.objects.filter(job=job, message__contains="no longer on the mail").count() == 2
    job = sync_once(conn, work)  # and the next sync has nothing more to say
    assert (job.state, job.deleted_count, job.created_count) == (State.SUCCEEDED, 0, 0)


def test_a_folder_that_comes_back_is_read_as_far_back_as_before(
    make_imap_connection, dovecot, imap_user, work
):
    """A folder renamed and renamed back (or left out of one LIST) was retired meanwhile:
    back, it is read again as far back as its first sync read it — not within today's
    narrower window — so its older mail is live again, not deleted for good."""
    long_ago = timezone.now() - dt.timedelta(days=200)
    [old] = dovecot.deliver(imap_user, [message(subject="old project")], "Projects", when=long_ago)
    conn = make_imap_connection(all_folders=True, history_days=None)
    sync_once(conn, work)
    conn.config = {**conn.config, "history_days": 30}
    conn.save()
    client = dovecot.client(imap_user)
    client.rename_folder("Projects", "Elsewhere")
    client.logout()
    sync_once(conn, work)
    assert MailMessage.objects.get(connection=conn, subject="old project").deleted
    client = dovecot.client(imap_user)
    client.rename_folder("Elsewhere", "Projects")
    client.logout()
    job = sync_once(conn, work)
    assert job.state == State.SUCCEEDED
    rows = MailMessage.objects.filter(connection=conn, subject="old project")
    assert [(m.folder, m.uid, m.deleted) for m in rows] == [("Projects", old, False)]


def test_a_missing_folder_in_the_list_does_not_stop_the_others(
    make_imap_connection, dovecot, imap_user, work
):
    dovecot.deliver(imap_user, [message(subject="inbox")])
    dovecot.deliver(imap_user, [message(subject="filed")], folder="Archive")
    conn = make_imap_connection(folders=["INBOX", "Gone", "Archive"])
    job = sync_once(conn, work)
    assert job.state == State.FAILED and job.error_class == "Permanent"
    assert job.error_message == (
        "The folder 'Gone' does not exist on the mail server. The other folders were synced. "
        "Check the folder list."
    )
    rows = MailMessage.objects.filter(connection=conn)
    assert sorted((m.folder, m.subject) for m in rows) == [("Archive", "filed"), ("INBOX", "inbox")]


def test_progress_is_right_across_slices_and_retries(
    dovecot, imap_user, make_imap_connection, work, settings
):
    """A job that continues in a new slice (or after a retry) keeps counting from what it had
    committed: 60 messages read in batches of 10, one slice per batch, show 60 / 60."""
    dovecot.deliver_many(imap_user, (message(subject=f"m{i}") for i in range(60)))
    conn = make_imap_connection(batch_size=10)
    settings.SYNC_SLICE_SECONDS = 0
    job = engine.enqueue(conn, SyncJob.Kind.INITIAL)
    work()
    job.refresh_from_db()
    assert job.slices > 3 and job.created_count == 60
    assert (job.progress_done, job.progress_total) == (60, 60)


@pytest.mark.parametrize(
    "capabilities",
    [QRESYNC, CONDSTORE_ONLY, NO_MODSEQ],
    ids=["qresync", "condstore", "neither"],
)
def test_changes_during_a_first_sync_of_many_slices_are_not_lost(
    capabilities, make_connection, work, settings
):
    """A first sync that takes several slices: a message it stored in the first slice is
    flagged and another expunged before it ends. The next sync brings both changes (the
    folder's mod-sequence and count are the first slice's, not the last one's)."""
    config = {"batch_size": 3, "flag_window": 20}
    with own_dovecot(make_connection, capabilities, **config) as (server, conn):
        uids = server.deliver("box", [message(subject=str(i)) for i in range(9)])
        budget = settings.SYNC_SLICE_SECONDS
        settings.SYNC_SLICE_SECONDS = 0  # one batch per slice
        job = engine.enqueue(conn, Kind.INITIAL)
        engine.process_ticket()
        assert sorted(stored(conn)) == uids[:3]  # the first slice only
        server.add_flags("box", [uids[0]], [b"\\Flagged"])
        server.expunge("box", [uids[1]])
        settings.SYNC_SLICE_SECONDS = budget
        work()
        job.refresh_from_db()
        assert job.state == State.SUCCEEDED and job.slices > 1
        sync_once(conn, work)
    mirror = stored(conn)
    assert sorted(mirror) == uids
    assert [u for u in uids if mirror[u].deleted] == [uids[1]]
    assert mirror[uids[0]].flags == ["\\Flagged"]


@pytest.mark.parametrize(
    "capabilities",
    [CONDSTORE_ONLY, NO_MODSEQ],
    ids=["condstore", "neither"],
)
def test_an_expunge_is_found_when_an_incremental_sync_takes_several_slices(
    capabilities, make_connection, work, settings
):
    """Without QRESYNC, "the count adds up" decides whether to look for expunges. New mail
    fetched by an earlier slice of the same sync counts too: otherwise three arrivals, one
    fetched per slice, and one expunge would add up in the last slice."""
    with own_dovecot(make_connection, capabilities, batch_size=1) as (server, conn):
        uids = server.deliver("box", [message(subject=str(i)) for i in range(4)])
        sync_once(conn, work)
        uids += server.deliver("box", [message(subject=f"new {i}") for i in range(3)])
        server.expunge("box", [uids[1]])
        budget = settings.SYNC_SLICE_SECONDS
        settings.SYNC_SLICE_SECONDS = 0  # one new message per slice
        job = engine.enqueue(conn, Kind.MANUAL)
        engine.process_ticket()
        settings.SYNC_SLICE_SECONDS = budget
        work()
        job.refresh_from_db()
    assert job.state == State.SUCCEEDED and job.slices > 1
    mirror = stored(conn)
    assert sorted(mirror) == uids
    assert [u for u in uids if mirror[u].deleted] == [uids[1]]


def test_without_condstore_flag_changes_are_seen_while_the_counts_stay_the_same(
    make_connection, work
):
    """No mod-sequences: the same UIDNEXT and message count do not mean unchanged flags, so
    a folder whose flags are re-checked is not skipped."""
    with own_dovecot(make_connection, NO_MODSEQ, flag_window=10) as (server, conn):
        uids = server.deliver("box", [message(subject=str(i)) for i in range(3)])
        sync_once(conn, work)
        server.add_flags("box", [uids[2]], [b"\\Seen"])
        job = sync_once(conn, work)
    assert job.updated_count == 1
    assert stored(conn)[uids[2]].flags == ["\\Seen"]


@pytest.fixture
def parse_helpers() -> Iterator[None]:
    """This process starts with no parse helper and is left without one."""
    import os

    from mail import parse_helper

    def drop() -> None:
        helper = parse_helper._helpers.pop(os.getpid(), None)
        if helper is not None:
            helper.close()

    drop()
    yield
    drop()


def test_a_large_fetch_parsed_beside_the_worker_stores_the_same_mail(
    make_imap_connection, dovecot, imap_user, work, settings, parse_helpers, monkeypatch
):
    """With MAIL_PARSE_HELPER_FROM, a large fetch is parsed in a helper process: the rows are
    the ones parsing in the worker makes, also when slices stop with a batch still with the
    helper, and when the helper is killed in the middle (the rest is parsed in the worker)."""
    import os

    from mail import parse_helper

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1})  # a second CPU
    monkeypatch.setattr(parse_helper, "CGROUP_MEMBERSHIP", Path("/nonexistent"))  # no CPU limit
    attached = [("report.pdf", "application/pdf", b"%PDF-1.4 " * 50)]
    dovecot.deliver_many(
        imap_user,
        [
            *MALFORMED.values(),
            *(message(subject=f"m{i}", attachments=attached if i % 3 else ()) for i in range(20)),
        ],
    )

    def rows(conn: Connection) -> list[tuple[Any, ...]]:
        return [
            (
                m.uid,
                m.subject,
                m.from_address,
                m.text_body,
                m.html_body,
                m.snippet,
                m.defects,
                m.truncated,
                sorted(
                    (a.filename, a.sha256, a.size, a.file.name, sha256(a.file.read()).hexdigest())
                    for a in m.attachments.all()
                ),
            )
            for m in MailMessage.objects.filter(connection=conn).order_by("uid")
        ]

    settings.MAIL_PARSE_HELPER_FROM = 0
    in_worker = make_imap_connection(batch_size=5)
    assert sync_once(in_worker, work).state == State.SUCCEEDED
    assert parse_helper._helpers.get(os.getpid()) is None  # never started
    expected = rows(in_worker)
    assert len(expected) == len(MALFORMED) + 20

    def written_again() -> None:  # the files of the next run are the helper's own
        for attachment in MailAttachment.objects.filter(message__connection=in_worker):
            attachment.file.storage.delete(attachment.file.name)

    settings.MAIL_PARSE_HELPER_FROM = 10
    settings.SYNC_SLICE_SECONDS = 0  # one batch per slice: each leaves the next with the helper
    sliced = make_imap_connection(batch_size=5)
    written_again()
    job = sync_once(sliced, work)
    assert job.state == State.SUCCEEDED and job.slices > 3
    helper = parse_helper._helpers[os.getpid()]
    assert helper is not None and helper.alive()
    assert helper.outstanding is None  # each slice took back what it left with the helper
    assert rows(sliced) == expected

    killed = make_imap_connection(batch_size=5)
    written_again()
    job = engine.enqueue(killed, Kind.INITIAL)
    engine.process_ticket()  # the first slice: one batch stored, the second one sent
    assert 0 < MailMessage.objects.filter(connection=killed).count() < len(expected)
    helper.proc.kill()
    work()
    job.refresh_from_db()
    assert job.state == State.SUCCEEDED, job.error_message
    assert parse_helper._helpers[os.getpid()] is None  # parsing in the worker from then on
    assert rows(killed) == expected  # nothing lost, nothing twice
