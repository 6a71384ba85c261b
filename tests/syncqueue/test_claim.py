"""Claiming: conditional UPDATE, priority order, one running job per connection."""

from __future__ import annotations

import pytest
from django.db import IntegrityError, transaction

from syncqueue import engine
from syncqueue.models import SyncJob

pytestmark = pytest.mark.django_db(transaction=True)
Kind, State = SyncJob.Kind, SyncJob.State


def test_claim_takes_the_highest_priority_first(make_connection):
    scheduled = engine.enqueue(make_connection(name="a"), Kind.INCREMENTAL)
    manual = engine.enqueue(make_connection(name="b"), Kind.MANUAL)
    first = engine.claim_next("w1")
    second = engine.claim_next("w1")
    assert (first.pk, second.pk) == (manual.pk, scheduled.pk)
    assert first.state == State.RUNNING and first.worker_id == "w1"
    assert first.leased_until is not None and first.slices == 1


def test_duplicate_delivery_finds_nothing_to_claim(make_connection):
    job = engine.enqueue(make_connection(), Kind.MANUAL)
    assert engine.claim_next("w1").pk == job.pk
    assert engine.claim_next("w2") is None
    assert engine.process_ticket(job.pk) == "nothing to claim"


def test_second_job_of_a_running_connection_waits(make_connection):
    conn = make_connection()
    engine.enqueue(conn, Kind.MANUAL)
    engine.claim_next("w1")
    engine.enqueue(conn, Kind.FULL_RESYNC)
    assert engine.claim_next("w2") is None


def test_database_refuses_two_running_jobs_for_one_connection(make_connection):
    conn = make_connection()
    a = engine.enqueue(conn, Kind.MANUAL)
    b = engine.enqueue(conn, Kind.FULL_RESYNC)
    SyncJob.objects.filter(pk=a.pk).update(state=State.RUNNING)
    with pytest.raises(IntegrityError), transaction.atomic():
        SyncJob.objects.filter(pk=b.pk).update(state=State.RUNNING)


def test_jobs_waiting_for_backoff_are_not_claimed(make_connection):
    job = engine.enqueue(make_connection(), Kind.MANUAL)
    SyncJob.objects.filter(pk=job.pk).update(
        state=State.RETRYING, run_after=job.run_after.replace(year=2100)
    )
    assert engine.claim_next("w1") is None
