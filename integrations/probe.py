""" "Test connection": one place that runs a connector's ``check()`` for a person, so every
surface (the settings page, the admin, ``sync_doctor --live``) answers the same way.

A connector maps the failures it knows to our error classes. Anything else (a bug, a library
raising something unexpected on odd input) must still not become an error page or a crashed
command: it is logged with its traceback for staff and reported as an ``Internal`` error with
a plain message.
"""

from __future__ import annotations

import logging
import traceback

from integrations import crypto
from integrations.base import CheckResult
from integrations.errors import SyncError
from integrations.models import Connection
from syncqueue.redact import redact, secret_values

log = logging.getLogger(__name__)


class CheckCrashed(SyncError):
    """``check()`` raised something no connector classified."""

    error_class = "Internal"


def probe(conn: Connection) -> CheckResult:
    """Run ``conn``'s connection test. Raises only ``SyncError`` subclasses."""
    try:
        return conn.build_connector().check()
    except SyncError:
        raise
    except Exception as exc:
        try:
            values = secret_values(crypto.decrypt_secrets(conn.secret))
        except SyncError:
            values = []
        detail = redact(traceback.format_exc()[-2000:], values)
        log.error("Connection test of %s crashed:\n%s", conn.pk or "a new connection", detail)
        raise CheckCrashed(
            f"The connection test failed unexpectedly ({type(exc).__name__}). Staff can find "
            "the details in the server log.",
            detail=detail,
        ) from exc
