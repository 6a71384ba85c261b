"""Microsoft Graph sync benchmark against the local Graph server. Prints one JSON object.

    python bench/graph_sync.py --messages 10000

Builds two mailboxes of N messages each (three folders, about 10 % with a small attachment; a
quarter of the mail is with one contact), served over HTTPS by ``sandbox.graph`` in this
process, with real MSAL tokens. Then, each in a fresh child process that claims and runs the
job through the engine as a worker would:

- ``delta``: the first delta pass over mailbox A (every folder, every page, attachments);
- ``history``: a case history search for the contact in mailbox B (date windows under the
  1,000-result cap of $search, messages stored and linked to the case).

Reports messages/s, Graph requests per 1,000 messages and the child's peak RSS for each. The
local server is part of what is measured (it runs in Python on the same cores).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

CONTACT = "dana@fabrikam.com"


def fill(graph: Any, box: Any, count: int, seed: int) -> int:
    """``count`` messages over three years; returns how many involve the contact."""
    rng = random.Random(seed)
    start = datetime(2023, 1, 1, tzinfo=UTC)
    with_contact = 0
    for i in range(count):
        folder = rng.choices(["Inbox", "Sent Items", "Projects"], [7, 2, 1])[0]
        contact = i % 4 == 0
        with_contact += contact
        words = " ".join(rng.choice(["contract", "invoice", "meeting", "draft"]) for _ in range(40))
        graph.add_message(
            box,
            folder=folder,
            subject=f"Message {i} about {words[:30]}",
            sender=CONTACT if contact else f"person{rng.randrange(500)}@example.com",
            to=(box.upn,),
            received=start + timedelta(minutes=157 * i),
            body=f"<html><body><p>{words}</p><p>{'x' * rng.randrange(200, 4000)}</p></body></html>",
            attachments=(("notes.txt", os.urandom(rng.randrange(500, 20_000)), "text/plain"),)
            if rng.random() < 0.1
            else (),
            is_read=rng.random() < 0.6,
        )
    return with_contact


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--page-size", type=int, default=100)
    parser.add_argument("--phase", help=argparse.SUPPRESS)
    parser.add_argument("--connection", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase:
        from bench.harness import run_job_phase

        print(json.dumps(run_job_phase(args.phase, args.connection)))
        return

    from bench.harness import scratch_var_dir

    var = Path(scratch_var_dir("syncbench-graph-"))
    from bench.harness import graph_connection, job_phase_child, setup_django

    setup_django()
    from django.contrib.auth import get_user_model
    from django.db import transaction

    from integrations.models import Connection
    from mail.models import MailMessage
    from sandbox.graph import FakeGraph
    from sandbox.tls import make_ca
    from workspace.models import Case, CaseContact, CaseMessage

    ca = make_ca(var / "ca")
    env = {"SYNC_CA_BUNDLE": str(ca.ca_file)}
    graph = FakeGraph(ca).start()
    try:
        a = graph.add_mailbox("adele@contoso.com", folders=("Projects",))
        b = graph.add_mailbox("ben@contoso.com", folders=("Projects",))
        start = time.perf_counter()
        fill(graph, a, args.messages, seed=1)
        expected = fill(graph, b, args.messages, seed=2)
        build_s = time.perf_counter() - start

        def connect(upn: str, owner: Any = None) -> Connection:
            return graph_connection(graph, upn, owner=owner, page_size=args.page_size)

        mirror = connect(a.upn)
        before = len(graph.requests)
        delta = job_phase_child(__file__, "initial", mirror.pk, env)
        delta_requests = len(graph.requests) - before
        stored = MailMessage.objects.filter(connection=mirror).count()

        user = get_user_model().objects.create_user("ben", "ben@contoso.com")
        searched = connect(b.upn, owner=user)
        case = Case.objects.create(title="Fabrikam", owner=user)
        with transaction.atomic():
            CaseContact.objects.create(case=case, email=CONTACT)
        before = len(graph.requests)
        history = job_phase_child(__file__, "queued", searched.pk, env)
        history_requests = len(graph.requests) - before
        links = CaseMessage.objects.filter(case=case).count()
    finally:
        graph.stop()

    if stored != args.messages or links != expected:
        raise SystemExit(f"incomplete: stored {stored}/{args.messages}, linked {links}/{expected}")
    print(
        json.dumps(
            {
                "benchmark": "graph_sync",
                "messages": args.messages,
                "page_size": args.page_size,
                "delta_messages_per_s": round(args.messages / delta["seconds"], 1),
                "delta_seconds": round(delta["seconds"], 2),
                "delta_requests_per_1000_messages": round(delta_requests / args.messages * 1000, 1),
                "delta_peak_rss_mb": round(delta["peak_rss_mb"], 1),
                "history_contact_messages": expected,
                "history_messages_per_s": round(expected / history["seconds"], 1),
                "history_seconds": round(history["seconds"], 2),
                "history_requests_per_1000_messages": round(history_requests / expected * 1000, 1),
                "history_peak_rss_mb": round(history["peak_rss_mb"], 1),
                "token_requests": graph.token_requests,
                "max_concurrent_requests_per_mailbox": max(a.max_in_flight, b.max_in_flight),
                "throttled_requests": graph.throttled,
                "build_mailboxes_s": round(build_s, 1),
            }
        )
    )


if __name__ == "__main__":
    main()
