"""``manage.py sync_doctor``: is everything needed for syncing in place? Exits 1 on problems."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core import checks
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import DatabaseError, connection
from django.db.migrations.executor import MigrationExecutor
from django.utils import timezone

from integrations import crypto
from integrations.checks import KEY_CHECKS
from integrations.errors import SyncError
from integrations.models import Connection
from integrations.probe import probe
from syncqueue.heartbeat import (
    DISPATCHER,
    clusters,
    listener_status,
    worker_status,
)
from syncqueue.models import WorkerHeartbeat
from syncqueue.stats import queue_stats

BACKLOG_WARN = 100
OLDEST_WARN_SECONDS = 600


class Command(BaseCommand):
    help = (
        "Check configuration, encryption keys, database, workers and backlog; with --live also "
        "test every enabled connection's credentials. Exits with status 1 when something is wrong."
    )

    # It runs the system checks itself and reports each once, in its own format: Django's
    # run before the command would print them a second time.
    requires_system_checks: list[str] = []

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--live", action="store_true", help="Also contact each enabled connection (check())."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        self.failures = 0
        self.check_settings()
        if not self.check_database():
            raise CommandError("The database is unreachable; nothing else can be checked.")
        self.check_encryption()
        self.check_workers()
        self.check_listener()
        self.check_providers()
        self.check_backlog()
        if options["live"]:
            self.check_connections()
        if self.failures:
            raise CommandError(f"{self.failures} problem(s) found.")
        self.stdout.write(self.style.SUCCESS("Everything needed for syncing is in place."))

    def report(self, level: str, area: str, message: str) -> None:
        style = {"ok": self.style.SUCCESS, "warn": self.style.WARNING, "fail": self.style.ERROR}
        if level == "fail":
            self.failures += 1
        self.stdout.write(style[level](f"{level.upper():<5}{area}: {message}"))

    def check_settings(self) -> None:
        messages = [
            message
            for message in checks.run_checks()
            # the keys: said under "encryption", with what the stored credentials need
            if message.id not in settings.SILENCED_SYSTEM_CHECKS and message.id not in KEY_CHECKS
        ]
        errors = [m for m in messages if m.is_serious()]
        for message in messages:
            level = "fail" if message.is_serious() else "warn"
            hint = f" ({message.hint})" if message.hint else ""
            self.report(level, f"settings {message.id}", f"{message.msg}{hint}")
        if not errors:
            self.report(
                "ok",
                "settings",
                f"queue '{settings.Q_CLUSTER['name']}', timeout "
                f"{settings.Q_CLUSTER['timeout']}s < retry {settings.Q_CLUSTER['retry']}s",
            )

    def check_database(self) -> bool:
        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT 1")
            plan = MigrationExecutor(connection).migration_plan(
                MigrationExecutor(connection).loader.graph.leaf_nodes()
            )
        except DatabaseError as exc:
            self.report("fail", "database", f"cannot connect ({type(exc).__name__}: {exc})")
            return False
        if plan:
            self.report(
                "fail",
                "database",
                f"{len(plan)} migration(s) not applied; run: python manage.py migrate",
            )
        else:
            self.report("ok", "database", f"{connection.vendor}, migrations applied")
        return True

    def check_encryption(self) -> None:
        problem = crypto.check_keys()
        if problem:
            self.report("fail", "encryption", problem)
            return
        unreadable = 0
        for secret in Connection.objects.exclude(secret="").values_list("secret", flat=True):
            try:
                crypto.decrypt_secrets(secret)
            except SyncError:
                unreadable += 1
        if unreadable:
            self.report(
                "fail",
                "encryption",
                f"{unreadable} connection(s) have credentials no "
                "configured key can decrypt; restore the old key in SYNC_ENCRYPTION_KEYS",
            )
        elif crypto.using_dev_key():
            self.report(
                "warn",
                "encryption",
                f"using the development key in {settings.SYNC_DEV_ENCRYPTION_KEY_FILE}; set "
                "SYNC_ENCRYPTION_KEYS (rotate_secrets --generate-key) before storing real "
                "passwords",
            )
        else:
            self.report(
                "ok",
                "encryption",
                f"{len(settings.SYNC_ENCRYPTION_KEYS)} key(s); all credentials readable",
            )

    def check_providers(self) -> None:
        """Each provider's own machinery (push subscriptions and the like), asked whether or
        not connections of its kind are left: what the last deleted one left behind counts."""
        from integrations.registry import available, get_connector_class

        for kind in sorted(available()):
            for level, area, message in get_connector_class(kind).doctor_notes():
                self.report(level, area, message)

    def check_listener(self) -> None:
        """IMAP IDLE: new mail within seconds needs ``sync_listen``; polling works without."""
        from integrations.models import Connection

        status = listener_status()
        if status.alive:
            self.report("ok", "listener", status.message)
        elif Connection.objects.filter(kind="imap", enabled=True).exists():
            self.report("warn", "listener", status.message)

    def check_workers(self) -> None:
        status = worker_status()
        if status.alive:
            self.report("ok", "workers", status.message)
        else:
            self.report(
                "fail",
                "workers",
                f"{status.message} (in production, under a service manager: docs/deployment.md)",
            )
        for cluster in clusters():
            heal = cluster.last_heal
            healed = f"; last healed itself: {heal['reason']}" if heal else ""
            if cluster.stopped:
                continue  # shut down cleanly
            if cluster.stale:
                self.report(
                    "warn",
                    f"cluster {cluster.name}",
                    f"has not proved it works for {cluster.age_seconds:.0f}s (stopped, or "
                    f"frozen and waiting for its supervisor){healed}",
                )
            else:
                self.report(
                    "ok",
                    f"cluster {cluster.name}",
                    f"{cluster.busy} of {cluster.workers} workers busy{healed}",
                )
        last_pass = WorkerHeartbeat.objects.filter(name=DISPATCHER).first()
        limit = 3 * settings.SYNC_DISPATCH_INTERVAL
        if status.alive and last_pass is not None:
            age = (timezone.now() - last_pass.seen_at).total_seconds()
            level = "ok" if age <= limit else "fail"
            self.report(level, "dispatcher", f"last full pass {age:.0f}s ago")
        elif status.alive:
            self.report("fail", "dispatcher", "has never run although workers are alive")

    def check_backlog(self) -> None:
        stats = queue_stats()
        oldest = stats["oldest_waiting_seconds"] or 0
        text = (
            f"{stats['waiting']} waiting, {stats['running']} running, {stats['retrying']} "
            f"retrying, {stats['failed']} failed in 24 h"
        )
        if stats["waiting"] > BACKLOG_WARN or oldest > OLDEST_WARN_SECONDS:
            self.report("warn", "backlog", f"{text}; oldest waiting {oldest:.0f}s")
        else:
            self.report("ok", "backlog", text)

    def check_connections(self) -> None:
        for conn in Connection.objects.filter(enabled=True).select_related("organization"):
            try:
                result = probe(conn)
            except SyncError as exc:
                self.report(
                    "fail",
                    f"connection #{conn.pk} {conn.name}",
                    f"{exc.error_class}: {exc.message}",
                )
            else:
                self.report("ok", f"connection #{conn.pk} {conn.name}", result.message)
