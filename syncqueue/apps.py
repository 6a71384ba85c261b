from __future__ import annotations

from typing import Any

from django.apps import AppConfig
from django.db.models.signals import post_migrate

# Before the dispatcher ran in each cluster's own process it was this django-q2 schedule; the
# row is removed on migrate (a frozen cluster could hold its task for minutes).
LEGACY_DISPATCH_SCHEDULE = "syncqueue: dispatcher"


class SyncQueueConfig(AppConfig):
    name = "syncqueue"
    verbose_name = "Sync queue"

    def ready(self) -> None:
        from django_q.signals import post_spawn

        from syncqueue import checks  # noqa: F401  (registers system checks)
        from syncqueue.heartbeat import on_worker_spawn

        post_migrate.connect(remove_legacy_schedule, sender=self)
        post_spawn.connect(on_worker_spawn, dispatch_uid="syncqueue-worker-heartbeat")


def remove_legacy_schedule(using: str = "default", **kwargs: Any) -> None:
    """Drop the django-q2 schedule that ran the dispatcher before it had its own process."""
    from django_q.models import Schedule

    Schedule.objects.using(using).filter(name=LEGACY_DISPATCH_SCHEDULE).delete()
