"""Talking to Microsoft Graph for one mailbox: the one place where Graph's answers become our
error classes.

- always ``/users/{mailbox}`` (``/me`` does not exist for app-only tokens);
- ``Prefer: IdType="ImmutableId"`` on every request, so ids survive moves between folders;
- a 401 ``InvalidAuthenticationToken`` gets one fresh token and one retry;
- never more than 4 requests in flight to one mailbox from this process (Graph's limit);
- the token is only ever held in memory, never logged or stored.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from typing import Any
from urllib.parse import quote

import requests

from integrations.errors import AuthFailed, CursorReset, Permanent, RateLimited, Transient
from integrations.http import HttpClient, retry_after
from integrations.msgraph import auth
from integrations.msgraph.config import GraphConfig

MAILBOX_CONCURRENCY = 4
IMMUTABLE_IDS = 'IdType="ImmutableId"'

_slots: dict[tuple[str, str], threading.BoundedSemaphore] = {}
_slots_lock = threading.Lock()


def mailbox_slots(config: GraphConfig) -> threading.BoundedSemaphore:
    key = (config.graph_url, config.mailbox.lower())
    with _slots_lock:
        return _slots.setdefault(key, threading.BoundedSemaphore(MAILBOX_CONCURRENCY))


class ItemGone(Exception):
    """The item was deleted or moved away meanwhile (404 ErrorItemNotFound)."""


class NoContent(Exception):
    """Graph will not give this content (405 for a reference attachment's ``$value``, or a
    400 about it): the item is recorded without it."""


class GraphClient:
    def __init__(self, config: GraphConfig, secrets: Mapping[str, Any]) -> None:
        self.config = config
        self.secrets = secrets
        # requests go to the Graph endpoint the credentials were entered for, and nowhere
        # else: a nextLink or deltaLink pointing at another server is refused (HttpClient)
        self.http = HttpClient(
            timeout=(10.0, config.request_timeout), what="Microsoft Graph", origin=config.graph_url
        )
        self.slots = mailbox_slots(config)
        self._token: str | None = None
        self.request_count = 0

    def mailbox_url(self, path: str = "") -> str:
        base = f"{self.config.api}/users/{quote(self.config.mailbox, safe='@')}"
        return f"{base}/{path}" if path else base

    def get(
        self, url: str, *, params: dict[str, Any] | None = None, page_size: int | None = None
    ) -> dict[str, Any]:
        """GET a Graph URL (a path below the mailbox, or a full nextLink/deltaLink). An answer
        whose nextLink or deltaLink points at another server is refused (``Permanent``) before
        anyone can keep that link in a cursor and follow it later."""
        response = self._send(url, params, page_size)
        body = response.json()
        if isinstance(body, dict):
            for key in ("@odata.nextLink", "@odata.deltaLink"):
                if isinstance(body.get(key), str):
                    self.http.check_destination(body[key])
        return body

    def pages(self, url: str, params: dict[str, Any] | None = None) -> Iterator[dict[str, Any]]:
        """A listing, page by page, following each ``@odata.nextLink`` to the last page
        (graph/paging). A nextLink handed out before means the listing would never end:
        ``Transient`` (tried again later), not a request loop."""
        seen: set[str] = set()
        link: str | None = url
        while link:
            page = self.get(link, params=params)
            yield page
            link, params = page.get("@odata.nextLink"), None
            if link in seen:
                raise Transient(
                    "Microsoft Graph kept answering with a page it had already sent; the "
                    "listing is read again at the next try.",
                    detail=f"repeated @odata.nextLink after {len(seen) + 1} pages",
                )
            if link:
                seen.add(link)

    def call(self, method: str, url: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        """Any other request (subscriptions: POST, PATCH, DELETE); {} for an empty answer."""
        response = self._send(url, None, None, method=method, body=body)
        return response.json() if response.content else {}

    def get_bytes(self, url: str) -> bytes:
        """Raw content (``$value``); ``NoContent`` when Graph says it has none to give."""
        try:
            return self._send(url, None, None).content
        except Permanent as refused:
            if refused.detail.startswith(("HTTP 405", "HTTP 400")):
                raise NoContent(refused.detail[:200]) from None
            raise

    def close(self) -> None:
        self.http.close()

    # --- internals -----------------------------------------------------------------------------
    def _send(
        self,
        url: str,
        params: dict[str, Any] | None,
        page_size: int | None,
        *,
        method: str = "GET",
        body: dict[str, Any] | None = None,
    ) -> requests.Response:
        if not url.startswith("https://"):
            url = self.mailbox_url(url)
        prefer = [IMMUTABLE_IDS]
        if page_size:
            prefer.append(f"odata.maxpagesize={page_size}")
        for attempt in (1, 2):
            if self._token is None or attempt == 2:
                self._token = auth.token(self.config, self.secrets, fresh=attempt == 2)
            headers = {"Authorization": f"Bearer {self._token}", "Prefer": ", ".join(prefer)}
            with self.slots:
                response = self.http.request(method, url, params=params, headers=headers, json=body)
            self.request_count += 1
            if response.ok:
                return response
            error = _error_of(response)
            if (
                response.status_code == 401
                and attempt == 1
                and error[0] in ("InvalidAuthenticationToken", "")
            ):
                continue  # expired or revoked: one fresh token, one retry
            raise self._classify(response, error)
        raise AuthFailed(  # pragma: no cover - the loop returns or raises above
            "Microsoft Graph rejected a freshly issued token."
        )

    def _classify(self, response: requests.Response, error: tuple[str, str]) -> Exception:
        status = response.status_code
        code, message = error
        detail = f"HTTP {status} {code}: {message}"[:500]
        mailbox = self.config.mailbox
        if status == 401:
            return AuthFailed(
                "Microsoft Graph rejected a freshly issued token; check the app "
                "registration and its credentials.",
                detail=detail,
                code=code,
            )
        if status == 410 or _SYNC_STATE_CODES & _codes_of(response):
            # before 403/404: Graph answers a forgotten position with "a 40X-series error"
            # whose code (or an innererror's) names it (docs/protocols.md)
            return CursorReset("Microsoft Graph no longer knows this sync position.", detail=detail)
        if status == 403:
            return Permanent(
                f"Microsoft Graph denied access to mailbox {mailbox}: either admin consent for "
                "Mail.Read (Application) is missing (a tenant administrator grants it in "
                "Entra ID > App registrations > API permissions), or an Exchange application "
                "access policy excludes this mailbox. Changes take up to 2 hours to apply.",
                detail=detail,
                code=code,
            )
        if status == 404 and code == "ErrorItemNotFound":
            return ItemGone(detail)
        if status == 404:
            return Permanent(
                f"Mailbox {mailbox} was not found or has no Exchange Online "
                "mailbox: check the user id or principal name.",
                detail=detail,
                code=code,
            )
        if status == 429 or (status == 503 and "Retry-After" in response.headers):
            return RateLimited(
                f"Microsoft Graph is throttling requests to {mailbox}.",
                retry_after=retry_after(response),
                detail=detail,
                code=code,
            )
        if status >= 500:
            return Transient(
                f"Microsoft Graph is unavailable (HTTP {status}).",
                detail=detail,
                code=code,
            )
        return Permanent(
            f"Microsoft Graph refused the request (HTTP {status} {code}).", detail=detail, code=code
        )


_SYNC_STATE_CODES = frozenset({"syncstatenotfound", "resyncrequired", "syncstateinvalid"})


def _codes_of(response: requests.Response) -> frozenset[str]:
    """Every error code of a Graph error body, lower-cased: the top one and those of its
    nested ``innererror`` objects, which clients must "loop over" (docs/protocols.md)."""
    try:
        node: Any = response.json().get("error")
    except (ValueError, AttributeError):
        return frozenset()
    codes = set()
    for _ in range(10):  # a hostile body cannot make this loop forever
        if not isinstance(node, dict):
            break
        if isinstance(node.get("code"), str):
            codes.add(node["code"].lower())
        node = node.get("innererror", node.get("innerError"))
    return frozenset(codes)


def _error_of(response: requests.Response) -> tuple[str, str]:
    try:
        body = response.json()
    except ValueError:
        return "", response.text[:200]
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        return str(error.get("code", "")), str(error.get("message", ""))
    return "", str(body)[:200]
