"""Zendesk export benchmark against the local Zendesk server. Prints one JSON object.

    python bench/zendesk_sync.py --tickets 50000

Builds an account with N tickets (a few hundred users, about 2 % deleted, 5 % by the AI
agent), served over HTTPS by ``sandbox.zendesk`` in this process with the rate limit lifted,
then runs the initial export (everything) through the engine in a fresh child process, as a
worker would. Reports tickets/s, export requests made, and the child's peak RSS; then a second
sync with nothing new.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tickets", type=int, default=50_000)
    parser.add_argument("--per-page", type=int, default=500)
    parser.add_argument("--phase", help=argparse.SUPPRESS)
    parser.add_argument("--connection", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase:
        from bench.harness import run_job_phase

        print(json.dumps(run_job_phase(args.phase, args.connection)))
        return

    from bench.harness import scratch_var_dir

    var = Path(scratch_var_dir("syncbench-zd-"))
    from bench.harness import job_phase_child, setup_django

    setup_django()
    from integrations.models import Connection
    from integrations.zendesk.models import Ticket
    from sandbox.tls import make_ca
    from sandbox.zendesk import FakeZendesk
    from workspace.models import Organization

    ca = make_ca(var / "ca")
    server = FakeZendesk(ca, rate=None).start()
    env = {
        "SYNC_CA_BUNDLE": str(ca.ca_file),
        "ZENDESK_BASE_URL": server.base_url,
        "ZENDESK_EXPORT_RATE": "0/60",  # the limit lifted: measure our side
    }
    try:
        rng = random.Random(5)
        account = server.add_account("bench", "admin@bench.test", "tok-bench")
        users = [server.add_user(account, f"User {i}") for i in range(300)]
        now = int(time.time())
        for i in range(args.tickets):
            server.add_ticket(
                account,
                f"Ticket {i}: "
                + " ".join(rng.choice(["printer", "login", "refund"]) for _ in range(6)),
                requester=rng.choice(users),
                assignee=rng.choice(users),
                status="deleted"
                if rng.random() < 0.02
                else rng.choice(["open", "pending", "solved"]),
                ai_agent=rng.random() < 0.05,
                generated=now - 86400 * 365 + i * 600,
                tags=[rng.choice(["vip", "eu", "us", "billing"])],
                description="x" * rng.randrange(100, 2000),
            )
        org = Organization.objects.create(name="Bench", slug="bench")
        conn = Connection(
            kind="zendesk",
            name="bench",
            organization=org,
            config={
                "subdomain": "bench",
                "email": "admin@bench.test",
                "history_days": None,
                "per_page": args.per_page,
            },
        )
        conn.set_secrets({"api_token": "tok-bench"})
        conn.save()
        initial = job_phase_child(__file__, "initial", conn.pk, env)
        exports = account.exports
        noop = job_phase_child(__file__, "manual", conn.pk, env)
        stored = Ticket.objects.filter(connection=conn).count()
        deleted = Ticket.objects.filter(connection=conn, deleted=True).count()
    finally:
        server.stop()

    if stored != args.tickets:
        raise SystemExit(f"incomplete: stored {stored}/{args.tickets}")
    print(
        json.dumps(
            {
                "benchmark": "zendesk_sync",
                "tickets": args.tickets,
                "per_page": args.per_page,
                "tickets_per_s": round(args.tickets / initial["seconds"], 1),
                "initial_seconds": round(initial["seconds"], 2),
                "export_requests": exports,
                "peak_rss_mb": round(initial["peak_rss_mb"], 1),
                "noop_sync_s": round(noop["seconds"], 3),
                "stored_deleted_tickets": deleted,
            }
        )
    )


if __name__ == "__main__":
    main()
