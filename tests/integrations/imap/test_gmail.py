"""Servers with Gmail's extension: All Mail is synced once, with labels, not once per label."""

from __future__ import annotations

import pytest

from mail.models import MailMessage
from sandbox.gmail import ALL_MAIL, FakeGmail, GmailMessage
from syncqueue.models import SkippedItem, SyncJob
from tests.support.jobs import sync_once
from tests.support.mailfactory import message

pytestmark = pytest.mark.django_db(transaction=True)


def gmail_connection(make_connection, gmail: FakeGmail, **config):
    """An IMAP connection to the fake Gmail (all mail, no history window)."""
    return make_connection(
        kind="imap",
        config={
            "host": "127.0.0.1",
            "port": gmail.port,
            "security": "none",
            "username": "me@gmail.example",
            "history_days": None,
            **config,
        },
        secrets={"password": "app-password"},
    )


def test_gmail_syncs_all_mail_once_with_labels(make_connection, work):
    mails = [
        GmailMessage(message(subject="in two labels"), ["\\Inbox", "Work"], 1278455344230334865),
        GmailMessage(message(subject="archived"), [], 1278455344230334866, ["\\Seen"]),
    ]
    with FakeGmail(mails) as gmail:
        conn = gmail_connection(make_connection, gmail, folders=["INBOX", "Work"])
        result = conn.build_connector().check()
        job = sync_once(conn, work, SyncJob.Kind.INITIAL)
        commands = list(gmail.commands)

    assert "Gmail" in result.message and ALL_MAIL in result.message
    assert job.state == SyncJob.State.SUCCEEDED, job.error_message
    rows = {m.subject: m for m in MailMessage.objects.filter(connection=conn)}
    assert set(rows) == {"in two labels", "archived"}  # one copy each, not one per label
    assert rows["in two labels"].labels == ["Work", "\\Inbox"]
    assert rows["in two labels"].remote_id == "1278455344230334865"
    assert rows["archived"].flags == ["\\Seen"] and rows["archived"].folder == ALL_MAIL
    examined = [c for c in commands if " EXAMINE " in c or " SELECT " in c]
    assert examined and all(ALL_MAIL in c and " EXAMINE " in c for c in examined)
    fetches = [c for c in commands if "FETCH" in c]
    assert all("BODY[]" not in c.replace("BODY.PEEK[]", "") for c in fetches)
    assert not any(" STORE " in c for c in commands)


def test_a_server_that_misreports_sizes_or_withholds_a_body_loses_nothing(make_connection, work):
    """RFC822.SIZE only plans the body FETCHes: a message announced far smaller than it is
    comes whole (fetched again on its own), not cut to the announced size; a body the server
    leaves out of its answer becomes a skipped item, read again (and stored) by the next sync
    instead of being passed over while the checkpoint moves on."""
    big = message(subject="bigger than announced", body="B" * 100_000)
    mails = [
        GmailMessage(message(subject="plain"), [], 1),
        GmailMessage(big, [], 2, announced_size=100),
        GmailMessage(message(subject="withheld"), [], 3, withheld=True),
        GmailMessage(message(subject="after"), [], 4),
    ]
    with FakeGmail(mails) as gmail:
        conn = gmail_connection(make_connection, gmail)
        job = sync_once(conn, work, SyncJob.Kind.INITIAL)
        rows = {m.subject: m for m in MailMessage.objects.filter(connection=conn)}
        assert job.state == SyncJob.State.SUCCEEDED, job.error_message
        assert set(rows) == {"plain", "bigger than announced", "after"}
        whole = rows["bigger than announced"]
        assert bytes(whole.source.data) == big and not whole.truncated
        [skipped] = SkippedItem.objects.filter(connection=conn, state=SkippedItem.State.OPEN)
        assert skipped.label.endswith("UID 3") and "no content" in skipped.message
        assert skipped.error_class == "NoBodySent"

        gmail.messages[3].withheld = False  # the server answers properly again
        sync_once(conn, work)
    skipped.refresh_from_db()
    assert skipped.state == SkippedItem.State.RESOLVED
    assert MailMessage.objects.filter(connection=conn, subject="withheld").exists()


def test_answers_without_uids_are_not_taken_for_expunged_mail(make_connection, work):
    """A server that leaves the UID out of its FETCH answers (against RFC 3501 6.4.8): the
    message is not passed over as if it had been expunged (the checkpoint would move past it
    for good) nor filed under a UID read from its sequence number; the sync fails, is tried
    again, and stores it once the server answers properly."""
    mails = [
        GmailMessage(message(subject="first"), [], 1),
        GmailMessage(message(subject="no uid"), [], 2, uid_left_out=True),
        GmailMessage(message(subject="third"), [], 3),
    ]
    with FakeGmail(mails) as gmail:
        conn = gmail_connection(make_connection, gmail)
        job = sync_once(conn, work, SyncJob.Kind.INITIAL)
        assert job.state != SyncJob.State.SUCCEEDED
        assert "without the UIDs" in job.error_detail and job.error_class == "Transient"
        assert not MailMessage.objects.filter(connection=conn, subject="no uid").exists()

        gmail.messages[2].uid_left_out = False
        sync_once(conn, work)
    subjects = set(MailMessage.objects.filter(connection=conn).values_list("subject", flat=True))
    assert subjects == {"first", "no uid", "third"}


def test_mail_without_sizes_is_fetched_many_at_a_time(make_connection, work):
    """A server that leaves RFC822.SIZE out: the bodies still come many to a FETCH (planned
    as ordinary mail), and one longer than that is fetched again on its own, whole. Before,
    every message without a size was a FETCH of its own: a round trip per message."""
    big = message(subject="big", body="B" * 200_000)
    mails = [GmailMessage(message(subject=f"m{n}"), [], n, size_left_out=True) for n in range(8)]
    mails.append(GmailMessage(big, [], 99, size_left_out=True))
    with FakeGmail(mails) as gmail:
        conn = gmail_connection(make_connection, gmail)
        job = sync_once(conn, work, SyncJob.Kind.INITIAL)
        fetches = [c for c in gmail.commands if " FETCH " in c]
    assert job.state == SyncJob.State.SUCCEEDED, job.error_message
    rows = {m.subject: m for m in MailMessage.objects.filter(connection=conn)}
    assert len(rows) == 9 and bytes(rows["big"].source.data) == big
    assert not rows["big"].truncated
    assert len(fetches) == 3, fetches  # the sizes, the bodies, the big one again
