"""Engine benchmarks. Each prints one JSON object.

    python bench/engine.py enqueue [--calls 1000]
    python bench/engine.py dispatch [--connections 10000] [--due 0.1]
    python bench/engine.py throughput [--jobs 2000]

A fresh SQLite database is created in a temporary directory for each run (set DATABASE_URL to
measure PostgreSQL instead: the database is created/migrated there). Workers for ``throughput``
are real ``manage.py qcluster`` processes started and stopped by the benchmark.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def peak_rss_mb() -> float:
    """This process's peak resident memory since it started its program (VmHWM; unlike
    ``ru_maxrss`` it does not include the parent's memory from before ``exec``)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def run_job_phase(kind: str, connection_id: int) -> dict[str, Any]:
    """In a ``--phase`` child: queue one job of ``kind`` on the connection (``"queued"``: run
    what is already queued) and work until nothing is claimable, as a fresh worker process
    would. Returns the job's outcome, the time taken and this process's peak memory."""
    os.environ["DJANGO_SETTINGS_MODULE"] = "tests.settings"
    import django

    django.setup()
    from integrations.models import Connection
    from syncqueue import engine
    from syncqueue.heartbeat import prepare_worker_process
    from syncqueue.models import SyncJob

    prepare_worker_process()  # as a qcluster worker does when it starts
    conn = Connection.objects.get(pk=connection_id)
    start = time.perf_counter()
    if kind != "queued":
        engine.enqueue(conn, kind)
    while engine.process_ticket() != "nothing to claim":
        pass
    elapsed = time.perf_counter() - start
    job = SyncJob.objects.filter(connection=conn).order_by("-id").first()
    assert job is not None
    return {
        "state": job.state,
        "error": job.error_message,
        "seconds": elapsed,
        "done": job.progress_done,
        "created": job.created_count,
        "slices": job.slices,
        "peak_rss_mb": peak_rss_mb(),
        "finished": job.state == SyncJob.State.SUCCEEDED,
    }


def job_phase_child(
    script: str, kind: str, connection_id: int, env: dict[str, str] | None = None
) -> dict[str, Any]:
    """Run ``run_job_phase`` through ``script --phase KIND --connection ID`` in a new process."""
    return run_phase_child(script, kind, "--connection", str(connection_id), env=env)


def run_phase_child(script: str, *args: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run ``script --phase ARGS`` in a fresh process (as a worker would start) and return the
    JSON object its last output line holds; exits when the phase reports it did not finish."""
    out = subprocess.run(
        [sys.executable, script, "--phase", *args],
        check=True,
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    if not result.get("finished", True) or result.get("unfinished"):
        raise SystemExit(f"{' '.join(args) or 'phase'} did not succeed: {result}")
    return result


def setup_django() -> None:
    """Configure Django on a fresh database: SQLite in a temporary directory, or a new
    PostgreSQL database named after DATABASE_URL (dropped and recreated)."""
    os.environ.setdefault("SYNC_VAR_DIR", tempfile.mkdtemp(prefix="syncbench-"))
    os.environ["DJANGO_SETTINGS_MODULE"] = "tests.settings"  # the test connector drives jobs
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection

    if connection.vendor == "postgresql":
        fresh_postgres_database(connection.settings_dict)
    call_command("migrate", verbosity=0)


def fresh_postgres_database(conf: dict[str, Any]) -> None:
    import psycopg
    from psycopg import sql

    with psycopg.connect(
        host=conf["HOST"],
        port=conf["PORT"],
        user=conf["USER"],
        password=conf["PASSWORD"] or None,
        dbname="postgres",
        autocommit=True,
    ) as admin:
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(conf["NAME"])))
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(conf["NAME"])))


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(pct / 100 * (len(ordered) - 1)))]


def make_connections(count: int, total: int = 1, **fields: Any) -> list[Any]:
    """``count`` connections of the test kind whose remote side has ``total`` items."""
    from integrations.models import Connection

    template = Connection(kind="fake", name="bench", config={"total": total, "batch": 1})
    template.set_secrets({"password": "bench-password"})
    conns = [
        Connection(
            kind="fake", name=f"bench {i}", config=template.config, secret=template.secret, **fields
        )
        for i in range(count)
    ]
    Connection.objects.bulk_create(conns, batch_size=1000)
    return list(Connection.objects.order_by("id"))


def bench_enqueue(calls: int) -> dict[str, Any]:
    from django.db import connection

    from syncqueue import engine
    from syncqueue.models import SyncJob

    conns = make_connections(calls)
    new, again = [], []
    for conn in conns:
        start = time.perf_counter()
        engine.enqueue(conn, SyncJob.Kind.MANUAL)
        new.append((time.perf_counter() - start) * 1000)
    for conn in conns[: min(calls, 200)]:
        start = time.perf_counter()
        engine.enqueue(conn, SyncJob.Kind.MANUAL)  # coalesces with the waiting job
        again.append((time.perf_counter() - start) * 1000)
    return {
        "benchmark": "enqueue",
        "database": connection.vendor,
        "calls": calls,
        "p50_ms": round(statistics.median(new), 3),
        "p99_ms": round(percentile(new, 99), 3),
        "max_ms": round(max(new), 3),
        "coalesced_p50_ms": round(statistics.median(again), 3),
        "coalesced_p99_ms": round(percentile(again, 99), 3),
        "target_p99_ms": 5,
    }


def bench_dispatch(connections: int, due_fraction: float) -> dict[str, Any]:
    from datetime import timedelta

    from django.db import connection
    from django.utils import timezone

    from integrations.models import Connection
    from syncqueue.dispatcher import dispatch
    from syncqueue.models import SyncJob

    now = timezone.now()
    make_connections(connections, schedule="every 15m", next_sync_at=now + timedelta(hours=1))
    due_ids = list(
        Connection.objects.values_list("id", flat=True)[: int(connections * due_fraction)]
    )
    Connection.objects.filter(id__in=due_ids).update(next_sync_at=now - timedelta(minutes=1))
    start = time.perf_counter()
    report = dispatch()
    first = time.perf_counter() - start
    start = time.perf_counter()
    dispatch()
    idle = time.perf_counter() - start
    return {
        "benchmark": "dispatch",
        "database": connection.vendor,
        "connections": connections,
        "due": len(due_ids),
        "enqueued": report.enqueued,
        "jobs_created": SyncJob.objects.count(),
        "pass_s": round(first, 3),
        "idle_pass_s": round(idle, 3),
        "target_pass_s": 1.0,
    }


def _drain(
    cluster_env: dict[str, Any], done: Any, total: int, what: str, stock: bool = False
) -> float:
    """Start a qcluster, return items/s measured from the first to the last completion."""
    from tests.support.processes import qcluster

    with qcluster(f"bench-{what}", stock=stock, **cluster_env):
        first_at = None
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            count = done()
            now = time.perf_counter()
            if count and first_at is None:
                first_at, first_count = now, count
            if count >= total:
                break
            time.sleep(0.02)
        else:
            raise SystemExit(f"{what}: timed out with {done()} of {total} done")
    elapsed = max(now - first_at, 1e-6)
    return (total - first_count) / elapsed


def bench_throughput(jobs: int) -> dict[str, Any]:
    from django.db import connection
    from django_q.models import OrmQ
    from django_q.tasks import async_task

    from syncqueue import engine
    from syncqueue.models import SyncJob

    env = {"LOG_LEVEL": "WARNING"}
    # bare django-q2: trivial tasks, same cluster settings, django-q2's own cluster
    for i in range(jobs):
        async_task("bench.tasks.noop", i)
    bare = _drain(env, lambda: jobs - OrmQ.objects.count(), jobs, "bare", stock=True)
    # the same through our qcluster, which fetches a ticket only for a free worker (no
    # prefetching: a busy cluster must not sit on tickets another cluster could run)
    for i in range(jobs):
        async_task("bench.tasks.noop", i)
    gated = _drain(env, lambda: jobs - OrmQ.objects.count(), jobs, "bare-gated")

    # A trivial job: a sync that finds nothing new, so the figure is the engine's own cost
    # (claim, connector set-up, commit of success and log) and not the test connector's writes.
    for conn in make_connections(jobs, total=0):
        engine.enqueue(conn, SyncJob.Kind.MANUAL)
    ours = _drain(
        env,
        lambda: SyncJob.objects.filter(state=SyncJob.State.SUCCEEDED).count(),
        jobs,
        "engine",
    )
    failed = SyncJob.objects.exclude(state=SyncJob.State.SUCCEEDED).count()
    return {
        "benchmark": "throughput",
        "database": connection.vendor,
        "jobs": jobs,
        "job": "sync with nothing new (connector yields no batch)",
        "engine_jobs_per_s": round(ours, 1),
        "bare_django_q2_tasks_per_s": round(bare, 1),
        "bare_tasks_through_our_qcluster_per_s": round(gated, 1),
        "ratio": round(ours / bare, 3),
        "not_succeeded": failed,
        "target_ratio": 0.5,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="what", required=True)
    sub.add_parser("enqueue").add_argument("--calls", type=int, default=1000)
    dispatch_parser = sub.add_parser("dispatch")
    dispatch_parser.add_argument("--connections", type=int, default=10000)
    dispatch_parser.add_argument("--due", type=float, default=0.1)
    sub.add_parser("throughput").add_argument("--jobs", type=int, default=2000)
    args = parser.parse_args()
    setup_django()
    if args.what == "enqueue":
        result = bench_enqueue(args.calls)
    elif args.what == "dispatch":
        result = bench_dispatch(args.connections, args.due)
    else:
        result = bench_throughput(args.jobs)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
