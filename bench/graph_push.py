"""Push latency over Microsoft Graph change notifications: from a message created on the local
Graph server to the message stored. Prints one JSON object.

    python bench/graph_push.py --mailboxes 1 --messages 30
    python bench/graph_push.py --mailboxes 500 --messages 100

The local Graph (``sandbox.graph``, HTTPS with its test CA, in this process) holds N mailboxes
of one message each. N Graph connections are synced once and their polls put a day away, so
only push can bring new mail in time. The product runs as it does in production: gunicorn
serving the notification endpoint at ``SYNC_PUBLIC_URL`` and a real qcluster (2 workers). A
dispatcher pass subscribes every mailbox (Graph validates the endpoint through gunicorn). Then
each message is created in a random mailbox, one at a time, and timed until it is stored; the
local Graph posts its notification at once (and sometimes twice, as Graph may). Every message
must be stored exactly once: ``lost`` and ``duplicated`` are counted at the end.

Not measured here: a web server that is down when Graph notifies. Graph retries and then drops
the notification, and may send ``missed`` later; the local Graph sends ``missed`` only when a
test asks it to, so the figure would be the safety-net poll's interval, not push.
SQLite by default (DATABASE_URL for PostgreSQL).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import socket
import sys
import time
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.harness import (  # noqa: E402
    free_port,
    graph_connection,
    gunicorn_command,
    latency_figures,
    scratch_var_dir,
    setup_django,
)
from bench.push import rss_mb, wait  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mailboxes", type=int, default=1)
    parser.add_argument("--messages", type=int, default=30)
    parser.add_argument("--seed", type=int, default=5)
    args = parser.parse_args()
    scratch_var_dir("syncbench-graph-push-")
    from sandbox.graph import FakeGraph
    from sandbox.tls import make_ca

    ca = make_ca(Path(os.environ["SYNC_VAR_DIR"]) / "ca")
    port = free_port()
    public_url = f"http://127.0.0.1:{port}"
    # read by this process's settings and inherited by the web server and the cluster
    os.environ["SYNC_CA_BUNDLE"] = str(ca.ca_file)
    os.environ["SYNC_PUBLIC_URL"] = public_url
    setup_django()
    from django.utils import timezone

    from integrations.models import Connection
    from integrations.msgraph.models import Subscription
    from mail.models import MailMessage
    from syncqueue import dispatcher, engine
    from syncqueue.models import SyncJob
    from tests.support.processes import managed, qcluster

    rng = random.Random(args.seed)
    graph = FakeGraph(ca, seed=args.seed)
    graph.start()
    try:
        boxes, conns = [], []
        for i in range(args.mailboxes):
            upn = f"push{i}@contoso.com"
            box = graph.add_mailbox(upn)
            graph.add_message(box, subject=f"{upn} first")
            conn = graph_connection(graph, upn, schedule="every 1d")
            engine.enqueue(conn, SyncJob.Kind.INITIAL)
            boxes.append(box)
            conns.append(conn)
        while engine.process_ticket() != "nothing to claim":
            pass
        Connection.objects.update(next_sync_at=timezone.now() + timedelta(days=1))
        assert MailMessage.objects.count() == args.mailboxes

        def stored(subject: str) -> bool:
            return MailMessage.objects.filter(subject=subject).exists()

        web = gunicorn_command(port, workers=2, threads=4)
        log_level = os.environ.get("BENCH_LOG", "WARNING")
        latencies: list[float] = []
        timed_out = 0
        with managed(web, "bench-graph-push-web", 10, {"LOG_LEVEL": log_level}) as server:
            wait(lambda: _answers(port), 60, every=0.1)
            started = time.perf_counter()
            while Subscription.objects.count() < args.mailboxes:  # a pass subscribes in batches
                dispatcher.dispatch()
                if time.perf_counter() - started > 600:
                    raise SystemExit("the mailboxes were not all subscribed in 10 minutes")
            subscribe_s = time.perf_counter() - started
            with qcluster("bench-graph-push", SYNC_WORKERS=2, LOG_LEVEL=log_level) as cluster:
                for i in range(args.messages):
                    subject = f"pushed {i}"
                    graph.add_message(rng.choice(boxes), subject=subject)
                    try:
                        latencies.append(wait(lambda s=subject: stored(s), 120))
                    except SystemExit:
                        timed_out += 1  # counted as lost below unless it turns up later
                    time.sleep(rng.uniform(0.05, 0.3))
                web_rss = rss_mb(server.pid)
                cluster_rss = rss_mb(cluster.pid)
        subjects = [f"pushed {i}" for i in range(args.messages)]
        found = MailMessage.objects.filter(subject__in=subjects)
        distinct = found.values("subject").distinct().count()
        notified = SyncJob.objects.filter(kind=SyncJob.Kind.NOTIFIED).count()
        polled = SyncJob.objects.filter(kind=SyncJob.Kind.INCREMENTAL).count()
        posts = sum(1 for url, body, _ in graph.deliveries if "validationToken" not in url)
    finally:
        graph.stop()
    print(
        json.dumps(
            {
                "benchmark": "graph_push",
                "mailboxes": args.mailboxes,
                "messages": args.messages,
                **latency_figures(latencies),
                "not_stored_within_120_s": timed_out,
                "subscribe_all_s": round(subscribe_s, 1),
                "notification_posts": posts,
                "notified_jobs": notified,
                "scheduled_jobs": polled,
                "lost": len(subjects) - distinct,
                "duplicated": found.count() - distinct,
                "web_rss_mb": round(web_rss, 1),
                "cluster_rss_mb": round(cluster_rss, 1),
                "targets": {"latency_p95_s": 5, "lost": 0, "duplicated": 0},
            }
        )
    )


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


if __name__ == "__main__":
    main()
