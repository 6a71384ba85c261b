from __future__ import annotations

from typing import Any

from django.apps import AppConfig
from django.db.models.signals import post_migrate

DISPATCH_SCHEDULE = "syncqueue: dispatcher"


class SyncQueueConfig(AppConfig):
    name = "syncqueue"
    verbose_name = "Sync queue"

    def ready(self) -> None:
        from django_q.signals import post_spawn

        from syncqueue import checks  # noqa: F401  (registers system checks)
        from syncqueue.heartbeat import on_worker_spawn

        post_migrate.connect(ensure_dispatch_schedule, sender=self)
        post_spawn.connect(on_worker_spawn, dispatch_uid="syncqueue-worker-heartbeat")


def ensure_dispatch_schedule(using: str = "default", **kwargs: Any) -> None:
    """Create (or repair) the one periodic django-q2 schedule that runs the dispatcher."""
    from django.utils import timezone
    from django_q.models import Schedule

    Schedule.objects.using(using).update_or_create(
        name=DISPATCH_SCHEDULE,
        defaults={
            "func": "syncqueue.tasks.dispatch",
            "schedule_type": Schedule.MINUTES,
            "minutes": 1,
            "repeats": -1,
        },
        create_defaults={
            "func": "syncqueue.tasks.dispatch",
            "schedule_type": Schedule.MINUTES,
            "minutes": 1,
            "repeats": -1,
            "next_run": timezone.now(),
        },
    )
