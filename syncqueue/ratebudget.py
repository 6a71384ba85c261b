"""A rate budget kept in the database, so every worker of every cluster shares it.

``reserve(key, limit, per)`` grants one request when fewer than ``limit`` were granted in the
last ``per`` seconds (a sliding window), else says how long to wait. The row is locked for the
few microseconds of the decision (``SELECT … FOR UPDATE`` on PostgreSQL; SQLite's immediate
transactions serialize writers anyway).
"""

from __future__ import annotations

import time

from django.db import IntegrityError, transaction

from syncqueue.models import RateBudget


def reserve(key: str, limit: int, per: float) -> float:
    """0.0 when a request may go now (and it is counted), else the seconds until one may."""
    if not RateBudget.objects.filter(key=key).exists():
        try:
            with transaction.atomic():
                RateBudget.objects.create(key=key, grants=[])
        except IntegrityError:
            pass  # another worker created it first
    with transaction.atomic():
        budget = RateBudget.objects.select_for_update().get(key=key)
        now = time.time()
        recent = sorted(t for t in budget.grants if t > now - per)
        if len(recent) >= limit:
            return max(0.05, recent[len(recent) - limit] + per - now)
        budget.grants = [*recent, now]
        budget.save(update_fields=["grants"])
        return 0.0
