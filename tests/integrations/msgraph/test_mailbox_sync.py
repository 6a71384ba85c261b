"""Mirroring a Microsoft 365 mailbox with per-folder delta queries against the local server."""

from __future__ import annotations

import re
import threading
from collections import Counter

import pytest
from django.utils import timezone

from mail.models import MailAttachment, MailMessage
from syncqueue import engine
from syncqueue.models import SyncJob, SyncLog
from tests.support.jobs import sync_once

pytestmark = pytest.mark.django_db(transaction=True)
Kind, State = SyncJob.Kind, SyncJob.State


def mirror(conn) -> dict[str, MailMessage]:
    rows = list(MailMessage.objects.filter(connection=conn))
    counts = Counter(r.remote_id for r in rows)
    assert max(counts.values(), default=1) == 1, "a message was stored twice"
    return {r.remote_id: r for r in rows}


def live(box) -> set[str]:
    return set(box.messages)


def test_first_sync_mirrors_every_folder(make_graph_connection, graph, mailbox, work):
    graph.add_folder(mailbox, "2024", parent="Projects")
    ids = [graph.add_message(mailbox, subject=f"inbox {i}") for i in range(23)]
    ids += [graph.add_message(mailbox, folder="2024", subject=f"archived {i}") for i in range(7)]
    with_file = graph.add_message(
        mailbox,
        folder="Projects",
        subject="Plans",
        attachments=(("plan.pdf", b"%PDF-1.4 plan", "application/pdf"),),
        is_read=True,
        categories=("Blue category",),
    )
    conn = make_graph_connection(page_size=5)
    job = sync_once(conn, work, Kind.INITIAL)

    assert job.state == State.SUCCEEDED, job.error_message
    stored = mirror(conn)
    assert set(stored) == {*ids, with_file} == live(mailbox)
    plans = stored[with_file]
    assert plans.subject == "Plans" and plans.flags == ["\\Seen"]
    assert plans.labels == ["Blue category"]
    assert plans.folder == mailbox.folder_id("Projects")
    attachment = MailAttachment.objects.get(message=plans)
    assert (attachment.filename, attachment.size) == ("plan.pdf", 13)
    assert attachment.file.read() == b"%PDF-1.4 plan"
    assert job.progress_done == 31
    # every request asked for immutable ids and never exceeded the mailbox's concurrency
    assert graph.without_immutable_ids == 0
    assert mailbox.max_in_flight <= 4 and graph.throttled == 0
    # the delta links are the cursor; no token anywhere in what we persist
    conn.refresh_from_db()
    folders = conn.cursor["folders"]
    assert all("$deltatoken=" in state["delta"] for state in folders.values())
    tokens = {t for t in graph.tokens}
    persisted = (
        str(conn.cursor)
        + str(job.payload)
        + str(job.checkpoint)
        + "".join(SyncLog.objects.filter(job=job).values_list("message", flat=True))
    )
    assert not any(token in persisted for token in tokens)


def test_later_syncs_bring_only_changes(make_graph_connection, graph, mailbox, work):
    first = [graph.add_message(mailbox, subject=f"m{i}") for i in range(12)]
    conn = make_graph_connection(page_size=5)
    sync_once(conn, work, Kind.INITIAL)
    requests_before = len(graph.requests)

    new = graph.add_message(mailbox, subject="new one")
    graph.update_message(mailbox, first[0], isRead=True, flag={"flagStatus": "flagged"})
    graph.move_message(mailbox, first[1], "Projects")
    graph.delete_message(mailbox, first[2])
    job = sync_once(conn, work)

    assert job.state == State.SUCCEEDED, job.error_message
    stored = mirror(conn)
    assert stored[new].subject == "new one"
    assert stored[first[0]].flags == ["\\Flagged", "\\Seen"]
    moved = stored[first[1]]  # same row: the immutable id survived the move
    assert moved.folder == mailbox.folder_id("Projects") and not moved.deleted
    assert stored[first[2]].deleted  # kept, marked deleted
    assert {r for r, m in stored.items() if not m.deleted} == live(mailbox)
    assert (job.created_count, job.deleted_count) == (1, 1)
    # one folder list + one delta round per folder, no re-download of the mailbox
    assert len(graph.requests) - requests_before <= 1 + 4 + 2


def test_a_forgotten_delta_link_resyncs_that_folder_without_duplicates(
    make_graph_connection, graph, mailbox, work
):
    ids = [graph.add_message(mailbox, subject=f"m{i}") for i in range(9)]
    conn = make_graph_connection(page_size=4)
    sync_once(conn, work, Kind.INITIAL)
    graph.delete_message(mailbox, ids[0])
    added = graph.add_message(mailbox, subject="while we were away")
    graph.forget_sync_state()  # the stored deltaLinks now answer 410 SyncStateNotFound

    job = sync_once(conn, work)

    assert job.state == State.SUCCEEDED, job.error_message
    stored = mirror(conn)
    assert added in stored and stored[ids[0]].deleted
    assert {r for r, m in stored.items() if not m.deleted} == live(mailbox)
    assert SyncLog.objects.filter(job=job, message__contains="Resyncing this folder").exists()


def test_a_429_storm_is_waited_out_without_spending_attempts(
    make_graph_connection, graph, mailbox, work
):
    ids = [graph.add_message(mailbox, subject=f"m{i}") for i in range(20)]
    storm = graph.fault(
        r"/messages/delta",
        429,
        times=3,
        retry_after=1,
        body={"error": {"code": "ApplicationThrottled", "message": "slow down"}},
    )
    busy = graph.fault(r"/mailFolders\?", 503, times=1, retry_after=1)
    conn = make_graph_connection(page_size=5)
    job = sync_once(conn, work, Kind.INITIAL)

    assert job.state == State.SUCCEEDED, job.error_message
    assert (storm.hits, busy.hits) == (3, 1)
    assert job.attempts == 0
    assert set(mirror(conn)) == set(ids)
    assert SyncLog.objects.filter(job=job, message__contains="Rate limited").count() >= 4


def test_dropped_connections_and_server_errors_are_retried(
    make_graph_connection, graph, mailbox, work
):
    ids = [graph.add_message(mailbox, subject=f"m{i}") for i in range(10)]
    graph.fault(r"/messages/delta", drop=True, times=1)
    graph.fault(r"/messages/delta", 500, times=1)
    conn = make_graph_connection(page_size=5)
    job = engine.enqueue(conn, Kind.INITIAL)
    for _ in range(3):  # each failure backs off; the test lets the backoff end at once
        work()
        SyncJob.objects.filter(pk=job.pk, state=State.RETRYING).update(run_after=timezone.now())
        engine.requeue_due_retries(timezone.now())
    job.refresh_from_db()
    assert job.state == State.SUCCEEDED, (job.state, job.error_message)
    assert job.attempts == 2 and job.error_class == "Transient"
    assert set(mirror(conn)) == set(ids)


def test_a_sync_outlives_its_tokens(make_graph_connection, graph, mailbox, work):
    """The server lets tokens live 0.3 s (MSAL believes an hour) and revokes all of them
    mid-sync: each 401 gets one fresh token and the sync carries on."""
    ids = [graph.add_message(mailbox, subject=f"m{i}") for i in range(150)]
    graph.token_lifetime = 0.3
    graph.latency = 0.01
    revoke = threading.Timer(0.5, graph.revoke_tokens)
    conn = make_graph_connection(page_size=5)
    revoke.start()
    try:
        job = sync_once(conn, work, Kind.INITIAL)
    finally:
        revoke.cancel()

    assert job.state == State.SUCCEEDED, job.error_message
    assert set(mirror(conn)) == set(ids)
    assert graph.token_requests >= 3
    assert job.attempts == 0


def test_text_no_database_can_store_costs_the_message_nothing(
    make_graph_connection, graph, mailbox, work
):
    """JSON may carry NUL and lone surrogates (\\u0000, \\ud800): PostgreSQL refuses the first,
    no UTF-8 encoder takes the second. The message is stored without them (noted as a
    defect), with the others on its page, and the sync succeeds."""
    bad = graph.add_message(
        mailbox,
        subject="Invoice \ud800 due",
        body="<p>amount\x00 due</p>",
        categories=("Red\x00",),
    )
    good = graph.add_message(mailbox, subject="Fine")
    conn = make_graph_connection()
    job = sync_once(conn, work, Kind.INITIAL)
    assert job.state == State.SUCCEEDED, job.error_message
    stored = mirror(conn)
    assert set(stored) == {bad, good}
    assert stored[bad].subject == "Invoice  due" and stored[bad].labels == ["Red"]
    assert "\x00" not in stored[bad].html_body
    assert any("NUL or invalid characters removed" in d for d in stored[bad].defects)


def test_an_update_for_a_message_we_do_not_hold_is_read_whole(
    make_graph_connection, graph, mailbox, work
):
    """An update carries at least the properties that changed. For a message we do not hold
    (it was skipped once, say), that is not enough to store it: it is read whole first."""
    kept = graph.add_message(mailbox, subject="Kept")
    lost = graph.add_message(mailbox, subject="Quarterly report", body="<p>numbers</p>")
    conn = make_graph_connection()
    sync_once(conn, work, Kind.INITIAL)
    MailMessage.objects.filter(connection=conn, remote_id=lost).delete()  # not held by us
    graph.update_message(mailbox, lost, isRead=True)
    job = sync_once(conn, work)
    assert job.state == State.SUCCEEDED, job.error_message
    stored = mirror(conn)
    assert set(stored) == {kept, lost}
    assert stored[lost].subject == "Quarterly report" and stored[lost].flags == ["\\Seen"]
    assert "numbers" in stored[lost].html_body and stored[lost].received_at is not None


def test_a_folder_deleted_for_good_has_its_messages_marked_deleted(
    make_graph_connection, graph, mailbox, work
):
    """Delta says nothing about a folder that no longer exists: its messages are marked
    deleted (kept), once; a message moved out of it before is not touched."""
    graph.add_folder(mailbox, "Projects")
    doomed = graph.add_message(mailbox, folder="Projects", subject="old plan")
    saved = graph.add_message(mailbox, folder="Projects", subject="keep me")
    conn = make_graph_connection()
    sync_once(conn, work, Kind.INITIAL)
    graph.move_message(mailbox, saved, "Inbox")
    sync_once(conn, work)
    graph.purge_folder(mailbox, "Projects")
    job = sync_once(conn, work)
    assert job.state == State.SUCCEEDED, job.error_message
    stored = mirror(conn)
    assert stored[doomed].deleted and not stored[saved].deleted
    assert SyncLog.objects.filter(job=job, message__contains="no longer in the mailbox").exists()
    again = sync_once(conn, work)
    assert (again.state, again.deleted_count) == (State.SUCCEEDED, 0)


def test_a_folder_deleted_while_the_sync_runs_does_not_fail_it(
    make_graph_connection, graph, mailbox, work
):
    """Listed when the sync began, gone when its turn came (Graph: 404 ErrorItemNotFound on
    its delta): its messages are marked deleted and the other folders are read, where before
    the job failed as an internal error and spent an attempt."""
    graph.add_folder(mailbox, "Projects")
    doomed = graph.add_message(mailbox, folder="Projects", subject="old plan")
    conn = make_graph_connection()
    sync_once(conn, work, Kind.INITIAL)
    projects = mailbox.folder_id("Projects")
    gone = {"code": "ErrorItemNotFound", "message": "The specified object was not found."}
    # deleted after this sync read the folder list, before it read the folder
    graph.fault(rf"mailFolders/{re.escape(projects)}/", 404, times=1, body={"error": gone})
    later = graph.add_message(mailbox, subject="new in the inbox")
    job = sync_once(conn, work)
    assert job.state == State.SUCCEEDED, job.error_message
    assert job.attempts == 0
    stored = mirror(conn)
    assert stored[doomed].deleted and not stored[later].deleted
    assert SyncLog.objects.filter(job=job, message__contains="no longer in the mailbox").exists()
    conn.refresh_from_db()
    assert projects not in conn.cursor["folders"]
    graph.purge_folder(mailbox, "Projects")
    again = sync_once(conn, work)
    assert (again.state, again.deleted_count) == (State.SUCCEEDED, 0)


def test_a_resync_whose_own_position_is_forgotten_still_retires_what_is_gone(
    make_graph_connection, graph, mailbox, work
):
    """Graph forgets the sync state (410), and then the fresh pass's skipToken too: the
    folder restarts again with the others' positions kept, and the completed pass still
    marks the message deleted meanwhile as deleted."""
    ids = [graph.add_message(mailbox, subject=f"m{i}") for i in range(12)]
    conn = make_graph_connection(page_size=5)
    sync_once(conn, work, Kind.INITIAL)
    graph.delete_message(mailbox, ids[0])
    graph.forget_sync_state()
    graph.fault(
        r"\$skiptoken=",
        410,
        times=1,
        body={"error": {"code": "syncStateNotFound", "message": "The sync state is gone."}},
    )
    job = sync_once(conn, work)
    assert job.state == State.SUCCEEDED, job.error_message
    stored = mirror(conn)
    assert stored[ids[0]].deleted and not any(stored[i].deleted for i in ids[1:])
    conn.refresh_from_db()
    assert all(state.get("delta") for state in conn.cursor["folders"].values())


def test_inline_only_attachments_are_stored(make_graph_connection, graph, mailbox, work):
    """hasAttachments leaves inline attachments out ("if a message contains only inline
    attachments, this property is false"): a body that shows cid: images is enough to read
    the message's attachments."""
    logo = b"\x89PNG\r\n\x1a\n logo"
    shown = graph.add_message(
        mailbox,
        subject="Newsletter",
        body='<p>Hi</p><img src="cid:logo@example.com">',
        inline=(("logo.png", logo, "image/png", "logo@example.com"),),
    )
    conn = make_graph_connection()
    sync_once(conn, work, Kind.INITIAL)
    stored = mirror(conn)[shown]
    attachment = MailAttachment.objects.get(message=stored)
    assert (attachment.filename, attachment.inline) == ("logo.png", True)
    assert attachment.file.read() == logo


def test_a_message_moved_out_of_the_synced_folders_leaves_the_mirror(
    make_graph_connection, graph, mailbox, work
):
    """Only the Inbox is synced; a message filed away into Projects has left what this
    connection mirrors (as an expunge from a synced IMAP folder has): it is marked deleted,
    not kept live under a folder nothing reports on."""
    graph.add_folder(mailbox, "Projects")
    filed = graph.add_message(mailbox, subject="file me")
    stays = graph.add_message(mailbox, subject="stay")
    conn = make_graph_connection(folders=["Inbox"])
    sync_once(conn, work, Kind.INITIAL)
    graph.move_message(mailbox, filed, "Projects")
    job = sync_once(conn, work)
    assert job.state == State.SUCCEEDED, job.error_message
    stored = mirror(conn)
    assert stored[filed].deleted and not stored[stays].deleted


def test_the_mail_list_names_graph_folders_not_their_ids(
    make_graph_connection, graph, mailbox, work, client, staff
):
    """Graph files messages by folder id (``AAMkAG…``); staff read the folder's name."""
    graph.add_message(mailbox, subject="in the inbox")
    graph.add_message(mailbox, folder="Projects", subject="in a project")
    conn = make_graph_connection()
    assert sync_once(conn, work, Kind.INITIAL).state == State.SUCCEEDED
    folder_id = MailMessage.objects.get(connection=conn, subject="in a project").folder
    client.force_login(staff)
    page = client.get("/admin/mail/mailmessage/").content.decode()
    assert "Projects" in page and "Inbox" in page
    assert folder_id not in page
