"""The incremental ticket export against the local Zendesk: pages, cursors, deletions,
sideloaded names, the first-run window, a rejected cursor, and every error."""

from __future__ import annotations

import re
import time
from datetime import date
from urllib.parse import parse_qs, urlsplit

import pytest

from integrations.errors import AuthFailed, Permanent
from integrations.zendesk.models import Ticket
from syncqueue.models import SyncJob, SyncLog
from tests.support.jobs import sync_once

pytestmark = pytest.mark.django_db(transaction=True)
Kind, State = SyncJob.Kind, SyncJob.State
DAY = 86400


def tickets(conn) -> dict[int, Ticket]:
    rows = list(Ticket.objects.filter(connection=conn))
    assert len(rows) == len({r.zendesk_id for r in rows}), "a ticket was stored twice"
    return {r.zendesk_id: r for r in rows}


def export_requests(zendesk) -> list[str]:
    return [t for _, t in zendesk.requests if "incremental/tickets/cursor.json" in t]


def test_first_sync_exports_the_last_7_days_with_names_and_all_support_types(
    make_zendesk_connection, zendesk, acme, work
):
    now = int(time.time())
    ann = zendesk.add_user(acme, "Ann Customer")
    bob = zendesk.add_user(acme, "Bob Agent", "bob@acme.test")
    old = zendesk.add_ticket(acme, "Old one", generated=now - 9 * DAY)
    recent = [
        zendesk.add_ticket(
            acme, f"Ticket {i}", requester=ann, assignee=bob, generated=now - DAY - i
        )
        for i in range(120)
    ]
    by_ai = zendesk.add_ticket(acme, "Answered by the AI agent", ai_agent=True)
    conn = make_zendesk_connection()

    job = sync_once(conn, work, Kind.INITIAL)

    assert job.state == State.SUCCEEDED, job.error_message
    stored = tickets(conn)
    assert set(stored) == {*recent, by_ai} and old not in stored
    first = stored[recent[0]]
    assert (first.requester_name, first.assignee_name) == ("Ann Customer", "Bob Agent")
    assert first.raw["id"] == recent[0] and first.organization == conn.organization
    assert stored[by_ai].channel == "ai_agent"
    assert job.created_count == 121 and job.progress_done == 121
    calls = export_requests(zendesk)
    assert "support_type_scope=all" in calls[0] and "exclude_deleted=false" in calls[0]
    assert "include=users" in calls[0] and "start_time=" in calls[0]
    assert all("cursor=" in c for c in calls[1:])  # later pages follow the cursor
    conn.refresh_from_db()
    assert conn.cursor["after_cursor"]  # the last page's cursor is kept too
    assert SyncLog.objects.filter(job=job, message__contains="121 created").exists()


def test_later_syncs_continue_from_the_cursor(make_zendesk_connection, zendesk, acme, work):
    ids = [zendesk.add_ticket(acme, f"T{i}") for i in range(10)]
    conn = make_zendesk_connection()
    sync_once(conn, work, Kind.INITIAL)
    conn.refresh_from_db()
    stored_cursor = conn.cursor["after_cursor"]

    zendesk.update_ticket(acme, ids[0], status="solved", subject="T0 solved")
    zendesk.delete_ticket(acme, ids[1])
    added = zendesk.add_ticket(acme, "New")
    zendesk.requests.clear()
    job = sync_once(conn, work)

    assert job.state == State.SUCCEEDED, job.error_message
    assert (job.created_count, job.updated_count, job.deleted_count) == (1, 1, 1)
    # the cursor went back exactly as received (standard base64: "+", "/", "=" escaped)
    sent = parse_qs(urlsplit(export_requests(zendesk)[0]).query)["cursor"]
    assert sent == [stored_cursor] and set(stored_cursor) & set("+/=")
    stored = tickets(conn)
    assert stored[ids[0]].status == "solved" and stored[ids[0]].subject == "T0 solved"
    assert stored[ids[1]].deleted and stored[ids[1]].status == "deleted"  # kept, marked
    # exported scrubbed ("SCRUBBED", "X"): the last real subject and description are kept
    assert (stored[ids[1]].subject, stored[ids[1]].description) == ("T1", "T1: details follow.")
    assert stored[ids[1]].raw["subject"] == "SCRUBBED"
    assert added in stored and len(stored) == 11

    job = sync_once(conn, work)  # nothing changed: one request, nothing written
    assert (job.created_count, job.updated_count, job.deleted_count) == (0, 0, 0)


def test_a_ticket_changed_during_an_export_comes_again_and_is_stored_once(
    make_zendesk_connection, zendesk, acme, work
):
    """The cursor export is ordered by change time: a ticket changed while the pages are read
    comes again on a later page, with its new content (the export includes "tickets that
    changed since"). Stored once, as it is now."""
    now = int(time.time())
    ids = [zendesk.add_ticket(acme, f"T{i}", generated=now - DAY - 100 + i) for i in range(30)]
    pages = []

    def change_one(query: dict[str, str]) -> None:
        pages.append(query)
        if len(pages) == 2:  # the first page (with T0) was read; T0 changes meanwhile
            zendesk.update_ticket(acme, ids[0], subject="T0 changed meanwhile")

    zendesk.before_page = change_one
    conn = make_zendesk_connection(per_page=10)
    job = sync_once(conn, work, Kind.INITIAL)
    assert job.state == State.SUCCEEDED, job.error_message
    assert len(pages) >= 4  # three full pages, then T0 again
    stored = tickets(conn)
    assert set(stored) == set(ids)
    assert stored[ids[0]].subject == "T0 changed meanwhile"
    assert (job.created_count, job.updated_count) == (30, 1)


def test_first_run_can_start_at_a_date_or_take_everything(
    make_zendesk_connection, zendesk, acme, work
):
    now = int(time.time())
    ancient = zendesk.add_ticket(acme, "2015", generated=1_430_000_000)
    month = zendesk.add_ticket(acme, "a month ago", generated=now - 30 * DAY)
    everything = make_zendesk_connection(history_days=None)
    assert set(tickets_after(everything, work)) == {ancient, month}
    since = make_zendesk_connection(start_date=str(date.fromtimestamp(now - 40 * DAY)))
    assert set(tickets_after(since, work)) == {month}


def tickets_after(conn, work) -> dict[int, Ticket]:
    job = sync_once(conn, work, Kind.INITIAL)
    assert job.state == State.SUCCEEDED, job.error_message
    return tickets(conn)


def test_a_rejected_cursor_falls_back_to_the_last_change_with_an_overlap(
    make_zendesk_connection, zendesk, acme, work
):
    ids = [zendesk.add_ticket(acme, f"T{i}") for i in range(5)]
    conn = make_zendesk_connection()
    sync_once(conn, work, Kind.INITIAL)
    conn.refresh_from_db()
    type(conn).objects.filter(pk=conn.pk).update(cursor={**conn.cursor, "after_cursor": "bm9wZQ"})
    added = zendesk.add_ticket(acme, "after the cursor broke")
    zendesk.requests.clear()

    job = sync_once(conn, work)

    assert job.state == State.SUCCEEDED, job.error_message
    assert set(tickets(conn)) == {*ids, added}  # the overlap re-read the last ones: no dupes
    assert job.created_count == 1
    assert SyncLog.objects.filter(job=job, message__contains="rejected the stored export").exists()
    assert (
        "start_time=" in export_requests(zendesk)[-1] or "cursor=" in export_requests(zendesk)[-1]
    )


def test_a_rejected_cursor_before_any_ticket_restarts_where_the_first_export_did(
    make_zendesk_connection, zendesk, acme, work
):
    """A connection that never saw a ticket has no "last change" to go back to. Restarting
    "7 days back" from the day the cursor broke skipped whatever changed while it was off for
    longer than that; the first export's own start is kept in the cursor instead."""
    conn = make_zendesk_connection()  # history_days: 7
    assert sync_once(conn, work, Kind.INITIAL).state == State.SUCCEEDED
    conn.refresh_from_db()
    first_start = conn.cursor["first_start"]
    assert conn.cursor["max_generated"] == 0
    # a month later (the connection was off): the first export's start moved back with it
    month = 30 * DAY
    stale = {**conn.cursor, "after_cursor": "bm9wZQ", "first_start": first_start - month}
    type(conn).objects.filter(pk=conn.pk).update(cursor=stale)
    while_off = zendesk.add_ticket(
        acme, "while the connection was off", generated=first_start - 20 * DAY
    )

    job = sync_once(conn, work)

    assert job.state == State.SUCCEEDED, job.error_message
    assert set(tickets(conn)) == {while_off}
    logged = SyncLog.objects.get(job=job, message__contains="rejected the stored export").message
    assert "where the first export started" in logged and "last change seen" not in logged


def test_a_cursor_from_before_first_start_was_kept_gets_one_at_its_restart(
    make_zendesk_connection, zendesk, acme, work
):
    conn = make_zendesk_connection()
    type(conn).objects.filter(pk=conn.pk).update(
        cursor={"after_cursor": "bm9wZQ", "max_generated": 0}
    )
    job = sync_once(conn, work)
    assert job.state == State.SUCCEEDED, job.error_message
    assert SyncLog.objects.filter(job=job, message__contains="(the configured start)").exists()
    restarted = [parse_qs(urlsplit(t).query) for t in export_requests(zendesk)]
    assert "cursor" in restarted[0] and "start_time" in restarted[1]
    conn.refresh_from_db()
    assert conn.cursor["first_start"] == int(restarted[1]["start_time"][0])


def test_the_restart_after_a_rejected_cursor_is_kept_when_the_next_request_fails(
    make_zendesk_connection, zendesk, acme, work
):
    """The start chosen after a rejected cursor is committed at once: if Zendesk then fails,
    the retry (maybe days later) neither asks for the rejected cursor again nor counts the
    configured window back from its own day."""
    conn = make_zendesk_connection()
    type(conn).objects.filter(pk=conn.pk).update(
        cursor={"after_cursor": "bm9wZQ", "max_generated": 0}
    )
    zendesk.fault(r"start_time=", status=500, times=100)
    failed = sync_once(conn, work)
    assert failed.state in (State.RETRYING, State.FAILED)
    conn.refresh_from_db()
    restart = [parse_qs(urlsplit(t).query) for t in export_requests(zendesk)][1]
    start = int(restart["start_time"][0])
    assert conn.cursor == {"start_time": start, "max_generated": 0, "first_start": start}
    zendesk.faults.clear()
    zendesk.requests.clear()
    assert sync_once(conn, work).state == State.SUCCEEDED
    again = [parse_qs(urlsplit(t).query) for t in export_requests(zendesk)]
    assert again[0]["start_time"] == [str(start)]


def test_an_export_without_tickets_keeps_where_it_started(
    make_zendesk_connection, zendesk, acme, work
):
    """Zendesk answers an export that finds nothing without a cursor (``after_cursor`` is
    nullable). The next poll must ask from the same start, not from a window counted back from
    its own day: a connection polled weekly, or off for a while, would skip what changed."""
    conn = make_zendesk_connection()
    assert sync_once(conn, work, Kind.INITIAL).state == State.SUCCEEDED
    conn.refresh_from_db()
    start = conn.cursor["first_start"]
    assert conn.cursor == {"start_time": start, "max_generated": 0, "first_start": start}
    assert conn.build_connector().describe_position(conn.cursor)  # a position to show
    zendesk.requests.clear()
    late = zendesk.add_ticket(acme, "changed just after the start", generated=start + 1)
    assert sync_once(conn, work).state == State.SUCCEEDED
    assert parse_qs(urlsplit(export_requests(zendesk)[0]).query)["start_time"] == [str(start)]
    assert set(tickets(conn)) == {late}
    conn.refresh_from_db()
    assert conn.cursor["after_cursor"]
    # caught up by cursor, nothing new: the cursor stays
    kept = conn.cursor["after_cursor"]
    assert sync_once(conn, work).state == State.SUCCEEDED
    conn.refresh_from_db()
    assert conn.cursor["after_cursor"] == kept


def test_a_422_other_than_too_recent_is_an_error_not_caught_up(
    make_zendesk_connection, zendesk, acme, work
):
    zendesk.add_ticket(acme, "not exported")
    zendesk.fault(
        r"start_time=",
        422,
        times=10,
        body={"error": "InvalidValue", "description": "Invalid support_type_scope"},
    )
    conn = make_zendesk_connection()
    job = sync_once(conn, work, Kind.INITIAL)
    assert job.state == State.FAILED and "refused the export request" in job.error_message
    assert "Invalid support_type_scope" in job.error_detail


def test_a_too_recent_start_is_caught_up_not_an_error(make_zendesk_connection, zendesk, acme, work):
    conn = make_zendesk_connection()
    type(conn).objects.filter(pk=conn.pk).update(cursor={"start_time": int(time.time())})
    job = sync_once(conn, work)
    assert job.state == State.SUCCEEDED, job.error_message


@pytest.mark.parametrize(
    ("case", "error", "message"),
    [
        ("wrong token", AuthFailed, "Zendesk rejected the API token"),
        ("not an admin", Permanent, "must be a Zendesk admin to export tickets"),
        ("unknown subdomain", Permanent, "There is no Zendesk account at nowhere.zendesk.com"),
        # an OAuth token is neither an API token nor tied to an email: its own words
        ("wrong OAuth token", AuthFailed, "Zendesk rejected the OAuth token"),
        ("OAuth token without read scope", Permanent, r"read (or tickets:read) scope"),
        ("OAuth token of an agent", Permanent, "Zendesk admin"),
    ],
)
def test_errors_are_explained(
    make_zendesk_connection, zendesk, acme, work, case, error, message
) -> None:
    kwargs: dict = {}
    agent = acme.agents["admin@acme.test"]
    if "OAuth" in case:
        agent.oauth_token = "oauth-acme"
        kwargs["oauth"] = "wrong" if case.startswith("wrong") else agent.oauth_token
        if "scope" in case:
            agent.oauth_scopes = frozenset({"users:read", "write"})
        agent.admin = "agent" not in case
    elif case == "wrong token":
        kwargs["token"] = "wrong"
    elif case == "not an admin":
        agent.admin = False
    else:
        kwargs["subdomain"] = "nowhere"
    conn = make_zendesk_connection(**kwargs)
    with pytest.raises(error, match=re.escape(message)):
        conn.build_connector().check()
    job = sync_once(conn, work, Kind.INITIAL)
    assert job.state == State.FAILED and job.error_class == error.__name__
    assert message in job.error_message and "wrong" not in job.error_detail


@pytest.mark.parametrize("scopes", [{"read"}, {"tickets:read", "users:read"}, {"tickets"}])
def test_an_oauth_token_that_reads_tickets_passes_the_check(
    make_zendesk_connection, zendesk, acme, work, scopes
) -> None:
    agent = acme.agents["admin@acme.test"]
    agent.oauth_token, agent.oauth_scopes = "oauth-acme", frozenset(scopes)
    conn = make_zendesk_connection(oauth=agent.oauth_token)
    assert "(admin)" in conn.build_connector().check().message
    assert sync_once(conn, work, Kind.INITIAL).state == State.SUCCEEDED


@pytest.mark.parametrize(
    "answer",
    [
        {"status": 404, "body": {"error": "RecordNotFound", "description": "Not found"}},
        {"status": 403, "body": {"error": "Forbidden", "description": "No"}},
        {"status": 500},
    ],
)
def test_no_clear_answer_about_scopes_is_left_to_the_export(
    make_zendesk_connection, zendesk, acme, answer
) -> None:
    """Show Token is a hint: when it does not answer, the check goes by the user's role."""
    agent = acme.agents["admin@acme.test"]
    agent.oauth_token = "oauth-acme"
    zendesk.fault(r"/oauth/tokens/current", times=3, **answer)
    conn = make_zendesk_connection(oauth=agent.oauth_token)
    assert "(admin)" in conn.build_connector().check().message


@pytest.mark.parametrize(
    ("status", "body"),
    [
        (502, {}),
        # the body Zendesk documents for a 409 (ticket content pins reference)
        (409, {"description": "A conflicting operation is in progress, please try again later"}),
    ],
)
def test_server_errors_and_conflicts_are_transient(
    make_zendesk_connection, zendesk, acme, work, status, body
):
    ids = [zendesk.add_ticket(acme, f"T{i}") for i in range(3)]
    zendesk.fault(r"cursor\.json", status, times=1, body=body)
    conn = make_zendesk_connection()
    job = sync_once(conn, work, Kind.INITIAL)
    assert job.state == State.RETRYING and job.error_class == "Transient"
    assert f"HTTP {status}" in job.error_detail
    assert sync_once(conn, work).state == State.SUCCEEDED  # "Sync now": no backoff to wait
    assert set(tickets(conn)) == set(ids)


def test_429_waits_without_spending_an_attempt(make_zendesk_connection, zendesk, acme, work):
    ids = [zendesk.add_ticket(acme, f"T{i}") for i in range(3)]
    zendesk.fault(
        r"cursor\.json", 429, times=2, retry_after=1, body={"error": "APIRateLimitExceeded"}
    )
    conn = make_zendesk_connection()
    job = sync_once(conn, work, Kind.INITIAL)
    assert job.state == State.SUCCEEDED and job.attempts == 0
    assert set(tickets(conn)) == set(ids)


def test_subdomain_is_validated(make_zendesk_connection):
    from django.core.exceptions import ValidationError

    conn = make_zendesk_connection(subdomain="https://Acme.zendesk.com/")
    assert conn.build_connector().zendesk.subdomain == "acme"
    conn.config = {**conn.config, "subdomain": "not a domain!"}
    with pytest.raises(ValidationError, match="subdomain"):
        conn.full_clean()


def test_zendesk_connections_belong_to_an_organization(make_connection):
    from django.core.exceptions import ValidationError

    conn = make_connection(
        kind="zendesk", config={"subdomain": "acme", "email": "a@b.c"}, secrets={"api_token": "t"}
    )
    with pytest.raises(ValidationError, match="belong to an organization"):
        conn.full_clean()
