"""What Microsoft Graph is documented to do and our own first fake never did (each behaviour's
source: docs/protocols.md, Graph). The local server now does it — shuffled and repeated delta
items, updates with only the changed properties, search folders, reference and item
attachments, day-granular KQL — and the connector copes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from django.db import transaction

from mail.models import MailAttachment, MailMessage
from syncqueue.models import SyncJob, SyncLog
from tests.integrations.msgraph.test_case_history import CONTACT, linked
from tests.support.jobs import sync_once
from workspace.models import Case, CaseContact

pytestmark = pytest.mark.django_db(transaction=True)


def test_an_update_with_only_the_changed_property_keeps_the_others(
    make_graph_connection, graph, mailbox, work
):
    message = graph.add_message(mailbox, folder="Projects", categories=("Blue",), is_read=False)
    conn = make_graph_connection()
    sync_once(conn, work, succeed=True)
    graph.update_message(mailbox, message, flag={"flagStatus": "flagged"})
    graph.update_message(mailbox, message, isRead=True)  # the update says isRead and flag only
    sync_once(conn, work, succeed=True)
    row = MailMessage.objects.get(connection=conn, remote_id=message)
    assert row.folder == mailbox.folder_id("Projects")  # not emptied by a missing parentFolderId
    assert row.labels == ["Blue"]  # not emptied by missing categories
    assert row.flags == ["\\Flagged", "\\Seen"]


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (404, {"code": "syncStateNotFound", "message": "The sync state is gone."}),
        (403, {"code": "resyncRequired", "message": "Resync required."}),
        # a general code, the specific one nested: clients "loop over" innerError codes
        (400, {"code": "badRequest", "message": "x", "innerError": {"code": "syncStateInvalid"}}),
    ],
)
def test_a_forgotten_sync_position_in_any_40x_starts_the_folder_again(
    make_graph_connection, graph, mailbox, work, status, error
):
    """An expired position comes as "a 40X-series error with error codes such as
    syncStateNotFound", not only as a 410: it is a reset of that folder, not "access
    denied" or "mailbox not found" failing the job."""
    ids = {graph.add_message(mailbox, subject=f"m{i}") for i in range(3)}
    conn = make_graph_connection()
    sync_once(conn, work, SyncJob.Kind.INITIAL, succeed=True)
    graph.fault(r"\$deltatoken=", status, times=1, body={"error": error})
    later = graph.add_message(mailbox, subject="after the reset")
    job = sync_once(conn, work)
    assert job.state == SyncJob.State.SUCCEEDED, job.error_message
    stored = set(MailMessage.objects.filter(connection=conn).values_list("remote_id", flat=True))
    assert stored == ids | {later}
    assert SyncLog.objects.filter(job=job, message__contains="Resyncing this folder").exists()


def test_repeated_and_shuffled_delta_items_store_each_message_once(
    make_graph_connection, graph, mailbox, work
):
    graph.repeat = 0.5  # half the items come twice, in any order
    ids = {graph.add_message(mailbox, subject=f"m{i}") for i in range(60)}
    conn = make_graph_connection(page_size=7)
    job = sync_once(conn, work, SyncJob.Kind.INITIAL, succeed=True)
    stored = list(MailMessage.objects.filter(connection=conn).values_list("remote_id", flat=True))
    assert sorted(stored) == sorted(ids)
    assert job.progress_done == job.progress_total  # repeats are not counted as new work


def test_a_full_pass_after_a_reset_retires_only_what_it_did_not_see(
    make_graph_connection, graph, mailbox, work
):
    kept = {graph.add_message(mailbox, subject=f"k{i}") for i in range(25)}
    gone = graph.add_message(mailbox, subject="deleted while the token was lost")
    conn = make_graph_connection(page_size=4)
    sync_once(conn, work, succeed=True)
    graph.forget_sync_state()
    graph.delete_message(mailbox, gone)
    sync_once(conn, work, succeed=True)
    rows = MailMessage.objects.filter(connection=conn)
    assert set(rows.filter(deleted=False).values_list("remote_id", flat=True)) == kept
    assert list(rows.filter(deleted=True).values_list("remote_id", flat=True)) == [gone]


def test_reference_and_item_attachments_do_not_fail_the_mailbox(
    make_graph_connection, graph, mailbox, work
):
    message = graph.add_message(
        mailbox,
        subject="three kinds",
        attachments=(("plan.pdf", b"%PDF-1.4 plan", "application/pdf"),),
        references=(("budget.xlsx", "https://contoso.sharepoint.com/budget.xlsx"),),
        embedded=(("Forwarded: kickoff", "Kickoff notes"),),
    )
    conn = make_graph_connection()
    sync_once(conn, work, succeed=True)
    row = MailMessage.objects.get(connection=conn, remote_id=message)
    found = {a.filename: a for a in MailAttachment.objects.filter(message=row)}
    assert found["plan.pdf"].file and found["plan.pdf"].size == len(b"%PDF-1.4 plan")
    assert found["Forwarded: kickoff"].content_type == "message/rfc822"
    assert b"Kickoff notes" in found["Forwarded: kickoff"].file.read()
    assert found["budget.xlsx"].file.name in ("", None) and "reference attachment" in (
        found["budget.xlsx"].note
    )
    assert not row.truncated  # a link is complete as it is


def test_a_message_with_more_attachments_than_a_page_keeps_them_all(
    make_graph_connection, graph, mailbox, work
):
    """Graph pages collections (graph/paging), the attachment listing too: every page is read
    (before, the first page only, and the rest were lost without a word)."""
    files = tuple((f"part{n:02}.txt", f"content {n}".encode(), "text/plain") for n in range(23))
    message = graph.add_message(mailbox, subject="many files", attachments=files)
    conn = make_graph_connection()
    sync_once(conn, work, succeed=True)
    stored = MailAttachment.objects.filter(message__connection=conn, message__remote_id=message)
    assert sorted(a.filename for a in stored) == [name for name, _, _ in files]
    assert {a.file.read() for a in stored} == {data for _, data, _ in files}
    listings = [t for _, t in graph.requests if t.split("?")[0].endswith("/attachments")]
    assert len(listings) == 3  # 10 + 10 + 3


def test_a_listing_that_never_ends_is_not_followed_for_ever(
    make_graph_connection, graph, mailbox, work
):
    """A server whose next page is its first one again: the sync stops after the repeat, as
    a server error tried again later, instead of asking for ever; once the server pages
    properly, every attachment is stored."""
    files = tuple((f"part{n:02}.txt", b"x", "text/plain") for n in range(15))
    graph.add_message(mailbox, subject="looping", attachments=files)
    conn = make_graph_connection()
    graph.pages_loop = 50  # (a bound, so that a client that loops fails here, not hangs)
    job = sync_once(conn, work)
    assert job.state != SyncJob.State.SUCCEEDED and job.error_class == "Transient"
    assert "page it had already sent" in job.error_message
    listings = [t for _, t in graph.requests if t.split("?")[0].endswith("/attachments")]
    assert len(listings) <= 3 * job.attempts
    graph.pages_loop = 0
    sync_once(conn, work, succeed=True)
    assert MailAttachment.objects.filter(message__connection=conn).count() == 15


def test_search_folders_are_not_synced(make_graph_connection, graph, mailbox, work):
    graph.add_message(mailbox, folder="Projects", subject="important")
    graph.add_search_folder(mailbox, "High importance", sources=("Projects",))
    conn = make_graph_connection()
    sync_once(conn, work, succeed=True)
    assert MailMessage.objects.filter(connection=conn).count() == 1  # not twice
    conn.refresh_from_db()
    names = {state.get("name") for state in conn.cursor["folders"].values()}
    assert "High importance" not in names


def test_history_windows_are_whole_days_and_a_crowded_day_is_searched_by_role(
    make_graph_connection, graph, mailbox, owner, work
):
    day = datetime(2025, 5, 6, 8, tzinfo=UTC)
    for i in range(700):  # one day: 700 from the contact, 700 to the contact
        graph.add_message(mailbox, sender=CONTACT, subject=f"in {i}", received=day)
        graph.add_message(
            mailbox,
            folder="Sent Items",
            sender=mailbox.upn,
            to=(CONTACT,),
            subject=f"out {i}",
            received=day + timedelta(hours=2),
        )
    graph.add_message(
        mailbox, sender=CONTACT, subject="the day before", received=day - timedelta(days=1)
    )
    make_graph_connection()
    case = Case.objects.create(title="Crowded", owner=owner)
    with transaction.atomic():
        CaseContact.objects.create(case=case, email=CONTACT)
    work()
    case.refresh_from_db()
    assert case.sync_state == "synced", case.sync_error
    assert len(linked(case)) == 1401  # 1,400 that day (two roles of 700) and one the day before
    assert not SyncLog.objects.filter(message__contains="may be missing").exists()
