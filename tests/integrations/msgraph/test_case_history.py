"""Case history: adding a contact to a case finds all mail with them, past the 1,000-result
cap of $search, links each message once, and shows the case's state from the jobs' outcomes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from django.db import transaction

from mail.models import MailMessage
from sandbox.graph import CLIENT_ID
from syncqueue import engine
from syncqueue.models import SyncJob
from tests.support.cluster import FAST_CLUSTER, kill_worker_of, running_with, wait_finished
from tests.support.processes import qcluster, wait_for
from workspace import cases
from workspace.models import Case, CaseContact, CaseMessage

pytestmark = pytest.mark.django_db(transaction=True)
State = SyncJob.State
CONTACT = "dana@fabrikam.com"


def correspondence(graph, box, count: int, *, start: datetime | None = None) -> list[str]:
    """``count`` messages with the contact spread over about three years, both directions,
    plus unrelated mail in between."""
    start = start or datetime(2023, 1, 1, tzinfo=UTC)
    ids = []
    for i in range(count):
        received = start + timedelta(hours=11 * i)
        if i % 3 == 0:
            ids.append(graph.add_message(box, sender=CONTACT, subject=f"re {i}", received=received))
        elif i % 3 == 1:
            ids.append(
                graph.add_message(
                    box,
                    folder="Sent Items",
                    sender=box.upn,
                    to=(CONTACT,),
                    subject=f"to {i}",
                    received=received,
                )
            )
        else:
            ids.append(
                graph.add_message(
                    box,
                    sender="eve@example.com",
                    cc=(CONTACT.upper(),),
                    subject=f"cc {i}",
                    received=received,
                )
            )
        if i % 10 == 0:
            graph.add_message(
                box, sender="noise@example.com", subject="unrelated", received=received
            )
    return ids


def add_contact(case: Case, email: str = CONTACT) -> CaseContact:
    with transaction.atomic():  # the history search is queued when this commits
        return CaseContact.objects.create(case=case, email=email, name="Dana")


def linked(case: Case) -> set[str]:
    rows = CaseMessage.objects.filter(case=case).values_list("message__remote_id", flat=True)
    found = list(rows)
    assert len(found) == len(set(found)), "a message was linked twice"
    return set(found)


@pytest.fixture
def case(owner) -> Case:
    return Case.objects.create(title="Fabrikam contract", owner=owner)


def test_a_new_contact_brings_their_whole_history_past_the_search_cap(
    make_graph_connection, graph, mailbox, case, work
):
    expected = correspondence(graph, mailbox, 2500)
    make_graph_connection()
    add_contact(case)
    case.refresh_from_db()
    assert case.sync_state == Case.SyncState.SYNCING

    work()

    case.refresh_from_db()
    assert case.sync_state == Case.SyncState.SYNCED, case.sync_error
    assert linked(case) == set(expected)
    job = SyncJob.objects.get(kind=SyncJob.Kind.HISTORICAL)
    assert job.state == State.SUCCEEDED and job.progress_done == 2500
    assert job.payload == {"case": case.pk, "contact": case.contacts.get().pk}
    searches = [t for _, t in graph.requests if "%24search=" in t or "$search=" in t]
    assert len(searches) > 3  # the date windows were split to stay under the cap
    assert MailMessage.objects.filter(remote_id__in=expected).count() == 2500


def test_searching_again_links_nothing_twice(make_graph_connection, graph, mailbox, case, work):
    expected = correspondence(graph, mailbox, 40)
    conn = make_graph_connection()
    add_contact(case)
    work()
    first = linked(case)
    # the mailbox sync stores the same messages: still one row each, one link each
    engine.enqueue(conn, SyncJob.Kind.INITIAL)
    work()
    cases.queue_history(case.contacts.get())
    work()
    assert linked(case) == first == set(expected)
    rows = MailMessage.objects.filter(connection=conn).values_list("remote_id", flat=True)
    assert len(rows) == len(set(rows))


def test_a_case_without_a_mailbox_fails_with_the_reason_and_can_be_retried(
    make_graph_connection, graph, mailbox, case, work
):
    expected = correspondence(graph, mailbox, 5)
    add_contact(case)
    case.refresh_from_db()
    assert case.sync_state == Case.SyncState.FAILED
    assert "has no mailbox that can search its history connected" in case.sync_error

    make_graph_connection()
    assert cases.retry(case) == 1
    work()
    case.refresh_from_db()
    assert case.sync_state == Case.SyncState.SYNCED and case.sync_error == ""
    assert linked(case) == set(expected)


def test_a_failed_search_shows_why_and_the_admin_retries_it(
    make_graph_connection, graph, mailbox, case, work, client, staff
):
    expected = correspondence(graph, mailbox, 5)
    make_graph_connection()
    graph.apps[CLIENT_ID].consented = False
    add_contact(case)
    work()
    case.refresh_from_db()
    assert case.sync_state == Case.SyncState.FAILED
    assert "Mail.Read (Application) is missing" in case.sync_error

    client.force_login(staff)
    page = client.get(f"/admin/workspace/case/{case.pk}/change/")
    assert b"Failed" in page.content and b"Mail.Read (Application) is missing" in page.content
    assert b"Why syncing failed." in page.content
    listing = client.get("/admin/workspace/case/")
    assert b"Fabrikam contract" in listing.content

    graph.apps[CLIENT_ID].consented = True  # the administrator granted consent
    response = client.post(
        "/admin/workspace/case/",
        {"action": "retry_history", "_selected_action": [case.pk]},
        follow=True,
    )
    assert b"1 history search(es) queued again" in response.content
    case.refresh_from_db()
    assert case.sync_state == Case.SyncState.SYNCING
    work()
    case.refresh_from_db()
    assert case.sync_state == Case.SyncState.SYNCED
    assert linked(case) == set(expected)
    page = client.get(f"/admin/workspace/case/{case.pk}/change/")
    assert b"Why syncing failed." not in page.content  # nothing failed: no empty "why"
    mail = client.get(f"/admin/mail/mailmessage/?case_links__case__id__exact={case.pk}")
    assert mail.context_data["cl"].result_count == 5


@pytest.mark.process
def test_a_killed_worker_resumes_the_history_search_without_duplicate_links(
    make_graph_connection, graph, test_ca, mailbox, case
):
    expected = correspondence(graph, mailbox, 2500)
    graph.latency = 0.02
    make_graph_connection()
    add_contact(case)
    job = SyncJob.objects.get(kind=SyncJob.Kind.HISTORICAL)
    env = {**FAST_CLUSTER, "SYNC_CA_BUNDLE": test_ca.ca_file}
    with qcluster("graph-kill", **env):
        running = wait_for(
            lambda: running_with(job, 300), 90, "the history search to be under way", every=0.02
        )
        kill_worker_of(running)
        assert 0 < CaseMessage.objects.filter(case=case).count() < 2500
        final = wait_finished(job, 180, every=0.5)

    assert final.state == State.SUCCEEDED, final.error_message
    assert final.attempts == 1
    assert linked(case) == set(expected)
    case.refresh_from_db()
    assert case.sync_state == Case.SyncState.SYNCED
