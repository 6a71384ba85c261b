"""``manage.py sync_status``: queue statistics and worker liveness."""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from syncqueue.heartbeat import worker_status
from syncqueue.stats import queue_stats


class Command(BaseCommand):
    help = "Queue statistics: waiting, running, retrying, failed/succeeded in 24 h, oldest waiting."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--json", action="store_true", help="Print one JSON object.")

    def handle(self, *args: Any, **options: Any) -> None:
        stats = queue_stats()
        workers = worker_status()
        if options["json"]:
            self.stdout.write(json.dumps({**stats, "workers_alive": workers.alive}))
            return
        oldest = stats["oldest_waiting_seconds"]
        rows = [
            ("Waiting", stats["waiting"]),
            ("Running", stats["running"]),
            ("Retrying", stats["retrying"]),
            ("Failed (24 h)", stats["failed"]),
            ("Succeeded (24 h)", stats["succeeded"]),
            ("Oldest waiting", "-" if oldest is None else f"{oldest:.0f} s"),
        ]
        for label, value in rows:
            self.stdout.write(f"{label:<18}{value}")
        style = self.style.SUCCESS if workers.alive else self.style.ERROR
        self.stdout.write(style(workers.message))
