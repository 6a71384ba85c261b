from __future__ import annotations

from django.apps import AppConfig


class MsgraphAppConfig(AppConfig):
    name = "integrations.msgraph"
    label = "msgraph"
    verbose_name = "Microsoft 365 mail"
