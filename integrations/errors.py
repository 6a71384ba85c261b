"""The error classes every connector raises; the engine decides what happens by class.

Connectors map library exceptions to these at one seam per protocol (``raise ... from exc``).
``message`` is short and safe to show the connection's owner; ``detail`` is for staff (the
provider's reply, an error code) and must already be free of secrets.

| class         | engine outcome                                                         |
|---------------|------------------------------------------------------------------------|
| Transient     | retry with exponential backoff and jitter, up to max_attempts          |
| RateLimited   | wait for ``retry_after`` seconds without spending an attempt           |
| AuthFailed    | fail at once; the connection becomes ``auth_required``                 |
| Permanent     | fail at once (configuration, permission, bug); no retries              |
| CursorReset   | drop the cursor (or use ``cursor``) and resync within the same job     |

The decisions themselves live in one pure function, ``syncqueue.policy.after_failure``.
"""

from __future__ import annotations

from typing import Any, ClassVar


class SyncError(Exception):
    """Base class: a failure whose handling is decided by its class."""

    error_class: ClassVar[str] = "SyncError"

    def __init__(self, message: str, *, detail: str = "", code: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.detail = detail
        self.code = code

    def __str__(self) -> str:
        return self.message


class Transient(SyncError):
    """Network trouble, timeouts, 5xx, a dropped connection: worth retrying later."""

    error_class = "Transient"


class RateLimited(Transient):
    """The provider asked us to slow down; ``retry_after`` is in seconds."""

    error_class = "RateLimited"

    def __init__(self, message: str, *, retry_after: float, detail: str = "", code: str = ""):
        super().__init__(message, detail=detail, code=code)
        self.retry_after = max(0.0, float(retry_after))


class AuthFailed(SyncError):
    """Credentials were rejected; a person has to reconnect or fix them."""

    error_class = "AuthFailed"


class Permanent(SyncError):
    """Configuration, permission or programming error: retrying will not help."""

    error_class = "Permanent"


class CursorReset(SyncError):
    """The stored sync state is no longer valid (UIDVALIDITY, Graph 410, Zendesk cursor).

    ``cursor`` is the state to restart from; None means "start over from nothing".
    """

    error_class = "CursorReset"

    def __init__(self, message: str, *, cursor: dict[str, Any] | None = None, detail: str = ""):
        super().__init__(message, detail=detail)
        self.cursor = cursor


class ConfigError(Permanent):
    """A connection's configuration or stored secret is invalid."""

    error_class = "Permanent"
