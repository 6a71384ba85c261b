"""What one job costs the database, pinned so it cannot creep back: a no-op job (a sync that
finds nothing new) from enqueue to succeeded, as statements this process sends (django-q2's
pusher and monitor add their own, outside this count: 4 + 4 with the ORM broker)."""

from __future__ import annotations

from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from syncqueue import engine
from syncqueue.models import SyncJob, WorkerHeartbeat

pytestmark = pytest.mark.django_db(transaction=True)

# statements (BEGIN and COMMIT included) per vendor: enqueue, then the ticket that runs it
BUDGET = {"sqlite": (6, 8), "postgresql": (1, 7)}


def test_a_no_op_job_costs_a_pinned_number_of_statements(make_connection: Any) -> None:
    WorkerHeartbeat.objects.create(name="cluster:test:1", seen_at=timezone.now())
    warm, conn = make_connection(name="warm-up"), make_connection(name="measured")
    engine.enqueue(warm, SyncJob.Kind.MANUAL)
    engine.process_ticket()  # this process's first ticket also writes its heartbeat
    for c in (warm, conn):
        c.config = {"total": 0}
        c.save(update_fields=["config"])
    with CaptureQueriesContext(connection) as enqueued:
        job = engine.enqueue(conn, SyncJob.Kind.MANUAL)
    with CaptureQueriesContext(connection) as ran:
        engine.process_ticket()
    job.refresh_from_db()
    assert job.state == SyncJob.State.SUCCEEDED
    sent = (len(enqueued.captured_queries), len(ran.captured_queries))
    detail = "\n".join(q["sql"][:120] for q in [*enqueued.captured_queries, *ran.captured_queries])
    assert sent == BUDGET[connection.vendor], f"{sent} statements:\n{detail}"
