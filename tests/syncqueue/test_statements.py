"""What one job costs the database, pinned so it cannot creep back: a no-op job (a sync that
finds nothing new) from enqueue to succeeded, as every role sends it — the web process
(enqueue), the cluster's pusher (takes the ticket), the worker (django-q2 checks its database
connection, then the ticket claims and runs the job) and the monitor (acknowledges the ticket).
Each role runs here in turn, with django-q2's own connection handling, so the count is what
the database sees. The ORM broker; BEGIN and COMMIT are counted where they are sent."""

from __future__ import annotations

from typing import Any

import pytest
from django.db import close_old_connections, connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from syncqueue import broker, engine, heartbeat
from syncqueue.models import SyncJob, WorkerHeartbeat

pytestmark = pytest.mark.django_db(transaction=True)

# per vendor: enqueue, pusher, worker, monitor. PostgreSQL: 1 + 1 + 3 + 1 = 6 (the ceiling is
# 13); SQLite has no row locks and no data-modifying CTEs, so it reads before it writes. Not
# counted (it bypasses the query log): Django's connection health check, one "SELECT 1" per
# role and task when CONN_HEALTH_CHECKS is on and a connection is reused.
BUDGET = {"sqlite": (6, 1, 8, 1), "postgresql": (1, 1, 3, 1)}


def test_a_no_op_job_costs_a_pinned_number_of_statements(make_connection: Any) -> None:
    WorkerHeartbeat.objects.create(name="cluster:test:1", seen_at=timezone.now())
    warm, conn = make_connection(name="warm-up"), make_connection(name="measured")
    engine.enqueue(warm, SyncJob.Kind.MANUAL)
    engine.process_ticket()  # this process's first ticket also writes its heartbeat
    # a worker beats at most every 15 s (on whichever ticket comes then): beat now, so that the
    # measured ticket is not the one whose turn it is after earlier tests in this process
    heartbeat.beat_worker(force=True)
    broker.take_tickets(10)
    for c in (warm, conn):
        c.config = {"total": 0}
        c.save(update_fields=["config"])
    with CaptureQueriesContext(connection) as enqueued:
        job = engine.enqueue(conn, SyncJob.Kind.MANUAL)
    with CaptureQueriesContext(connection) as pushed:
        taken = broker.take_tickets(1)  # django-q2's pusher, in one statement
    assert taken is not None and len(taken) == 1
    with CaptureQueriesContext(connection) as ran:
        close_old_connections()  # django-q2's worker, before each task
        engine.process_ticket()
    with CaptureQueriesContext(connection) as acknowledged:
        broker.ack_ticket(taken[0][0])  # the cluster's monitor (no result saved)
    job.refresh_from_db()
    assert job.state == SyncJob.State.SUCCEEDED
    roles = (enqueued, pushed, ran, acknowledged)
    sent = tuple(len(role.captured_queries) for role in roles)
    detail = "\n".join(q["sql"][:120] for role in roles for q in role.captured_queries)
    assert sent == BUDGET[connection.vendor], f"{sent} statements:\n{detail}"
    if connection.vendor == "postgresql":
        assert sum(sent) + 3 <= 13  # with the three health checks
