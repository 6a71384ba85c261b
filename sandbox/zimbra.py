"""A local Zimbra SOAP server for tests, benchmarks and the demo (``reference/providers.md``
§4.7): ``/service/admin/soap`` (AuthRequest, DelegateAuthRequest) and ``/service/soap``
(CreateTask, ModifyTask, CancelTask, GetTask, Sync) over real HTTPS.

It parses the envelope (SOAP 1.1 or 1.2) and ``context/authToken``, keeps each account's tasks
by UID (a create with a known UID updates that task, as Zimbra does), returns ``calItemId``,
``invId``, ``ms`` and ``rev`` and bumps ``ms``/``rev`` on every change, enforces ``ms`` on
modify (``mail.INVITE_OUT_OF_DATE``), expires tokens after a set lifetime
(``service.AUTH_EXPIRED``), and answers faults as HTTP 500 + SOAP 1.2 Fault with
``<Error xmlns="urn:zimbra"><Code>…</Code></Error>``. ``fault_code()`` injects any Zimbra
fault; ``drop_after_commit()`` performs a request and then drops the connection unanswered.

``SyncRequest l=… [token] [changeLimit]`` answers the folder's tasks changed after the token
(the change number it handed out), oldest first, as ``<task id ms md rev l/>`` plus
``<deleted ids/>``, with ``token`` and ``more``; ``expire_tombstones()`` makes every earlier
token too old (``mail.MUST_RESYNC``). Without a token it answers as Zimbra's initial sync does:
the folder with the ids of its tasks, ``<folder id="15"><task ids="257,258"/></folder>``.
"""

from __future__ import annotations

import itertools
import re
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from xml.sax.saxutils import escape, quoteattr

from lxml import etree

from sandbox.http import Fault, LocalServer, Request, Response
from sandbox.tls import TestCA

SOAP12 = "http://www.w3.org/2003/05/soap-envelope"
MAIL = "urn:zimbraMail"
ADMIN = "urn:zimbraAdmin"
ADMIN_NAME = "admin@zimbra.test"
ADMIN_PASSWORD = "zimbra-admin-pw"  # noqa: S105 - the fake server's own test credential


def envelope(body: str) -> str:
    return (
        f'<soap:Envelope xmlns:soap="{SOAP12}"><soap:Header><context xmlns="urn:zimbra"/>'
        f"</soap:Header><soap:Body>{body}</soap:Body></soap:Envelope>"
    )


def soap_fault(code: str, reason: str = "") -> str:
    return envelope(
        f"<soap:Fault><soap:Code><soap:Value>soap:Sender</soap:Value></soap:Code>"
        f"<soap:Reason><soap:Text>{escape(reason or code)}</soap:Text></soap:Reason>"
        f'<soap:Detail><Error xmlns="urn:zimbra"><Code>{escape(code)}</Code>'
        f"<Trace>qtp-{secrets.token_hex(4)}</Trace></Error></soap:Detail></soap:Fault>"
    )


class SoapError(Exception):
    def __init__(self, code: str, reason: str = "") -> None:
        super().__init__(code)
        self.code, self.reason = code, reason


@dataclass
class ZTask:
    uid: str
    cal_item_id: int
    inv_id: str
    ms: int
    rev: int
    folder: str
    comp: dict[str, str]
    md: int = 0  # seconds since the epoch of the last change
    due: str = ""
    description: str = ""
    subject: str = ""


@dataclass
class Mailbox:
    name: str
    tasks: dict[str, ZTask] = field(default_factory=dict)  # by uid
    # Zimbra numbers items per mailbox (the first user item is 257 in every mailbox), so the
    # same id means different items in two mailboxes.
    ids: Iterator[int] = field(default_factory=lambda: itertools.count(257))

    def add_foreign_task(self, uid: str, name: str = "untouched") -> ZTask:
        """A task the person made in Zimbra itself (not one of ours)."""
        item = next(self.ids)
        task = ZTask(uid, item, f"{item}-{item - 1}", 1, 1, "15", {"name": name})
        self.tasks[uid] = task
        return task

    tombstones: list[tuple[int, int]] = field(default_factory=list)  # (change, item id)
    creates: int = 0
    modifies: int = 0
    cancels: int = 0


class FakeZimbra(LocalServer):
    def __init__(self, ca: TestCA) -> None:
        super().__init__(ca)
        self.admins = {ADMIN_NAME: ADMIN_PASSWORD}
        self.mailboxes: dict[str, Mailbox] = {}
        self.tokens: dict[str, tuple[str, str, float]] = {}  # token -> (kind, account, expiry)
        self.token_lifetime = 3600.0
        self.changes = itertools.count(1000)
        self.last_change = 999
        self.tombstone_horizon = 0  # tokens below this get mail.MUST_RESYNC
        self.operations: list[str] = []

    @property
    def soap_url(self) -> str:
        return f"{self.url}/service/soap"

    @property
    def admin_url(self) -> str:
        return f"{self.url}/service/admin/soap"

    def add_account(self, name: str) -> Mailbox:
        box = Mailbox(name.lower())
        with self.lock:
            self.mailboxes[box.name] = box
        return box

    # --- fault helpers ---------------------------------------------------------------------------
    def fault_code(self, operation: str, code: str, times: int = 1) -> Fault:
        return self.fault(operation, 500, body=soap_fault(code), times=times)

    def drop_after_commit(self, operation: str, times: int = 1) -> Fault:
        return self.fault(operation, drop=True, times=times, after=True)

    def expire_tokens(self) -> None:
        with self.lock:
            self.tokens = {t: (k, a, 0.0) for t, (k, a, _) in self.tokens.items()}

    def edit_in_zimbra(self, account: str, uid: str, at: float | None = None, **comp: str) -> None:
        """Someone changes the task in Zimbra's web client (``at``: when, default now)."""
        with self.lock:
            task = self.mailboxes[account].tasks[uid]
            task.comp.update(comp)
            self._touch(task, at)

    def delete_in_zimbra(self, account: str, uid: str) -> None:
        with self.lock:
            box = self.mailboxes[account]
            task = box.tasks.pop(uid)
            box.tombstones.append((self._next_change(), task.cal_item_id))

    def expire_tombstones(self) -> None:
        """Zimbra purged its change history: every token handed out so far is too old."""
        with self.lock:
            self.tombstone_horizon = self.last_change + 1
            self._next_change()  # tokens handed out from now on are valid

    def _next_change(self) -> int:
        self.last_change = next(self.changes)
        return self.last_change

    def _touch(self, task: ZTask, at: float | None = None) -> None:
        task.ms = task.rev = self._next_change()
        task.md = int(time.time() if at is None else at)

    # --- protocol --------------------------------------------------------------------------------
    def fault_target(self, request: Request) -> str:
        found = re.search(rb"<(?:[\w-]+:)?(\w+)Request\b", request.body)
        return f"{request.path} {found.group(1).decode() if found else ''}"

    def handle(self, request: Request) -> Response:
        try:
            root = etree.fromstring(request.body)
        except etree.XMLSyntaxError:
            return self._fault(SoapError("service.PARSE_ERROR", "not XML"))
        header = next((c for c in root if etree.QName(c).localname == "Header"), None)
        body = next((c for c in root if etree.QName(c).localname == "Body"), None)
        if body is None or not len(body):
            return self._fault(SoapError("service.INVALID_REQUEST", "no body"))
        operation = body[0]
        name = etree.QName(operation).localname
        token = ""
        if header is not None:
            token = header.findtext(".//{urn:zimbra}authToken") or ""
        with self.lock:
            self.operations.append(name)
        try:
            if request.path == "/service/admin/soap":
                answer = self.admin(name, operation, token)
            elif request.path == "/service/soap":
                answer = self.mail(name, operation, token)
            else:
                return Response(404, "not found")
        except SoapError as error:
            return self._fault(error)
        return Response(200, envelope(answer), content_type="application/soap+xml")

    def _fault(self, error: SoapError) -> Response:
        return Response(
            500, soap_fault(error.code, error.reason), content_type="application/soap+xml"
        )

    def _token(self, kind: str, account: str, lifetime: float) -> str:
        token = f"0_{secrets.token_hex(20)}"
        with self.lock:
            self.tokens[token] = (kind, account, time.monotonic() + lifetime)
        return token

    def _check(self, token: str, kind: str) -> str:
        with self.lock:
            held = self.tokens.get(token)
        if held is None:
            raise SoapError("service.AUTH_REQUIRED", "no valid authtoken present")
        if held[2] < time.monotonic():
            raise SoapError("service.AUTH_EXPIRED", "auth credentials have expired")
        if held[0] != kind and kind == "admin":
            raise SoapError("service.PERM_DENIED", "permission denied: need admin token")
        return held[1]

    def admin(self, name: str, operation: Any, token: str) -> str:
        if name == "AuthRequest":
            user = operation.findtext(f"{{{ADMIN}}}name") or ""
            password = operation.findtext(f"{{{ADMIN}}}password") or ""
            if self.admins.get(user) != password:
                raise SoapError("account.AUTH_FAILED", f"authentication failed for [{user}]")
            lifetime = self.token_lifetime
            token = self._token("admin", user, lifetime)
            return (
                f'<AuthResponse xmlns="{ADMIN}"><authToken>{token}</authToken>'
                f"<lifetime>{int(lifetime * 1000)}</lifetime></AuthResponse>"
            )
        if name == "DelegateAuthRequest":
            self._check(token, "admin")
            account = (operation.findtext(f"{{{ADMIN}}}account") or "").lower()
            if account not in self.mailboxes:
                raise SoapError("account.NO_SUCH_ACCOUNT", f"no such account: {account}")
            lifetime = min(float(operation.get("duration") or 3600), self.token_lifetime)
            token = self._token("user", account, lifetime)
            return (
                f'<DelegateAuthResponse xmlns="{ADMIN}"><authToken>{token}</authToken>'
                f"<lifetime>{int(lifetime * 1000)}</lifetime></DelegateAuthResponse>"
            )
        raise SoapError("service.UNKNOWN_DOCUMENT", f"unknown document: {name}")

    def mail(self, name: str, operation: Any, token: str) -> str:
        account = self._check(token, "user")
        box = self.mailboxes[account]
        with self.lock:
            if name == "CreateTaskRequest":
                task = self._write(box, operation, None)
                box.creates += 1
                return self._ids("CreateTaskResponse", task)
            if name == "ModifyTaskRequest":
                task = self._by_inv(box, operation.get("id", ""))
                if operation.get("ms") and int(operation.get("ms")) != task.ms:
                    raise SoapError("mail.INVITE_OUT_OF_DATE", f"invite {task.inv_id} has changed")
                self._write(box, operation, task)
                box.modifies += 1
                return self._ids("ModifyTaskResponse", task)
            if name == "CancelTaskRequest":
                task = self._by_inv(box, operation.get("id", ""))
                del box.tasks[task.uid]
                box.tombstones.append((self._next_change(), task.cal_item_id))
                box.cancels += 1
                return f'<CancelTaskResponse xmlns="{MAIL}"/>'
            if name == "GetTaskRequest":
                uid = operation.get("uid")
                task = box.tasks.get(uid or "") or next(
                    (t for t in box.tasks.values() if str(t.cal_item_id) == operation.get("id")),
                    None,
                )
                if task is None:
                    raise SoapError("mail.NO_SUCH_TASK", f"no such task: {uid}")
                attrs = " ".join(f"{k}={quoteattr(v)}" for k, v in task.comp.items())
                return (
                    f'<GetTaskResponse xmlns="{MAIL}"><task id="{task.cal_item_id}" '
                    f'uid={quoteattr(task.uid)} l="{task.folder}" ms="{task.ms}" '
                    f'rev="{task.rev}" md="{task.md}"><inv id="{task.inv_id.split("-")[1]}">'
                    f"<comp {attrs}/>"
                    f"</inv></task></GetTaskResponse>"
                )
            if name == "SyncRequest":
                return self._sync(box, operation)
        raise SoapError("service.UNKNOWN_DOCUMENT", f"unknown document: {name}")

    def _sync(self, box: Mailbox, operation: Any) -> str:
        folder, token = operation.get("l", "1"), operation.get("token")
        since = 0
        if token is not None:
            if not token.isdigit():
                raise SoapError("mail.INVALID_SYNC_TOKEN", f"invalid sync token: {token}")
            since = int(token)
            if since < self.tombstone_horizon:
                raise SoapError(
                    "mail.MUST_RESYNC",
                    "sync token too old; tombstones have already been expired",
                )
        if token is None:
            ids = ",".join(str(t.cal_item_id) for t in box.tasks.values() if t.folder == folder)
            return (
                f'<SyncResponse xmlns="{MAIL}" md="{int(time.time())}" token="{self.last_change}"'
                f' more="0"><folder id="{folder}"><task ids="{ids}"/></folder></SyncResponse>'
            )
        limit = int(operation.get("changeLimit") or 0) or 1_000_000
        changed = sorted(
            (t for t in box.tasks.values() if t.folder == folder and t.ms > since),
            key=lambda t: t.ms,
        )
        page, more = changed[:limit], len(changed) > limit
        upto = page[-1].ms if more else self.last_change
        gone = [str(item) for change, item in box.tombstones if since < change <= upto]
        items = "".join(
            f'<task id="{t.cal_item_id}" l="{t.folder}" ms="{t.ms}" rev="{t.rev}" md="{t.md}"/>'
            for t in page
        )
        deleted = f'<deleted ids="{",".join(gone)}"/>' if gone else ""
        return (
            f'<SyncResponse xmlns="{MAIL}" md="{int(time.time())}" token="{upto}" '
            f'more="{int(more)}">{items}{deleted}</SyncResponse>'
        )

    def _by_inv(self, box: Mailbox, inv_id: str) -> ZTask:
        for task in box.tasks.values():
            if task.inv_id == inv_id:
                return task
        raise SoapError("mail.NO_SUCH_TASK", f"no such task: {inv_id}")

    def _write(self, box: Mailbox, operation: Any, task: ZTask | None) -> ZTask:
        m = operation.find(f"{{{MAIL}}}m")
        comp = m.find(f"{{{MAIL}}}inv/{{{MAIL}}}comp") if m is not None else None
        if comp is None or not comp.get("uid"):
            raise SoapError("service.INVALID_REQUEST", "missing <comp uid>")
        uid = comp.get("uid")
        task = task or box.tasks.get(uid)  # Zimbra finds calendar items by UID
        if task is None:
            item = next(box.ids)
            task = ZTask(uid, item, f"{item}-{item - 1}", 0, 0, m.get("l", "15"), {})
            box.tasks[uid] = task
        task.comp = dict(comp.attrib)
        task.due = (
            comp.find(f"{{{MAIL}}}e").get("d", "") if comp.find(f"{{{MAIL}}}e") is not None else ""
        )
        task.description = comp.findtext(f"{{{MAIL}}}desc") or ""
        task.subject = m.findtext(f"{{{MAIL}}}su") or ""
        self._touch(task)
        return task

    def _ids(self, element: str, task: ZTask) -> str:
        return (
            f'<{element} xmlns="{MAIL}" calItemId="{task.cal_item_id}" invId="{task.inv_id}" '
            f'ms="{task.ms}" rev="{task.rev}"/>'
        )
