"""``manage.py sync_notify``: check the alerts and send due notification mails now.

The dispatcher does this inside the workers, so when every worker is down nobody would hear of
it: run this from a timer on a host that does not run workers (the web host), e.g. every
minute. Several runs at once are harmless (a lock and conditional updates).
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from syncqueue import notifications


class Command(BaseCommand):
    help = "Check the dashboard alerts and send due notification emails (for a timer)."

    def handle(self, *args: Any, **options: Any) -> None:
        ran = notifications.run_due()
        self.stdout.write("checked" if ran else "checked recently by another process; skipped")
