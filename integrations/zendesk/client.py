"""Talking to one Zendesk account: authentication, the shared export budget, and the one place
where Zendesk's answers become our error classes."""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any

from django.conf import settings

from integrations.errors import AuthFailed, Permanent, RateLimited, Transient
from integrations.http import HttpClient, retry_after
from integrations.zendesk.config import ZendeskConfig
from syncqueue import ratebudget

EXPORT_PATH = "/api/v2/incremental/tickets/cursor.json"
#: Show Token for the token of the request itself (OAuth only): its scopes
SCOPES_PATH = "/api/v2/oauth/tokens/current.json"
#: OAuth scopes that let a token read tickets: all reads, or tickets' (a resource named
#: without ":read" or ":write" is read and write)
READ_SCOPES = frozenset({"read", "tickets", "tickets:read"})


#: what the user is told for a 401 (not authenticated) or a 403 (no permission), by whether the
#: credential is an OAuth token (else an API token with the admin's email). Zendesk's 403 says
#: only "Forbidden"; for an OAuth token it has two causes.
_REFUSED = {
    (401, False): "Zendesk rejected the API token: check the admin's email and the token "
    "(Admin Center > Apps and integrations > Zendesk API).",
    (401, True): "Zendesk rejected the OAuth token (expired, revoked or for another account): "
    "enter a new one.",
    (403, False): "The token's user must be a Zendesk admin to export tickets: use an admin's "
    "email and API token.",
    (403, True): "Zendesk refused the OAuth token: exporting tickets needs a token with the "
    "read (or tickets:read) scope, issued to a Zendesk admin.",
}


class Rejected(Exception):
    """A 400/422 answer the sync algorithm interprets (a stale cursor, a too recent start)."""

    def __init__(self, status: int, error: str, description: str) -> None:
        super().__init__(f"HTTP {status} {error}: {description}")
        self.status, self.error, self.description = status, error, description


def base_url(config: ZendeskConfig) -> str:
    return settings.ZENDESK_BASE_URL.format(subdomain=config.subdomain).rstrip("/")


class ZendeskClient:
    def __init__(self, config: ZendeskConfig, secrets: Mapping[str, Any]) -> None:
        self.config = config
        self.base = base_url(config)
        headers = {"Accept": "application/json"}
        self.oauth = bool(secrets.get("oauth_token"))  # else an API token (the messages differ)
        if self.oauth:
            headers["Authorization"] = f"Bearer {secrets['oauth_token']}"
        elif secrets.get("api_token") and config.email:
            pair = f"{config.email}/token:{secrets['api_token']}".encode()
            headers["Authorization"] = "Basic " + base64.b64encode(pair).decode()
        else:
            raise Permanent(
                "Zendesk credentials are incomplete: give the admin's email and an API token, "
                "or an OAuth token."
            )
        # the session carries the credentials: requests go to this account's server only (an
        # after_url or next_page pointing at another server is refused, HttpClient)
        self.http = HttpClient(
            timeout=(10.0, config.request_timeout),
            headers=headers,
            what="Zendesk",
            origin=self.base,
        )
        self.requests = 0

    def get(self, path_or_url: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        url = path_or_url if "://" in path_or_url else self.base + path_or_url
        response = self.http.request("GET", url, params=params)
        self.requests += 1
        if response.ok:
            return response.json()
        raise self._classify(response)

    def export(self, params: dict[str, Any]) -> dict[str, Any]:
        """One page of the incremental export, within the account's shared rate budget."""
        limit, per = settings.ZENDESK_EXPORT_RATE
        if limit:
            wait = ratebudget.reserve(f"zendesk:{self.config.subdomain}:export", limit, per)
            if wait:
                raise RateLimited(
                    f"Zendesk allows {limit} export requests per {per:g}s for "
                    f"{self.config.subdomain}; waiting for the shared budget.",
                    retry_after=wait,
                )
        return self.get(EXPORT_PATH, params)

    def close(self) -> None:
        self.http.close()

    def _classify(self, response: Any) -> Exception:
        status = response.status_code
        try:
            body = response.json()
        except ValueError:
            body = {"error": response.text[:200]}
        error = body.get("error") if isinstance(body, dict) else None
        title = error.get("title", "") if isinstance(error, dict) else str(error or "")
        description = str(body.get("description", "")) if isinstance(body, dict) else ""
        detail = f"HTTP {status} {title}: {description}"[:500]
        account = f"{self.config.subdomain}.zendesk.com"
        if status == 401:
            return AuthFailed(_REFUSED[401, self.oauth], detail=detail, code="unauthorized")
        if status == 403:
            return Permanent(_REFUSED[403, self.oauth], detail=detail, code="forbidden")
        if status == 404 and "help desk" in title.lower():
            return Permanent(
                f"There is no Zendesk account at {account}: check the subdomain.",
                detail=detail,
                code="no_help_desk",
            )
        if status == 429 or (status == 503 and "Retry-After" in response.headers):
            return RateLimited(
                f"Zendesk is rate limiting {account}.",
                retry_after=retry_after(response, default=60.0),
                detail=detail,
            )
        if status >= 500:
            return Transient(f"Zendesk is unavailable (HTTP {status}).", detail=detail)
        if status == 409:
            # a conflict with a change under way at Zendesk: gone on a later request (Singer's
            # tap-zendesk retries it on reads too; docs/protocols.md)
            return Transient(
                "Zendesk answered 409 Conflict: a change was under way on its side.",
                detail=detail,
            )
        if status in (400, 422) or (status == 404 and title == "RecordNotFound"):
            return Rejected(status, title, description)
        return Permanent(f"Zendesk refused the request (HTTP {status}).", detail=detail)
