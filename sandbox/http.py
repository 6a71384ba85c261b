"""A small threaded HTTP(S) server base for the local protocol servers (Graph, Zendesk, Zimbra).

Each server listens on 127.0.0.1 on a free port, runs in a background thread, speaks HTTP/1.1
with keep-alive, and — given a ``TestCA`` — real TLS that clients verify against the test CA.
The TLS handshake happens in the connection's own thread, so a slow client never blocks others.
Fault injection is shared: a ``Fault`` matches requests by a regular expression on the path and
answers with an error status (and Retry-After), or drops the connection without an answer.
"""

from __future__ import annotations

import contextlib
import json
import re
import socket
import ssl
import sys
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self
from urllib.parse import parse_qs, urlsplit

from sandbox.tls import TestCA


@dataclass
class Fault:
    """Answer ``times`` matching requests with ``status`` (or drop them, with ``drop``)."""

    pattern: str
    status: int = 503
    body: dict[str, Any] | str = field(default_factory=dict)
    times: int = 1
    retry_after: float | None = None
    drop: bool = False
    after: bool = False  # with drop: perform the request first, then drop the answer
    method: str = ""
    hits: int = 0

    def matches(self, method: str, target: str) -> bool:
        if self.times <= 0 or (self.method and self.method != method):
            return False
        return re.search(self.pattern, target) is not None


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, app: LocalServer, tls: ssl.SSLContext | None) -> None:
        self.app = app
        self.tls = tls
        super().__init__(("127.0.0.1", 0), _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], OSError):
            return  # the client went away mid-answer (a killed worker): not a server bug
        super().handle_error(request, client_address)

    def finish_request(self, request: Any, client_address: Any) -> None:
        if self.tls is not None:
            try:
                request = self.tls.wrap_socket(request, server_side=True)
            except (ssl.SSLError, OSError):
                return
        try:
            self.RequestHandlerClass(request, client_address, self)  # type: ignore[arg-type]
        finally:
            if self.tls is not None:
                with contextlib.suppress(OSError):
                    request.close()


class Request:
    """What a route handler sees."""

    def __init__(self, handler: _Handler, body: bytes) -> None:
        parts = urlsplit(handler.path)
        self.method = handler.command
        self.path = parts.path
        self.target = handler.path
        self.query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        self.headers = handler.headers
        self.body = body

    def form(self) -> dict[str, str]:
        return {k: v[-1] for k, v in parse_qs(self.body.decode("utf-8", "replace")).items()}

    def json(self) -> Any:
        return json.loads(self.body or b"null")


@dataclass
class Response:
    status: int = 200
    body: bytes | str | dict[str, Any] | list[Any] = b""
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str = ""
    #: an answer streamed in pieces (``Transfer-Encoding: chunked``) instead of ``body``, each
    #: piece sent as it is produced: a large document arriving over a slow network
    stream: Iterable[bytes] | None = None

    def encoded(self) -> tuple[bytes, str]:
        if isinstance(self.body, dict | list):
            return json.dumps(self.body).encode(), self.content_type or "application/json"
        if isinstance(self.body, str):
            return self.body.encode(), self.content_type or "text/plain; charset=utf-8"
        return self.body, self.content_type or "application/octet-stream"


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server
    # headers and body leave in one write, without Nagle's delay (else every small response
    # waits for the client's delayed ACK: ~40 ms)
    wbufsize = 1 << 16
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        app = self.server.app
        request = Request(self, body)
        if app.delay:
            time.sleep(app.delay)
        fault = app.take_fault(request)
        if fault is not None and fault.drop:
            if fault.after:
                app.handle(request)
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)
            return
        if fault is not None:
            response = Response(fault.status, fault.body or app.fault_body(fault))
            if fault.retry_after is not None:
                response.headers["Retry-After"] = f"{fault.retry_after:g}"
        else:
            try:
                response = app.redirect_links(app.handle(request))
            except Exception as exc:  # a bug in the fake server: make it visible to the test
                app.errors.append(repr(exc))
                response = Response(500, {"error": {"code": "FakeServerBug", "message": repr(exc)}})
        data, content_type = response.encoded()
        self.send_response(response.status)
        self.send_header("Content-Type", content_type)
        if response.stream is None:
            self.send_header("Content-Length", str(len(data)))
        else:
            self.send_header("Transfer-Encoding", "chunked")
        for name, value in response.headers.items():
            self.send_header(name, value)
        self.end_headers()
        if response.stream is None:
            self.wfile.write(data)
            return
        try:
            for piece in response.stream:
                if piece:
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                    self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")
        except OSError:  # the client went away (e.g. a killed worker)
            self.close_connection = True

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _serve


class LocalServer:
    """Subclasses implement ``handle(request) -> Response``."""

    #: the keys of the links to this server's own pages in its JSON answers (``links_to``)
    LINK_KEYS: frozenset[str] = frozenset()

    def __init__(self, ca: TestCA | None = None) -> None:
        self.ca = ca
        self.faults: list[Fault] = []
        self.errors: list[str] = []
        self.requests: list[tuple[str, str]] = []
        self.lock = threading.RLock()
        self.delay = 0.0  # seconds added to every answer (a slow network)
        #: misbehaving on purpose (a hostile or compromised server): the paging links in JSON
        #: answers (``LINK_KEYS``: next pages, delta links) point at this other server instead
        self.links_to: str | None = None
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        assert self._server is not None, "server not started"
        return self._server.server_address[1]

    @property
    def url(self) -> str:
        scheme = "https" if self.ca else "http"
        return f"{scheme}://127.0.0.1:{self.port}"

    def start(self) -> Self:
        context = self.ca.server_context() if self.ca else None
        self._server = _Server(self, context)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def redirect_links(self, response: Response) -> Response:
        """``links_to``: this server's paging links in a JSON answer point at that server."""
        if self.links_to is None or not isinstance(response.body, dict):
            return response
        own = self.url
        response.body = {
            key: self.links_to + value[len(own) :]
            if key in self.LINK_KEYS and isinstance(value, str) and value.startswith(own)
            else value
            for key, value in response.body.items()
        }
        return response

    # --- faults --------------------------------------------------------------------------------
    def fault(self, pattern: str, status: int = 503, **kwargs: Any) -> Fault:
        fault = Fault(pattern, status, **kwargs)
        with self.lock:
            self.faults.append(fault)
        return fault

    def take_fault(self, request: Request) -> Fault | None:
        with self.lock:
            self.requests.append((request.method, request.target))
            target = self.fault_target(request)
            for fault in self.faults:
                if fault.matches(request.method, target):
                    fault.times -= 1
                    fault.hits += 1
                    return fault
        return None

    def fault_target(self, request: Request) -> str:
        """What fault patterns are matched against (the path and query by default)."""
        return request.target

    def fault_body(self, fault: Fault) -> dict[str, Any] | str:
        return {"error": {"code": f"Http{fault.status}", "message": "injected fault"}}

    def handle(self, request: Request) -> Response:  # pragma: no cover - abstract
        raise NotImplementedError
