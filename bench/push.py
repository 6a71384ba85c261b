"""Push latency: from delivery into a mailbox to the message stored, with the IMAP IDLE
listener. Prints one JSON object.

    python bench/push.py --mailboxes 1 --messages 30
    python bench/push.py --mailboxes 500 --messages 100

A private Dovecot with N accounts, N IMAP connections (synced once, their schedule a day
away so no poll interferes), a real qcluster (2 workers) and a real ``manage.py sync_listen``.
Each message is written into a random mailbox's Maildir (as local delivery does), one at a
time, and timed until it is stored. Then the listener is killed with SIGKILL, messages are
delivered while it is down, and it is started again: the figure is how long until every one is
stored, and how many were lost or stored twice (both must be 0). The listener's RSS is read from
/proc while it watches every mailbox. SQLite by default (DATABASE_URL for PostgreSQL).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.harness import latency_figures, setup_django  # noqa: E402


def rss_mb(pid: int) -> float:
    """Resident memory of ``pid`` and its children, in MB."""
    from tests.support.processes import descendants

    total = 0
    for each in [pid, *descendants(pid)]:
        try:
            for line in Path(f"/proc/{each}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total / 1024


def wait(predicate: Any, timeout: float, every: float = 0.02) -> float:
    """Seconds until ``predicate()`` is true (raises after ``timeout``)."""
    start = time.perf_counter()
    while not predicate():
        if time.perf_counter() - start > timeout:
            raise SystemExit(f"timed out after {timeout}s")
        time.sleep(every)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mailboxes", type=int, default=1)
    parser.add_argument("--messages", type=int, default=30)
    parser.add_argument("--while-down", type=int, default=10)
    parser.add_argument("--seed", type=int, default=5)
    args = parser.parse_args()
    from bench.harness import scratch_var_dir

    scratch_var_dir("syncbench-push-")
    setup_django()
    from django.utils import timezone

    from integrations.models import Connection
    from mail.models import MailMessage
    from sandbox.dovecot import Dovecot
    from syncqueue import engine, heartbeat
    from syncqueue.models import SyncJob
    from tests.support.mailfactory import message
    from tests.support.processes import listener, qcluster

    rng = random.Random(args.seed)
    dovecot = Dovecot()
    try:
        dovecot.start()
        conns = []
        for i in range(args.mailboxes):
            user = f"push{i}"
            dovecot.add_user(user)
            dovecot.drop(user, [message(subject=f"{user} first")])
            conn = Connection(
                kind="imap",
                name=user,
                schedule="every 1d",
                config=dovecot.connection_config(user),
            )
            conn.set_secrets({"password": dovecot.users[user]})
            conn.save()
            engine.enqueue(conn, SyncJob.Kind.INITIAL)
            conns.append(conn)
        while engine.process_ticket() != "nothing to claim":
            pass
        Connection.objects.update(next_sync_at=timezone.now() + timedelta(days=1))
        assert MailMessage.objects.count() == args.mailboxes

        def stored(subjects: list[str]) -> bool:
            return MailMessage.objects.filter(subject__in=subjects).count() == len(subjects)

        def idling() -> bool:
            status = heartbeat.listener_status()
            return status.alive and status.idling == args.mailboxes

        latencies: list[float] = []
        timed_out = 0
        cluster_env: dict[str, Any] = {
            "SYNC_WORKERS": 2,
            "LOG_LEVEL": os.environ.get("BENCH_LOG", "WARNING"),
        }
        listen_env: dict[str, Any] = {
            "LOG_LEVEL": os.environ.get("BENCH_LOG", "WARNING"),
            "SYNC_LISTEN_RECONCILE_SECONDS": 2,
        }
        with qcluster("bench-push", **cluster_env):
            with listener("bench-push", **listen_env) as proc:
                started = wait(idling, 300, every=0.2)
                rss = rss_mb(proc.pid)
                for i in range(args.messages):
                    conn = rng.choice(conns)
                    subject = f"pushed {i}"
                    dovecot.drop(conn.name, [message(subject=subject)])
                    try:
                        latencies.append(wait(lambda s=subject: stored([s]), 120))
                    except SystemExit:
                        timed_out += 1  # counted as lost below unless it turns up later
                    time.sleep(rng.uniform(0.05, 0.3))
                rss = max(rss, rss_mb(proc.pid))
                proc.send_signal(signal.SIGKILL)
                proc.wait()
            down = [f"while down {i}" for i in range(args.while_down)]
            for subject in down:
                dovecot.drop(rng.choice(conns).name, [message(subject=subject)])
            with listener("bench-push-2", **listen_env):
                try:
                    restart_s: float | None = wait(lambda: stored(down), 300, every=0.1)
                except SystemExit:
                    restart_s = None  # what is missing is counted as lost below
        subjects = [f"pushed {i}" for i in range(args.messages)] + down
        found = MailMessage.objects.filter(subject__in=subjects)
        lost = len(subjects) - found.values("subject").distinct().count()
        duplicated = found.count() - found.values("subject").distinct().count()
        notified = SyncJob.objects.filter(kind=SyncJob.Kind.NOTIFIED).count()
        scheduled = SyncJob.objects.filter(kind=SyncJob.Kind.INCREMENTAL).count()
    finally:
        dovecot.cleanup()
    print(
        json.dumps(
            {
                "benchmark": "push",
                "mailboxes": args.mailboxes,
                "messages": args.messages,
                **latency_figures(latencies),
                "not_stored_within_120_s": timed_out,
                "listener_rss_mb": round(rss, 1),
                "listener_ready_s": round(started, 1),
                "after_sigkill_restart_all_stored_s": round(restart_s, 2) if restart_s else None,
                "lost": lost,
                "duplicated": duplicated,
                "notified_jobs": notified,
                "scheduled_jobs": scheduled,
                "targets": {"latency_p95_s": 5, "listener_rss_mb": 150, "lost": 0},
            }
        )
    )


if __name__ == "__main__":
    main()
