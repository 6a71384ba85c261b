"""Worker behaviour with real ``manage.py qcluster`` processes."""

from __future__ import annotations

import itertools
import time
from datetime import timedelta

import pytest
from django.utils import timezone
from django_q.models import Failure, OrmQ

from syncqueue import engine
from syncqueue.models import SyncJob, SyncLog
from tests.support.cluster import (
    FAST_CLUSTER,
    kill_worker_of,
    running_with,
    wait_finished,
    worker_pid,
)
from tests.support.models import FakeRecord, RunSpan
from tests.support.processes import descendants, qcluster, wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.process]
Kind, State = SyncJob.Kind, SyncJob.State

# The suite's fast settings, with two workers per cluster (the default) so that one cluster runs
# jobs side by side, and a full dispatcher pass only once a minute (the default): the jobs below
# must get done by what the clusters do themselves (slices re-queue, waiting jobs get their
# tickets), not by a frequent pass topping tickets up. Only the kill test runs passes itself.
FAST = {**FAST_CLUSTER, "SYNC_WORKERS": 2, "SYNC_DISPATCH_INTERVAL": 60}


def test_killed_worker_job_is_rescued_and_resumes_from_its_checkpoint(make_connection):
    conn = make_connection(config={"total": 40, "batch": 5, "delay": 0.4})
    job = engine.enqueue(conn, Kind.MANUAL)
    with qcluster("kill", **FAST) as cluster:
        running = wait_for(lambda: running_with(job, 10), 30, "two committed batches")
        assert worker_pid(running) in descendants(cluster.pid)
        pid = kill_worker_of(running)
        committed_at_kill = FakeRecord.objects.filter(connection=conn).count()
        assert 10 <= committed_at_kill < 40

        final = wait_finished(job, 60, every=0.5)  # with dispatcher passes (rescues)

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
    slices = {**FAST, "SYNC_TASK_TIMEOUT": 6, "SYNC_SLICE_SECONDS": 2}  # the job outlasts a task
    with qcluster("slices", **slices):
        final = wait_finished(job, 60, dispatch=False)
    assert final.state == State.SUCCEEDED, final.error_message
    assert final.duration > timedelta(seconds=slices["SYNC_TASK_TIMEOUT"])
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
    one = {**FAST, "SYNC_WORKERS": 1, "SYNC_SLICE_SECONDS": 8}
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
            done = wait_finished(short, 20, dispatch=False)
            idle_pids, busy_pids = descendants(idle.pid), descendants(busy.pid)
    # Only the long job's own ticket is held: the short job's stayed for a free worker.
    # (named after the job, or on PostgreSQL after its connection: written in the same INSERT)
    assert len(taken) == 1
    assert taken[0] in (f"sync-job-{long.pk}", f"sync-connection-{long.connection_id}")
    assert done.state == State.SUCCEEDED
    [span] = RunSpan.objects.filter(connection=done.connection)
    assert span.pid in idle_pids and span.pid not in busy_pids
