from __future__ import annotations

from django.apps import AppConfig


class SandboxConfig(AppConfig):
    """Local protocol servers (Dovecot, Graph, Zendesk, Zimbra, Gmail) for tests, benchmarks
    and the demo (``manage.py demo``). Nothing here is used by a production install."""

    name = "sandbox"
    verbose_name = "Sandbox"
