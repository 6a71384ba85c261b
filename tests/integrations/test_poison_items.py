"""One item that cannot be stored does not stop a sync, in every connector.

The poison is made by the database (a trigger refusing one row: see tests/support/poison.py),
not by mocking our code. For each connector: the poisoned item is listed as a skipped item with
its identity, error class and traceback; everything else is stored; the job succeeds and its
checkpoint moves on; the connection counts the open item. After "the fix" (dropping the
trigger) staff's "Retry these items" stores it, and the skipped item is resolved.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from django.db import connection as db
from django.db import transaction
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from integrations.models import Connection
from integrations.zendesk.models import Ticket
from integrations.zimbra.models import TaskCopy
from mail.models import MailMessage, MailSource
from syncqueue import engine
from syncqueue.models import SkippedItem, SyncJob, SyncLog
from tests.security.conftest import (  # the providers' fixtures, one definition each
    acme,
    graph,
    mailbox,
    make_graph_connection,
    make_zendesk_connection,
    organization,
    people,
    zendesk,
    zimbra,
    zimbra_server,
)
from tests.support.mailfactory import message
from tests.support.poison import cure, poisoned
from workspace import assignments as host_assignments
from workspace.models import Task

__all__ = [
    "acme",
    "graph",
    "mailbox",
    "make_graph_connection",
    "make_zendesk_connection",
    "organization",
    "people",
    "zendesk",
    "zimbra",
    "zimbra_server",
]

pytestmark = pytest.mark.django_db(transaction=True)
POISON = "POISON pill"


@dataclass
class Case:
    """How one provider is driven: seed 5 items (one poisoned), the table and column the
    poison sits in, how many items are stored, and the key of the poisoned item."""

    connection: Connection
    table: str
    column: str
    stored: Callable[[], int]
    key_prefix: str


def imap_case(request: Any) -> Case:
    dovecot = request.getfixturevalue("dovecot")
    user = request.getfixturevalue("imap_user")
    subjects = ["one", "two", POISON, "four", "five"]
    dovecot.deliver(user, [message(subject=s) for s in subjects])
    conn = request.getfixturevalue("make_imap_connection")()
    return Case(
        conn,
        "mail_mailmessage",
        "subject",
        MailMessage.objects.filter(connection=conn).count,
        "imap:",
    )


def graph_case(request: Any) -> Case:
    graph, box = request.getfixturevalue("graph"), request.getfixturevalue("mailbox")
    for subject in ["one", "two", POISON, "four", "five"]:
        graph.add_message(box, subject=subject)
    conn = request.getfixturevalue("make_graph_connection")()
    return Case(
        conn,
        "mail_mailmessage",
        "subject",
        MailMessage.objects.filter(connection=conn).count,
        "graph:",
    )


def zendesk_case(request: Any) -> Case:
    server, account = request.getfixturevalue("zendesk"), request.getfixturevalue("acme")
    for subject in ["one", "two", POISON, "four", "five"]:
        server.add_ticket(account, subject)
    conn = request.getfixturevalue("make_zendesk_connection")(history_days=None)
    return Case(
        conn,
        "workspace_ticket",
        "subject",
        Ticket.objects.filter(connection=conn).count,
        "zendesk:",
    )


def zimbra_case(request: Any) -> Case:
    """Incoming: five tasks pushed to Ann's Zimbra and completed there; writing the status
    back to the poisoned task fails."""
    zimbra, server = request.getfixturevalue("zimbra"), request.getfixturevalue("zimbra_server")
    ann = request.getfixturevalue("people")[0]
    server.config = {**server.config, "incoming": True}
    server.save()
    made = []
    with transaction.atomic():
        for title in ["one", "two", POISON, "four", "five"]:
            made.append(host_assignments.assign(Task.objects.create(title=title), ann))
    assignments = list(TaskCopy.objects.filter(pk__in=[a.pk for a in made]))
    request.getfixturevalue("work")()  # the pushes
    engine.enqueue(server, SyncJob.Kind.MANUAL)
    request.getfixturevalue("work")()  # first read: tokens
    for assignment in assignments:
        zimbra.edit_in_zimbra(ann.email, assignment.uid, status="COMP", percentComplete="100")
    return Case(
        server,
        "workspace_task",
        "title",
        Task.objects.filter(status="completed").count,
        "zimbra:",
    )


CASES = {"imap": imap_case, "msgraph": graph_case, "zendesk": zendesk_case, "zimbra": zimbra_case}


@pytest.mark.parametrize("kind", sorted(CASES))
def test_a_poison_item_is_skipped_and_stored_after_the_fix(
    kind, request, work, client, staff, settings
):
    case = CASES[kind](request)
    conn = case.connection
    with poisoned(case.table, case.column, POISON):
        job = engine.enqueue(conn, SyncJob.Kind.MANUAL)
        work()
        job.refresh_from_db()
        assert job.state == SyncJob.State.SUCCEEDED, (job.error_class, job.error_message)
        assert job.attempts == 0  # no attempt was spent on the poison
        assert job.skipped_items == 1 and case.stored() == 4
        item = SkippedItem.objects.get(connection=conn)
        assert item.state == "open" and item.key.startswith(case.key_prefix)
        assert item.error_class and "poisoned row" in item.message
        assert "Traceback" in item.detail
        conn.refresh_from_db()
        assert conn.skipped_items == 1 and conn.status == Connection.Status.OK
        checkpoint_after_poison = dict(conn.cursor)

        again = engine.enqueue(conn, SyncJob.Kind.MANUAL)  # still poisoned: tried, not stored
        work()
        again.refresh_from_db()
        item.refresh_from_db()
        assert again.state == "succeeded" and item.attempts == 2 and case.stored() == 4

    cure(case.table)
    client.force_login(staff)
    client.post(
        reverse("admin:syncqueue_skippeditem_changelist"),
        {"action": "retry_items", "_selected_action": [item.pk]},
    )
    work()
    item.refresh_from_db()
    conn.refresh_from_db()
    assert item.state == "resolved" and item.resolved_at is not None
    assert case.stored() == 5 and conn.skipped_items == 0
    assert checkpoint_after_poison  # the checkpoint had moved on past the poison
    if kind == "imap":
        assert MailSource.objects.filter(message__connection=conn).count() == 5


def test_when_every_item_of_a_batch_fails_alike_the_job_fails_instead(
    dovecot, imap_user, make_imap_connection, work
):
    """Ten messages that all fail the same way are not ten poison items: it is our bug or our
    database. Skipping them all would report a sync that stored nothing as a success."""
    dovecot.deliver_many(imap_user, (message(subject=POISON) for _ in range(12)))
    conn = make_imap_connection(batch_size=12)
    with poisoned("mail_mailmessage", "subject", POISON):
        job = engine.enqueue(conn, SyncJob.Kind.MANUAL)
        work()
        job.refresh_from_db()
    assert (job.state, job.error_class, job.skipped_items) == ("retrying", "Internal", 0)
    assert "Every item of a batch of 12 failed to be stored the same way" in job.error_message
    assert not SkippedItem.objects.exists() and MailMessage.objects.count() == 0


def test_a_batch_is_stored_without_a_savepoint_of_its_own(
    dovecot, imap_user, make_imap_connection, work
):
    """A batch is written straight into its transaction. On SQLite a savepoint around a batch
    larger than the page cache made every page of it reach the write-ahead log twice; a batch
    that fails is rolled back with its transaction and stored again item by item (above)."""
    dovecot.deliver_many(imap_user, (message(subject=f"message {i}") for i in range(6)))
    conn = make_imap_connection(batch_size=3)
    job = engine.enqueue(conn, SyncJob.Kind.MANUAL)
    with CaptureQueriesContext(db) as queries:
        work()
    job.refresh_from_db()
    assert job.state == SyncJob.State.SUCCEEDED and MailMessage.objects.count() == 6
    inserts = [q["sql"] for q in queries.captured_queries if "INSERT INTO" in q["sql"]]
    assert any("mail_mailmessage" in sql for sql in inserts)
    savepoints = [q["sql"] for q in queries.captured_queries if "SAVEPOINT" in q["sql"].upper()]
    assert savepoints == []


def test_a_ticket_read_again_keeps_its_export_stamp(
    zendesk, acme, make_zendesk_connection, work, client, staff
):
    """A skipped ticket is read again with Show Ticket, which has no generated_timestamp (only
    the export carries it): the stored stamp stays, instead of becoming 0."""
    ticket_id = zendesk.add_ticket(acme, "the plan")
    conn = make_zendesk_connection(history_days=None)
    engine.enqueue(conn, SyncJob.Kind.MANUAL)
    work()
    stamp = Ticket.objects.get(connection=conn, zendesk_id=ticket_id).generated_timestamp
    assert stamp > 0
    zendesk.update_ticket(acme, ticket_id, subject=POISON)
    with poisoned("workspace_ticket", "subject", POISON):
        engine.enqueue(conn, SyncJob.Kind.MANUAL)
        work()
    item = SkippedItem.objects.get(connection=conn)
    cure("workspace_ticket")
    client.force_login(staff)
    client.post(
        reverse("admin:syncqueue_skippeditem_changelist"),
        {"action": "retry_items", "_selected_action": [item.pk]},
    )
    work()
    row = Ticket.objects.get(connection=conn, zendesk_id=ticket_id)
    assert row.subject == POISON  # read again and stored
    assert row.generated_timestamp >= stamp


def test_a_deletion_that_could_not_be_stored_is_not_lost(
    zendesk, acme, make_zendesk_connection, work
):
    """The export carries a deletion once. If storing it fails, the ticket is read again with
    Show Ticket, which answers 404 for a deleted ticket: the stored copy is marked deleted then,
    instead of the skipped item being settled as gone while the copy stays live for good."""
    ticket_id = zendesk.add_ticket(acme, "to be deleted")
    conn = make_zendesk_connection(history_days=None)
    engine.enqueue(conn, SyncJob.Kind.MANUAL)
    work()
    zendesk.delete_ticket(acme, ticket_id)
    with poisoned("workspace_ticket", "status", "deleted"):
        engine.enqueue(conn, SyncJob.Kind.MANUAL)
        work()
    assert SkippedItem.objects.filter(connection=conn, state=SkippedItem.State.OPEN).count() == 1
    assert not Ticket.objects.get(connection=conn, zendesk_id=ticket_id).deleted
    # read again while the cause is still there: still the same skipped item, still open
    with poisoned("workspace_ticket", "status", "deleted"):
        engine.enqueue(conn, SyncJob.Kind.MANUAL)
        work()
    skipped = SkippedItem.objects.get(connection=conn, state=SkippedItem.State.OPEN)
    assert skipped.key == f"zendesk:{ticket_id}"  # so the next sync reads it again
    cure("workspace_ticket")
    job = engine.enqueue(conn, SyncJob.Kind.MANUAL)  # every sync tries skipped items again
    work()
    job.refresh_from_db()
    row = Ticket.objects.get(connection=conn, zendesk_id=ticket_id)
    assert row.deleted and row.status == "deleted" and row.subject == "to be deleted"
    assert job.deleted_count == 1
    assert not SkippedItem.objects.filter(connection=conn, state=SkippedItem.State.OPEN).exists()


@pytest.mark.skipif(db.vendor != "sqlite", reason="SQLite's page cache")
def test_a_batch_is_written_with_a_page_cache_it_fits_in(
    dovecot, imap_user, make_imap_connection, work, settings
):
    """SQLite writes a batch with ``SQLITE_BATCH_CACHE_MB`` of page cache (with the 2 MB
    default a batch spilled: pages logged before the commit, statement journals in temporary
    files), and the connection is back to the default afterwards."""
    dovecot.deliver_many(imap_user, (message(subject=f"message {i}") for i in range(4)))
    conn = make_imap_connection(batch_size=2)
    engine.enqueue(conn, SyncJob.Kind.MANUAL)
    db.ensure_connection()
    seen: list[str] = []
    db.connection.set_trace_callback(seen.append)
    try:
        work()
    finally:
        db.connection.set_trace_callback(None)
    assert MailMessage.objects.filter(connection=conn).count() == 4
    batch = f"PRAGMA cache_size=-{settings.SQLITE_BATCH_CACHE_MB * 1024}"
    inserts = [i for i, sql in enumerate(seen) if sql.startswith('INSERT INTO "mail_mailmessage"')]
    assert len(inserts) == 4
    for at in inserts:  # each batch's rows are written inside the larger cache
        sizes = [i for i, sql in enumerate(seen[:at]) if sql.startswith("PRAGMA cache_size")]
        assert sizes and seen[sizes[-1]] == batch, "the batch was written with the small cache"
    with db.cursor() as cursor:
        cursor.execute("PRAGMA cache_size")
        assert cursor.fetchone()[0] == -settings.SQLITE_CACHE_MB * 1024


def test_a_batch_stored_again_item_by_item_counts_and_logs_once(make_connection, work):
    """The whole batch failed and was rolled back: what its first try noted in memory (log
    lines, skipped items counted) went with it, so the second try's are the only ones."""
    conn = make_connection(config={"total": 6, "batch": 6, "unreadable": [2], "refused": [4]})
    job = engine.enqueue(conn, SyncJob.Kind.MANUAL)
    work()
    job.refresh_from_db()
    conn.refresh_from_db()
    assert job.state == SyncJob.State.SUCCEEDED, job.error_message
    assert (job.skipped_items, conn.skipped_items, job.created_count) == (2, 2, 4)
    items = SkippedItem.objects.filter(connection=conn)
    assert sorted(items.values_list("attempts", flat=True)) == [1, 1]
    lines = list(SyncLog.objects.filter(job=job).values_list("message", flat=True))
    assert lines.count("Storing 1 item(s).") == 4  # the stored items, once each
    assert "Storing 5 item(s)." not in lines  # the failed whole batch's line was rolled back
    assert len(lines) == len(set(lines)) + 3, lines
