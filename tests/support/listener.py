"""A TCP listener on 127.0.0.1 that only records: how many connections reached it and what
bytes they sent. Security tests point a changed setting at it and check that nothing (no
password, no token, not even a connection) arrived."""

from __future__ import annotations

import socket
import threading
import time
from contextlib import suppress


class Listener:
    """``hold``: keep each connection open (silently) this many seconds instead of closing it
    once the client stops sending — a server that accepts and never answers."""

    def __init__(self, hold: float = 0.0) -> None:
        self.hold = hold
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.1)  # so the thread notices the end of the test
        self.port: int = self.sock.getsockname()[1]
        self.connections = 0
        self.open = self.peak = 0  # connections open now, and at most at once
        self.received = b""
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._stopped = False

    def __enter__(self) -> Listener:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stopped = True
        with suppress(OSError):
            self.sock.close()
        self._thread.join(timeout=5)

    def _serve(self) -> None:
        while not self._stopped:
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                self.connections += 1
            threading.Thread(target=self._read, args=(conn,), daemon=True).start()

    def _read(self, conn: socket.socket) -> None:
        with self._lock:
            self.open += 1
            self.peak = max(self.peak, self.open)
        try:
            self._read_until_closed(conn)
        finally:
            with self._lock:
                self.open -= 1

    def _read_until_closed(self, conn: socket.socket) -> None:
        deadline = time.monotonic() + max(self.hold, 0.5)
        conn.settimeout(0.1)
        while not self._stopped and time.monotonic() < deadline:
            try:
                chunk = conn.recv(65536)  # a TLS ClientHello, an IMAP LOGIN, ...
            except TimeoutError:
                continue
            except OSError:
                break
            if not chunk:
                break
            with self._lock:
                self.received += chunk
        with suppress(OSError):
            conn.close()
