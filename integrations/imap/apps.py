from __future__ import annotations

from django.apps import AppConfig


class ImapAppConfig(AppConfig):
    name = "integrations.imap"
    label = "imap"
    verbose_name = "IMAP mailboxes"
