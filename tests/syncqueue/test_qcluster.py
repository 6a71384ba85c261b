"""Worker behaviour with real ``manage.py qcluster`` processes."""

from __future__ import annotations

import itertools
import os
import signal
import time
from datetime import timedelta

import pytest
from django.utils import timezone
from django_q.models import Failure, OrmQ

from syncqueue import dispatcher, engine
from syncqueue.models import SyncJob, SyncLog
from tests.support.models import FakeRecord, RunSpan
from tests.support.processes import descendants, qcluster, wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.process]
Kind, State = SyncJob.Kind, SyncJob.State

# Small numbers so the behaviour shows in seconds; the rules between them are the real ones
# (slice < timeout < retry, lease > timeout).
FAST = {
    "SYNC_TASK_TIMEOUT": 6,
    "SYNC_TASK_RETRY": 10,
    "SYNC_SLICE_SECONDS": 4,
    "SYNC_LEASE_SECONDS": 8,
    "SYNC_Q_POLL": 0.05,
}


def finished(job_id: int, run_dispatcher: bool = False) -> SyncJob | None:
    if run_dispatcher:  # normally a django-q2 schedule every minute; here faster
        dispatcher.dispatch()
    return SyncJob.objects.filter(pk=job_id, state__in=SyncJob.FINISHED).first()


def test_killed_worker_job_is_rescued_and_resumes_from_its_checkpoint(make_connection):
    conn = make_connection(config={"total": 40, "batch": 5, "delay": 0.4})
    job = engine.enqueue(conn, Kind.MANUAL)
    with qcluster("kill", **FAST) as cluster:
        running = wait_for(
            lambda: (
                SyncJob.objects.filter(pk=job.pk, state=State.RUNNING, progress_done__gte=10)
                .exclude(worker_id="")
                .first()
            ),
            30,
            "two committed batches",
        )
        pid = int(running.worker_id.rsplit(":", 1)[1])
        assert pid in descendants(cluster.pid)
        os.kill(pid, signal.SIGKILL)
        committed_at_kill = FakeRecord.objects.filter(connection=conn).count()
        assert 10 <= committed_at_kill < 40

        final = wait_for(lambda: finished(job.pk, True), 60, "the rescued job", every=0.5)

    assert final.state == State.SUCCEEDED, final.error_message
    assert final.attempts == 1  # the kill counted once; the rest ran from the checkpoint
    records = FakeRecord.objects.filter(connection=conn)
    assert sorted(records.values_list("key", flat=True)) == list(range(1, 41))
    assert set(records.values_list("writes", flat=True)) == {1}  # nothing written twice
    # The cluster saw its worker die and handed the job back at once (the lease is for a lost
    # host or cluster, where nobody sees the death).
    assert SyncLog.objects.filter(job=job, message__contains=f"{pid} died; resuming").exists()


def test_job_longer_than_the_task_timeout_completes_through_slices(make_connection):
    conn = make_connection(config={"total": 32, "batch": 2, "delay": 0.5})  # about 8 s of work
    job = engine.enqueue(conn, Kind.MANUAL)
    with qcluster("slices", **{**FAST, "SYNC_SLICE_SECONDS": 2}):
        final = wait_for(lambda: finished(job.pk), 60, "the long job")
    assert final.state == State.SUCCEEDED, final.error_message
    assert final.duration > timedelta(seconds=FAST["SYNC_TASK_TIMEOUT"])
    assert final.slices >= 3 and final.attempts == 0
    assert not Failure.objects.exists()  # django-q2 never had to kill a task
    assert set(FakeRecord.objects.values_list("writes", flat=True)) == {1}
    assert FakeRecord.objects.count() == 32


def test_two_clusters_never_run_one_connection_at_once(make_connection):
    config = {"total": 6, "batch": 2, "delay": 0.05, "track_runs": True}
    conns = [make_connection(name=f"c{i}", config=config) for i in range(6)]
    jobs = []
    for conn in conns:
        jobs.append(engine.enqueue(conn, Kind.MANUAL))
        jobs.append(engine.enqueue(conn, Kind.FULL_RESYNC))
        for item in (1, 2, 3):
            jobs.append(
                engine.enqueue(conn, Kind.PUSH, payload={"item": item}, dedupe_key=f"push:{item}")
            )
    with qcluster("a", **FAST) as a, qcluster("b", **FAST) as b:
        wait_for(
            lambda: not SyncJob.objects.exclude(state__in=SyncJob.FINISHED).exists(),
            90,
            "all jobs to finish",
        )
        pids = {"a": descendants(a.pid), "b": descendants(b.pid)}

    assert set(SyncJob.objects.values_list("state", flat=True)) == {State.SUCCEEDED}
    for conn in conns:
        spans = list(RunSpan.objects.filter(connection=conn).order_by("started"))
        assert len(spans) == 5
        for earlier, later in itertools.pairwise(spans):
            assert earlier.ended <= later.started, f"overlapping runs on {conn.name}"
        assert FakeRecord.objects.filter(connection=conn).count() == 6
    worked = set(RunSpan.objects.values_list("pid", flat=True))
    assert worked & pids["a"] and worked & pids["b"], "both clusters should have done work"


def test_a_busy_cluster_does_not_hold_tickets_an_idle_cluster_could_run(make_connection):
    # Stock django-q2 fetches tickets whenever its in-memory queue has room, even with every
    # worker busy: the ticket then waits for the end of a slice while another cluster idles.
    # Ours fetches only for a free worker (syncqueue.cluster.gated_pusher).
    one = {
        **FAST,
        "SYNC_WORKERS": 1,
        "SYNC_TASK_TIMEOUT": 10,
        "SYNC_TASK_RETRY": 15,
        "SYNC_SLICE_SECONDS": 8,
    }
    long = engine.enqueue(
        make_connection(name="long", config={"total": 60, "batch": 1, "delay": 0.5}), Kind.MANUAL
    )
    with qcluster("busy", **one) as busy:
        wait_for(
            lambda: SyncJob.objects.filter(pk=long.pk, state=State.RUNNING).exists(),
            20,
            "the busy cluster's slice",
        )
        short = engine.enqueue(
            make_connection(name="short", config={"track_runs": True}), Kind.MANUAL
        )
        time.sleep(1)  # the busy cluster's pusher polls 20 times a second meanwhile
        now = timezone.now()
        taken = [q.name() for q in OrmQ.objects.all() if q.lock > now]
        with qcluster("idle", **one) as idle:
            done = wait_for(lambda: finished(short.pk), 20, "the short job")
            idle_pids, busy_pids = descendants(idle.pid), descendants(busy.pid)
    # Only the long job's own ticket is held: the short job's stayed for a free worker.
    assert taken == [f"sync-job-{long.pk}"]
    assert done.state == State.SUCCEEDED
    [span] = RunSpan.objects.filter(connection=done.connection)
    assert span.pid in idle_pids and span.pid not in busy_pids
