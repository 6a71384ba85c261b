"""Tickets in the ORM broker: taken in one statement, and withdrawn when a ticket runs
another job's work, so none is left over to cost an empty task."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone
from django_q.conf import Conf
from django_q.models import OrmQ

from syncqueue import broker, engine
from syncqueue.models import SyncJob

pytestmark = pytest.mark.django_db(transaction=True)


def test_take_tickets_locks_the_oldest_until_the_retry_time(make_connection: Any) -> None:
    for i in range(3):
        engine.enqueue(make_connection(name=f"c{i}"), SyncJob.Kind.MANUAL)
    ids = list(OrmQ.objects.order_by("id").values_list("id", flat=True))
    taken = broker.take_tickets(2)
    assert taken is not None
    assert [pk for pk, _ in taken] == ids[:2]
    locked = OrmQ.objects.filter(id__in=ids[:2])
    assert all(row.lock > timezone.now() + timedelta(seconds=Conf.RETRY - 5) for row in locked)
    # a taken ticket is not handed out again before its retry time
    again = broker.take_tickets(5)
    assert again is not None
    assert [pk for pk, _ in again] == ids[2:]
    assert broker.waiting_tickets() == 0


def test_a_ticket_that_runs_several_jobs_withdraws_their_tickets(make_connection: Any) -> None:
    conns = [make_connection(name=f"c{i}", config={"total": 0}) for i in range(4)]
    for conn in conns:
        engine.enqueue(conn, SyncJob.Kind.MANUAL)
    assert broker.waiting_tickets() == 4
    engine.process_ticket()  # this worker's own ticket is the one a pusher would have taken
    assert SyncJob.objects.filter(state=SyncJob.State.SUCCEEDED).count() == 4
    assert broker.waiting_tickets() == 1  # its own: in a cluster, django-q2 acknowledges it
