"""What every benchmark needs: a fresh database, a child process for a measured phase, test
connections, and draining a queue through a real qcluster. (The benchmarks themselves are the
other files in bench/.)"""

from __future__ import annotations

import atexit
import cProfile
import json
import os
import shutil
import socket
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
    would. Returns the job's outcome, the time taken and this process's peak memory.

    ``"warm:KIND"``: one such job first, not timed, so the timed one runs in a warm worker
    (imports done, database connection and per-process caches made), as most jobs do."""
    os.environ["DJANGO_SETTINGS_MODULE"] = "tests.settings"
    import django

    django.setup()
    from integrations.models import Connection
    from syncqueue import engine
    from syncqueue.heartbeat import prepare_worker_process
    from syncqueue.models import SyncJob

    prepare_worker_process()  # as a qcluster worker does when it starts
    conn = Connection.objects.get(pk=connection_id)
    warm, _, kind = kind.rpartition(":")
    if warm:
        engine.enqueue(conn, kind)
        while engine.process_ticket() != "nothing to claim":
            pass
    profile_to = os.environ.get("BENCH_PROFILE_PHASE") == kind and os.environ.get("BENCH_PROFILE")
    profiler = cProfile.Profile() if profile_to else None
    ready_rss = peak_rss_mb()  # the process as a worker is before its job: Django, the code
    cpu = os.times()
    start = time.perf_counter()
    if profiler:
        profiler.enable()
    if kind != "queued":
        engine.enqueue(conn, kind)
    while engine.process_ticket() != "nothing to claim":
        pass
    elapsed = time.perf_counter() - start
    used = os.times()
    if profiler and profile_to:  # BENCH_PROFILE=file BENCH_PROFILE_PHASE=kind: where time goes
        profiler.disable()
        profiler.dump_stats(profile_to)
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
        "ready_rss_mb": round(ready_rss, 1),
        # this process's CPU while it worked (all its threads), user and system
        "cpu_user_s": round(used.user - cpu.user, 2),
        "cpu_system_s": round(used.system - cpu.system, 2),
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


def scratch_var_dir(prefix: str = "syncbench-") -> str:
    """``SYNC_VAR_DIR`` for this run: the one given, or a new directory under the repository's
    ``var/`` (where the product keeps its data unless told otherwise) that is removed when the
    benchmark exits (a 100k-message run leaves gigabytes of database and attachments behind
    otherwise). Phase children inherit it and leave it alone.

    Not under ``/tmp``: on some machines creating a file there costs many times what it costs
    elsewhere on the same filesystem (on the one these figures were taken on, 0.66 s against
    0.04 s per 1,000 files), and a first sync creates a file per attachment."""
    given = os.environ.get("SYNC_VAR_DIR")
    if given:
        return given
    parent = Path(__file__).resolve().parent.parent / "var"
    parent.mkdir(exist_ok=True)
    made = os.environ["SYNC_VAR_DIR"] = tempfile.mkdtemp(prefix=prefix, dir=parent)
    atexit.register(shutil.rmtree, made, ignore_errors=True)
    return made


def setup_django() -> None:
    """Configure Django on a fresh database: SQLite in a temporary directory, or a new
    PostgreSQL database named after DATABASE_URL (dropped and recreated)."""
    scratch_var_dir()
    os.environ["DJANGO_SETTINGS_MODULE"] = "tests.settings"  # the test connector drives jobs
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    # production's threshold for live figures (tests.settings raises it for the test suite);
    # the children this process starts inherit it
    os.environ.setdefault("SYNC_LIVE_FIGURE_MS", "10")
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


def latency_figures(seconds: list[float]) -> dict[str, float | None]:
    """p50, p95 and max of latencies in seconds (None when nothing arrived)."""
    if not seconds:
        return {"latency_p50_s": None, "latency_p95_s": None, "latency_max_s": None}
    return {
        "latency_p50_s": round(statistics.median(seconds), 3),
        "latency_p95_s": round(percentile(seconds, 95), 3),
        "latency_max_s": round(max(seconds), 3),
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def gunicorn_command(port: int, workers: int, threads: int) -> list[str]:
    """The web server as ``make run`` starts it, on 127.0.0.1:``port``."""
    return [
        sys.executable,
        "-m",
        "gunicorn",
        "syncproject.wsgi",
        "--bind",
        f"127.0.0.1:{port}",
        "--workers",
        str(workers),
        "--threads",
        str(threads),
        "--log-level",
        "warning",
    ]


def graph_connection(graph: Any, upn: str, **fields: Any) -> Any:
    """A saved Graph connection to mailbox ``upn`` of the local Graph server ``graph``
    (``fields``: the connection's other fields; ``page_size`` goes into its settings)."""
    from integrations.models import Connection
    from sandbox.graph import CLIENT_ID, CLIENT_SECRET

    config = {
        "tenant_id": graph.tenant,
        "client_id": CLIENT_ID,
        "mailbox": upn,
        "authority_host": graph.url,
        "graph_url": graph.url,
    }
    if "page_size" in fields:
        config["page_size"] = fields.pop("page_size")
    conn = Connection(kind="msgraph", name=upn, config=config, **fields)
    conn.set_secrets({"client_secret": CLIENT_SECRET})
    conn.save()
    return conn


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


def drain(
    cluster_env: dict[str, Any], done: Any, total: int, what: str, stock: bool = False
) -> float:
    """Start a qcluster, return items/s measured from the first to the last completion."""
    from tests.support.processes import qcluster

    with qcluster(f"bench-{what}", stock=stock, **cluster_env):
        first_at: float | None = None
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
    assert first_at is not None, f"{what}: nothing completed"
    elapsed = max(now - first_at, 1e-6)
    return (total - first_count) / elapsed
