"""SOAP to Zimbra through zeep and the minimal WSDL in this package; the one place where
Zimbra's faults become our error classes.

Tokens: the admin signs in with ``AuthRequest``; each user's mailbox is reached with a
``DelegateAuthRequest`` token. Both are cached per process for their lifetime (minus a minute)
and renewed once when Zimbra answers ``service.AUTH_EXPIRED``. Tokens live only in memory.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Mapping, Sequence
from functools import cache
from pathlib import Path
from typing import Any

import requests
import zeep
from lxml import etree
from zeep.transports import Transport

from integrations.errors import AuthFailed, Permanent, Transient
from integrations.http import Session, overload_error, transport_errors
from integrations.zimbra.config import ZimbraConfig

WSDL = Path(__file__).with_name("zimbra.wsdl")
MAIL = "urn:zimbraMail"
ADMIN = "urn:zimbraAdmin"
_BINDING = "{urn:syncproject:zimbra}%sBinding"

_tokens: dict[tuple[str, ...], tuple[str, float]] = {}
_lock = threading.Lock()


class ZimbraFault(Exception):
    def __init__(self, code: str, reason: str) -> None:
        super().__init__(f"{code}: {reason}")
        self.code, self.reason = code, reason


class ItemGone(Exception):
    """mail.NO_SUCH_TASK and friends: the task is not in Zimbra (any more)."""


class InTrash(ItemGone):
    """service.INVALID_REQUEST "cannot modify/cancel a calendar item under trash": someone
    deleted the task in Zimbra's web client, which moves it to the Trash. Gone, for us."""


class OutOfDate(Exception):
    """mail.INVITE_OUT_OF_DATE: the task changed in Zimbra since we last read it."""


class SyncTokenGone(Exception):
    """mail.MUST_RESYNC / mail.INVALID_SYNC_TOKEN: read the folder again without a token."""


REAUTH = {"service.AUTH_EXPIRED", "service.AUTH_REQUIRED"}
GONE = {"mail.NO_SUCH_TASK", "mail.NO_SUCH_CALITEM", "mail.NO_SUCH_ITEM", "mail.NO_SUCH_INVITE"}
OUT_OF_DATE = {"mail.INVITE_OUT_OF_DATE", "mail.MODIFY_CONFLICT"}
TOKEN_GONE = {"mail.MUST_RESYNC", "mail.INVALID_SYNC_TOKEN"}
RETRYABLE = {
    "mail.MAINTENANCE",
    "account.MAINTENANCE_MODE",
    "service.TEMPORARILY_UNAVAILABLE",
    "service.RESOURCE_UNREACHABLE",
    "service.PROXY_ERROR",
    "service.FAILURE",
}


def classify(fault: ZimbraFault, config: ZimbraConfig, account: str = "") -> Exception:
    code, detail = fault.code, f"{fault.code}: {fault.reason}"[:500]
    if code in GONE:
        return ItemGone(detail)
    if code == "service.INVALID_REQUEST" and "under trash" in fault.reason:
        return InTrash(detail)
    if code in OUT_OF_DATE:
        return OutOfDate(detail)
    if code in TOKEN_GONE:
        return SyncTokenGone(detail)
    if code in ("account.AUTH_FAILED", "account.CHANGE_PASSWORD") and not account:
        return AuthFailed(
            f"Zimbra rejected the admin account {config.admin_name}: enter its current "
            "password in this connection.",
            detail=detail,
            code=code,
        )
    if code == "account.TWO_FACTOR_AUTH_REQUIRED":
        return AuthFailed(
            f"The admin account {config.admin_name} requires two-factor sign-in; use an "
            "account for applications.",
            detail=detail,
            code=code,
        )
    if code == "account.NO_SUCH_ACCOUNT":
        return Permanent(
            f"No Zimbra account for {account or 'this user'}.", detail=detail, code=code
        )
    if code in ("service.PERM_DENIED", "account.ACCOUNT_INACTIVE"):
        return Permanent(
            f"Zimbra refused access to {account or 'the mailbox'} ({code}).",
            detail=detail,
            code=code,
        )
    if code in RETRYABLE:
        return Transient("Zimbra is temporarily unavailable.", detail=detail, code=code)
    if code == "mail.QUOTA_EXCEEDED":
        return Permanent(f"The Zimbra mailbox of {account} is full.", detail=detail, code=code)
    return Permanent(f"Zimbra refused the request ({code}).", detail=detail, code=code)


@cache
def _client(timeout: float, verify_key: str) -> zeep.Client:
    """One parsed WSDL per process (and per timeout / CA setting)."""
    session = Session(timeout=(10.0, timeout))
    transport = Transport(session=session, operation_timeout=timeout)
    return zeep.Client(str(WSDL), transport=transport, settings=zeep.Settings(raw_response=True))


def element(tag: str, text: str | None = None, **attrs: Any) -> etree._Element:
    node = etree.Element(f"{{{MAIL}}}{tag}", {k: str(v) for k, v in attrs.items() if v is not None})
    if text is not None:
        node.text = text
    return node


class ZimbraSoap:
    def __init__(self, config: ZimbraConfig, secrets: Mapping[str, Any]) -> None:
        from django.conf import settings

        self.config = config
        self.password = str(secrets.get("admin_password") or "")
        if not self.password:
            raise Permanent("The Zimbra admin password is missing: enter it in this connection.")
        client = _client(config.request_timeout, str(settings.SYNC_CA_BUNDLE))
        self.admin = client.create_service(_BINDING % "Admin", config.admin_url)
        self.mail = client.create_service(_BINDING % "Mail", config.soap_url)
        self.calls = 0
        fingerprint = hashlib.sha256(self.password.encode()).hexdigest()[:16]
        self._admin_key = ("admin", config.admin_url, config.admin_name, fingerprint)

    # --- tokens --------------------------------------------------------------------------------
    def admin_token(self, fresh: bool = False) -> str:
        def login() -> tuple[str, float]:
            name = etree.Element(f"{{{ADMIN}}}name")
            name.text = self.config.admin_name
            password = etree.Element(f"{{{ADMIN}}}password")
            password.text = self.password
            answer = self._send(self.admin, "Auth", None, [name, password], {})
            return _token_of(answer)

        return self._cached(self._admin_key, login, fresh)

    def user_token(self, account: str, fresh: bool = False) -> str:
        def delegate() -> tuple[str, float]:
            who = etree.Element(f"{{{ADMIN}}}account", by="name")
            who.text = account
            attrs = {"duration": str(self.config.delegated_token_lifetime)}
            try:
                answer = self._send(self.admin, "DelegateAuth", self.admin_token(), [who], attrs)
            except ZimbraFault as fault:
                if fault.code not in REAUTH:
                    raise
                answer = self._send(
                    self.admin, "DelegateAuth", self.admin_token(fresh=True), [who], attrs
                )
            return _token_of(answer)

        # Keyed by the admin credentials that made it too: a token obtained through another
        # connection (or before the password changed) must not serve this one.
        key = ("user", self.config.soap_url, *self._admin_key[1:], account.lower())
        return self._cached(key, delegate, fresh, account=account)

    def _cached(self, key: tuple[str, ...], fetch: Any, fresh: bool, account: str = "") -> str:
        with _lock:
            held = _tokens.get(key)
        if held and not fresh and held[1] > time.monotonic():
            return held[0]
        try:
            token, lifetime = fetch()
        except ZimbraFault as fault:
            raise classify(fault, self.config, account) from None
        with _lock:
            _tokens[key] = (token, time.monotonic() + max(0.0, lifetime - 60.0))
        return token

    # --- mailbox calls -------------------------------------------------------------------------
    def call(
        self, account: str, op: str, children: Sequence[etree._Element] = (), **attrs: Any
    ) -> etree._Element:
        """A urn:zimbraMail request in ``account``'s mailbox; one re-login on AUTH_EXPIRED."""
        clean = {k: str(v) for k, v in attrs.items() if v not in (None, "")}
        for attempt in (1, 2):
            token = self.user_token(account, fresh=attempt == 2)
            try:
                return self._send(self.mail, op, token, list(children), clean)
            except ZimbraFault as fault:
                if fault.code in REAUTH and attempt == 1:
                    continue
                raise classify(fault, self.config, account) from None
        raise AssertionError("unreachable")  # pragma: no cover

    def _send(
        self,
        service: Any,
        op: str,
        token: str | None,
        children: list[etree._Element],
        attrs: dict[str, str],
    ) -> etree._Element:
        header = {"context": {"authToken": token, "nosession": ""} if token else {}}
        self.calls += 1
        with transport_errors("the Zimbra server"):
            response = getattr(service, op)(_value_1=children, _attr_1=attrs, _soapheaders=header)
        return _answer(response)


def _answer(response: requests.Response) -> etree._Element:
    status = response.status_code
    overloaded = overload_error(response, "Zimbra")
    if overloaded is not None:
        raise overloaded
    try:
        root = etree.fromstring(response.content)
    except etree.XMLSyntaxError as exc:
        if status == 404:  # e.g. a web server's page: the SOAP URL points elsewhere
            raise Permanent(
                "No Zimbra SOAP service answers at this address (HTTP 404): check the URL.",
                detail=response.text[:300],
            ) from exc
        if status in (401, 403):  # Zimbra answers faults in SOAP: this is something in front
            raise Permanent(
                f"Something in front of Zimbra refused the request (HTTP {status}), before "
                "Zimbra read it: check the URL and any proxy.",
                detail=response.text[:300],
            ) from exc
        raise Transient(
            f"Zimbra gave an unreadable answer (HTTP {status}).", detail=response.text[:300]
        ) from exc
    body = next((c for c in root if etree.QName(c).localname == "Body"), None)
    first = body[0] if body is not None and len(body) else None
    if first is None:
        raise Transient(f"Zimbra gave an empty answer (HTTP {status}).")
    if etree.QName(first).localname == "Fault":
        code = first.findtext(".//{urn:zimbra}Code") or "service.FAILURE"
        reason = " ".join(str(t).strip() for t in first.itertext() if str(t).strip())[:300]
        raise ZimbraFault(code, reason)
    return first


def _token_of(answer: etree._Element) -> tuple[str, float]:
    token = answer.findtext(f"{{{ADMIN}}}authToken") or answer.findtext("authToken") or ""
    lifetime_ms = answer.findtext(f"{{{ADMIN}}}lifetime") or "3600000"
    if not token:
        raise Transient("Zimbra's sign-in answer had no token.")
    return token, int(lifetime_ms) / 1000.0
