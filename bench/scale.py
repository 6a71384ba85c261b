"""Per-connection costs at scale, on PostgreSQL. Prints one JSON object.

    scripts/with-postgres .venv/bin/python bench/scale.py [--connections 100000] [--jobs 10000000]

Builds the history of a large installation directly in SQL (connections of the test kind, and
finished jobs spread over the last seven days, mostly succeeded), then measures what must not
grow with it:

- ``queue_stats`` (the numbers behind /healthz, the dashboard and "Sync now"), /healthz with
  details, the failure dashboard and "Sync now" — server-side p50/p99 over repeated calls;
- a dispatcher pass with a share of the connections due, and the due-per-second it sustains;
- retention: finding and deleting expired history;
- the HOT-update ratio of SyncJob after 10,000 jobs ran, and table/index sizes.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.harness import percentile, setup_django  # noqa: E402


def timed(call: Any, times: int) -> dict[str, float]:
    took = []
    for _ in range(times):
        start = time.perf_counter()
        call()
        took.append((time.perf_counter() - start) * 1000)
    return {
        "p50_ms": round(statistics.median(took), 2),
        "p99_ms": round(percentile(took, 99), 2),
        "max_ms": round(max(took), 2),
    }


def sql_of(call: Any, times: int) -> dict[str, Any]:
    """Statements per call and the time the database took for them (median), and the
    slowest statement seen: how much of a page's time is SQL, and which query it is."""
    from django.db import connection

    took: list[tuple[float, str]] = []

    def timing(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        start = time.perf_counter()
        try:
            return execute(sql, params, many, context)
        finally:
            took.append((time.perf_counter() - start, sql))

    counts, seconds, slowest = [], [], (0.0, "")
    for _ in range(times):
        took.clear()
        with connection.execute_wrapper(timing):
            call()
        counts.append(len(took))
        seconds.append(sum(t for t, _ in took))
        slowest = max([slowest, *took])
    return {
        "statements": statistics.median(counts),
        "sql_p50_ms": round(statistics.median(seconds) * 1000, 2),
        "slowest_ms": round(slowest[0] * 1000, 2),
        "slowest": " ".join(slowest[1].split())[:160],
    }


def build_history(connections: int, jobs: int) -> dict[str, float]:
    from django.db import connection

    from integrations.models import Connection

    template = Connection(kind="fake", name="t", config={"total": 0})
    template.set_secrets({"password": "bench-password"})
    started = time.perf_counter()
    with connection.cursor() as cursor:
        cursor.execute(
            """
            INSERT INTO integrations_connection
                (kind, name, config, secret, cursor, enabled, disabled_reason, disabled_by_staff,
                 schedule, scheduled, status, last_error, consecutive_failures, skipped_items,
                 next_sync_at, created_at, updated_at)
            SELECT 'fake', 'bench ' || g, '{"total": 0}'::jsonb, %s, '{}'::jsonb, true, '', false,
                   'every 15m', true, 'ok', '', 0, 0,
                   now() + (g %% 900) * interval '1 second', now() - interval '8 days', now()
            FROM generate_series(1, %s) g
            """,
            [template.secret, connections],
        )
        cursor.execute("SELECT min(id), max(id) FROM integrations_connection")
        low, high = cursor.fetchone()
        cursor.execute(
            """
            INSERT INTO syncqueue_syncjob
                (connection_id, kind, dedupe_key, priority, state, attempts, max_attempts,
                 run_after, worker_id, slices, cancel_requested, progress_done,
                 created_count, updated_count, deleted_count, unchanged_count, skipped_items,
                 error_class, error_message, error_detail, payload, checkpoint, position,
                 created_at, started_at, finished_at, updated_at)
            SELECT %s + (g %% %s), 'incremental', 'sync', 10,
                   CASE WHEN g %% 50 = 0 THEN 'failed' ELSE 'succeeded' END, 0, 5,
                   t, '', 1, false, 0, 0, 0, 0, 0, 0,
                   CASE WHEN g %% 50 = 0 THEN 'Transient' ELSE '' END,
                   CASE WHEN g %% 50 = 0 THEN 'The server did not answer.' ELSE '' END,
                   '', '{}'::jsonb, '{}'::jsonb, '', t, t, t + interval '2 seconds', t
            FROM (SELECT g, now() - (g::float / %s) * interval '7 days' AS t
                  FROM generate_series(1, %s) g) s
            """,
            [low, high - low + 1, jobs, jobs],
        )
        cursor.execute("ANALYZE")
    return {"build_seconds": round(time.perf_counter() - started, 1)}


def measure_pages() -> dict[str, Any]:
    from django.contrib.auth import get_user_model
    from django.core.cache import cache
    from django.test import Client

    from integrations.models import Connection
    from syncqueue import stats
    from syncqueue.models import WorkerHeartbeat

    WorkerHeartbeat.objects.create(
        name="cluster:bench:1", seen_at=__import__("django").utils.timezone.now()
    )
    for name in ("outcomes-24h", "failure-groups", "hourly-outcomes", "failing-connections"):
        cache.delete(stats._key(name))
    first = time.perf_counter()
    stats.queue_stats()  # the first call counts the day (as the dispatcher does each pass)
    first_ms = (time.perf_counter() - first) * 1000
    staff = get_user_model().objects.create_superuser("bench", "b@x.test", "pw")
    client = Client(HTTP_HOST="localhost")
    client.force_login(staff)
    targets = iter(list(Connection.objects.order_by("id").values_list("pk", flat=True)[:100]))

    def healthz() -> None:
        assert client.get("/healthz").status_code in (200, 503)

    def dashboard() -> None:
        assert client.get("/admin/dashboard/").status_code == 200

    def sync_now() -> None:  # a new job each time (a different connection)
        answer = client.post(f"/api/connections/{next(targets)}/sync")
        assert answer.status_code == 202, answer.content

    cold = time.perf_counter()
    dashboard()  # computes its figures over history (then the dispatcher keeps them)
    cold_ms = (time.perf_counter() - cold) * 1000
    # a figure is served from the dispatcher's refresh once it was slow twice running
    # (stats._expensive): the second view counts again, the later ones do not
    stats.queue_stats()
    dashboard()
    return {
        "queue_stats_first_call_ms": round(first_ms, 1),
        "dashboard_first_call_ms": round(cold_ms, 1),
        "queue_stats": timed(stats.queue_stats, 50),
        "healthz_detailed": timed(healthz, 50),
        "dashboard": timed(dashboard, 20),
        "dashboard_sql": sql_of(dashboard, 5),
        "sync_now_api": timed(sync_now, 50),
    }


def measure_dispatch(due: int) -> dict[str, Any]:
    from django.db import connection
    from django.utils import timezone

    from syncqueue import dispatcher, stats

    with connection.cursor() as cursor:  # nothing due but ``due`` connections, due now
        cursor.execute("UPDATE integrations_connection SET next_sync_at = now() + interval '1 day'")
        cursor.execute(
            "UPDATE integrations_connection SET next_sync_at = now() - interval '1 second' "
            "WHERE id IN (SELECT id FROM integrations_connection ORDER BY id DESC LIMIT %s)",
            [due],
        )
    start = time.perf_counter()
    report = dispatcher.dispatch()
    took = time.perf_counter() - start
    start = time.perf_counter()
    idle = dispatcher.dispatch()  # nothing due any more: cost of the not-due ones
    idle_took = time.perf_counter() - start
    # of which: what every cluster runs each tick (rescues and due syncs), and the dashboard's
    # figures recounted over history, which the full pass (once per interval) adds
    start = time.perf_counter()
    dispatcher.rescue_expired(timezone.now())
    dispatcher.enqueue_due(timezone.now())
    tick_took = time.perf_counter() - start
    start = time.perf_counter()
    for name, compute in list(stats.ROLLUPS.items()):  # as a pass does when they are due
        stats.rollup(name, compute, refresh=True)
    figures_took = time.perf_counter() - start
    return {
        "due": due,
        "enqueued": report.enqueued,
        "pass_seconds": round(took, 2),
        "due_per_second": round(report.enqueued / took, 1) if took else None,
        "idle_pass_ms": round(idle_took * 1000, 1),
        "idle_tick_ms": round(tick_took * 1000, 1),
        "figures_recount_ms": round(figures_took * 1000, 1),
        "idle_enqueued": idle.enqueued,
    }


def measure_retention() -> dict[str, Any]:
    from django.conf import settings
    from django.utils import timezone

    from syncqueue import retention

    settings.SYNC_KEEP_SUCCEEDED_DAYS = 3  # so a share of the seven days expires
    start = time.perf_counter()
    expired = len(retention.expired_job_ids(timezone.now()))
    find = time.perf_counter() - start
    return {"expired_jobs": expired, "find_seconds": round(find, 2)}


def run_jobs(count: int) -> dict[str, Any]:
    """``count`` small jobs (four batches each) through the engine in this process."""
    from django.db import connection

    from integrations.models import Connection
    from syncqueue import engine
    from syncqueue.models import SyncJob

    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_stat_reset_single_table_counters('syncqueue_syncjob'::regclass)")
    SyncJob.objects.filter(state__in=SyncJob.WAITING).update(state="cancelled")  # ours only
    ids = list(Connection.objects.order_by("id").values_list("pk", flat=True)[100 : 100 + count])
    # four batches each (test connector): batch commits and lease renewals, not only claims
    Connection.objects.filter(pk__in=ids).update(config={"total": 20, "batch": 5})
    start = time.perf_counter()
    for conn in Connection.objects.filter(pk__in=ids):
        engine.enqueue(conn, SyncJob.Kind.MANUAL)
    enqueued = time.perf_counter() - start
    start = time.perf_counter()
    while engine.process_ticket() != "nothing to claim":
        pass
    ran = time.perf_counter() - start
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_stat_force_next_flush()")
    time.sleep(1.5)
    return {
        "jobs": len(ids),
        "enqueue_per_s": round(len(ids) / enqueued, 1),
        "run_per_s_one_process": round(len(ids) / ran, 1),
    }


def sizes() -> dict[str, Any]:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pg_size_pretty(pg_table_size('syncqueue_syncjob')), "
            "pg_size_pretty(pg_indexes_size('syncqueue_syncjob')), "
            "(SELECT count(*) FROM syncqueue_syncjob)"
        )
        table, indexes, rows = cursor.fetchone()
        cursor.execute(
            "SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables "
            "WHERE relname = 'syncqueue_syncjob'"
        )
        updated, hot = cursor.fetchone()
    return {
        "syncjob_rows": rows,
        "syncjob_table": table,
        "syncjob_indexes": indexes,
        "syncjob_updates": updated,
        "hot_update_ratio": round(hot / updated, 3) if updated else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--connections", type=int, default=100_000)
    parser.add_argument("--jobs", type=int, default=10_000_000)
    parser.add_argument("--due", type=int, default=6_700, help="connections due in one pass")
    parser.add_argument("--run-jobs", type=int, default=10_000, help="jobs run for the HOT ratio")
    args = parser.parse_args()
    os.environ.setdefault("SYNC_RATE_SYNC_NOW", "100000/m")  # measure the work, not the limiter
    os.environ.setdefault("EMAIL_BACKEND", "django.core.mail.backends.locmem.EmailBackend")
    setup_django()
    from django.db import connection

    if connection.vendor != "postgresql":
        raise SystemExit("bench/scale.py measures PostgreSQL: run it under scripts/with-postgres")
    result: dict[str, Any] = {
        "benchmark": "scale",
        "database": connection.vendor,
        "connections": args.connections,
        "historical_jobs": args.jobs,
    }
    result.update(build_history(args.connections, args.jobs))
    result["pages"] = measure_pages()
    result["dispatch"] = measure_dispatch(args.due)
    result["retention"] = measure_retention()
    result["engine"] = run_jobs(args.run_jobs)
    result["sizes"] = sizes()
    result["target_p99_ms"] = 50
    print(json.dumps(result))


if __name__ == "__main__":
    main()
