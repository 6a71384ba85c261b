"""Running jobs: batches with checkpoints, slices, and outcomes by error class."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from integrations.models import Connection
from syncqueue import control, engine
from syncqueue.engine.run import _execute
from syncqueue.models import SyncJob, SyncLog
from tests.support.models import FakeRecord, RunSpan

pytestmark = pytest.mark.django_db(transaction=True)
Kind, State, Status = SyncJob.Kind, SyncJob.State, Connection.Status


def fault(error: str, at: int = 0, times: int = 1, **extra) -> dict:
    return {"at": at, "error": error, "times": times, **extra}


def make_due(job: SyncJob) -> None:
    """Pretend the backoff has passed; the dispatcher then puts the job back in the queue."""
    SyncJob.objects.filter(pk=job.pk).update(run_after=timezone.now() - timedelta(seconds=1))
    engine.requeue_due_retries(timezone.now())


def test_a_job_writes_every_record_once_and_commits_the_cursor(make_connection, work):
    conn = make_connection(config={"total": 23, "batch": 5})
    job = engine.enqueue(conn, Kind.MANUAL)
    assert work() == [f"job {job.pk}: succeeded"]

    job.refresh_from_db()
    conn.refresh_from_db()
    assert job.state == State.SUCCEEDED
    assert (job.progress_done, job.progress_total, job.created_count) == (23, 23, 23)
    assert conn.cursor == {"pos": 23}
    assert conn.status == Status.OK and conn.last_success_at is not None
    assert sorted(FakeRecord.objects.values_list("key", flat=True)) == list(range(1, 24))
    assert set(FakeRecord.objects.values_list("writes", flat=True)) == {1}


def test_next_incremental_sync_starts_from_the_cursor(make_connection, work):
    conn = make_connection(config={"total": 10, "batch": 5})
    engine.enqueue(conn, Kind.MANUAL)
    work()
    conn.config = {"total": 15, "batch": 5}
    conn.save()
    job = engine.enqueue(conn, Kind.MANUAL)
    work()
    job.refresh_from_db()
    assert (job.created_count, job.updated_count) == (5, 0)
    assert set(FakeRecord.objects.values_list("writes", flat=True)) == {1}


def test_a_long_job_continues_over_slices_from_its_checkpoint(make_connection, work, settings):
    settings.SYNC_SLICE_SECONDS = 0.0  # every batch exhausts the budget
    conn = make_connection(config={"total": 20, "batch": 5})
    job = engine.enqueue(conn, Kind.MANUAL)
    outcomes = work()
    # four batches: three end their slice, the last one is final and commits the success
    assert outcomes == [f"job {job.pk}: continues in a new slice"] * 3 + [
        f"job {job.pk}: succeeded"
    ]
    job.refresh_from_db()
    assert job.slices == 4 and job.attempts == 0 and job.created_count == 20
    assert set(FakeRecord.objects.values_list("writes", flat=True)) == {1}


def test_transient_error_retries_with_backoff_from_the_checkpoint(make_connection, work, settings):
    conn = make_connection(config={"total": 20, "batch": 5, "faults": [fault("transient", 10)]})
    job = engine.enqueue(conn, Kind.MANUAL)
    work()
    job.refresh_from_db()
    conn.refresh_from_db()
    assert job.state == State.RETRYING and job.attempts == 1
    assert job.error_class == "Transient"
    base = settings.SYNC_RETRY_BASE_SECONDS
    wait = (job.run_after - job.updated_at).total_seconds()  # as decided, not as read later
    assert base / 2 <= wait <= base
    assert conn.status == Status.DEGRADED and conn.cursor == {"pos": 10}

    make_due(job)
    work()
    job.refresh_from_db()
    assert job.state == State.SUCCEEDED and job.created_count == 20
    assert set(FakeRecord.objects.values_list("writes", flat=True)) == {1}
    conn.refresh_from_db()
    assert conn.status == Status.OK and conn.consecutive_failures == 0


def test_backoff_grows_exponentially_with_jitter_and_a_cap(settings):
    settings.SYNC_RETRY_BASE_SECONDS = 10
    settings.SYNC_RETRY_MAX_SECONDS = 60
    samples = {n: [engine.backoff_seconds(n) for _ in range(200)] for n in (1, 2, 3, 10)}
    assert all(5 <= s <= 10 for s in samples[1])
    assert all(10 <= s <= 20 for s in samples[2])
    assert all(20 <= s <= 40 for s in samples[3])
    assert all(30 <= s <= 60 for s in samples[10])
    assert len(set(samples[3])) > 100  # jittered, not fixed


def test_transient_errors_fail_the_job_after_max_attempts(make_connection, work, settings):
    settings.SYNC_MAX_ATTEMPTS = 3
    conn = make_connection(config={"total": 5, "batch": 5, "faults": [fault("transient", 0, 9)]})
    job = engine.enqueue(conn, Kind.MANUAL)
    for _ in range(3):
        work()
        make_due(job)
    job.refresh_from_db()
    assert job.state == State.FAILED and job.attempts == 3
    assert job.finished_at is not None
    conn.refresh_from_db()
    assert conn.consecutive_failures == 1 and conn.last_error


def test_rate_limit_waits_retry_after_without_spending_an_attempt(make_connection, work, settings):
    settings.SYNC_INLINE_WAIT_MAX = 0  # force the "come back later" path
    conn = make_connection(
        config={"total": 10, "batch": 5, "faults": [fault("ratelimited", 5, 3, retry_after=120)]}
    )
    job = engine.enqueue(conn, Kind.MANUAL)
    for _ in range(3):
        work()
        job.refresh_from_db()
        assert job.state == State.RETRYING and job.attempts == 0
        assert job.error_class == "RateLimited"
        assert job.run_after - timezone.now() >= timedelta(seconds=118)
        make_due(job)
    work()
    job.refresh_from_db()
    assert job.state == State.SUCCEEDED and job.attempts == 0
    conn.refresh_from_db()
    assert conn.status == Status.OK


def test_short_rate_limit_is_waited_out_inside_the_slice(make_connection, work):
    conn = make_connection(
        config={"total": 10, "batch": 5, "faults": [fault("ratelimited", 5, 1, retry_after=0.2)]}
    )
    job = engine.enqueue(conn, Kind.MANUAL)
    assert work() == [f"job {job.pk}: succeeded"]
    assert SyncLog.objects.filter(job=job, message__contains="Rate limited").exists()


def test_auth_failure_fails_at_once_and_needs_a_person(make_connection, work):
    conn = make_connection(
        config={"total": 10, "faults": [fault("auth", 0, 99)]},
        schedule="every 15m",
        next_sync_at=timezone.now(),
    )
    job = engine.enqueue(conn, Kind.MANUAL)
    work()
    job.refresh_from_db()
    conn.refresh_from_db()
    assert job.state == State.FAILED and job.attempts == 1
    assert job.error_class == "AuthFailed"
    assert conn.status == Status.AUTH_REQUIRED
    assert conn.last_error == "The fake server rejected the password."
    assert conn.next_sync_at is None  # no scheduled retry storm against the server


def test_permanent_failure_does_not_retry(make_connection, work):
    conn = make_connection(config={"faults": [fault("permanent")]})
    job = engine.enqueue(conn, Kind.MANUAL)
    work()
    job.refresh_from_db()
    assert job.state == State.FAILED and job.attempts == 1 and job.error_class == "Permanent"


def test_unexpected_exception_is_internal_and_retried(make_connection, work):
    conn = make_connection(config={"faults": [fault("crash")]})
    job = engine.enqueue(conn, Kind.MANUAL)
    work()
    job.refresh_from_db()
    assert job.state == State.RETRYING and job.error_class == "Internal"
    assert "RuntimeError" in job.error_detail
    assert "unexpected" in job.error_message.lower()


def test_cursor_reset_restarts_the_stream_inside_the_same_job(make_connection, work):
    conn = make_connection(config={"total": 10, "batch": 5})
    engine.enqueue(conn, Kind.MANUAL)
    work()
    conn.config = {"total": 12, "batch": 5, "faults": [fault("reset", 10)]}
    conn.save()
    job = engine.enqueue(conn, Kind.MANUAL)
    work()
    job.refresh_from_db()
    conn.refresh_from_db()
    assert job.state == State.SUCCEEDED and job.attempts == 0
    assert conn.cursor == {"pos": 12}
    assert FakeRecord.objects.count() == 12  # re-read, upserted: no duplicates
    assert SyncLog.objects.filter(job=job, level="warning", message__contains="rejected").exists()


def test_full_resync_clears_the_cursor_once(make_connection, work, settings):
    conn = make_connection(config={"total": 10, "batch": 5})
    engine.enqueue(conn, Kind.MANUAL)
    work()
    settings.SYNC_SLICE_SECONDS = 0.0
    job = engine.enqueue(conn, Kind.FULL_RESYNC)
    work()
    job.refresh_from_db()
    assert job.state == State.SUCCEEDED and job.slices == 2
    assert job.updated_count == 10  # re-read everything once, not once per slice
    assert set(FakeRecord.objects.values_list("writes", flat=True)) == {2}


def test_consecutive_failed_jobs_mark_failing_then_disable(make_connection, work, settings):
    settings.SYNC_FAILING_AFTER = 2
    settings.SYNC_DISABLE_AFTER = 3
    conn = make_connection(config={"faults": [fault("permanent", 0, 99)]}, schedule="every 15m")
    statuses = []
    for _ in range(3):
        engine.enqueue(conn, Kind.MANUAL)
        work()
        conn.refresh_from_db()
        statuses.append(conn.status)
    assert statuses == [Status.DEGRADED, Status.FAILING, Status.DISABLED]
    assert not conn.enabled and conn.next_sync_at is None
    assert "3 failed syncs in a row" in conn.disabled_reason
    assert "not allowed" in conn.disabled_reason


def test_success_after_failures_resets_health(make_connection, work):
    conn = make_connection(config={"faults": [fault("permanent")]})
    engine.enqueue(conn, Kind.MANUAL)
    work()
    engine.enqueue(conn, Kind.MANUAL)
    work()
    conn.refresh_from_db()
    assert conn.status == Status.OK and conn.consecutive_failures == 0 and conn.last_error == ""


def test_cancel_waiting_job_and_running_job_at_batch_boundary(make_connection, work):
    waiting = engine.enqueue(make_connection(name="w"), Kind.MANUAL)
    assert control.cancel_job(waiting) == "cancelled"

    conn = make_connection(name="r", config={"total": 20, "batch": 5})
    job = engine.enqueue(conn, Kind.MANUAL)
    claimed = engine.claim_next("w1")
    assert control.cancel_job(job) == "stopping"
    assert engine.execute(claimed) == "cancelled"
    job.refresh_from_db()
    assert job.state == State.CANCELLED
    assert FakeRecord.objects.count() == 0  # the uncommitted batch was not written


def test_retry_requeues_a_failed_job_keeping_its_checkpoint(make_connection, work):
    conn = make_connection(config={"total": 10, "batch": 5, "faults": [fault("permanent", 5)]})
    job = engine.enqueue(conn, Kind.MANUAL)
    work()
    job.refresh_from_db()
    assert job.state == State.FAILED
    assert control.retry_job(job) is True
    assert control.retry_job(job) is False  # already queued
    work()
    job.refresh_from_db()
    assert job.state == State.SUCCEEDED and job.created_count == 10
    assert set(FakeRecord.objects.values_list("writes", flat=True)) == {1}


def test_a_worker_that_lost_its_lease_writes_nothing(make_connection):
    conn = make_connection(config={"total": 10, "batch": 5})
    job = engine.enqueue(conn, Kind.MANUAL)
    claimed = engine.claim_next("zombie")
    SyncJob.objects.filter(pk=job.pk).update(worker_id="rescuer")  # rescued and re-claimed
    assert engine.execute(claimed) == "lease lost"
    assert FakeRecord.objects.count() == 0


def test_a_sync_that_found_nothing_and_lost_its_job_leaves_the_connection_as_it_was(
    make_connection,
):
    # PostgreSQL writes a quiet success and the connection's health in one statement: the
    # connection half runs only if the job was still ours
    conn = make_connection(config={"total": 0})
    job = engine.enqueue(conn, Kind.MANUAL)
    claimed = engine.claim_next("zombie")
    SyncJob.objects.filter(pk=job.pk).update(worker_id="rescuer")
    assert engine.execute(claimed) == "lease lost"
    conn.refresh_from_db()
    assert conn.last_success_at is None and conn.last_attempt_at is None
    assert SyncJob.objects.get(pk=job.pk).state == SyncJob.State.RUNNING
    again = engine.enqueue(make_connection(name="fine", config={"total": 0}), Kind.MANUAL)
    assert engine.execute(engine.claim_next("w:1")) == "succeeded"
    again.refresh_from_db()
    assert again.state == SyncJob.State.SUCCEEDED and again.connection.last_success_at


def test_a_push_whose_job_was_rescued_sends_nothing(make_connection):
    # The outbound call itself changes the remote side (a task created in someone's calendar),
    # so ownership is checked before the connector is asked for its next push.
    conn = make_connection(config={"track_runs": True})
    job = engine.enqueue(conn, Kind.PUSH, payload={"item": 1}, dedupe_key="push:1")
    claimed = engine.claim_next("zombie")
    SyncJob.objects.filter(pk=job.pk).update(worker_id="rescuer")
    assert engine.execute(claimed) == "lease lost"
    assert not RunSpan.objects.exists() and not FakeRecord.objects.exists()


def test_a_slice_stops_before_its_next_batch_once_its_lease_keeper_lost_the_job(
    make_connection,
):
    import threading

    conn = make_connection(config={"total": 10, "batch": 5})
    job = engine.enqueue(conn, Kind.MANUAL)
    claimed = engine.claim_next("slow")
    lost = threading.Event()
    lost.set()
    assert _execute(claimed, None, lost) == "lease lost"
    job.refresh_from_db()
    assert job.state == SyncJob.State.RUNNING and not FakeRecord.objects.exists()


def test_errors_shown_to_people_never_contain_the_secret(make_connection, work):
    conn = make_connection(
        secrets={"password": "pa55-word-xyz"}, config={"faults": [fault("crash")]}
    )
    # a library error quoting the secret must be scrubbed before it is stored
    from tests.support import connector

    original = connector._error
    connector._error = lambda name, retry: RuntimeError("login failed for pa55-word-xyz")
    try:
        job = engine.enqueue(conn, Kind.MANUAL)
        work()
    finally:
        connector._error = original
    job.refresh_from_db()
    stored = " ".join(
        [
            job.error_message,
            job.error_detail,
            *SyncLog.objects.values_list("message", flat=True),
            str(list(SyncLog.objects.values_list("data", flat=True))),
        ]
    )
    assert "pa55-word-xyz" not in stored
    assert "[redacted]" in job.error_detail


def test_unknown_kind_fails_permanently_with_a_clear_message(make_connection, work):
    conn = make_connection()
    Connection.objects.filter(pk=conn.pk).update(kind="carrier-pigeon")
    job = engine.enqueue(conn, Kind.MANUAL)
    work()
    job.refresh_from_db()
    assert job.state == State.FAILED and job.error_class == "Permanent"
    assert "no connector for kind 'carrier-pigeon'" in job.error_message


def test_a_sync_with_nothing_new_is_recorded_on_the_job_without_a_log_line(make_connection, work):
    conn = make_connection(config={"total": 5, "batch": 5})
    first = engine.enqueue(conn, Kind.MANUAL)
    work()
    noop = engine.enqueue(conn, Kind.MANUAL)
    work()
    noop.refresh_from_db()
    assert noop.state == State.SUCCEEDED and noop.finished_at and noop.created_count == 0
    assert not SyncLog.objects.filter(job=noop).exists()
    assert SyncLog.objects.filter(job=first, message__startswith="Finished").exists()


def test_one_keeper_thread_renews_every_running_slice_and_says_when_one_is_lost(
    make_connection, settings
):
    import threading
    import time

    from syncqueue import lease

    settings.SYNC_LEASE_RENEW_SECONDS = 0.2
    for name in ("kept", "taken"):
        engine.enqueue(make_connection(name=name), Kind.MANUAL)
    kept, taken = engine.claim_next("w:1"), engine.claim_next("w:2")
    assert kept is not None and taken is not None
    first_lease = kept.leased_until
    lease.keeper()  # the process's keeper, started once
    threads = threading.active_count()
    with lease.kept(kept.pk, "w:1") as held, lease.kept(taken.pk, "w:2") as other:
        assert threading.active_count() == threads  # no thread per slice
        SyncJob.objects.filter(pk=taken.pk).update(worker_id="rescuer")  # rescued meanwhile
        deadline = time.monotonic() + 10
        while (held.renewals < 2 or not other.lost.is_set()) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert held.renewals >= 2 and not held.lost.is_set()
        assert other.lost.is_set()
    renewed = SyncJob.objects.get(pk=kept.pk).leased_until
    assert first_lease is not None and renewed is not None and renewed > first_lease
    assert SyncJob.objects.get(pk=taken.pk).worker_id == "rescuer"  # never renewed for us
