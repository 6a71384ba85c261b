"""Two qcluster processes on PostgreSQL and the dispatcher under load: 1,000 connections coming
due over 20 seconds, random failures (retried, rate limited, permanent), and one cluster killed
with SIGKILL mid-run and started again. Every due sync runs, exactly once, never two at once
for one connection, and nothing is lost or written twice.

The figures (jobs/s, freshness lag) are written to ``test-output/load-two-clusters.json``; they
are measurements for the notes, not assertions. ``LOAD_CONNECTIONS`` and ``LOAD_SPREAD``
(seconds) change the size and the arrival.
"""

from __future__ import annotations

import itertools
import json
import os
import random
import signal
import statistics
import time
from datetime import timedelta

import pytest
from django.db.models import Count, Max, Min
from django.utils import timezone

from integrations.models import Connection
from syncqueue import dispatcher
from syncqueue.models import SyncJob
from tests.support.cluster import FAST_CLUSTER
from tests.support.models import FakeRecord, FaultHit, RunSpan
from tests.support.processes import descendants, output_dir, qcluster, wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.process, pytest.mark.postgres]
State = SyncJob.State
CONNECTIONS = int(os.environ.get("LOAD_CONNECTIONS", "1000"))
SPREAD = float(os.environ.get("LOAD_SPREAD", "20"))  # seconds over which they come due
WORKERS = {**FAST_CLUSTER, "SYNC_WORKERS": 2}


def make_connections(owner) -> dict[int, str]:
    """The connections and what each is planned to meet: ok, transient, ratelimited, permanent."""
    rng = random.Random(20261123)
    plans: dict[int, str] = {}
    start = timezone.now() + timedelta(seconds=3)
    rows = []
    for n in range(CONNECTIONS):
        plan = rng.choices(
            ["ok", "transient", "ratelimited", "permanent"], weights=[85, 9, 3, 3], k=1
        )[0]
        faults = {
            "ok": [],
            "transient": [{"at": rng.choice([0, 2]), "error": "transient", "times": 1}],
            "ratelimited": [{"at": 0, "error": "ratelimited", "times": 1, "retry_after": 1}],
            "permanent": [{"at": 0, "error": "permanent", "times": 99}],
        }[plan]
        conn = Connection(
            kind="fake",
            name=f"load-{n}",
            owner=owner,
            config={"total": 4, "batch": 2, "delay": 0.02, "track_runs": True, "faults": faults},
            schedule="every 1h",
        )
        conn.set_secrets({"password": f"pw-{n}"})
        conn.next_sync_at = start + timedelta(seconds=rng.uniform(0, SPREAD))
        rows.append((conn, plan))
    Connection.objects.bulk_create([conn for conn, _ in rows], batch_size=500)
    by_name = {conn.name: plan for conn, plan in rows}
    for pk, name in Connection.objects.filter(name__in=by_name).values_list("pk", "name"):
        plans[pk] = by_name[name]
    return plans


def all_done(due: dict[int, float]) -> bool:
    dispatcher.dispatch()  # what each cluster's schedule does every minute, here every pass
    if SyncJob.objects.exclude(state__in=SyncJob.FINISHED).exists():
        return False
    return SyncJob.objects.values("connection").distinct().count() == len(due)


def test_two_clusters_and_the_dispatcher_under_load(owner):
    plans = make_connections(owner)
    due = {
        pk: at.timestamp()
        for pk, at in Connection.objects.filter(pk__in=plans).values_list("pk", "next_sync_at")
    }
    first_due = min(due.values())
    killed_at = None
    with qcluster("load-b", **WORKERS) as b:
        with qcluster("load-a", **WORKERS) as a:
            wait_for(
                lambda: (
                    dispatcher.dispatch()
                    and SyncJob.objects.filter(state=State.SUCCEEDED).count() >= CONNECTIONS // 3
                ),
                240,
                "a third of the syncs",
                every=0.5,
            )
            killed_pids = descendants(a.pid) | {a.pid}
            wait_for(
                lambda: RunSpan.objects.filter(ended__isnull=True, pid__in=killed_pids).exists(),
                30,
                "cluster a to be in the middle of a sync",
                every=0.01,
            )
            os.killpg(a.pid, signal.SIGKILL)  # cluster a dies mid-run, leases and all
            killed_at = time.time()
        time.sleep(2)
        with qcluster("load-a2", **WORKERS) as a2:  # and is started again
            wait_for(lambda: all_done(due), 300, "every due sync to finish", every=0.5)
            pids = {"b": descendants(b.pid), "a2": descendants(a2.pid)}

    jobs = list(
        SyncJob.objects.filter(connection__in=plans).values(
            "connection_id", "state", "error_class", "started_at", "finished_at", "attempts"
        )
    )
    # exactly one job per due connection: the dispatcher never queued one twice
    per_connection = SyncJob.objects.values("connection").annotate(n=Count("id"))
    assert {row["n"] for row in per_connection} == {1}
    assert len(jobs) == CONNECTIONS
    for job in jobs:
        plan = plans[job["connection_id"]]
        if plan == "permanent":
            assert (job["state"], job["error_class"]) == (State.FAILED, "Permanent")
        else:
            assert job["state"] == State.SUCCEEDED, (plan, job)

    # nothing lost, nothing written twice
    records = FakeRecord.objects.filter(connection__in=plans).values("connection")
    counts = records.annotate(n=Count("id"), most=Max("writes"))
    synced = [pk for pk, plan in plans.items() if plan != "permanent"]
    assert {row["connection"]: row["n"] for row in counts} == dict.fromkeys(synced, 4)
    assert max(row["most"] for row in counts) == 1

    # never two runs of one connection at once (a killed run ended when its process died)
    spans = RunSpan.objects.filter(connection__in=plans).order_by("connection_id", "started")
    unfinished = [s for s in spans if s.ended is None]
    assert all(s.pid in killed_pids for s in unfinished)
    for _, group in itertools.groupby(spans, key=lambda s: s.connection_id):
        for earlier, later in itertools.pairwise(group):
            assert (earlier.ended or killed_at) <= later.started, "overlapping runs"
    worked = set(RunSpan.objects.values_list("pid", flat=True))
    assert worked & pids["b"] and worked & pids["a2"] and worked & killed_pids

    finished = {
        job["connection_id"]: job["finished_at"].timestamp()
        for job in jobs
        if job["state"] == State.SUCCEEDED
    }
    lags = sorted(finished[pk] - due[pk] for pk in finished)
    ends = SyncJob.objects.filter(connection__in=plans).aggregate(
        first=Min("started_at"), last=Max("finished_at")
    )
    elapsed = ends["last"].timestamp() - first_due
    figures = {
        "connections": CONNECTIONS,
        "jobs": len(jobs),
        "failed_permanent": sum(1 for p in plans.values() if p == "permanent"),
        "retried_after_a_fault": FaultHit.objects.filter(connection__in=synced).count(),
        "killed_mid_run": len(unfinished),
        "elapsed_s": round(elapsed, 1),
        "jobs_per_s": round(len(jobs) / elapsed, 1),
        "freshness_lag_s": {
            "p50": round(statistics.median(lags), 2),
            "p95": round(lags[int(len(lags) * 0.95)], 2),
            "worst": round(lags[-1], 2),
        },
    }
    (output_dir() / "load-two-clusters.json").write_text(json.dumps(figures, indent=2) + "\n")
    print(json.dumps(figures))
