"""``manage.py sync_prune``: delete old job history now (the dispatcher also does it)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand
from django.utils import timezone

from syncqueue import retention


class Command(BaseCommand):
    help = (
        "Delete job history beyond the retention settings (SYNC_KEEP_*), and old django-q2 results."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        pruned = retention.prune(timezone.now())
        self.stdout.write(", ".join(f"{name}: {count}" for name, count in pruned.items()))
