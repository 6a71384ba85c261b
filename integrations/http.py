"""The one HTTP seam for providers spoken to over HTTPS (Microsoft Graph, Zendesk, Zimbra's
SOAP).

Every request has a connect and a read timeout; nothing retries at the transport level (the
engine decides about retries, by error class); network failures become ``Transient`` and TLS
verification failures ``Permanent`` (:func:`transport_errors`). The statuses that mean the
same everywhere — 429 and a 503 with ``Retry-After`` (slow down), 502/503/504 (try later) —
are mapped once (:func:`overload_error`); providers map the rest themselves, because each says
what a 403 means in its own words. ``SYNC_CA_BUNDLE`` adds trust for a private CA (tests, or a
company's TLS-inspecting proxy).
"""

from __future__ import annotations

import email.utils
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit

import requests
from django.conf import settings

from integrations.errors import Permanent, RateLimited, Transient

DEFAULT_TIMEOUT = (10.0, 60.0)


def verify_setting() -> bool | str:
    """``requests``' ``verify``: the system CAs, or the bundle in SYNC_CA_BUNDLE."""
    return settings.SYNC_CA_BUNDLE or True


class Session(requests.Session):
    """A session whose ``verify`` and timeout hold for every request. (Plain ``requests`` lets
    the REQUESTS_CA_BUNDLE environment variable override a session's ``verify``.)"""

    def __init__(
        self,
        timeout: tuple[float, float] | float = DEFAULT_TIMEOUT,
        guard: Callable[[str], None] | None = None,
    ) -> None:
        super().__init__()
        self.verify = verify_setting()
        self.default_timeout = timeout
        self.guard = guard

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> Any:
        """``guard`` sees the URL as it is sent (prepared: a backslash or userinfo in a link
        is resolved as the connection will be), for every request, redirects included."""
        if self.guard is not None:
            self.guard(str(request.url or ""))
        return super().send(request, **kwargs)

    def request(self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any) -> Any:
        if kwargs.get("verify") is None:
            kwargs["verify"] = self.verify
        if kwargs.get("timeout") is None:
            kwargs["timeout"] = self.default_timeout
        return super().request(method, url, *args, **kwargs)


def retry_after(response: requests.Response, default: float = 5.0) -> float:
    """Seconds to wait from a Retry-After header (seconds or an HTTP date)."""
    value = response.headers.get("Retry-After", "").strip()  # any case: requests folds it
    if not value:
        return default
    try:
        return max(0.0, float(value))  # seconds; Graph sends fractions such as "2.128"
    except ValueError:
        pass
    try:
        moment = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return default
    return max(0.0, moment.timestamp() - time.time())


@contextmanager
def transport_errors(what: str) -> Iterator[None]:
    """Map ``requests``' exceptions raised inside the block to our error classes (``what``:
    "Zimbra", "the Zendesk account acme" …)."""
    try:
        yield
    except requests.exceptions.SSLError as exc:
        raise Permanent(
            f"The TLS certificate of {what} could not be verified.", detail=str(exc)[:300]
        ) from exc
    except requests.exceptions.Timeout as exc:
        raise Transient(
            f"{what[:1].upper()}{what[1:]} did not answer in time.", detail=str(exc)[:300]
        ) from exc
    except requests.exceptions.ConnectionError as exc:
        raise Transient(
            f"Could not reach {what} (connection failed or dropped).", detail=str(exc)[:300]
        ) from exc
    except requests.exceptions.RequestException as exc:
        raise Transient(f"Request to {what} failed.", detail=str(exc)[:300]) from exc


def overload_error(
    response: requests.Response, what: str, default_wait: float = 5.0
) -> Transient | None:
    """The error for a status that means "slow down" or "try later" on any HTTP service:
    429, or 503 with ``Retry-After`` → ``RateLimited``; 502, 503, 504 → ``Transient``."""
    status = response.status_code
    if status == 429 or (status == 503 and "Retry-After" in response.headers):
        return RateLimited(
            f"{what[:1].upper()}{what[1:]} is limiting requests (HTTP {status}).",
            retry_after=retry_after(response, default_wait),
        )
    if status in (502, 503, 504):
        return Transient(f"{what[:1].upper()}{what[1:]} is unavailable (HTTP {status}).")
    return None


_DEFAULT_PORTS = {"https": 443, "http": 80}


def origin_of(url: str) -> tuple[str, str, int]:
    """(scheme, host, port) of ``url``, the port filled in for http and https: what decides
    which server a request reaches."""
    try:
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        port = parts.port or _DEFAULT_PORTS.get(scheme, 0)
        return scheme, (parts.hostname or "").lower(), port
    except ValueError:  # a port that is no number, a broken IPv6 address: no server at all
        return "", "", -1


def as_sent(url: str) -> str:
    """``url`` as ``requests`` sends it (prepared): where the connection really goes. A link
    can be written so that a plain reading finds another host than the connection does
    (``https://a.example\\@b.example/``: urlsplit reads b.example, the connection goes to
    a.example); prepared, it has one reading. "" for one that cannot be sent."""
    try:
        return str(requests.Request("GET", url).prepare().url or "")
    except Exception:  # an invalid URL: requests would refuse it too
        return ""


def _server(origin: tuple[str, str, int]) -> str:
    """``host``, or ``host:port`` when the port is not the scheme's own."""
    scheme, host, port = origin
    return (host or "no host") + ("" if port == _DEFAULT_PORTS.get(scheme) else f":{port}")


class HttpClient:
    """A ``requests.Session`` with timeouts and error mapping; one per connector run.

    ``origin``: the server this client's credentials were entered for (a URL; its scheme, host
    and port count). Every request then goes there or nowhere: a link the service hands back
    (a next page, a delta link) that points at another server is refused with ``Permanent``
    before anything is sent, so the credentials in the session's headers never reach it. The
    URL checked is the one the session sends (``Session.guard``): as the connection will read
    it, and for each redirect too.
    """

    def __init__(
        self,
        *,
        timeout: tuple[float, float] = DEFAULT_TIMEOUT,
        headers: dict[str, str] | None = None,
        what: str = "the service",
        origin: str | None = None,
    ) -> None:
        self.origin = origin_of(origin) if origin else None
        self.session = Session(timeout, guard=self.check_destination if origin else None)
        self.session.headers.update({"User-Agent": "syncproject", **(headers or {})})
        self.what = what

    def check_destination(self, url: str) -> None:
        """Raise ``Permanent`` unless ``url`` is on this client's ``origin`` (if it has one).
        Also for links a caller is about to keep for later (a delta link in a cursor)."""
        if self.origin is None:
            return
        target = origin_of(as_sent(url))
        if target == self.origin:
            return
        found, own = _server(target), _server(self.origin)
        raise Permanent(
            f"{self.what} answered with a link to another server ({found}); it was not "
            f"followed, because this connection's credentials are sent only to {own}.",
            detail=f"refused a link to {target[0]}://{found}; the credentials are for "
            f"{self.origin[0]}://{own}",
        )

    def request(self, method: str, url: str, **kwargs: Any) -> requests.Response:
        with transport_errors(self.what):  # the session's guard checks where it goes
            return self.session.request(method, url, **kwargs)
        raise AssertionError("unreachable")  # pragma: no cover

    def close(self) -> None:
        self.session.close()
