"""A local Microsoft identity platform + Microsoft Graph mail server, for tests, benchmarks and
the demo. It speaks the documented shapes over real HTTPS, so real MSAL and our client talk to
it unchanged. Each behaviour and its public source is listed in docs/protocols.md (Graph); the
ones the documentation leaves open are played the hard way, seeded so failures reproduce:

- ``GET /{tenant}/v2.0/.well-known/openid-configuration`` and ``POST /{tenant}/oauth2/v2.0/token``
  (client credentials; AADSTS error bodies for unknown tenants and apps, wrong or expired
  secrets: 401 ``invalid_client`` for secrets); tokens are checked on every Graph call, with a
  server-side lifetime and revocation;
- ``/v1.0/users/{u}``; ``mailFolders`` lists the root's children 10 per page, hidden folders only
  with ``includeHiddenFolders``, search folders typed ``#microsoft.graph.mailSearchFolder``;
- per-folder ``messages/delta``: pages in **no guaranteed order** (shuffled), items sometimes
  **repeated** within a round and replayed in the next, updated items carrying **only the
  properties that changed** (plus ``id``), ``@removed`` items, and forgettable sync state (410
  ``syncStateNotFound`` with a ``Location`` to start over);
- ``messages?$search=`` capped at 1,000 results, KQL ``received`` read at **day** granularity
  (a time of day is ignored);
- ``messages/{id}``, ``$value``, attachments of the three kinds: ``fileAttachment``,
  ``itemAttachment`` (``$value`` is the embedded item's MIME) and ``referenceAttachment``
  (``$value`` answers **405**); ``/me`` is refused as it is for app-only tokens;
- error bodies ``{"error": {"code", "message", "innerError": {...}}}``; at most 4 concurrent
  requests per mailbox (the 5th gets 429 ``ApplicationThrottled`` with a fractional
  ``Retry-After``), the highest concurrency seen recorded; fault injection from
  ``sandbox.http``.
"""

from __future__ import annotations

import base64
import itertools
import random
import re
import secrets
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote, unquote

import requests

from sandbox.http import LocalServer, Request, Response
from sandbox.tls import TestCA

TENANT = "8f3c1e52-6b1d-4f0e-9a63-2d5c7b9e4a10"
CLIENT_ID = "5e0d1f2a-3b4c-4d5e-8f60-718293a4b5c6"
CLIENT_SECRET = "local-graph-secret"  # noqa: S105 - the fake server's own test credential, not a real one
SEARCH_CAP = 1000
ATTACHMENTS_PER_PAGE = 10  # not documented for attachments; Graph pages every collection
ITEM_NOT_FOUND = "The specified object was not found in the store."
ACCESS_DENIED = "Access is denied. Check credentials and try again."
MAILBOX_CONCURRENCY = 4
_ROOT = "msgfolderroot"
# Outlook message subscriptions (learn.microsoft.com/graph/api/resources/subscription): at most
# 10,080 minutes; less than 45 minutes is raised to 45; clientState at most 128 characters
SUBSCRIPTION_MAX_MINUTES = 10080
SUBSCRIPTION_MIN_MINUTES = 45
CLIENT_STATE_MAX = 128
VALIDATION_TIMEOUT = 10.0  # seconds an endpoint has to echo the validation token
NOTIFY_TIMEOUT = 3.0  # seconds an endpoint has to answer a notification with 2xx
_ids = itertools.count(1)


def new_id(prefix: str = "AAkALgAAAAAAHYQDEapmEc2byACqAC-EWg0A") -> str:
    """An opaque, case-sensitive id shaped like an Exchange immutable id."""
    raw = f"{next(_ids):010d}{secrets.token_hex(4)}".encode()
    return prefix + base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _error(status: int, code: str, message: str, **headers: str) -> Response:
    """Graph's error body: code, message and an innerError with the request's ids and date."""
    inner = {
        "date": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S"),
        "request-id": str(uuid.uuid4()),
        "client-request-id": str(uuid.uuid4()),
    }
    return Response(
        status, {"error": {"code": code, "message": message, "innerError": inner}}, headers
    )


def _aad_error(status: int, error: str, code: int, text: str) -> Response:
    """The identity platform's error body (error_codes as integers, a space in timestamp)."""
    trace, correlation = str(uuid.uuid4()), str(uuid.uuid4())
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%SZ")
    return Response(
        status,
        {
            "error": error,
            "error_description": f"AADSTS{code}: {text}\r\nTrace ID: {trace}\r\n"
            f"Correlation ID: {correlation}\r\nTimestamp: {stamp}",
            "error_codes": [code],
            "timestamp": stamp,
            "trace_id": trace,
            "correlation_id": correlation,
            "error_uri": f"https://login.microsoftonline.com/error?code={code}",
        },
    )


@dataclass
class App:
    client_id: str
    secret: str
    secret_expired: bool = False
    consented: bool = True


@dataclass
class Mailbox:
    upn: str
    display_name: str
    folders: dict[str, dict[str, Any]] = field(default_factory=dict)
    messages: dict[str, dict[str, Any]] = field(default_factory=dict)
    attachments: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    # per folder: (change number, message id, properties changed; None = all of it)
    events: dict[str, list[tuple[int, str, frozenset[str] | None]]] = field(default_factory=dict)
    created: dict[str, int] = field(default_factory=dict)  # message id -> change number
    seq: int = 0
    in_flight: int = 0
    max_in_flight: int = 0

    def folder_id(self, name_or_id: str) -> str:
        for folder in self.folders.values():
            if name_or_id in (folder["id"], folder["displayName"]):
                return str(folder["id"])
        raise KeyError(name_or_id)

    def touch(self, folder_id: str, message_id: str, changed: frozenset[str] | None = None) -> None:
        self.seq += 1
        self.events.setdefault(folder_id, []).append((self.seq, message_id, changed))


# --- change notifications (webhooks) ------------------------------------------------------
_MAIL_RESOURCE = re.compile(
    r"^/?users/([^/]+)/(?:mailFolders(?:\('([^']+)'\)|/([^/]+))/)?messages$", re.IGNORECASE
)


def _post(url: str, **kwargs: Any) -> requests.Response:
    """An outgoing call of the local Graph to an app's endpoint (test CA trusted by callers)."""
    return requests.post(url, **kwargs)  # noqa: S113 - every caller passes a timeout


def _now() -> datetime:
    return datetime.now(UTC)


def _parse_time(value: Any) -> datetime | None:
    try:
        moment = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _too_far(expires: datetime) -> bool:
    return expires > _now() + timedelta(minutes=SUBSCRIPTION_MAX_MINUTES)


def _too_far_error() -> Response:
    return _error(
        400,
        "InvalidRequest",
        f"Subscription expiration can only be {SUBSCRIPTION_MAX_MINUTES} minutes in the future.",
    )


def _bounded(expires: datetime) -> datetime:
    now = _now()
    return max(expires, now + timedelta(minutes=SUBSCRIPTION_MIN_MINUTES))


@dataclass
class Subscription:
    id: str
    resource: str
    upn: str
    folder_id: str | None  # None: every folder of the mailbox
    change_types: frozenset[str]
    notification_url: str
    lifecycle_url: str
    client_state: str
    expires: datetime
    delivered: int = 0
    # after reauthorizationRequired, delivery pauses until the app renews (or reauthorizes):
    # changes meanwhile are not sent later (lifecycle events page)
    paused: bool = False

    def as_json(self) -> dict[str, Any]:
        return {
            "@odata.context": "https://graph.microsoft.com/v1.0/$metadata#subscriptions/$entity",
            "id": self.id,
            "resource": self.resource,
            "changeType": ",".join(sorted(self.change_types)),
            "notificationUrl": self.notification_url,
            "lifecycleNotificationUrl": self.lifecycle_url or None,
            "expirationDateTime": _iso(self.expires),
            "clientState": self.client_state or None,
        }


class _Subscriptions:
    """Change notifications over webhooks (docs/protocols.md, "Microsoft Graph"): subscriptions
    on a mailbox's messages, the validation handshake, notifications and lifecycle events
    posted to the app, expiry. Mixed into :class:`FakeGraph`."""

    lock: Any
    rng: random.Random
    tenant: str
    mailboxes: dict[str, Mailbox]
    subscriptions: dict[str, Subscription]
    validations: list[str]
    deliveries: list[tuple[str, dict[str, Any], int]]
    notify_repeat: float
    notify_retries: int
    notify_backoff: float
    #: the test web server has no TLS: http:// is accepted for these prefixes only
    http_allowed: tuple[str, ...] = ("http://127.0.0.1:", "http://localhost:")
    verify_endpoints: bool | str = True

    def subscription_route(self, request: Request, rest: str) -> Response:
        if rest in ("", "/") and request.method == "POST":
            return self.create_subscription(request.json() or {})
        if rest in ("", "/") and request.method == "GET":
            with self.lock:
                items = [sub.as_json() for sub in self.subscriptions.values()]
            return Response(200, {"value": items})
        match = re.match(r"^/([^/]+)(/reauthorize)?$", rest)
        if not match:
            return _error(400, "BadRequest", f"Unsupported segment {rest}")
        with self.lock:
            self.expire_subscriptions()
            sub = self.subscriptions.get(match.group(1))
        if sub is None:
            return _error(404, "ResourceNotFound", "The object was not found.")
        if match.group(2):
            if request.method != "POST":
                return _error(405, "MethodNotAllowed", "Use POST.")
            with self.lock:
                sub.paused = False
            return Response(204)
        if request.method == "GET":
            return Response(200, sub.as_json())
        if request.method == "DELETE":
            with self.lock:
                self.subscriptions.pop(sub.id, None)
            return Response(204)
        if request.method == "PATCH":
            body = request.json() or {}
            expires = _parse_time(body.get("expirationDateTime"))
            if expires is None:
                return _error(400, "InvalidRequest", "expirationDateTime is required.")
            if _too_far(expires):
                return _too_far_error()
            with self.lock:
                sub.expires = _bounded(expires)
                sub.paused = False  # a renewal reauthorizes
            return Response(200, sub.as_json())
        return _error(405, "MethodNotAllowed", f"{request.method} is not allowed here.")

    def create_subscription(self, body: dict[str, Any]) -> Response:
        notification_url = str(body.get("notificationUrl") or "")
        lifecycle_url = str(body.get("lifecycleNotificationUrl") or "")
        resource = str(body.get("resource") or "")
        change_types = frozenset(t.strip() for t in str(body.get("changeType") or "").split(","))
        client_state = str(body.get("clientState") or "")
        expires = _parse_time(body.get("expirationDateTime"))
        if not notification_url or not resource or expires is None or not change_types - {""}:
            return _error(
                400,
                "InvalidRequest",
                "changeType, notificationUrl, resource and expirationDateTime are required.",
            )
        if not change_types <= {"created", "updated", "deleted"}:
            return _error(
                400, "InvalidRequest", f"Unsupported changeType {body.get('changeType')}."
            )
        for url in (notification_url, lifecycle_url):
            if url and not (url.startswith("https://") or url.startswith(self.http_allowed)):
                return _error(400, "InvalidRequest", "The notification URL must be an https URL.")
        if len(client_state) > CLIENT_STATE_MAX:
            return _error(400, "InvalidRequest", "clientState is longer than 128 characters.")
        if _too_far(expires):
            return _too_far_error()
        match = _MAIL_RESOURCE.match(resource)
        if not match:
            return _error(400, "InvalidRequest", f"Unsupported resource {resource}.")
        box = self.mailboxes.get(unquote(match.group(1)).lower())
        if box is None:
            return _error(404, "ResourceNotFound", f"The user '{match.group(1)}' was not found.")
        folder_name = match.group(2) or match.group(3)
        folder_id = None
        if folder_name:
            try:
                folder_id = box.folder_id(folder_name)
            except KeyError:
                return _error(404, "ErrorItemNotFound", ITEM_NOT_FOUND)
        with self.lock:
            self.expire_subscriptions()
            for other in self.subscriptions.values():
                if (other.resource.lower(), other.change_types) == (resource.lower(), change_types):
                    return _error(
                        409,
                        "ExtensionError",
                        f"Subscription Id {other.id} already exists for the requested combination",
                    )
        for url in (notification_url, lifecycle_url):
            if url and not self.validate_endpoint(url):
                return _error(
                    400,
                    "ValidationError",
                    f"Subscription validation request failed. Notification endpoint {url} must "
                    "respond with 200 OK and the validation token within 10 seconds.",
                )
        sub = Subscription(
            id=str(uuid.uuid4()),
            resource=resource,
            upn=box.upn,
            folder_id=folder_id,
            change_types=change_types,
            notification_url=notification_url,
            lifecycle_url=lifecycle_url,
            client_state=client_state,
            expires=_bounded(expires),
        )
        with self.lock:
            self.subscriptions[sub.id] = sub
        return Response(201, sub.as_json())

    def validate_endpoint(self, url: str) -> bool:
        """The handshake: POST ?validationToken=<URL-encoded token>; the endpoint answers 200,
        text/plain, the decoded token, within 10 seconds."""
        token = (
            "Validation: Testing client application reachability for subscription "
            f"Request-Id: {uuid.uuid4()}"
        )
        sep = "&" if "?" in url else "?"
        try:
            answer = _post(
                f"{url}{sep}validationToken={quote(token)}",
                data=b"",
                headers={"Content-Type": "text/plain; charset=utf-8"},
                timeout=VALIDATION_TIMEOUT,
                verify=self.verify_endpoints,
            )
        except requests.RequestException:
            return False
        self.validations.append(url)
        # 200, the decoded token, as text/plain (the validation include of the docs)
        plain = answer.headers.get("Content-Type", "").split(";")[0].strip() == "text/plain"
        return answer.status_code == 200 and plain and answer.text == token

    def expire_subscriptions(self) -> None:
        """Graph deletes a subscription that was not renewed in time (under the lock)."""
        now = _now()
        for sub_id in [k for k, sub in self.subscriptions.items() if sub.expires <= now]:
            del self.subscriptions[sub_id]

    def changed(self, box: Mailbox, folder_id: str, message_id: str, change: str) -> None:
        """Tell every matching subscription, from a thread of its own (Graph calls back later)."""
        with self.lock:
            self.expire_subscriptions()
            targets = [
                sub
                for sub in self.subscriptions.values()
                if sub.upn == box.upn
                and change in sub.change_types
                and sub.folder_id in (None, folder_id)
                and not sub.paused  # lost, as the lifecycle events page says
            ]
            repeat = [self.rng.random() < self.notify_repeat for _ in targets]
        for sub, twice in zip(targets, repeat, strict=True):
            item = self.change_item(sub.id, message_id, change)
            # Graph sends "at least one" notification per change: sometimes the same one twice
            for _ in range(2 if twice else 1):
                self.deliver(sub.notification_url, {"value": [item]})

    def change_item(self, sub_id: str, message_id: str, change: str = "created") -> dict[str, Any]:
        """One change notification of subscription ``sub_id`` (for a request of its own, or a
        batch: Graph "may send multiple notifications that correspond to different
        subscriptions in the same POST request")."""
        with self.lock:
            sub = self.subscriptions[sub_id]
        return {
            "id": str(uuid.uuid4()),
            "subscriptionId": sub.id,
            "subscriptionExpirationDateTime": _iso(sub.expires),
            "clientState": sub.client_state or None,
            "changeType": change,
            "resource": f"Users/{sub.upn}/Messages/{message_id}",
            "tenantId": self.tenant,
            "resourceData": {
                "@odata.type": "#Microsoft.Graph.Message",
                "@odata.id": f"Users/{sub.upn}/Messages/{message_id}",
                "id": message_id,
            },
        }

    def deliver(self, url: str, body: dict[str, Any], wait: bool = False) -> None:
        """POST a notification; retried after a non-2xx answer or a timeout (3 s), then dropped."""

        def send() -> None:
            for attempt in range(self.notify_retries):
                status = 0
                try:
                    status = _post(
                        url, json=body, timeout=NOTIFY_TIMEOUT, verify=self.verify_endpoints
                    ).status_code
                except requests.RequestException:
                    status = 0
                with self.lock:
                    self.deliveries.append((url, body, status))
                if 200 <= status < 300:
                    return
                time.sleep(self.notify_backoff * (2**attempt))

        if wait:
            send()
        else:
            threading.Thread(target=send, name="graph-notify", daemon=True).start()

    def lifecycle(self, sub_id: str, event: str, wait: bool = True) -> None:
        """Send a lifecycle notification (reauthorizationRequired, subscriptionRemoved, missed):
        subscriptionRemoved also deletes the subscription, and reauthorizationRequired pauses
        its change notifications until it is renewed, as Graph does."""
        with self.lock:
            sub = self.subscriptions[sub_id]
        body = {"value": [self.lifecycle_item(sub_id, event)]}
        self.deliver(sub.lifecycle_url or sub.notification_url, body, wait=wait)

    def lifecycle_item(self, sub_id: str, event: str) -> dict[str, Any]:
        """A lifecycle notification of ``sub_id`` (alone, or in a batch with others: "can be
        batched together"), with its effect on the subscription."""
        with self.lock:
            sub = self.subscriptions[sub_id]
            if event == "subscriptionRemoved":
                del self.subscriptions[sub_id]
            elif event == "reauthorizationRequired":
                sub.paused = True
        return {
            "subscriptionId": sub.id,
            "subscriptionExpirationDateTime": _iso(sub.expires),
            "tenantId": self.tenant,
            "clientState": sub.client_state or None,
            "lifecycleEvent": event,
        }


class FakeGraph(_Subscriptions, LocalServer):
    """``seed`` drives every choice the documentation leaves open (page order, repeats);
    ``repeat`` is the chance that an item shows up a second time in a delta round (and that the
    next round replays one); ``partial_updates`` sends updated items with their changed
    properties only."""

    LINK_KEYS = frozenset({"@odata.nextLink", "@odata.deltaLink"})

    def __init__(
        self,
        ca: TestCA,
        *,
        latency: float = 0.0,
        seed: int = 1,
        repeat: float = 0.1,
        partial_updates: bool = True,
        retry_after: str = "0.5",
    ) -> None:
        super().__init__(ca)
        self.rng = random.Random(seed)
        self.repeat = repeat
        #: misbehaving on purpose: this many times, a listing's next page is its first one again
        self.pages_loop = 0
        self.partial_updates = partial_updates
        self.retry_after = retry_after
        self.tenant = TENANT
        self.apps: dict[str, App] = {CLIENT_ID: App(CLIENT_ID, CLIENT_SECRET)}
        self.mailboxes: dict[str, Mailbox] = {}
        self.tokens: dict[str, tuple[float, str]] = {}
        self.token_lifetime = 3600.0  # server-side validity
        self.advertised_lifetime = 3599  # what the token response says
        self.token_requests = 0
        self.sync_states: dict[str, dict[str, Any]] = {}
        self.generation = 1
        self.latency = latency
        self.without_immutable_ids = 0
        self.throttled = 0
        self.subscriptions: dict[str, Subscription] = {}
        self.validations: list[str] = []  # URLs validated
        self.deliveries: list[tuple[str, dict[str, Any], int]] = []  # url, body, status
        self.notify_repeat = repeat  # chance a notification is delivered twice
        self.notify_retries = 3  # Graph retries for hours; scaled down here
        self.notify_backoff = 0.2

    # --- setting up mailboxes ------------------------------------------------------------------
    def add_mailbox(
        self, upn: str, display_name: str = "", folders: tuple[str, ...] = ()
    ) -> Mailbox:
        box = Mailbox(upn.lower(), display_name or upn.split("@")[0].title())
        for name in ("Inbox", "Sent Items", "Deleted Items", *folders):
            self.add_folder(box, name)
        with self.lock:
            self.mailboxes[box.upn] = box
        return box

    def add_folder(
        self, box: Mailbox, name: str, parent: str | None = None, *, hidden: bool = False
    ) -> str:
        folder_id = new_id("AAMkAGI2-folder-")
        parent_id = box.folder_id(parent) if parent else _ROOT
        with self.lock:
            box.folders[folder_id] = {
                "id": folder_id,
                "displayName": name,
                "parentFolderId": parent_id,
                "childFolderCount": 0,
                "unreadItemCount": 0,
                "totalItemCount": 0,
                "isHidden": hidden,
            }
            if parent_id in box.folders:
                box.folders[parent_id]["childFolderCount"] += 1
        return folder_id

    def add_search_folder(self, box: Mailbox, name: str, sources: tuple[str, ...]) -> str:
        """A search folder: a view of messages that live in ``sources`` (typed
        ``#microsoft.graph.mailSearchFolder`` in folder listings, unlike ordinary folders)."""
        folder_id = new_id("AAMkAGI2-search-")
        with self.lock:
            box.folders[folder_id] = {
                "@odata.type": "#microsoft.graph.mailSearchFolder",
                "id": folder_id,
                "displayName": name,
                "parentFolderId": _ROOT,
                "childFolderCount": 0,
                "unreadItemCount": 0,
                "totalItemCount": 0,
                "isHidden": False,
                "isSupported": True,
                "includeNestedFolders": False,
                "sourceFolderIds": [box.folder_id(s) for s in sources],
                "filterQuery": "importance eq 'high'",
            }
        return folder_id

    def add_message(
        self,
        box: Mailbox,
        *,
        folder: str = "Inbox",
        subject: str = "Hello",
        sender: str = "alice@example.com",
        to: tuple[str, ...] = (),
        cc: tuple[str, ...] = (),
        received: datetime | None = None,
        body: str = "<p>Hello there</p>",
        attachments: tuple[tuple[str, bytes, str], ...] = (),
        references: tuple[tuple[str, str], ...] = (),
        embedded: tuple[tuple[str, str], ...] = (),
        inline: tuple[tuple[str, bytes, str, str], ...] = (),
        is_read: bool = False,
        categories: tuple[str, ...] = (),
    ) -> str:
        """``attachments``: files (name, bytes, type); ``references``: links to files stored
        elsewhere (name, URL), which have no content; ``embedded``: attached items
        (name, subject of the embedded message); ``inline``: files shown in the body (name,
        bytes, type, content id), which ``hasAttachments`` does not count ("if a message
        contains only inline attachments, this property is false")."""
        received = received or datetime.now(UTC)
        message_id = new_id()
        folder_id = box.folder_id(folder)
        item = {
            "id": message_id,
            "@odata.etag": f'W/"{secrets.token_hex(6)}"',
            "changeKey": secrets.token_hex(6),
            "internetMessageId": f"<{message_id[-14:]}.{next(_ids)}@mail.example.com>",
            "conversationId": new_id("AAQkAGI2-conv-"),
            "subject": subject,
            "bodyPreview": re.sub(r"<[^>]+>", "", body)[:255],
            "body": {"contentType": "html", "content": body},
            "from": {"emailAddress": {"name": sender.split("@")[0].title(), "address": sender}},
            "sender": {"emailAddress": {"name": sender.split("@")[0].title(), "address": sender}},
            "toRecipients": [
                {"emailAddress": {"name": "", "address": a}} for a in to or (box.upn,)
            ],
            "ccRecipients": [{"emailAddress": {"name": "", "address": a}} for a in cc],
            "receivedDateTime": _iso(received),
            "sentDateTime": _iso(received - timedelta(seconds=30)),
            "lastModifiedDateTime": _iso(received),
            "isRead": is_read,
            "flag": {"flagStatus": "notFlagged"},
            "hasAttachments": bool(attachments or references or embedded),
            "parentFolderId": folder_id,
            "categories": list(categories),
        }
        with self.lock:
            box.messages[message_id] = item
            box.attachments[message_id] = [
                {
                    "@odata.type": "#microsoft.graph.fileAttachment",
                    "id": new_id("AAMkAGI2-att-"),
                    "name": name,
                    "contentType": content_type,
                    "size": len(data),
                    "isInline": False,
                    "data": data,
                }
                for name, data, content_type in attachments
            ]
            box.attachments[message_id] += [
                {
                    "@odata.type": "#microsoft.graph.fileAttachment",
                    "id": new_id("AAMkAGI2-att-"),
                    "name": name,
                    "contentType": content_type,
                    "size": len(data),
                    "isInline": True,
                    "contentId": content_id,
                    "data": data,
                }
                for name, data, content_type, content_id in inline
            ]
            box.attachments[message_id] += [
                {
                    "@odata.type": "#microsoft.graph.referenceAttachment",
                    "id": new_id("AAMkAGI2-ref-"),
                    "name": name,
                    "contentType": None,
                    "size": 0,
                    "isInline": False,
                    "sourceUrl": url,
                }
                for name, url in references
            ]
            box.attachments[message_id] += [
                {
                    "@odata.type": "#microsoft.graph.itemAttachment",
                    "id": new_id("AAMkAGI2-item-"),
                    "name": name,
                    "contentType": None,
                    "size": 200,
                    "isInline": False,
                    "mime": (
                        f"Subject: {inner}\r\nFrom: someone@example.com\r\n"
                        "Content-Type: text/plain\r\n\r\nThe embedded message.\r\n"
                    ).encode(),
                }
                for name, inner in embedded
            ]
            box.folders[folder_id]["totalItemCount"] += 1
            box.touch(folder_id, message_id)
            box.created[message_id] = box.seq
        self.changed(box, folder_id, message_id, "created")
        return message_id

    def update_message(self, box: Mailbox, message_id: str, **changes: Any) -> None:
        with self.lock:
            item = box.messages[message_id]
            item.update(changes)
            item["lastModifiedDateTime"] = _iso(datetime.now(UTC))
            box.touch(item["parentFolderId"], message_id, frozenset(changes))
        self.changed(box, item["parentFolderId"], message_id, "updated")

    def move_message(self, box: Mailbox, message_id: str, folder: str) -> None:
        """Moves keep the immutable id; the old folder's delta reports a removal."""
        with self.lock:
            item = box.messages[message_id]
            source, target = item["parentFolderId"], box.folder_id(folder)
            item["parentFolderId"] = target
            box.folders[source]["totalItemCount"] -= 1
            box.folders[target]["totalItemCount"] += 1
            box.touch(source, message_id, frozenset({"parentFolderId"}))
            box.touch(target, message_id, None)  # new to that folder: all of it
        self.changed(box, source, message_id, "deleted")
        self.changed(box, target, message_id, "created")

    def delete_message(self, box: Mailbox, message_id: str) -> None:
        with self.lock:
            item = box.messages.pop(message_id)
            box.folders[item["parentFolderId"]]["totalItemCount"] -= 1
            box.touch(item["parentFolderId"], message_id)
        self.changed(box, item["parentFolderId"], message_id, "deleted")

    def purge_folder(self, box: Mailbox, name: str) -> None:
        """A folder deleted for good (deleted, then emptied out of Deleted Items, or removed
        by an administrator): it and its messages are no longer in the mailbox's folder list,
        and nothing about them comes through delta any more."""
        with self.lock:
            folder_id = box.folder_id(name)
            folder = box.folders.pop(folder_id)
            if folder["parentFolderId"] in box.folders:
                box.folders[folder["parentFolderId"]]["childFolderCount"] -= 1
            for message_id in [
                m for m, item in box.messages.items() if item["parentFolderId"] == folder_id
            ]:
                del box.messages[message_id]

    def forget_sync_state(self) -> None:
        """Graph evicted every delta token (they have no fixed lifetime): next use gets 410."""
        with self.lock:
            self.sync_states.clear()
            self.generation += 1

    def revoke_tokens(self) -> None:
        with self.lock:
            self.tokens.clear()

    def throttle(self, retry_after: float, times: int = 1) -> None:
        """The next ``times`` Graph requests get Outlook's throttling answer (429
        ``ApplicationThrottled`` with a Retry-After in seconds, possibly fractional)."""
        self.fault(
            r"^/v1\.0/users/",
            429,
            body={
                "error": {
                    "code": "ApplicationThrottled",
                    "message": "Application is over its MailboxConcurrency limit.",
                }
            },
            retry_after=retry_after,
            times=times,
        )

    # --- dispatch ------------------------------------------------------------------------------
    def handle(self, request: Request) -> Response:
        path = request.path
        if path.endswith("/.well-known/openid-configuration"):
            return self.openid_configuration(path.split("/")[1])
        if path.endswith("/oauth2/v2.0/token") and request.method == "POST":
            return self.token(path.split("/")[1], request.form())
        if not path.startswith("/v1.0/"):
            return _error(404, "UnknownPath", f"{path} is not a Graph endpoint")
        denied = self.authorize(request)
        if denied is not None:
            return denied
        if path == "/v1.0/subscriptions" or path.startswith("/v1.0/subscriptions/"):
            return self.subscription_route(request, path[len("/v1.0/subscriptions") :])
        if path == "/v1.0/me" or path.startswith("/v1.0/me/"):
            return _error(
                400, "BadRequest", "/me request is only valid with delegated authentication flow."
            )
        match = re.match(r"^/v1\.0/users/([^/]+)(/.*)?$", path)
        if not match:
            return _error(400, "BadRequest", "Resource not found for the segment.")
        box = self.mailboxes.get(unquote(match.group(1)).lower())
        if box is None:
            return _error(
                404,
                "ErrorInvalidUser",
                f"The requested user '{unquote(match.group(1))}' is invalid.",
            )
        if 'IdType="ImmutableId"' not in (request.headers.get("Prefer") or ""):
            self.without_immutable_ids += 1
        with self.lock:
            box.in_flight += 1
            box.max_in_flight = max(box.max_in_flight, box.in_flight)
            over = box.in_flight > MAILBOX_CONCURRENCY
            if over:
                self.throttled += 1
        try:
            if over:
                return _error(
                    429,
                    "ApplicationThrottled",
                    "Application is over its MailboxConcurrency limit.",
                    **{"Retry-After": self.retry_after},
                )
            if self.latency:
                time.sleep(self.latency)
            return self.mailbox_route(request, box, match.group(2) or "")
        finally:
            with self.lock:
                box.in_flight -= 1

    # --- identity platform ---------------------------------------------------------------------
    def openid_configuration(self, tenant: str) -> Response:
        if tenant != self.tenant:
            return _aad_error(
                400,
                "invalid_tenant",
                90002,
                f"Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID.",
            )
        base = f"{self.url}/{tenant}"
        return Response(
            200,
            {
                "token_endpoint": f"{base}/oauth2/v2.0/token",
                "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
                "issuer": f"{base}/v2.0",
                "jwks_uri": f"{base}/discovery/v2.0/keys",
                "response_types_supported": ["code", "id_token", "token"],
                "token_endpoint_auth_methods_supported": [
                    "client_secret_post",
                    "private_key_jwt",
                    "client_secret_basic",
                ],
            },
        )

    def token(self, tenant: str, form: dict[str, str]) -> Response:
        with self.lock:
            self.token_requests += 1
        if tenant != self.tenant:
            return _aad_error(400, "invalid_request", 90002, f"Tenant '{tenant}' not found.")
        if form.get("grant_type") != "client_credentials":
            return _aad_error(400, "unsupported_grant_type", 70003, "Unsupported grant type.")
        app = self.apps.get(form.get("client_id", ""))
        if app is None:
            return _aad_error(
                400,
                "unauthorized_client",
                700016,
                f"Application with identifier '{form.get('client_id')}' was not found in the "
                f"directory '{tenant}'.",
            )
        if form.get("client_secret") != app.secret:
            return _aad_error(
                401,
                "invalid_client",
                7000215,
                "Invalid client secret provided. Ensure the secret being sent in the request is "
                "the client secret value, not the client secret ID.",
            )
        if app.secret_expired:
            return _aad_error(
                401,
                "invalid_client",
                7000222,
                f"The provided client secret keys for app '{app.client_id}' are expired.",
            )
        if form.get("scope") != "https://graph.microsoft.com/.default":
            return _aad_error(400, "invalid_scope", 1002012, "Invalid scope.")
        access_token = "eyJ0eXAi." + secrets.token_urlsafe(24)
        with self.lock:
            self.tokens[access_token] = (time.monotonic() + self.token_lifetime, app.client_id)
        return Response(
            200,
            {
                "token_type": "Bearer",
                "expires_in": self.advertised_lifetime,
                "ext_expires_in": self.advertised_lifetime,
                "access_token": access_token,
            },
        )

    def authorize(self, request: Request) -> Response | None:
        header = request.headers.get("Authorization") or ""
        token = header[7:] if header.startswith("Bearer ") else ""
        with self.lock:
            entry = self.tokens.get(token)
        if entry is None or entry[0] < time.monotonic():
            return _error(
                401,
                "InvalidAuthenticationToken",
                "Access token has expired or is not yet valid.",
            )
        if not self.apps[entry[1]].consented:
            return _error(403, "ErrorAccessDenied", ACCESS_DENIED)
        return None

    # --- mailbox routes --------------------------------------------------------------------------
    def mailbox_route(self, request: Request, box: Mailbox, rest: str) -> Response:
        if rest == "":
            return Response(
                200,
                {
                    "id": secrets.token_hex(8),
                    "displayName": box.display_name,
                    "mail": box.upn,
                    "userPrincipalName": box.upn,
                },
            )
        if rest == "/mailFolders":
            return self.folder_page(request, box, _ROOT)
        if m := re.match(r"^/mailFolders/([^/]+)/childFolders$", rest):
            return self.folder_page(request, box, m.group(1))
        if m := re.match(r"^/mailFolders/([^/]+)/messages/delta$", rest):
            return self.delta(request, box, m.group(1))
        if rest == "/messages" and "$search" in request.query:
            return self.search(request, box)
        if m := re.match(r"^/messages/([^/]+)(/.*)?$", rest):
            return self.message_route(request, box, m.group(1), m.group(2) or "")
        return _error(400, "BadRequest", f"Unsupported segment {rest}")

    def folder_page(self, request: Request, box: Mailbox, parent: str) -> Response:
        hidden = request.query.get("includeHiddenFolders", "").lower() == "true"
        with self.lock:
            folders = [
                dict(f)
                for f in box.folders.values()
                if f["parentFolderId"] == parent and (hidden or not f["isHidden"])
            ]
        top = int(request.query.get("$top", 10))
        skip = int(request.query.get("$skip", 0))
        body: dict[str, Any] = {"value": folders[skip : skip + top]}
        if skip + top < len(folders):
            body["@odata.nextLink"] = f"{self.url}{request.path}?$top={top}&$skip={skip + top}"
        return Response(200, body)

    def _selected(self, item: dict[str, Any], select: str) -> dict[str, Any]:
        if not select:
            return dict(item)
        wanted = {"id", "@odata.etag", *select.split(",")}
        return {k: v for k, v in item.items() if k in wanted}

    def _page_size(self, request: Request, default: int) -> int:
        found = re.search(r"odata\.maxpagesize=(\d+)", request.headers.get("Prefer") or "")
        return int(found.group(1)) if found else default

    def _in_view(self, box: Mailbox, folder_id: str, item: dict[str, Any]) -> bool:
        """Whether ``item`` is in the folder (a search folder shows its sources' messages)."""
        sources = box.folders[folder_id].get("sourceFolderIds")
        if sources is not None:
            return item["parentFolderId"] in sources
        return bool(item["parentFolderId"] == folder_id)

    def _round(self, ids: list[str], previous: list[str]) -> list[str]:
        """A round's id order: no guaranteed order (shuffled), an item now and then a second
        time, and now and then one item of the previous round again (a replay)."""
        order = list(ids)
        if previous and self.rng.random() < self.repeat:
            order.append(self.rng.choice(previous))
        self.rng.shuffle(order)
        for item in list(order):
            if self.rng.random() < self.repeat:
                order.insert(self.rng.randrange(len(order) + 1), item)
        return order

    def delta(self, request: Request, box: Mailbox, folder_id: str) -> Response:
        if folder_id not in box.folders:
            return _error(404, "ErrorItemNotFound", ITEM_NOT_FOUND)
        query = request.query
        base = f"{self.url}/v1.0/users/{quote(box.upn, safe='@')}/mailFolders/{folder_id}"
        with self.lock:
            if "$skiptoken" in query or "$deltatoken" in query:
                key = query.get("$skiptoken") or query.get("$deltatoken", "")
                state = self.sync_states.get(key)
                if state is None or state["folder"] != folder_id:
                    # "a 40X-series error with error codes such as syncStateNotFound": the
                    # status is left open, so it is drawn (410 is what Outlook is seen to send)
                    status = self.rng.choice((410, 410, 400, 404))
                    return _error(
                        status,
                        "syncStateNotFound",
                        "The sync state generation is not found. The delta token is expired and "
                        "data must be synchronized again.",
                        **({"Location": f"{base}/messages/delta"} if status == 410 else {}),
                    )
                if "$deltatoken" in query:  # a new round: what changed since that round's start
                    changed: dict[str, frozenset[str] | None] = {}
                    for seq, message_id, props in box.events.get(folder_id, []):
                        if seq <= state["base"]:
                            continue
                        if box.created.get(message_id, 0) > state["base"] or props is None:
                            changed[message_id] = None  # new here: all of it
                        elif message_id not in changed or changed[message_id] is not None:
                            changed[message_id] = (changed.get(message_id) or frozenset()) | props
                    if box.folders[folder_id].get("sourceFolderIds") is not None:
                        changed = {}  # (a view: only its initial listing is modelled)
                    state = {
                        **state,
                        "ids": self._round(list(changed), state.get("last", [])),
                        "partial": {k: sorted(v) for k, v in changed.items() if v is not None},
                        "pos": 0,
                        "base": box.seq,
                        "initial": False,
                    }
            else:
                ids = [m for m, item in box.messages.items() if self._in_view(box, folder_id, item)]
                state = {
                    "folder": folder_id,
                    "ids": self._round(ids, []),
                    "partial": {},
                    "pos": 0,
                    "base": box.seq,
                    "select": query.get("$select", ""),
                    "initial": True,
                }
            size = self._page_size(request, 10)
            chunk = state["ids"][state["pos"] : state["pos"] + size]
            value = []
            for message_id in chunk:
                item = box.messages.get(message_id)
                if item is not None and self._in_view(box, folder_id, item):
                    shown = self._selected(item, state["select"])
                    only = state["partial"].get(message_id) if self.partial_updates else None
                    if only is not None:  # "at least the properties that changed"
                        shown = {
                            k: v for k, v in shown.items() if k in {"id", "@odata.etag", *only}
                        }
                    value.append({"@odata.type": "#microsoft.graph.message", **shown})
                elif not state["initial"]:
                    value.append(
                        {
                            "@odata.type": "#microsoft.graph.message",
                            "id": message_id,
                            "@removed": {"reason": "deleted"},
                        }
                    )
            token = secrets.token_urlsafe(24)
            following = {**state, "pos": state["pos"] + size}
            body: dict[str, Any] = {
                "@odata.context": f"{self.url}/v1.0/$metadata#Collection(message)",
                "value": value,
            }
            if following["pos"] < len(state["ids"]):
                self.sync_states[token] = following
                body["@odata.nextLink"] = f"{base}/messages/delta?$skiptoken={token}"
            else:
                self.sync_states[token] = {
                    "folder": folder_id,
                    "base": state["base"],
                    "select": state["select"],
                    "last": list(dict.fromkeys(state["ids"])),
                }
                body["@odata.deltaLink"] = f"{base}/messages/delta?$deltatoken={token}"
        return Response(200, body)

    def search(self, request: Request, box: Mailbox) -> Response:
        if "$orderby" in request.query or "$filter" in request.query:
            return _error(
                400,
                "SearchWithOrderBy",
                "The query parameter '$orderBy' is not supported with '$search'.",
            )
        text = request.query["$search"].strip('"')
        participant = re.search(r"(participants|from|to|cc):(\S+)", text)
        since = re.search(r"received>=(\S+)", text)
        until = re.search(r"received<(\S+)", text)

        def moment(found: re.Match[str] | None) -> datetime | None:
            """KQL ``received`` compares dates: a time of day is ignored (day granularity)."""
            if not found:
                return None
            return datetime.fromisoformat(found.group(1)[:10] + "T00:00:00+00:00")

        start, end = moment(since), moment(until)
        role, who = (
            (participant.group(1), participant.group(2).lower()) if participant else ("", "")
        )
        with self.lock:
            hits = []
            for item in box.messages.values():
                people = {
                    "participants": [item["from"], *item["toRecipients"], *item["ccRecipients"]],
                    "from": [item["from"]],
                    "to": item["toRecipients"],
                    "cc": item["ccRecipients"],
                }.get(role, [])
                if who and who not in {p["emailAddress"]["address"].lower() for p in people}:
                    continue
                received = datetime.fromisoformat(item["receivedDateTime"].replace("Z", "+00:00"))
                if (start and received < start) or (end and received >= end):
                    continue
                hits.append(item)
        hits.sort(key=lambda i: i["sentDateTime"], reverse=True)
        hits = hits[:SEARCH_CAP]
        top = min(int(request.query.get("$top", 10)), 1000)
        skip = int(request.query.get("$skip", 0))
        select = request.query.get("$select", "")
        page = [self._selected(i, select) for i in hits[skip : skip + top]]
        body: dict[str, Any] = {"value": page}
        if skip + top < len(hits):
            body["@odata.nextLink"] = self._next_link(request, top, skip + top)
        return Response(200, body)

    def _next_link(self, request: Request, top: int, skip: int) -> str:
        """The next page of ``request``: the same query options, ``$top`` and ``$skip`` on."""
        if self.pages_loop > 0:
            self.pages_loop -= 1
            skip = 0
        params = "&".join(
            f"{k}={quote(v, safe='')}"
            for k, v in {**request.query, "$top": str(top), "$skip": str(skip)}.items()
        )
        return f"{self.url}{request.path}?{params}"

    def message_route(self, request: Request, box: Mailbox, message_id: str, rest: str) -> Response:
        with self.lock:
            item = box.messages.get(message_id)
            attachments = list(box.attachments.get(message_id, []))
        if item is None:
            return _error(404, "ErrorItemNotFound", ITEM_NOT_FOUND)
        if rest == "":
            return Response(200, self._selected(item, request.query.get("$select", "")))
        if rest == "/$value":
            mime = (
                f"Message-ID: {item['internetMessageId']}\r\nSubject: {item['subject']}\r\n"
                f"From: {item['from']['emailAddress']['address']}\r\n"
                f"Content-Type: text/html; charset=utf-8\r\n\r\n{item['body']['content']}\r\n"
            )
            return Response(200, mime, content_type="message/rfc822")
        if rest == "/attachments":
            # a collection, so paged like any (graph/paging: server-side paging, @odata.nextLink
            # until the last page); the page size for attachments is not documented: 10 here
            top = min(int(request.query.get("$top", ATTACHMENTS_PER_PAGE)), 1000)
            skip = int(request.query.get("$skip", 0))
            window = attachments[skip : skip + top]
            hidden = {"data", "mime"}
            meta = [{k: v for k, v in a.items() if k not in hidden} for a in window]
            if "$select" not in request.query:
                for entry, attachment in zip(meta, window, strict=True):
                    if "data" in attachment:  # only file attachments carry contentBytes
                        entry["contentBytes"] = base64.b64encode(attachment["data"]).decode()
            body: dict[str, Any] = {"value": meta}
            if skip + top < len(attachments):
                body["@odata.nextLink"] = self._next_link(request, top, skip + top)
            return Response(200, body)
        if m := re.match(r"^/attachments/([^/]+)/\$value$", rest):
            for attachment in attachments:
                if attachment["id"] != m.group(1):
                    continue
                kind = attachment["@odata.type"]
                if kind == "#microsoft.graph.referenceAttachment":
                    return _error(
                        405,
                        "ErrorInvalidRequest",
                        "The content of a reference attachment cannot be read.",
                    )
                if kind == "#microsoft.graph.itemAttachment":
                    return Response(200, attachment["mime"], content_type="message/rfc822")
                return Response(200, attachment["data"], content_type=attachment["contentType"])
        return _error(404, "ErrorItemNotFound", ITEM_NOT_FOUND)
