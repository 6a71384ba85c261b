"""The service-manager watchdog protocol (``sd_notify``), both sides.

A qcluster proves it still takes work by sending ``WATCHDOG=1`` to ``$NOTIFY_SOCKET``; it sends
nothing while it is stalled. Under systemd (``Type=notify``, ``WatchdogSec=``,
``NotifyAccess=all``) a missing ping gets the unit killed and restarted. ``manage.py serve``
(``make run``) is the same kind of supervisor: it opens such a socket for its qcluster and
restarts it when the pings stop (:class:`Listener`).

The protocol is one datagram of ``KEY=VALUE`` lines to a Unix socket (a leading ``@`` names an
abstract socket): https://www.freedesktop.org/software/systemd/man/latest/sd_notify.html.
It is a dozen lines, so we write it rather than depend on a C extension (``systemd-python``).
"""

from __future__ import annotations

import contextlib
import os
import socket
import tempfile
import time
from pathlib import Path

ENV = "NOTIFY_SOCKET"


def notify(message: str) -> bool:
    """Send ``message`` (e.g. ``"WATCHDOG=1"``) to the supervisor, if there is one."""
    address = os.environ.get(ENV, "")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall(message.encode())
    except OSError:
        return False
    return True


class Listener:
    """The supervisor's end: a datagram socket a child process pings (see :func:`notify`)."""

    def __init__(self) -> None:
        self._dir = tempfile.TemporaryDirectory(prefix="syncproject-notify-")
        self.path = str(Path(self._dir.name) / "notify.sock")
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        self._sock.bind(self.path)
        self._sock.setblocking(False)
        self.last_ping: float | None = None
        self.ready = False
        self.status = ""

    def reset(self) -> None:
        """A new child starts: forget what the previous one said."""
        self.drain()
        self.last_ping, self.ready, self.status = None, False, ""

    def drain(self) -> list[str]:
        """Read every waiting message; remember pings, readiness and status."""
        lines: list[str] = []
        while True:
            try:
                data = self._sock.recv(4096)
            except BlockingIOError:
                return lines
            for line in data.decode(errors="replace").splitlines():
                lines.append(line)
                if line == "WATCHDOG=1":
                    self.last_ping = time.monotonic()
                elif line == "READY=1":
                    self.ready = True
                    self.last_ping = time.monotonic()
                elif line.startswith("STATUS="):
                    self.status = line[len("STATUS=") :]

    def silent_for(self, started: float) -> float:
        """Seconds since the last ping (or since ``started`` if there was none)."""
        return time.monotonic() - (self.last_ping or started)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._sock.close()
        self._dir.cleanup()
