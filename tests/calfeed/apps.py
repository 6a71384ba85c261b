from __future__ import annotations

from django.apps import AppConfig


class CalFeedConfig(AppConfig):
    name = "tests.calfeed"
    label = "calfeed"
    verbose_name = "Calendar feeds"
    default_auto_field = "django.db.models.BigAutoField"
