"""A worker that dies must not freeze its cluster (django-q2 #23), and a cluster that stops
working must stop looking alive — with real ``manage.py qcluster`` processes.

The frozen-cluster bug: an idle worker waits in ``Queue.get()`` holding the task queue's read
lock; SIGKILL it and the lock is never released, so no worker of that cluster takes a ticket
again. The first test shows stock django-q2 still freezes (the day it does not, our workaround in
``syncqueue/cluster.py`` can go); the others show our cluster heals, proves work only while it
works, and keeps the dispatcher going.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest
from django_q.models import OrmQ

from syncqueue import engine
from syncqueue.heartbeat import worker_status
from syncqueue.models import SyncJob, SyncLog, WorkerHeartbeat
from tests.support.cluster import FAST_CLUSTER, cluster_beat, roles, task_lock_holder, wchan
from tests.support.models import FakeRecord
from tests.support.processes import (
    qcluster,
    wait_for,
)

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.process]
State = SyncJob.State
TWO_WORKERS = {**FAST_CLUSTER, "SYNC_WORKERS": 2}


def succeeded(job: SyncJob) -> SyncJob | None:
    return SyncJob.objects.filter(pk=job.pk, state=State.SUCCEEDED).first()


def holder_of(cluster: subprocess.Popen) -> int:
    return wait_for(lambda: task_lock_holder(cluster.pid), 20, "an idle worker in read()")


def warm_up(make_connection) -> None:
    """One job through the cluster: every process is up and the workers are idle again."""
    job = engine.enqueue(make_connection(name="warm-up"), SyncJob.Kind.MANUAL)
    wait_for(lambda: succeeded(job), 30, "the warm-up job")


def test_stock_django_q2_still_freezes_when_that_worker_dies(make_connection):
    # grace 3: SIGTERM hangs on a frozen stock cluster; the group is then killed
    with qcluster("stock", stock=True, grace=3, **TWO_WORKERS) as stock:
        warm_up(make_connection)
        os.kill(holder_of(stock), signal.SIGKILL)
        time.sleep(2)  # django-q2 reincarnates the worker on the same, locked queue
        job = engine.enqueue(make_connection(), SyncJob.Kind.MANUAL)
        time.sleep(10)
        job.refresh_from_db()
        assert job.state == State.QUEUED, "stock django-q2 no longer freezes: see cluster.py"
        assert len(roles(stock.pid).get("idle", [])) == 2  # looks perfectly alive


def test_killing_the_worker_that_holds_the_queue_lock_does_not_freeze_our_cluster(
    make_connection,
):
    with qcluster("heal", **TWO_WORKERS) as cluster:
        warm_up(make_connection)
        holder = holder_of(cluster)
        killed_at = time.monotonic()
        os.kill(holder, signal.SIGKILL)
        conn = make_connection(config={"total": 10, "batch": 5})
        job = engine.enqueue(conn, SyncJob.Kind.MANUAL)
        done = wait_for(lambda: succeeded(job), 30, "the job queued after the kill")
        healed_in = time.monotonic() - killed_at
        beat = wait_for(lambda: cluster_beat(cluster.pid), 10, "the cluster heartbeat")
        heals = wait_for(
            lambda: (cluster_beat(cluster.pid).info or {}).get("heals"), 10, "the heal record"
        )
        started = time.monotonic()
        cluster.send_signal(signal.SIGTERM)
        code = cluster.wait(timeout=30)
        stop_seconds = time.monotonic() - started
    print(f"\nheld lock killed -> job done in {healed_in:.1f}s; SIGTERM exit {stop_seconds:.1f}s")
    assert done.attempts == 0 and done.slices == 1  # ran once, not retried or rescued
    assert FakeRecord.objects.filter(connection=conn).count() == 10
    assert OrmQ.objects.count() == 0  # every ticket acknowledged: none comes back
    assert "task_queue._rlock left taken by dead process" in heals[-1]["reason"]
    assert beat.name.startswith("cluster:")
    assert code == 0  # stopped (stock django-q2 ignores SIGTERM here: wait() times out)


def test_killing_the_idle_monitor_does_not_make_tickets_run_again(make_connection):
    # The monitor is the only reader of the result queue, so it always holds that read lock.
    # Stock django-q2 then never saves or acknowledges a result and delivers every ticket
    # again after `retry` seconds, forever.
    with qcluster("monitor", **TWO_WORKERS) as cluster:
        warm_up(make_connection)
        wait_for(lambda: OrmQ.objects.count() == 0, 20, "the warm-up ticket's acknowledgement")
        monitor = roles(cluster.pid)["monitor"][0]
        wait_for(lambda: wchan(monitor).endswith("pipe_read"), 10, "the monitor in read()")
        os.kill(monitor, signal.SIGKILL)
        job = engine.enqueue(make_connection(), SyncJob.Kind.MANUAL)
        wait_for(lambda: succeeded(job), 30, "the job")
        wait_for(lambda: OrmQ.objects.count() == 0, 20, "the ticket to be acknowledged")
        heals = cluster_beat(cluster.pid).info.get("heals") or []
    assert any("result_queue._rlock" in heal["reason"] for heal in heals)


def test_a_cluster_whose_workers_hang_stops_looking_alive_then_heals(make_connection):
    from django.utils import timezone

    with qcluster("hang", **{**TWO_WORKERS, "SYNC_STALL_SECONDS": 16}) as cluster:
        warm_up(make_connection)
        workers = roles(cluster.pid)["idle"]
        for pid in workers:
            os.kill(pid, signal.SIGSTOP)  # alive as processes, doing nothing
        job = engine.enqueue(make_connection(), SyncJob.Kind.MANUAL)
        wait_for(
            lambda: OrmQ.objects.filter(lock__gt=timezone.now()).exists(),
            10,
            "the pusher to take the ticket into the hung queue",
        )
        time.sleep(8)  # a stall may last 5 s before the cluster stops proving it works
        frozen_beat = cluster_beat(cluster.pid).seen_at
        time.sleep(4)  # healing starts after 16 s
        assert cluster_beat(cluster.pid).seen_at == frozen_beat, "a hung cluster kept beating"
        done = wait_for(lambda: succeeded(job), 40, "the job after the cluster healed")
        wait_for(lambda: cluster_beat(cluster.pid).seen_at > frozen_beat, 10, "beats after healing")
        heals = cluster_beat(cluster.pid).info["heals"]
        for pid in workers:
            if os.path.exists(f"/proc/{pid}"):
                os.kill(pid, signal.SIGCONT)
    assert done.attempts == 0
    assert "no task started for 16s" in heals[-1]["reason"]


@pytest.mark.postgres  # several clusters share a database there; a stopped SQLite writer would
# hold the file lock and stop the healthy cluster too
def test_the_dispatcher_keeps_running_while_a_whole_cluster_is_frozen(make_connection):
    from django.utils import timezone

    with qcluster("frozen", **FAST_CLUSTER) as frozen, qcluster("healthy", **FAST_CLUSTER):
        warm_up(make_connection)
        stopped = [frozen.pid, *(pid for pids in roles(frozen.pid).values() for pid in pids)]
        for pid in stopped:
            os.kill(pid, signal.SIGSTOP)
        try:
            conn = make_connection(config={"total": 5, "batch": 5}, next_sync_at=timezone.now())
            # Due by schedule: only a dispatcher pass creates its job.
            job = wait_for(
                lambda: SyncJob.objects.filter(connection=conn, state=State.SUCCEEDED).first(),
                30,
                "the scheduled sync, dispatched and run by the healthy cluster",
            )
        finally:
            for pid in stopped:
                os.kill(pid, signal.SIGCONT)
    assert job.kind == SyncJob.Kind.INITIAL
    assert worker_status().alive


def test_a_batch_longer_than_the_lease_keeps_the_job_alive(make_connection):
    # Lease 6 s, renewed every 2 s by a thread: batches of 8 s do not get the job rescued.
    conn = make_connection(config={"total": 3, "batch": 1, "delay": 8})
    job = engine.enqueue(conn, SyncJob.Kind.MANUAL)
    slow = {"SYNC_TASK_TIMEOUT": 30, "SYNC_TASK_RETRY": 40, "SYNC_SLICE_SECONDS": 24}
    with qcluster("lease", **{**FAST_CLUSTER, **slow}):
        done = wait_for(lambda: succeeded(job), 60, "the slow job")
    assert done.attempts == 0 and done.slices == 1
    assert not SyncLog.objects.filter(job_id=job.pk, message__contains="stopped responding")
    assert WorkerHeartbeat.objects.filter(name__startswith="cluster:").exists()
