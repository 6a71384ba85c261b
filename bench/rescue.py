"""Rescue latency on production settings. Prints one JSON object.

    python bench/rescue.py [--kills 10] [--cluster-kills 2]

Two real ``manage.py qcluster`` processes with the shipped defaults (``SYNC_LEASE_SECONDS`` 30,
renewed every 10 s by a thread; each cluster's dispatcher rescues every 10 s; 2 workers each)
run long syncs. The benchmark SIGKILLs the worker running a sync (and, ``--cluster-kills``
times, a whole cluster's process group, restarting it 5 s later as a supervisor would) and
measures the time from the kill to that sync running again on another worker: the rescue
latency a user of a production install sees. Target: median <= 60 s, max <= 90 s.

The database is a fresh SQLite file (or DATABASE_URL: a fresh PostgreSQL database).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import statistics
import sys
import time
from contextlib import ExitStack
from functools import partial
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.harness import setup_django  # noqa: E402


def busy_jobs() -> list[Any]:
    from syncqueue.models import SyncJob

    return list(SyncJob.objects.filter(state=SyncJob.State.RUNNING).exclude(worker_id=""))


def rescued(job_id: int, old_worker: str) -> bool:
    from syncqueue.models import SyncJob

    job = SyncJob.objects.get(pk=job_id)
    return job.state == SyncJob.State.RUNNING and job.worker_id not in ("", old_worker)


def bench(kills: int, cluster_kills: int, seed: int) -> dict[str, Any]:
    from django.conf import settings
    from django.db import connection

    from syncqueue import engine
    from syncqueue.models import SyncJob
    from tests.support.processes import descendants, qcluster, wait_for

    rng = random.Random(seed)
    conns = make_long_connections(4)
    for conn in conns:
        engine.enqueue(conn, SyncJob.Kind.MANUAL)
    # everything else (but SYNC_MAX_ATTEMPTS): shipped defaults
    env: dict[str, Any] = {"LOG_LEVEL": "WARNING"}
    worker_latencies: list[float] = []
    cluster_latencies: list[float] = []
    with ExitStack() as stack:
        clusters = {
            name: stack.enter_context(qcluster(f"rescue-{name}", **env)) for name in ("a", "b")
        }
        generation = 0
        plan = ["worker"] * kills + ["cluster"] * cluster_kills
        rng.shuffle(plan)
        for what in plan:
            jobs = wait_for(
                lambda: busy_jobs() if len(busy_jobs()) >= 2 else None, 120, "busy jobs"
            )
            time.sleep(rng.uniform(0, 10))  # kill at a random point between lease renewals
            jobs = busy_jobs()
            if what == "worker":
                job = rng.choice(jobs)
                os.kill(int(job.worker_id.rsplit(":", 1)[1]), signal.SIGKILL)
                killed_at = time.monotonic()
                victims = [job]
            else:
                name = rng.choice(sorted(clusters))
                main = clusters[name]
                pids = {str(p) for p in descendants(main.pid)}
                victims = [j for j in jobs if j.worker_id.rsplit(":", 1)[1] in pids]
                os.killpg(main.pid, signal.SIGKILL)
                main.wait()
                killed_at = time.monotonic()
                time.sleep(5)  # its supervisor restarts it (systemd's RestartSec=5)
                generation += 1
                clusters[name] = stack.enter_context(qcluster(f"rescue-{name}-{generation}", **env))
            for job in victims:
                wait_for(partial(rescued, job.pk, job.worker_id), 300, f"job {job.pk} to run again")
                latency = time.monotonic() - killed_at
                (worker_latencies if what == "worker" else cluster_latencies).append(latency)
    every = worker_latencies + cluster_latencies
    return {
        "benchmark": "rescue",
        "database": connection.vendor,
        "settings": {
            "SYNC_LEASE_SECONDS": settings.SYNC_LEASE_SECONDS,
            "SYNC_LEASE_RENEW_SECONDS": settings.SYNC_LEASE_RENEW_SECONDS,
            "SYNC_RESCUE_INTERVAL": settings.SYNC_RESCUE_INTERVAL,
            "SYNC_TASK_TIMEOUT": settings.SYNC_TASK_TIMEOUT,
            "SYNC_WORKERS": settings.SYNC_WORKERS,
            "SYNC_MAX_ATTEMPTS": settings.SYNC_MAX_ATTEMPTS,
        },
        "worker_kills": len(worker_latencies),
        "cluster_kills": cluster_kills,
        "rescues": len(every),
        "median_s": round(statistics.median(every), 1),
        "max_s": round(max(every), 1),
        "worker_kill_median_s": round(statistics.median(worker_latencies), 1)
        if worker_latencies
        else None,
        "cluster_kill_median_s": round(statistics.median(cluster_latencies), 1)
        if cluster_latencies
        else None,
        "target_median_s": 60,
        "target_max_s": 90,
    }


def make_long_connections(count: int) -> list[Any]:
    """Syncs that run for an hour: 7200 items, one per half second, a batch each."""
    from integrations.models import Connection

    conns = []
    for i in range(count):
        conn = Connection(
            kind="fake", name=f"long {i}", config={"total": 7200, "batch": 1, "delay": 0.5}
        )
        conn.set_secrets({"password": "bench-password"})
        conn.save()
        conns.append(conn)
    return conns


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=10, help="busy workers killed")
    parser.add_argument("--cluster-kills", type=int, default=2, help="whole clusters killed")
    parser.add_argument("--seed", type=int, default=5)
    args = parser.parse_args()
    # Production defaults, except that these syncs are killed over and over on purpose: they
    # must not run out of attempts (a real sync gives up after SYNC_MAX_ATTEMPTS kills).
    os.environ.setdefault("SYNC_MAX_ATTEMPTS", "1000")
    setup_django()
    print(json.dumps(bench(args.kills, args.cluster_kills, args.seed)))


if __name__ == "__main__":
    main()
