"""Encryption of stored credentials with Fernet keys from the environment.

``SYNC_ENCRYPTION_KEYS`` lists keys newest first: the first encrypts, every key decrypts, so a
new key can be put in front and ``manage.py rotate_secrets`` re-encrypts everything under it
before the old key is removed. Without keys a development key is created under ``var/`` with a
warning (system check ``integrations.W001``) — on SQLite only: with a shared database
(``DATABASE_URL``) every host would make its own key, so that is an error that stops start-up
(``integrations.E002``).

A secret is sealed together with its *destination* (the connection's kind and the settings
that decide where it is sent: a mail server's host and port, a tenant, a URL). Whoever opens it
gets the destination back and must compare it with where they are about to send it
(``Connection.get_secrets`` does), so a stored password can never be sent to a server it was
not entered for, whatever path changed the settings.

Nothing here logs or returns key material or plaintext in an error.
"""

from __future__ import annotations

import json
import logging
from functools import lru_cache
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from integrations.errors import ConfigError

log = logging.getLogger(__name__)


class SecretsUnavailable(ConfigError):
    """Stored credentials cannot be decrypted with the configured keys."""


def generate_key() -> str:
    """Return a new random Fernet key (url-safe base64 of 32 bytes)."""
    return Fernet.generate_key().decode()


def using_dev_key() -> bool:
    """True when no keys are configured and the development key file is used."""
    return not settings.SYNC_ENCRYPTION_KEYS


def _dev_key() -> str:
    path = Path(settings.SYNC_DEV_ENCRYPTION_KEY_FILE)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(generate_key())
        path.chmod(0o600)
        log.warning(
            "Created a development encryption key at %s. Set SYNC_ENCRYPTION_KEYS in production.",
            path,
        )
    return path.read_text().strip()


SHARED_DATABASE_WITHOUT_KEYS = (
    "SYNC_ENCRYPTION_KEYS is not set, but the database is shared (DATABASE_URL): each host "
    "would make its own development key and none could read the others' credentials. Generate "
    "a key once with 'python manage.py rotate_secrets --generate-key' and set "
    "SYNC_ENCRYPTION_KEYS to it on every web and worker host."
)


def dev_key_refused() -> bool:
    """True when no keys are configured and the database is shared (not the embedded SQLite)."""
    return not settings.SYNC_ENCRYPTION_KEYS and bool(getattr(settings, "DATABASE_URL", ""))


def configured_keys() -> tuple[str, ...]:
    """The keys in use, newest first (the development key when none are configured).

    Raises ``ImproperlyConfigured`` when no keys are set on a shared database.
    """
    if settings.SYNC_ENCRYPTION_KEYS:
        return tuple(settings.SYNC_ENCRYPTION_KEYS)
    if dev_key_refused():
        raise ImproperlyConfigured(SHARED_DATABASE_WITHOUT_KEYS)
    return (_dev_key(),)


@lru_cache(maxsize=4)
def _multifernet(keys: tuple[str, ...]) -> MultiFernet:
    fernets = []
    for position, key in enumerate(keys, start=1):
        try:
            fernets.append(Fernet(key.encode()))
        except (ValueError, TypeError):
            # Never echo the key itself: say which one is wrong and what a good one looks like.
            raise ImproperlyConfigured(
                f"SYNC_ENCRYPTION_KEYS entry {position} is not a valid Fernet key "
                "(44 characters of url-safe base64). Generate one with "
                "'python manage.py rotate_secrets --generate-key'."
            ) from None
    return MultiFernet(fernets)


def _cipher() -> MultiFernet:
    return _multifernet(configured_keys())


_SEALED = "_sealed_for"  # marks the sealed format: {"_sealed_for": destination, "values": {…}}


def encrypt_secrets(values: dict[str, Any], destination: dict[str, Any] | None = None) -> str:
    """Encrypt a dict of secrets (sealed for ``destination``) under the newest key; an empty
    dict gives ''."""
    if not values:
        return ""
    payload: dict[str, Any] = values
    if destination is not None:
        payload = {_SEALED: destination, "values": values}
    return _cipher().encrypt(json.dumps(payload, sort_keys=True).encode()).decode()


def open_secrets(token: str) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The secrets and the destination they were sealed for (None: stored before sealing
    existed). Raises ``SecretsUnavailable`` when no configured key opens them."""
    data = _decrypt(token)
    if isinstance(data.get(_SEALED), dict) and isinstance(data.get("values"), dict):
        return data["values"], data[_SEALED]
    return data, None


def decrypt_secrets(token: str) -> dict[str, Any]:
    """The secrets in what ``encrypt_secrets`` produced, without their destination; callers
    that send a secret anywhere must use ``open_secrets`` (via ``Connection.get_secrets``).

    Raises ``SecretsUnavailable`` (a ``Permanent`` error) when no configured key opens it.
    """
    return open_secrets(token)[0]


def _decrypt(token: str) -> dict[str, Any]:
    if not token:
        return {}
    try:
        return json.loads(_cipher().decrypt(token.encode()))
    except InvalidToken:
        raise SecretsUnavailable(
            "The stored credentials cannot be decrypted. An administrator must check the "
            "encryption keys (SYNC_ENCRYPTION_KEYS) or enter the credentials again.",
            detail="No configured key decrypts this secret: the key that encrypted it is "
            "missing from SYNC_ENCRYPTION_KEYS.",
        ) from None


def rotate(token: str) -> str:
    """Re-encrypt ``token`` under the newest key (raises ``SecretsUnavailable`` if unreadable)."""
    if not token:
        return ""
    try:
        return _cipher().rotate(token.encode()).decode()
    except InvalidToken:
        raise SecretsUnavailable(
            "A stored secret cannot be decrypted with any configured key."
        ) from None


def check_keys() -> str | None:
    """Return a problem description when the configured keys are unusable, else None."""
    if dev_key_refused():
        return SHARED_DATABASE_WITHOUT_KEYS
    try:
        _cipher()
    except ImproperlyConfigured as exc:
        return str(exc)
    return None
