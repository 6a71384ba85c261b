"""Local provider servers (sandbox ``LocalServer``s) for the length of a test."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from sandbox.http import LocalServer
from sandbox.tls import TestCA

Server = TypeVar("Server", bound=LocalServer)


@contextmanager
def serving(server: Server, settings: Any, ca: TestCA | None = None) -> Iterator[Server]:
    """Start ``server`` and trust its CA (or ``ca``) through ``settings.SYNC_CA_BUNDLE`` (the
    pytest-django ``settings`` fixture); on the way out stop it, and fail if it recorded an
    error while answering."""
    trusted = ca or server.ca
    assert trusted is not None, "an HTTPS server needs a CA to trust"
    server.start()
    try:
        settings.SYNC_CA_BUNDLE = str(trusted.ca_file)
        yield server
    finally:
        server.stop()
    assert not server.errors, server.errors
