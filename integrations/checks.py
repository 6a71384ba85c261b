"""System checks for credentials encryption (ids ``integrations.E001``/``E002``/``W001``)."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.checks import Error, Warning, register

from integrations import crypto

#: what ``check_encryption_keys`` reports (``sync_doctor`` says it under "encryption")
KEY_CHECKS = {"integrations.E001", "integrations.E002", "integrations.W001"}


@register("syncproject")
def check_encryption_keys(app_configs: Any = None, **kwargs: Any) -> list[Any]:
    if crypto.dev_key_refused():
        return [
            Error(
                crypto.SHARED_DATABASE_WITHOUT_KEYS,
                hint="See 'Keys' in docs/deployment.md.",
                id="integrations.E002",
            )
        ]
    problem = crypto.check_keys()
    if problem:
        return [Error(problem, id="integrations.E001")]
    if crypto.using_dev_key():
        return [
            Warning(
                "Stored credentials are encrypted with a development key from "
                f"{settings.SYNC_DEV_ENCRYPTION_KEY_FILE}.",
                hint="Set SYNC_ENCRYPTION_KEYS (generate a key with "
                "'python manage.py rotate_secrets --generate-key') before storing real passwords.",
                id="integrations.W001",
            )
        ]
    return []
