"""enqueue(): coalescing, priority, tickets carrying ids only."""

from __future__ import annotations

import pytest
from django.db import connection, transaction
from django.utils import timezone
from django_q.models import OrmQ

from syncqueue import engine
from syncqueue.models import SyncJob
from tests.conftest import tickets
from tests.support.threads import at_once

pytestmark = pytest.mark.django_db(transaction=True)
Kind, State = SyncJob.Kind, SyncJob.State


def test_enqueue_creates_a_queued_job_and_one_ticket_with_the_id_only(make_connection):
    conn = make_connection()
    job = engine.enqueue(conn, Kind.MANUAL)

    assert job.state == State.QUEUED
    assert job.priority == SyncJob.Priority.MANUAL
    [ticket] = tickets()
    assert ticket["func"] == engine.TICKET_FUNC
    # a hint: the job's id (SQLite) or nothing (PostgreSQL writes the ticket in the job's own
    # INSERT, before the id exists); the ticket claims the most urgent job either way
    assert ticket["args"] == ((None,) if connection.vendor == "postgresql" else (job.pk,))
    assert ticket["kwargs"] == {}


def test_second_sync_now_returns_the_same_job(make_connection):
    conn = make_connection()
    first = engine.enqueue(conn, Kind.MANUAL)
    second = engine.enqueue(conn, Kind.MANUAL)
    assert second.pk == first.pk
    assert SyncJob.objects.count() == 1


def test_manual_request_promotes_a_waiting_scheduled_job(make_connection):
    conn = make_connection()
    scheduled = engine.enqueue(conn, Kind.INCREMENTAL)
    manual = engine.enqueue(conn, Kind.MANUAL)
    scheduled.refresh_from_db()
    assert manual.pk == scheduled.pk
    assert scheduled.priority == SyncJob.Priority.MANUAL
    assert scheduled.kind == Kind.MANUAL


def test_manual_request_runs_a_backing_off_job_now(make_connection):
    conn = make_connection()
    job = engine.enqueue(conn, Kind.INCREMENTAL)
    SyncJob.objects.filter(pk=job.pk).update(
        state=State.RETRYING, run_after=job.run_after.replace(year=2100)
    )
    again = engine.enqueue(conn, Kind.MANUAL)
    again.refresh_from_db()
    assert again.pk == job.pk
    assert again.run_after <= timezone.now()
    assert engine.claim_next("w1").pk == job.pk


def test_stream_request_coalesces_with_a_running_job_but_push_does_not(make_connection):
    conn = make_connection()
    job = engine.enqueue(conn, Kind.MANUAL)
    SyncJob.objects.filter(pk=job.pk).update(state=State.RUNNING)
    assert engine.enqueue(conn, Kind.MANUAL).pk == job.pk

    push = engine.enqueue(conn, Kind.PUSH, payload={"item": 7}, dedupe_key="push:7")
    SyncJob.objects.filter(pk=push.pk).update(state=State.SUCCEEDED)
    assert engine.enqueue(conn, Kind.PUSH, payload={"item": 7}, dedupe_key="push:7").pk != push.pk


def test_different_kinds_do_not_coalesce(make_connection):
    conn = make_connection()
    a = engine.enqueue(conn, Kind.MANUAL)
    b = engine.enqueue(conn, Kind.FULL_RESYNC)
    assert a.pk != b.pk


def test_rolled_back_enqueue_leaves_neither_job_nor_ticket(make_connection):
    conn = make_connection()
    with pytest.raises(RuntimeError), transaction.atomic():
        engine.enqueue(conn, Kind.MANUAL)
        raise RuntimeError("request failed after enqueue")
    assert SyncJob.objects.count() == 0
    assert OrmQ.objects.count() == 0


def test_disabled_connection_refuses_work_with_its_reason(make_connection):
    conn = make_connection(enabled=False, disabled_reason="Paused by the owner.")
    with pytest.raises(engine.ConnectionDisabled, match="Paused by the owner"):
        engine.enqueue(conn, Kind.MANUAL)


def test_payload_holds_ids_only_and_never_appears_with_secrets(make_connection):
    conn = make_connection(secrets={"password": "hunter2-very-secret"})
    with pytest.raises(ValueError):
        engine.enqueue(conn, Kind.PUSH, payload={"connection": conn}, dedupe_key="x")
    engine.enqueue(conn, Kind.PUSH, payload={"item": 3}, dedupe_key="push:3")
    raw = b"".join(row.payload.encode() for row in OrmQ.objects.all())
    assert b"hunter2" not in raw
    assert "hunter2" not in str(tickets())
    assert "hunter2" not in str(list(SyncJob.objects.values()))


def test_racing_enqueues_make_one_job_and_one_ticket(make_connection):
    """Eight threads click "Sync now" on one connection at once: one job, one ticket. On
    PostgreSQL the one-statement enqueue relies on the one_new_job_per_stream index; the
    losers fall back to the locked path and return the winner's job."""
    conn = make_connection()
    found = [job.pk for job in at_once(8, lambda: engine.enqueue(conn, Kind.MANUAL))]
    assert len(set(found)) == 1
    assert SyncJob.objects.filter(connection=conn).count() == 1
    assert len(tickets()) == 1


def test_the_new_job_index_refuses_a_second_never_started_job(make_connection):
    from django.db import IntegrityError

    conn = make_connection()
    job = engine.enqueue(conn, Kind.MANUAL)
    with pytest.raises(IntegrityError), transaction.atomic():
        SyncJob.objects.create(
            connection=conn, kind=Kind.MANUAL, dedupe_key=job.dedupe_key, run_after=timezone.now()
        )
    # a job that has run a slice and waits again is not covered (a push behind a running push)
    SyncJob.objects.filter(pk=job.pk).update(slices=1)
    SyncJob.objects.create(
        connection=conn, kind=Kind.MANUAL, dedupe_key=job.dedupe_key, run_after=timezone.now()
    )


def test_retrying_a_never_started_job_while_the_same_work_waits_is_refused(make_connection):
    from syncqueue import control

    conn = make_connection()
    first = engine.enqueue(conn, Kind.MANUAL)
    SyncJob.objects.filter(pk=first.pk).update(state=State.CANCELLED)
    waiting = engine.enqueue(conn, Kind.MANUAL)
    assert waiting.pk != first.pk
    first.refresh_from_db()
    assert control.retry_job(first) is False  # the waiting job does that work
    assert SyncJob.objects.filter(connection=conn, state=State.QUEUED).count() == 1


def test_postgresql_plans_the_enqueue_and_the_claim_once_per_connection(make_connection):
    """The hottest statements run prepared (DB_PREPARED_STATEMENTS), with one generic plan
    that uses the partial index of unfinished jobs: planning the enqueue cost more than
    running it. On SQLite there is nothing to prepare."""
    if connection.vendor != "postgresql":
        pytest.skip("prepared statements are PostgreSQL's")
    from syncqueue.engine.claim import claim_next

    for n in range(7):  # PostgreSQL tries a generic plan from the sixth execution
        engine.enqueue(make_connection(name=f"c{n}"), SyncJob.Kind.MANUAL)
        engine.enqueue(make_connection(name=f"n{n}"), SyncJob.Kind.NOTIFIED)  # other states
        assert claim_next() is not None
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT statement, generic_plans + custom_plans, generic_plans "
            "FROM pg_prepared_statements WHERE NOT from_sql"
        )
        prepared = cursor.fetchall()
    runs = sorted((text.split()[0:2], total) for text, total, _ in prepared)
    assert [words for words, _ in runs].count(["WITH", "found"]) == 2  # ACTIVE and WAITING
    assert all(total == 7 for _, total in runs), runs
    assert any("UPDATE" in text for text, _, _ in prepared)  # the claim
    assert all(generic >= 1 for _, _, generic in prepared), prepared
