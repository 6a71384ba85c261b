"""``manage.py sync_dispatch``: run one dispatcher pass now (normally a schedule does it)."""

from __future__ import annotations

import json
from typing import Any

from django.core.management.base import BaseCommand

from syncqueue.dispatcher import dispatch


class Command(BaseCommand):
    help = "Run one dispatcher pass: rescue, queue due connections, top up tickets, heartbeat."

    def handle(self, *args: Any, **options: Any) -> None:
        self.stdout.write(json.dumps(dispatch().as_dict()))
