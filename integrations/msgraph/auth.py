"""App-only tokens for Microsoft Graph, from MSAL, acquired when a job runs — never stored.

One ``ConfidentialClientApplication`` per (authority, client, credential) per process: its
in-memory cache hands out the same token until shortly before it expires, then fetches a new
one, so a sync that runs for hours keeps working. MSAL reports failures as dictionaries; they
are turned into our error classes here, with a message that tells an administrator what to fix.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Mapping
from typing import Any

import msal
import requests
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization

from integrations.errors import AuthFailed, Permanent, Transient
from integrations.http import Session
from integrations.msgraph.config import GraphConfig

SCOPES = ["https://graph.microsoft.com/.default"]
CONSENT_HELP = (
    "Admin consent for Mail.Read (Application) is missing: a tenant administrator must grant it "
    "in Microsoft Entra ID > App registrations > API permissions."
)

_apps: dict[tuple[str, str, str], msal.ConfidentialClientApplication] = {}
_lock = threading.Lock()


def readable_private_key(key: str) -> bool:
    """True when ``key`` is a PEM private key (unencrypted) that can sign a client assertion."""
    try:
        serialization.load_pem_private_key(key.encode(), password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        return False
    return True


def _credential(config: GraphConfig, secrets: Mapping[str, Any]) -> Any:
    if config.certificate_thumbprint:
        key = secrets.get("private_key")
        if not key:
            raise Permanent(
                "The certificate's private key is missing: enter it in the "
                "connection's credentials."
            )
        if not readable_private_key(str(key)):
            # MSAL would fail deep inside token signing with a ValueError; this is a
            # credential a person entered wrongly, so it is said once, plainly.
            raise AuthFailed(
                "The certificate's private key cannot be read: enter it again as an "
                "unencrypted PEM private key ('-----BEGIN PRIVATE KEY-----' …).",
                code="unreadable_private_key",
            )
        return {"thumbprint": config.certificate_thumbprint, "private_key": key}
    secret = secrets.get("client_secret")
    if not secret:
        raise Permanent(
            "The app registration's client secret is missing: enter it in the "
            "connection's credentials."
        )
    return secret


def application(
    config: GraphConfig, secrets: Mapping[str, Any], timeout: float = 30.0
) -> msal.ConfidentialClientApplication:
    """The process-wide app object for this tenant, client and credential."""
    credential = _credential(config, secrets)
    fingerprint = hashlib.sha256(repr(credential).encode()).hexdigest()
    key = (config.authority, config.client_id, fingerprint)
    with _lock:
        app = _apps.get(key)
        if app is None:
            try:
                app = msal.ConfidentialClientApplication(
                    config.client_id,
                    client_credential=credential,
                    authority=config.authority,
                    # a tenant-specific authority needs no instance discovery (a network call to
                    # Microsoft that would also defeat a local authority in tests)
                    instance_discovery=False,
                    http_client=Session(timeout),
                )
            except (ValueError, requests.RequestException) as exc:
                raise _network_or_config(exc, config) from exc
            _apps[key] = app
    return app


def _network_or_config(exc: Exception, config: GraphConfig) -> Exception:
    if isinstance(exc, requests.exceptions.SSLError):
        return Permanent(
            f"The sign-in service's TLS certificate could not be verified "
            f"({config.authority_host}).",
            detail=str(exc)[:300],
        )
    if isinstance(exc, requests.RequestException):
        return Transient("Could not reach the Microsoft sign-in service.", detail=str(exc)[:300])
    if "AADSTS90002" in str(exc) or "tenant name or GUID" in str(exc):
        return Permanent(
            f"Tenant {config.tenant_id} was not found: check the tenant id.", detail=str(exc)[:300]
        )
    return Permanent(
        f"The sign-in authority {config.authority} was not accepted.", detail=str(exc)[:300]
    )


def token(config: GraphConfig, secrets: Mapping[str, Any], *, fresh: bool = False) -> str:
    """An access token for Graph. ``fresh`` drops cached tokens first (after a 401).

    Raises ``AuthFailed`` for rejected or expired credentials, ``Permanent`` for configuration
    and consent problems, ``Transient`` for network trouble.
    """
    app = application(config, secrets)
    if fresh:
        app.remove_tokens_for_client()
    try:
        result = app.acquire_token_for_client(scopes=SCOPES)
    except requests.RequestException as exc:
        raise _network_or_config(exc, config) from exc
    except ValueError as exc:  # e.g. the discovery document could not be read
        raise Transient(
            "The Microsoft sign-in service gave an unusable answer.", detail=str(exc)[:300]
        ) from exc
    if "access_token" in result:
        return str(result["access_token"])
    raise describe(result, config)


def describe(result: Mapping[str, Any], config: GraphConfig) -> Exception:
    """Turn an MSAL error result into our error class with an administrator's to-do."""
    error = str(result.get("error", ""))
    text = str(result.get("error_description", ""))
    codes = {int(c) for c in result.get("error_codes", []) if str(c).isdigit()}
    detail = f"{error}: {text}"[:500]
    lowered = text.lower()
    if 7000222 in codes or ("expired" in lowered and "secret" in lowered):
        return AuthFailed(
            "The app registration's client secret has expired: create a new "
            "secret in Entra ID and enter it in this connection.",
            detail=detail,
            code=error,
        )
    if 7000215 in codes or error == "invalid_client":
        return AuthFailed(
            "Microsoft rejected the app's credentials (invalid client secret or "
            "certificate): enter the current secret for client "
            f"{config.client_id}.",
            detail=detail,
            code=error,
        )
    if 700016 in codes or error == "unauthorized_client":
        return Permanent(
            f"The application {config.client_id} is not registered in tenant "
            f"{config.tenant_id}: check the client and tenant ids.",
            detail=detail,
            code=error,
        )
    if 90002 in codes or ("tenant" in lowered and "not found" in lowered):
        return Permanent(
            f"Tenant {config.tenant_id} was not found: check the tenant id.",
            detail=detail,
            code=error,
        )
    if 65001 in codes or error in ("consent_required", "interaction_required"):
        return Permanent(CONSENT_HELP, detail=detail, code=error)
    if error == "invalid_scope":
        return Permanent(
            "The token request's scope was refused; the app needs application "
            "permissions on Microsoft Graph.",
            detail=detail,
            code=error,
        )
    if error in ("temporarily_unavailable", "server_error") or not error:
        return Transient("The Microsoft sign-in service is unavailable.", detail=detail, code=error)
    return Permanent(f"Microsoft sign-in failed ({error}).", detail=detail, code=error)
