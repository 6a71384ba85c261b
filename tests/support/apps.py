from __future__ import annotations

from django.apps import AppConfig


class SupportConfig(AppConfig):
    name = "tests.support"
    label = "testsupport"
    verbose_name = "Test support"
