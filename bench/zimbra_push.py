"""Zimbra push benchmark against the local Zimbra SOAP server. Prints one JSON object.

    python bench/zimbra_push.py --assignments 2000

Creates tasks assigned to 50 people who switched Zimbra tasks on (one push job each, queued
on commit), then a fresh child process runs every push through the engine as a worker would.
Reports pushes/s and SOAP calls per push (sign-ins included), for the creates and then for an
edit of every task; then, with incoming on, half the tasks are completed in Zimbra and one
incoming sync reads them back (changes/s, SOAP calls per change).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
PEOPLE = 50


def run_phase() -> dict[str, Any]:
    os.environ["DJANGO_SETTINGS_MODULE"] = "tests.settings"
    import django

    django.setup()
    from bench.harness import peak_rss_mb
    from syncqueue import engine
    from syncqueue.heartbeat import prepare_worker_process
    from syncqueue.models import SyncJob

    prepare_worker_process()
    start = time.perf_counter()
    while engine.process_ticket() != "nothing to claim":
        pass
    elapsed = time.perf_counter() - start
    jobs = SyncJob.objects.filter(kind="push")
    return {
        "seconds": elapsed,
        "unfinished": jobs.exclude(state="succeeded").count(),
        "peak_rss_mb": peak_rss_mb(),
    }


def child(env: dict[str, str]) -> dict[str, Any]:
    from bench.harness import run_phase_child

    return run_phase_child(__file__, env=env)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--assignments", type=int, default=2000)
    parser.add_argument("--phase", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase:
        print(json.dumps(run_phase()))
        return

    from bench.harness import scratch_var_dir

    var = Path(scratch_var_dir("syncbench-zm-"))
    from bench.harness import setup_django

    setup_django()
    from django.contrib.auth import get_user_model
    from django.db import transaction

    from integrations.models import Connection, UserSwitch
    from sandbox.tls import make_ca
    from sandbox.zimbra import ADMIN_NAME, ADMIN_PASSWORD, FakeZimbra
    from syncqueue import engine
    from syncqueue.models import SyncJob
    from workspace import assignments
    from workspace.models import Task

    ca = make_ca(var / "ca")
    server = FakeZimbra(ca).start()
    env = {"SYNC_CA_BUNDLE": str(ca.ca_file)}
    try:
        conn = Connection(
            kind="zimbra",
            name="bench",
            config={
                "soap_url": server.soap_url,
                "admin_url": server.admin_url,
                "admin_name": ADMIN_NAME,
            },
        )
        conn.set_secrets({"admin_password": ADMIN_PASSWORD})
        conn.save()
        people = []
        for i in range(PEOPLE):
            user = get_user_model().objects.create_user(f"p{i}", f"p{i}@corp.test")
            server.add_account(user.email)
            UserSwitch.objects.create(user=user, key="zimbra.tasks", enabled=True)
            people.append(user)
        made = []
        with transaction.atomic():
            for i in range(args.assignments):
                task = Task.objects.create(title=f"Task {i}", description="Details " * 20)
                assignments.assign(task, people[i % PEOPLE])
                made.append(task)
        calls = len(server.requests)
        create = child(env)
        create_calls = len(server.requests) - calls
        with transaction.atomic():
            for task in made:
                task.status = "inprogress"
                task.percent_complete = 40
                task.save()
        calls = len(server.requests)
        edit = child(env)
        edit_calls = len(server.requests) - calls
        stored = sum(len(box.tasks) for box in server.mailboxes.values())

        conn.config = {**conn.config, "incoming": True}
        conn.save()
        engine.enqueue(conn, SyncJob.Kind.MANUAL)
        child(env)  # the first read: sync tokens, nothing changed
        later = time.time() + 5
        changed = 0
        for box in server.mailboxes.values():
            for uid in list(box.tasks)[::2]:
                server.edit_in_zimbra(box.name, uid, at=later, status="COMP", percentComplete="100")
                changed += 1
        calls = len(server.requests)
        engine.enqueue(conn, SyncJob.Kind.MANUAL)
        incoming = child(env)
        incoming_calls = len(server.requests) - calls
        completed = Task.objects.filter(status="completed").count()
    finally:
        server.stop()
    if stored != args.assignments:
        raise SystemExit(f"Zimbra has {stored} tasks, expected {args.assignments}")
    if completed != changed:
        raise SystemExit(f"{completed} tasks came back completed, expected {changed}")
    print(
        json.dumps(
            {
                "benchmark": "zimbra_push",
                "assignments": args.assignments,
                "create_pushes_per_s": round(args.assignments / create["seconds"], 1),
                "create_soap_calls_per_push": round(create_calls / args.assignments, 3),
                "edit_pushes_per_s": round(args.assignments / edit["seconds"], 1),
                "edit_soap_calls_per_push": round(edit_calls / args.assignments, 3),
                "incoming_changes": changed,
                "incoming_changes_per_s": round(changed / incoming["seconds"], 1),
                "incoming_soap_calls_per_change": round(incoming_calls / changed, 3),
                "peak_rss_mb": round(max(create["peak_rss_mb"], edit["peak_rss_mb"]), 1),
            }
        )
    )


if __name__ == "__main__":
    main()
