"""The dispatcher pass: due connections, missed windows, rescue, tickets, heartbeat, pruning."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from django.db import connection as db
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from django_q.models import OrmQ

from integrations.base import SyncContext
from integrations.models import Connection
from syncqueue import dispatcher, engine, retention
from syncqueue.engine.run import _commit
from syncqueue.engine.state import _Run
from syncqueue.heartbeat import worker_status
from syncqueue.models import SyncJob, SyncLog, WorkerHeartbeat
from tests.support.models import FakeRecord
from tests.support.threads import at_once

pytestmark = pytest.mark.django_db(transaction=True)
Kind, State = SyncJob.Kind, SyncJob.State


def ago(**kw) -> datetime:
    return timezone.now() - timedelta(**kw)


def test_due_connections_get_one_job_each_and_their_next_run(make_connection):
    due = [
        make_connection(name=f"due{i}", schedule="*/15 * * * *", next_sync_at=ago(minutes=1))
        for i in range(3)
    ]
    later = make_connection(
        name="later", schedule="*/15 * * * *", next_sync_at=timezone.now() + timedelta(hours=1)
    )
    off = make_connection(
        name="off", enabled=False, schedule="*/15 * * * *", next_sync_at=ago(minutes=1)
    )

    report = dispatcher.dispatch()

    assert report.enqueued == 3
    assert set(SyncJob.objects.values_list("connection_id", flat=True)) == {c.pk for c in due}
    assert set(SyncJob.objects.values_list("kind", flat=True)) == {Kind.INITIAL}
    for conn in due:
        conn.refresh_from_db()
        assert conn.next_sync_at > timezone.now()
        assert conn.next_sync_at.minute % 15 == 0
    assert not SyncJob.objects.filter(connection__in=[later, off]).exists()
    assert OrmQ.objects.count() == 3


def test_a_due_connection_with_a_waiting_job_is_not_queued_twice(make_connection):
    conn = make_connection(schedule="every 15m", next_sync_at=ago(minutes=1))
    job = engine.enqueue(conn, Kind.MANUAL)
    report = dispatcher.dispatch()
    assert (report.enqueued, report.already_queued) == (0, 1)
    assert list(SyncJob.objects.values_list("pk", flat=True)) == [job.pk]


def test_missed_windows_run_once_not_once_per_window(make_connection):
    conn = make_connection(schedule="*/15 * * * *", next_sync_at=ago(days=2))
    dispatcher.dispatch()
    dispatcher.dispatch()
    assert SyncJob.objects.filter(connection=conn).count() == 1
    conn.refresh_from_db()
    assert timezone.now() < conn.next_sync_at <= timezone.now() + timedelta(minutes=15)


def test_stopped_schedule_and_auth_required_connections_are_not_scheduled(make_connection):
    conn = make_connection(schedule="every 15m", scheduled=False)
    assert conn.compute_next_sync() is None
    conn.scheduled = True
    Connection.objects.filter(pk=conn.pk).update(status=Connection.Status.AUTH_REQUIRED)
    conn.refresh_from_db()
    assert conn.compute_next_sync() is None


def test_interval_schedules_are_spread_with_jitter(make_connection, settings):
    settings.SYNC_SCHEDULE_JITTER = 0.1
    conn = make_connection(schedule="every 60m")
    now = timezone.now()
    samples = {conn.compute_next_sync(now) for _ in range(50)}
    assert len(samples) > 40
    assert all(now + timedelta(minutes=60) <= s <= now + timedelta(minutes=65) for s in samples)


def test_dispatch_query_count_does_not_grow_with_due_connections(make_connection):
    def queries_for(count: int) -> int:
        for i in range(count):
            make_connection(name=f"c{count}-{i}", schedule="every 5m", next_sync_at=ago(minutes=1))
        with CaptureQueriesContext(db) as ctx:
            dispatcher.enqueue_due(timezone.now())
        assert OrmQ.objects.count() >= count  # a ticket each, written in one INSERT
        return len(ctx.captured_queries)

    assert queries_for(3) == queries_for(30)


def test_expired_lease_is_rescued_and_resumes_from_the_checkpoint(make_connection, work):
    conn = make_connection(config={"total": 20, "batch": 5})
    job = engine.enqueue(conn, Kind.MANUAL)
    claimed = engine.claim_next("dead-worker")
    # the dead worker committed two batches before it died
    from tests.support.connector import FakeConnector

    connector = FakeConnector(conn)
    batches = connector.sync(SyncContext(job.pk, job.kind, {}, {}, {}))
    dead = _Run(claimed, conn, "dead-worker", 0, [])
    for _ in range(2):
        _commit(dead, connector, next(batches))
    SyncJob.objects.filter(pk=job.pk).update(leased_until=ago(seconds=1))

    report = dispatcher.dispatch()
    assert report.rescued == 1
    job.refresh_from_db()
    assert job.state == State.QUEUED and job.attempts == 1 and job.worker_id == ""
    assert SyncLog.objects.filter(job=job, message__contains="stopped responding").exists()

    work()
    job.refresh_from_db()
    assert job.state == State.SUCCEEDED and job.created_count == 20
    assert set(FakeRecord.objects.values_list("writes", flat=True)) == {1}


def test_a_job_that_keeps_killing_its_worker_fails_eventually(make_connection, settings):
    settings.SYNC_MAX_ATTEMPTS = 2
    conn = make_connection()
    job = engine.enqueue(conn, Kind.MANUAL)
    for _ in range(2):
        engine.claim_next("dying")
        SyncJob.objects.filter(pk=job.pk).update(leased_until=ago(seconds=1))
        dispatcher.dispatch()
    job.refresh_from_db()
    assert job.state == State.FAILED and "stopped responding 2 times" in job.error_message
    conn.refresh_from_db()
    assert conn.consecutive_failures == 1


def test_a_dead_workers_job_goes_back_at_once_and_only_that_workers(make_connection):
    mine = engine.enqueue(make_connection(name="mine"), Kind.MANUAL)
    other = engine.enqueue(make_connection(name="other"), Kind.MANUAL)
    engine.claim_next("host:41")
    engine.claim_next("host:42")
    assert dispatcher.rescue_dead_worker("host:41") == (1, 0)  # lease not expired: no matter
    states = dict(SyncJob.objects.values_list("pk", "state"))
    assert states == {mine.pk: State.QUEUED, other.pk: State.RUNNING}
    log = SyncLog.objects.get(job=mine)
    assert log.message == "Worker host:41 died; resuming from the last checkpoint."
    assert dispatcher.rescue_dead_worker("host:41") == (0, 0)


def test_tick_makes_one_full_pass_per_interval_and_rescues_in_between(make_connection, settings):
    settings.SYNC_DISPATCH_INTERVAL = 60
    first = dispatcher.tick()
    assert not first.skipped and WorkerHeartbeat.objects.filter(name="dispatcher").exists()
    job = engine.enqueue(make_connection(), Kind.MANUAL)
    engine.claim_next("gone:1")
    SyncJob.objects.filter(pk=job.pk).update(leased_until=ago(seconds=1))
    due = make_connection(name="due", schedule="*/15 * * * *", next_sync_at=ago(seconds=1))
    second = dispatcher.tick()  # another cluster, seconds later: rescues and due syncs only
    assert second.skipped.startswith("rescues and due syncs only") and second.rescued == 1
    assert second.enqueued == 1 and SyncJob.objects.filter(connection=due).count() == 1


def test_dispatchers_share_due_connections_and_queue_each_once(make_connection, settings):
    """Several clusters' dispatchers at once: batches taken with SKIP LOCKED (PostgreSQL) or one
    writer at a time (SQLite); every due connection gets exactly one job."""
    settings.SYNC_DISPATCH_LIMIT = 10_000
    monkey = dispatcher.DUE_BATCH
    dispatcher.DUE_BATCH = 7  # many small batches, so the dispatchers interleave
    try:
        conns = make_connections_due(make_connection, 60)
        results = at_once(4, lambda: dispatcher.enqueue_due(timezone.now()))
    finally:
        dispatcher.DUE_BATCH = monkey
    assert sum(queued for queued, _ in results) == 60
    per_connection = {c.pk: SyncJob.objects.filter(connection=c).count() for c in conns}
    assert set(per_connection.values()) == {1}


def make_connections_due(make_connection, count: int) -> list[Connection]:
    return [
        make_connection(name=f"due{i}", schedule="*/15 * * * *", next_sync_at=ago(seconds=5))
        for i in range(count)
    ]


def test_a_pass_costs_the_same_whatever_the_number_not_due(make_connection):
    from django.db import connection as db
    from django.test.utils import CaptureQueriesContext

    def statements() -> int:
        with CaptureQueriesContext(db) as captured:
            dispatcher.enqueue_due(timezone.now())
        return len(captured.captured_queries)

    make_connections_due(make_connection, 3)
    later = timezone.now() + timedelta(hours=1)
    few = statements()
    make_connections_due(make_connection, 3)
    for i in range(200):
        make_connection(name=f"later{i}", schedule="*/15 * * * *", next_sync_at=later)
    assert statements() == few


def test_lease_renewal_touches_only_a_job_this_worker_still_holds(make_connection, settings):
    from syncqueue import lease

    job = engine.enqueue(make_connection(), Kind.MANUAL)
    claimed = engine.claim_next("w:1")
    SyncJob.objects.filter(pk=job.pk).update(leased_until=ago(seconds=5))
    assert lease.renew(job.pk, "w:1")
    claimed.refresh_from_db()
    assert claimed.leased_until > timezone.now() + timedelta(
        seconds=settings.SYNC_LEASE_SECONDS - 5
    )
    assert not lease.renew(job.pk, "w:2")  # rescued and taken by another worker meanwhile
    SyncJob.objects.filter(pk=job.pk).update(state=State.QUEUED, worker_id="")
    assert not lease.renew(job.pk, "w:1")


def test_due_retries_and_orphaned_jobs_get_tickets(make_connection):
    retrying = engine.enqueue(make_connection(name="r"), Kind.MANUAL)
    orphan = engine.enqueue(make_connection(name="o"), Kind.MANUAL)
    SyncJob.objects.filter(pk=retrying.pk).update(state=State.RETRYING, run_after=ago(seconds=1))
    OrmQ.objects.all().delete()  # e.g. tickets lost with a killed worker

    assert dispatcher.dispatch().tickets == 2
    assert OrmQ.objects.count() == 2
    assert dispatcher.dispatch().tickets == 0  # enough tickets now
    assert {engine.claim_next("w").pk, engine.claim_next("w").pk} == {retrying.pk, orphan.pk}


def test_the_dispatcher_beats_but_does_not_make_workers_look_alive(db):
    # It runs in its own process and keeps going while workers are stuck: only clusters and
    # workers that take tickets prove work.
    assert not worker_status().alive
    dispatcher.dispatch()
    assert WorkerHeartbeat.objects.filter(name="dispatcher").exists()
    assert not worker_status().alive
    WorkerHeartbeat.objects.create(name="cluster:h:1", seen_at=timezone.now())
    assert worker_status().alive


def test_stale_heartbeat_says_workers_are_down_and_how_to_start_them(db, settings):
    WorkerHeartbeat.objects.create(name="cluster:h:1", seen_at=ago(minutes=30))
    status = worker_status()
    assert not status.alive
    assert "not running" in status.message and "manage.py qcluster" in status.message


def test_only_one_dispatcher_pass_at_a_time(db):
    from syncqueue.locks import hold_lock

    with hold_lock("dispatcher", seconds=60) as got:
        assert got
        assert dispatcher.dispatch().skipped
    assert not dispatcher.dispatch().skipped


def test_retention_keeps_exactly_the_newest_n_and_what_is_recent(make_connection, settings):
    """The newest SYNC_KEEP_JOBS finished jobs of a connection count across all its jobs:
    once newer ones exist, every expired old job goes (not the newest few old ones too)."""
    settings.SYNC_KEEP_JOBS = 2
    settings.SYNC_KEEP_SUCCEEDED_DAYS = 7
    settings.SYNC_KEEP_FAILED_DAYS = 30
    conn, other = make_connection(), make_connection(name="other")

    def job(on: Connection, state: str, days: float) -> SyncJob:
        return SyncJob.objects.create(
            connection=on,
            kind=Kind.MANUAL,
            dedupe_key="sync",
            state=state,
            run_after=ago(days=days),
            finished_at=ago(days=days),
        )

    old = [job(conn, State.SUCCEEDED, d) for d in (12, 11, 10)]
    recent = [job(conn, State.SUCCEEDED, d) for d in (3, 2, 1)]  # newer than the old ones
    failed_recently = job(conn, State.FAILED, 20)  # newer id, within the failure window
    lonely_old = [job(other, State.SUCCEEDED, d) for d in (30, 29)]  # its newest two: kept

    assert sorted(retention.expired_job_ids(timezone.now())) == sorted(j.pk for j in old)
    retention.prune(timezone.now())
    remaining = set(SyncJob.objects.values_list("pk", flat=True))
    assert remaining == {*(j.pk for j in recent), failed_recently.pk, *(j.pk for j in lonely_old)}


def test_retention_keeps_recent_jobs_and_failures_longer(make_connection, settings):
    settings.SYNC_KEEP_JOBS = 2
    settings.SYNC_KEEP_SUCCEEDED_DAYS = 7
    settings.SYNC_KEEP_FAILED_DAYS = 30
    conn = make_connection()

    def job(state: str, days: int) -> SyncJob:
        return SyncJob.objects.create(
            connection=conn,
            kind=Kind.MANUAL,
            dedupe_key="sync",
            state=state,
            run_after=ago(days=days),
            finished_at=ago(days=days),
        )

    old_ok, old_fail, older_fail = (
        job(State.SUCCEEDED, 10),
        job(State.FAILED, 10),
        job(State.FAILED, 40),
    )
    keep = [job(State.SUCCEEDED, 9), job(State.SUCCEEDED, 8)]  # the newest two are always kept
    waiting = engine.enqueue(conn, Kind.MANUAL)
    SyncLog.objects.create(job=old_ok, connection=conn, message="goes with its job")

    pruned = retention.prune(timezone.now())

    remaining = set(SyncJob.objects.values_list("pk", flat=True))
    assert remaining == {old_fail.pk, *(j.pk for j in keep), waiting.pk}
    assert older_fail.pk not in remaining
    assert pruned["jobs"] == 2
    assert not SyncLog.objects.filter(message="goes with its job").exists()
