from __future__ import annotations

from django.apps import AppConfig


class ZendeskAppConfig(AppConfig):
    name = "integrations.zendesk"
    label = "zendesk"
    verbose_name = "Zendesk tickets"
