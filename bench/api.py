"""Latency of the sync-trigger endpoint under concurrent clients. Prints one JSON object.

    python bench/api.py [--clients 20] [--requests 50]

Starts gunicorn (as ``make run`` does) on a fresh SQLite database (or DATABASE_URL), signs in
one user per client, and has every client press "Sync now" (``POST /api/connections/<id>/sync``
with session + CSRF) on its own connections in turn, so each request queues a new job — the
heavier path; a repeated click on a waiting job is cheaper. No worker runs: the figure is the
web request, which must answer at once whatever the queue holds. ``server_*`` is the time Django
took (its Server-Timing header); ``client_*`` adds waiting in gunicorn's queue and in the
benchmark's own 20 threads, which share the machine's cores with the server.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def prepare(clients: int, per_client: int) -> list[tuple[str, list[int]]]:
    from bench.harness import setup_django

    setup_django()
    from django.contrib.auth import get_user_model

    from integrations.models import Connection

    accounts = []
    for index in range(clients):
        user = get_user_model().objects.create_user(f"bench{index}", password="bench-pass-1")
        template = Connection(
            kind="imap",
            name="x",
            owner=user,
            config={"host": "imap.example.invalid", "username": "u"},
        )
        template.set_secrets({"password": "not-used"})
        rows = [
            Connection(
                kind="imap",
                name=f"mail {i}",
                owner=user,
                config=template.config,
                secret=template.secret,
            )
            for i in range(per_client)
        ]
        Connection.objects.bulk_create(rows)
        ids = list(Connection.objects.filter(owner=user).values_list("id", flat=True))
        accounts.append((user.username, ids))
    return accounts


def client_run(
    base: str,
    username: str,
    ids: list[int],
    results: list[float],
    server: list[float],
    errors: list[str],
    start: threading.Barrier,
) -> None:
    session = requests.Session()
    page = session.get(f"{base}/accounts/login/", timeout=30)
    page.raise_for_status()
    session.post(
        f"{base}/accounts/login/",
        data={
            "username": username,
            "password": "bench-pass-1",
            "csrfmiddlewaretoken": session.cookies["csrftoken"],
        },
        timeout=30,
    ).raise_for_status()
    token = session.cookies["csrftoken"]
    start.wait()
    for connection_id in ids:
        began = time.perf_counter()
        try:
            response = session.post(
                f"{base}/api/connections/{connection_id}/sync",
                headers={"X-CSRFToken": token},
                timeout=30,
            )
        except requests.RequestException as exc:  # counted, not a silently shorter run
            errors.append(repr(exc))
            continue
        results.append((time.perf_counter() - began) * 1000)
        if response.status_code != 202 or "Server-Timing" not in response.headers:
            errors.append(f"{response.status_code} {response.text[:100]}")
            continue
        server.append(float(response.headers["Server-Timing"].split("dur=")[1]))


def cpu_seconds(parent: int) -> float:
    """CPU time (user + system) the children of process ``parent`` have used so far: the
    gunicorn workers of its master."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # gone meanwhile
            continue
        if int(fields[1]) == parent:  # fields[1]: ppid; [11], [12]: utime, stime
            total += int(fields[11]) + int(fields[12])
    return total / tick


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--requests", type=int, default=50, help="per client")
    parser.add_argument("--web-workers", type=int, default=2, help="gunicorn processes")
    parser.add_argument("--threads", type=int, default=4, help="threads per process")
    args = parser.parse_args()
    from bench.harness import free_port, gunicorn_command, scratch_var_dir

    scratch_var_dir("syncbench-api-")
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    accounts = prepare(args.clients, args.requests)
    gc.freeze()  # this process's set-up objects: its full collections would stall the clients

    from tests.support.processes import database_env, stop_process_group

    port = free_port()
    env = {
        **os.environ,
        **database_env(),
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "SYNC_RATE_SYNC_NOW": "100000/m",  # measure the work, not the per-person limiter
    }
    server = subprocess.Popen(
        gunicorn_command(port, args.web_workers, args.threads),
        cwd=ROOT,
        env=env,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                requests.get(f"{base}/healthz", timeout=5)
                break
            except requests.RequestException:  # not listening yet, or a first slow answer
                time.sleep(0.1)
        results: list[float] = []
        server_side: list[float] = []
        errors: list[str] = []
        barrier = threading.Barrier(len(accounts) + 1, timeout=60)
        threads = [
            threading.Thread(
                target=client_run,
                args=(base, name, ids, results, server_side, errors, barrier),
            )
            for name, ids in accounts
        ]
        for thread in threads:
            thread.start()
        while barrier.n_waiting < sum(thread.is_alive() for thread in threads):
            time.sleep(0.01)  # clients still signing in
        server_cpu = cpu_seconds(server.pid)  # (read before the clients start)
        barrier.wait()  # all clients signed in: start together
        began = time.perf_counter()
        client_cpu = time.process_time()
        for thread in threads:
            thread.join()
        elapsed = time.perf_counter() - began
        server_cpu = cpu_seconds(server.pid) - server_cpu
        client_cpu = time.process_time() - client_cpu
    finally:
        stop_process_group(server)

    if not server_side:
        raise SystemExit(f"no request succeeded; first error: {errors[:1]}")

    def p99(values: list[float]) -> float:
        ordered = sorted(values)
        return round(ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))], 2)

    report: dict[str, Any] = {
        "benchmark": "api_sync_trigger",
        "endpoint": "POST /api/connections/<id>/sync",
        "clients": args.clients,
        "requests": len(results),
        "errors": len(errors),
        "server_p50_ms": round(statistics.median(server_side), 2),
        "server_p99_ms": p99(server_side),
        "client_p50_ms": round(statistics.median(results), 2),
        "client_p99_ms": p99(results),
        "client_max_ms": round(max(results), 2),
        "requests_per_s": round(len(results) / elapsed, 1),
        # CPU per request: steadier than latencies on a shared machine, and what they grow from
        "server_cpu_ms_per_request": round(server_cpu * 1000 / len(results), 2),
        "client_cpu_ms_per_request": round(client_cpu * 1000 / len(results), 2),
        "server": f"gunicorn, {args.web_workers} processes x {args.threads} threads",
        "target_server_p99_ms": 100,
    }
    if errors:
        report["first_error"] = errors[0]
    print(json.dumps(report))


if __name__ == "__main__":
    main()
