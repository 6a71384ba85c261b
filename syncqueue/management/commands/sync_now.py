"""``manage.py sync_now``: queue a sync for connections, optionally waiting for the result."""

from __future__ import annotations

import time
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from integrations.errors import SyncError
from integrations.models import Connection
from syncqueue import engine
from syncqueue.models import SyncJob


class Command(BaseCommand):
    help = "Queue a sync now for the given connection ids (or --all enabled connections)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("connection_ids", nargs="*", type=int)
        parser.add_argument("--all", action="store_true", help="Every enabled connection.")
        parser.add_argument(
            "--full",
            action="store_true",
            help="Full resync: forget the cursor and read everything again.",
        )
        parser.add_argument(
            "--wait",
            type=float,
            default=0,
            metavar="SECONDS",
            help="Wait up to this long for the jobs to finish.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        ids = options["connection_ids"]
        if not ids and not options["all"]:
            raise CommandError("Give connection ids or --all.")
        qs = (
            Connection.objects.filter(enabled=True)
            if options["all"]
            else Connection.objects.filter(pk__in=ids)
        )
        found = {c.pk: c for c in qs}
        missing = set(ids) - set(found)
        if missing:
            raise CommandError(f"No connection with id {', '.join(map(str, sorted(missing)))}.")
        kind = SyncJob.Kind.FULL_RESYNC if options["full"] else SyncJob.Kind.MANUAL
        jobs = []
        for conn in found.values():
            try:
                job = engine.enqueue(conn, kind)
            except SyncError as exc:
                self.stderr.write(f"#{conn.pk} {conn.name}: {exc.message}")
                continue
            jobs.append(job)
            self.stdout.write(f"#{conn.pk} {conn.name}: job {job.pk} {job.state}")
        if options["wait"] and jobs:
            self.wait(jobs, options["wait"])

    def wait(self, jobs: list[SyncJob], seconds: float) -> None:
        deadline = time.monotonic() + seconds
        pending = {j.pk for j in jobs}
        while pending and time.monotonic() < deadline:
            for job in SyncJob.objects.filter(pk__in=pending, state__in=SyncJob.FINISHED):
                pending.discard(job.pk)
                self.stdout.write(f"job {job.pk}: {job.state} {job.error_message}".rstrip())
            time.sleep(0.2)
        if pending:
            raise CommandError(
                f"Still not finished: jobs {sorted(pending)} (are workers running? "
                "see manage.py sync_doctor)"
            )
