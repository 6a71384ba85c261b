"""A local Zimbra SOAP server for tests, benchmarks and the demo: ``/service/admin/soap``
(AuthRequest, DelegateAuthRequest) and ``/service/soap`` (CreateTask, ModifyTask, CancelTask,
GetTask, ItemAction, Sync) over real HTTPS. Each behaviour and the Zimbra source or SOAP
document it follows is listed in docs/protocols.md (Zimbra).

- Each account is a mailbox with its own item ids (the first is 257) and its own change
  numbers; a create with a known UID updates that task, as Zimbra does.
- ``GetTaskRequest`` returns ``id``, ``uid``, ``l``, ``rev``, ``s`` and ``d`` (milliseconds), and
  ``md``/``ms`` **only with ``sync="1"``**; a missing id answers ``mail.NO_SUCH_ITEM``, a
  missing uid ``mail.NO_SUCH_CALITEM``.
- ``ModifyTaskRequest`` checks for conflicts only when **both** ``ms`` and ``rev`` are sent:
  either one older than the task's answers ``mail.INVITE_OUT_OF_DATE``.
- A modify **replaces the whole invite** with the one sent (attributes, parts, time zones):
  what it leaves out (a reminder, a location) is gone. ``GetTaskRequest`` writes the invite
  back with Zimbra's bookkeeping (``x_uid``, ``seq``, ``d``, ``compNum``, ``method``,
  ``isOrg``, ``calItemId``, ``ciFolder``, ``<fr>``); a completed task gets ``completed``.
  A modify moves the task to the folder it names, keeps only the files it attaches by
  reference (``<attach><mp mid part/>``; ``includeContent="1"`` lists them), refuses a
  reminder without a trigger, and drops the time of an all-day task's start.
- Deleting a task in the web client (``delete_in_zimbra``) and ``CancelTaskRequest`` move it to
  the **Trash** (folder 3); Modify and Cancel on a task in the Trash answer
  ``service.INVALID_REQUEST`` ("cannot modify/cancel a calendar item under trash"); emptying the
  Trash (``purge_in_zimbra``, or ``ItemActionRequest op="delete"``) deletes it for good.
- ``SyncRequest l=… [token] [changeLimit]``: without a token the folder with the ids of its
  tasks (``<folder id="15"><task ids="257,258"/></folder>``); with one, the folder's tasks
  changed since, as ``<task id ms md l/>`` (no ``rev``), and ``<deleted ids/>`` listing items
  deleted **or moved out of the folder** (into the Trash); paging with ``more="1"`` hands out
  composite tokens (``"N-I"``); ``expire_tombstones()`` makes earlier tokens too old
  (``mail.MUST_RESYNC``).
- Tokens expire (``service.AUTH_EXPIRED``); every fault is HTTP 500 + SOAP 1.2 Fault with
  ``<Error xmlns="urn:zimbra"><Code>…</Code></Error>``; ``fault_code()`` injects any fault and
  ``drop_after_commit()`` performs a request and then drops the connection unanswered.
"""

from __future__ import annotations

import itertools
import re
import secrets
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from xml.sax.saxutils import escape, quoteattr
from zoneinfo import ZoneInfo

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
    description: str = ""
    subject: str = ""
    #: the invite's SEQUENCE: every modify raises it (ours or the web client's); a create
    #: for a UID Zimbra holds at a higher one is ignored (see ``_write``)
    seq: int = 0
    #: the invite's child elements as sent (``<e>``, ``<desc>``, ``<alarm>``, ``<s>``, …) and
    #: the ``<tz>`` definitions beside it, serialized: a modify replaces all of them
    parts: list[bytes] = field(default_factory=list)
    zones: list[bytes] = field(default_factory=list)
    #: files attached to the task's message: (file name, content type, bytes); they are
    #: parts 2, 3, … of it (part 1 is the text)
    attachments: list[tuple[str, str, bytes]] = field(default_factory=list)

    @property
    def due(self) -> str:
        """The due date as GetTask writes it (``d`` of the ``<e>``); "" for none."""
        for part in self.parts:
            element = etree.fromstring(part)
            if etree.QName(element).localname == "e":
                return str(element.get("d", ""))
        return ""

    def keep_invite(self, comp: Any) -> None:
        """Store ``comp``'s attributes and parts as Zimbra reads them (``settle_dates``)."""
        settle_dates(comp)
        self.comp = {str(k): str(v) for k, v in comp.attrib.items()}
        self.parts = [etree.tostring(part, with_tail=False) for part in comp]


TRASH = "3"


_DATE = re.compile(r"[0-9]{8}(?:T[0-9]{6}Z?)?")


def _timed(when: Any) -> bool:
    return "T" in when.get("d", "")


def _instant(when: Any) -> datetime:
    """A ``<s>``/``<e>`` as a moment (``ParsedDateTime.compareTo``): a date alone is midnight
    in the account's time zone, which is UTC for every account here; a value Zimbra cannot
    read is refused as ``parseDtElement`` refuses it."""
    value = when.get("d", "")
    try:
        if not _DATE.fullmatch(value):
            raise ValueError(value)
        if not _timed(when):
            return datetime.strptime(value, "%Y%m%d").replace(tzinfo=UTC)
        moment = datetime.strptime(value[:15], "%Y%m%dT%H%M%S")
    except ValueError:
        raise SoapError(
            "service.INVALID_REQUEST", f"invalid request: Caught ParseException: {value!r}"
        ) from None
    if value.endswith("Z") or not when.get("tz"):
        return moment.replace(tzinfo=UTC)
    try:
        return moment.replace(tzinfo=ZoneInfo(when.get("tz")))
    except Exception:  # a Windows-style name of the <tz> map, say: taken as UTC here
        return moment.replace(tzinfo=UTC)


def _date_only(when: Any) -> None:
    """The date as written, in its own zone (``ParsedDateTime.setHasTime(false)``: the moment
    behind it does not change, see ``settle_dates``)."""
    day = when.get("d", "")[:8]
    when.attrib.clear()
    when.set("d", day)


def _day_before(due: Any, moment: datetime) -> tuple[Any, datetime]:
    """The start Zimbra gives a recurring task that has only a due: the due less a second
    when it has a time, else less a day."""
    start = etree.Element(f"{{{MAIL}}}s", dict(due.attrib))
    value = due.get("d", "")
    if _timed(due):
        local = datetime.strptime(value[:15], "%Y%m%dT%H%M%S") - timedelta(seconds=1)
        start.set("d", local.strftime("%Y%m%dT%H%M%S") + ("Z" if value.endswith("Z") else ""))
        return start, moment - timedelta(seconds=1)
    start.set("d", (datetime.strptime(value, "%Y%m%d") - timedelta(days=1)).strftime("%Y%m%d"))
    return start, moment - timedelta(days=1)


def settle_dates(comp: Any) -> None:
    """What Zimbra makes of a task invite's dates and all-day flag, on ``comp`` in place.

    - ``CalendarUtils.parseInviteElementCommon`` ("fixup for bug 30121"): the start, then the
      due, loses its time when the invite is all-day (the moment behind it stays: later
      comparisons use it); a date without a time makes it all-day. A recurrence with a due
      and no start gets a start: the due less a day (less a second when it has a time).
    - ``Invite.sanitize`` (``sanitize(false)`` on create and modify: nothing is refused): a
      task with a start and no due loses the start, and then a recurrence; the all-day flag
      follows the start (else the due): no time → all-day, a time other than 00:00:00 →
      not, exactly 00:00:00 → as it was; a due earlier than the start becomes the start.
    - ``ToXML.encodeInviteComponent``, ``encodeDtStart``/``encodeDtEnd``: ``allDay="1"`` only
      when true; an all-day invite's dates without their times; a date with a time as ``d``
      in its own zone with ``tz`` (none for UTC: ``d`` ends in Z) and ``u``, the moment in
      milliseconds; a date alone as ``d`` only.
    """
    start, due = comp.find(f"{{{MAIL}}}s"), comp.find(f"{{{MAIL}}}e")
    moments = {when: _instant(when) for when in (start, due) if when is not None}
    all_day = comp.get("allDay") in ("1", "true")
    for when in (start, due):
        if when is None:
            continue
        if all_day and _timed(when):
            _date_only(when)
        elif not all_day and not _timed(when):
            all_day = True
    recur = comp.find(f"{{{MAIL}}}recur")
    if recur is not None and start is None and due is not None:
        start, moments[start] = _day_before(due, moments[due])
        comp.insert(comp.index(due), start)
    if start is not None and due is None:
        comp.remove(start)
        start = None
    if recur is not None and start is None:
        comp.remove(recur)
    first = start if start is not None else due
    if first is None:
        all_day = False
    elif not _timed(first):
        all_day = True
    elif first.get("d", "")[9:15] != "000000":
        all_day = False
    if start is not None and due is not None and moments[due] < moments[start]:
        due.attrib.clear()
        due.attrib.update(dict(start.attrib))
        moments[due] = moments[start]
    comp.attrib.pop("allDay", None)
    if all_day:
        comp.set("allDay", "1")
    for when in (start, due):
        if when is None:
            continue
        if all_day or not _timed(when):
            _date_only(when)
        else:
            if when.get("d", "").endswith("Z"):
                when.attrib.pop("tz", None)
            when.set("u", str(int(moments[when].timestamp() * 1000)))


@dataclass
class Mailbox:
    name: str
    tasks: dict[str, ZTask] = field(default_factory=dict)  # by uid (those in the Trash too)
    # Zimbra numbers items per mailbox (the first user item is 257 in every mailbox), so the
    # same id means different items in two mailboxes; change numbers are per mailbox as well.
    ids: Iterator[int] = field(default_factory=lambda: itertools.count(257))
    last_change: int = 999
    horizon: int = 0  # tokens below this get mail.MUST_RESYNC
    tombstones: list[tuple[int, int]] = field(default_factory=list)  # (change, item id)
    creates: int = 0
    modifies: int = 0
    cancels: int = 0

    def next_change(self) -> int:
        self.last_change += 1
        return self.last_change

    def add_foreign_task(self, uid: str, name: str = "untouched") -> ZTask:
        """A task the person made in Zimbra itself (not one of ours)."""
        item = next(self.ids)
        change = self.next_change()
        task = ZTask(uid, item, f"{item}-{item - 1}", change, change, "15", {"name": name})
        self.tasks[uid] = task
        return task

    def by_id(self, item_id: str) -> ZTask | None:
        return next((t for t in self.tasks.values() if str(t.cal_item_id) == item_id), None)

    @property
    def live(self) -> dict[str, ZTask]:
        """The tasks not in the Trash, by uid."""
        return {uid: t for uid, t in self.tasks.items() if t.folder != TRASH}


class FakeZimbra(LocalServer):
    def __init__(self, ca: TestCA) -> None:
        super().__init__(ca)
        self.admins = {ADMIN_NAME: ADMIN_PASSWORD}
        self.mailboxes: dict[str, Mailbox] = {}
        self.tokens: dict[str, tuple[str, str, float]] = {}  # token -> (kind, account, expiry)
        self.token_lifetime = 3600.0
        self.operations: list[str] = []
        self._after_read: list[tuple[str, str, dict[str, str]]] = []

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

    def change_admin_password(self, name: str, password: str) -> None:
        """As in Zimbra, a new password also ends the sessions signed in with the old one."""
        with self.lock:
            self.admins[name] = password
        self.expire_tokens()

    def throttle(self, retry_after: float, times: int = 1) -> None:
        """The next ``times`` requests are refused by the server's request-rate filter: 429 with
        a Retry-After (an assumption: docs/protocols.md, Zimbra)."""
        self.fault(
            r"/service/soap", 429, body="Too many requests", retry_after=retry_after, times=times
        )

    def edit_in_zimbra(
        self,
        account: str,
        uid: str,
        at: float | None = None,
        add: Sequence[str] = (),
        **comp: str,
    ) -> None:
        """Someone changes the task in Zimbra's web client (``at``: when, default now):
        ``comp`` sets attributes of the invite, ``add`` adds parts to it (XML in Zimbra's
        form, e.g. ``<alarm action="DISPLAY">…</alarm>`` for a reminder, ``<s d=…>`` for a
        start, which replaces the one there). The web client's save is read as ours is, so
        the same date rules apply (``settle_dates``)."""
        with self.lock:
            box = self.mailboxes[account]
            task = box.tasks[uid]
            whole = etree.fromstring(
                f'<comp xmlns="{MAIL}">{b"".join(task.parts).decode()}{"".join(add)}</comp>'
            )
            for name in ("s", "e"):  # one start and one due: an added one replaces the other
                found = whole.findall(f"{{{MAIL}}}{name}")
                for old in found[:-1]:
                    whole.remove(old)
            for name, value in {**task.comp, **comp}.items():
                whole.set(name, value)
            task.keep_invite(whole)
            task.seq += 1
            self._touch(box, task, at)

    def attach_in_zimbra(
        self, account: str, uid: str, filename: str, data: bytes, content_type: str = "text/plain"
    ) -> None:
        """Someone attaches a file to the task in the web client."""
        with self.lock:
            box = self.mailboxes[account]
            task = box.tasks[uid]
            task.attachments.append((filename, content_type, data))
            task.seq += 1
            self._touch(box, task)

    def edit_after_next_read(self, account: str, uid: str, **comp: str) -> None:
        """Someone changes the task in the web client just after the next GetTask has been
        answered: a modify sent on what that read said is out of date."""
        with self.lock:
            self._after_read.append((account, uid, comp))

    def delete_in_zimbra(self, account: str, uid: str) -> None:
        """Someone deletes the task in the web client: it moves to the Trash (a CancelTask)."""
        with self.lock:
            box = self.mailboxes[account]
            self._trash(box, box.tasks[uid])

    def purge_in_zimbra(self, account: str, uid: str) -> None:
        """Someone empties the Trash (or deletes a task twice): gone for good."""
        with self.lock:
            box = self.mailboxes[account]
            self._purge(box, box.tasks[uid])

    def restore_from_backup(self, account: str, keep: Sequence[str]) -> None:
        """The mailbox restored from a backup that held only the tasks ``keep`` (uids): the
        others are gone, without tombstones, and the kept ones are numbered afresh from 257 in
        that order (a restored or re-created mailbox numbers its items anew; change numbers go
        on)."""
        with self.lock:
            box = self.mailboxes[account]
            kept = [box.tasks[uid] for uid in keep]
            box.tasks, box.ids = {}, itertools.count(257)
            for task in kept:
                item = next(box.ids)
                task.cal_item_id, task.inv_id = item, f"{item}-{item - 1}"
                box.tasks[task.uid] = task
                self._touch(box, task)

    def expire_tombstones(self) -> None:
        """Zimbra purged its change history: every token handed out so far is too old."""
        with self.lock:
            for box in self.mailboxes.values():
                box.horizon = box.last_change + 1
                box.next_change()  # tokens handed out from now on are valid

    @property
    def tombstone_horizon(self) -> int:
        return max((box.horizon for box in self.mailboxes.values()), default=0)

    def _touch(self, box: Mailbox, task: ZTask, at: float | None = None) -> None:
        """A content change: both the modified sequence and the revision move on."""
        task.ms = task.rev = box.next_change()
        task.md = int(time.time() if at is None else at)

    def _trash(self, box: Mailbox, task: ZTask) -> None:
        """A move (to the Trash): only the modified sequence moves on."""
        task.folder = TRASH
        task.ms = box.next_change()
        task.md = int(time.time())

    def _purge(self, box: Mailbox, task: ZTask) -> None:
        del box.tasks[task.uid]
        box.tombstones.append((box.next_change(), task.cal_item_id))

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
                written = self._write(box, operation, None)
                box.creates += 1
                if written is None:  # an older version of a task held: ignored, no ids
                    return f'<CreateTaskResponse xmlns="{MAIL}"/>'
                return self._ids("CreateTaskResponse", written)
            if name == "ModifyTaskRequest":
                task = self._by_inv(box, operation.get("id", ""))
                if task.folder == TRASH:
                    raise SoapError(
                        "service.INVALID_REQUEST",
                        "invalid request: cannot modify a calendar item under trash",
                    )
                ms, rev = int(operation.get("ms") or 0), int(operation.get("rev") or 0)
                if ms and rev and (ms < task.ms or rev < task.rev):  # both, or no check at all
                    raise SoapError(
                        "mail.INVITE_OUT_OF_DATE",
                        f"The specified Invite is out of date (has been updated): {task.inv_id}",
                    )
                task.seq += 1  # a modify is a new version of the invite
                self._write(box, operation, task)
                box.modifies += 1
                return self._ids("ModifyTaskResponse", task)
            if name == "CancelTaskRequest":
                task = self._by_inv(box, operation.get("id", ""))
                if task.folder == TRASH:
                    raise SoapError(
                        "service.INVALID_REQUEST",
                        "invalid request: cannot cancel a calendar item under trash",
                    )
                self._trash(box, task)  # cancelling the whole task moves it to the Trash
                box.cancels += 1
                return f'<CancelTaskResponse xmlns="{MAIL}"/>'
            if name == "ItemActionRequest":
                action = operation.find(f"{{{MAIL}}}action")
                found = box.by_id(action.get("id", "")) if action is not None else None
                if found is None:
                    raise SoapError("mail.NO_SUCH_ITEM", "no such item")
                if action is None or action.get("op") != "delete":
                    raise SoapError("service.INVALID_REQUEST", "unsupported action")
                self._purge(box, found)
                return (
                    f'<ItemActionResponse xmlns="{MAIL}"><action op="delete"/></ItemActionResponse>'
                )
            if name == "GetTaskRequest":
                answer = self._get(box, operation)
                for account, uid, comp in self._after_read:
                    self.edit_in_zimbra(account, uid, None, (), **comp)
                self._after_read.clear()
                return answer
            if name == "SyncRequest":
                return self._sync(box, operation)
        raise SoapError("service.UNKNOWN_DOCUMENT", f"unknown document: {name}")

    def _get(self, box: Mailbox, operation: Any) -> str:
        uid, item_id = operation.get("uid"), operation.get("id")
        if uid:
            task = box.tasks.get(uid)
            if task is None:
                raise SoapError("mail.NO_SUCH_CALITEM", f"no such appointment or task: {uid}")
        else:
            task = box.by_id(item_id or "")
            if task is None:
                raise SoapError("mail.NO_SUCH_ITEM", f"no such item: {item_id}")
        # the invite as ToXML.encodeInviteComponent writes it: what was sent, and Zimbra's
        # own bookkeeping beside it (never to be sent back)
        bookkeeping = {
            "x_uid": task.uid,
            "uid": task.uid,
            "seq": str(task.seq),
            "d": str(task.md * 1000),
            "compNum": "0",
            "method": "PUBLISH",
            "isOrg": "1",
            "calItemId": str(task.cal_item_id),
            "ciFolder": task.folder,
        }
        attrs = " ".join(f"{k}={quoteattr(v)}" for k, v in {**task.comp, **bookkeeping}.items())
        parts = b"".join(task.parts).decode()
        if task.description:
            parts += f"<fr>{escape(task.description[:100])}</fr>"
        # the message's parts (not their content) with includeContent="1"; the calendar part
        # is left out (ToXML.encodeInvite → addParts, excludeCalendarParts)
        content = ""
        if operation.get("includeContent") in ("1", "true"):
            text = f'<mp part="1" ct="text/plain" s="{len(task.description.encode())}" body="1"/>'
            files = "".join(
                f'<mp part="{n}" ct={quoteattr(ct)} s="{len(data)}" cd="attachment" '
                f"filename={quoteattr(name)}/>"
                for n, (name, ct, data) in enumerate(task.attachments, start=2)
            )
            content = f'<mp part="TEXT" ct="multipart/mixed">{text}{files}</mp>' if files else text
        # modified date and sequence only on sync-related requests (sync="1")
        sync = operation.get("sync") in ("1", "true")
        extra = f' f="" tn="" ms="{task.ms}" md="{task.md}"' if sync else ""
        return (
            f'<GetTaskResponse xmlns="{MAIL}"><task id="{task.cal_item_id}" '
            f'uid={quoteattr(task.uid)} l="{task.folder}" rev="{task.rev}" s="0" '
            f'd="{task.md * 1000}"{extra}><inv id="{task.inv_id.split("-")[1]}">'
            f"{b''.join(task.zones).decode()}<comp {attrs}>{parts}</comp>{content}</inv></task>"
            "</GetTaskResponse>"
        )

    def _sync(self, box: Mailbox, operation: Any) -> str:
        folder, token = operation.get("l", "1"), operation.get("token")
        if token is None:
            ids = ",".join(str(t.cal_item_id) for t in box.tasks.values() if t.folder == folder)
            return (
                f'<SyncResponse xmlns="{MAIL}" md="{int(time.time())}" token="{box.last_change}"'
                f' more="0"><folder id="{folder}"><task ids="{ids}"/></folder></SyncResponse>'
            )
        found = re.fullmatch(r"(\d+)(?:-(\d+))?(?::d(\d+)(?:-(\d+))?)?", token)
        if found is None:
            raise SoapError("service.INVALID_REQUEST", f"malformed sync token: {token}")
        since, after_item = int(found.group(1)), int(found.group(2) or 0)
        if since < box.horizon:
            raise SoapError(
                "mail.MUST_RESYNC", "sync token too old; tombstones have already been expired"
            )

        def newer(task: ZTask) -> bool:  # "N-I": all of change N, and of N+1 the items <= I
            return (
                task.ms > since + 1
                or (task.ms == since + 1 and task.cal_item_id > after_item)
                or (task.ms == since + 1 and not after_item)
            )

        limit = min(int(operation.get("changeLimit") or 0) or 3990, 3990)
        changed = sorted(
            (t for t in box.tasks.values() if newer(t)), key=lambda t: (t.ms, t.cal_item_id)
        )
        page, more = changed[:limit], len(changed) > limit
        if more:
            last = page[-1]
            next_token = f"{last.ms - 1}-{last.cal_item_id}"
            upto = last.ms
        else:
            next_token, upto = str(box.last_change), box.last_change
        # items changed here: those still in the folder are listed, those moved out of it
        # (into the Trash) are reported as deleted, as tombstones are
        items = "".join(
            f'<task id="{t.cal_item_id}" l="{t.folder}" ms="{t.ms}" md="{t.md}" d="{t.md * 1000}"/>'
            for t in page
            if t.folder == folder
        )
        gone = [str(t.cal_item_id) for t in page if t.folder != folder]
        gone += [str(item) for change, item in box.tombstones if since < change <= upto]
        deleted = f'<deleted ids="{",".join(gone)}"/>' if gone else ""
        return (
            f'<SyncResponse xmlns="{MAIL}" md="{int(time.time())}" token="{next_token}" '
            f'more="{int(more)}">{items}{deleted}</SyncResponse>'
        )

    def _by_inv(self, box: Mailbox, inv_id: str) -> ZTask:
        for task in box.tasks.values():
            if task.inv_id == inv_id:
                return task
        raise SoapError("mail.NO_SUCH_ITEM", f"no such item: {inv_id}")

    def _write(self, box: Mailbox, operation: Any, task: ZTask | None) -> ZTask | None:
        """Store the invite. A create finds an existing task by UID: Zimbra takes the invite
        only when its SEQUENCE is the same or newer (``Invite.isSameOrNewerVersion``) and
        otherwise ignores it ("Appointment already has a newer version of the Invite ...
        Ignore it", ``CalendarItem.processNewInviteRequestOrCancel``): None, and the answer
        carries no ids (``CalendarRequest.sendCalendarMessage``). A task taken in moves to
        the folder the request names (``CalendarItem``: "Move appointment/task to a
        different folder"), out of the Trash too."""
        m = operation.find(f"{{{MAIL}}}m")
        comp = m.find(f"{{{MAIL}}}inv/{{{MAIL}}}comp") if m is not None else None
        if comp is None or not comp.get("uid"):
            raise SoapError("service.INVALID_REQUEST", "missing <comp uid>")
        self._check_invite(comp)
        uid = comp.get("uid")
        if task is None and uid in box.tasks:  # Zimbra finds calendar items by UID
            task = box.tasks[uid]
            if task.seq > int(comp.get("seq") or 0):
                return None
        files = self._attached(task, m)
        if task is not None:
            task.folder = m.get("l", task.folder)
        if task is None:
            item = next(box.ids)
            task = ZTask(uid, item, f"{item}-{item - 1}", 0, 0, m.get("l", "15"), {})
            box.tasks[uid] = task
        # the new invite is built from the request alone (CalendarUtils.parseInviteForModify):
        # what it leaves out is gone
        task.keep_invite(comp)
        if task.comp.get("status") != "COMP":
            task.comp.pop("completed", None)
        elif "completed" not in task.comp:  # Invite.setCompleted(now) when none is given
            task.comp["completed"] = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        task.attachments = files  # the stored message is replaced (CalendarItem.modifyBlob)
        task.zones = [
            etree.tostring(tz, with_tail=False) for tz in comp.getparent().iterfind(f"{{{MAIL}}}tz")
        ]
        task.description = comp.findtext(f"{{{MAIL}}}desc") or ""
        task.subject = m.findtext(f"{{{MAIL}}}su") or ""
        self._touch(box, task)
        return task

    @staticmethod
    def _attached(task: ZTask | None, m: Any) -> list[tuple[str, str, bytes]]:
        """The files ``<m><attach><mp mid part/></attach>`` takes from the task's own message
        (``ParseMimeMessage.attachPart``: ``calItemId-invId`` names an invite's message); a
        message or part that is not there answers ``mail.NO_SUCH_ITEM`` / ``NO_SUCH_PART``."""
        files = []
        for ref in m.iterfind(f"{{{MAIL}}}attach/{{{MAIL}}}mp"):
            if task is None or ref.get("mid") != task.inv_id:
                raise SoapError("mail.NO_SUCH_ITEM", f"no such item: {ref.get('mid')}")
            number = ref.get("part", "")
            if not number.isdigit() or not 2 <= int(number) <= len(task.attachments) + 1:
                raise SoapError("mail.NO_SUCH_PART", f"no such part: {number}")
            files.append(task.attachments[int(number) - 2])
        return files

    @staticmethod
    def _check_invite(comp: Any) -> None:
        """What ``CalendarUtils.parseInviteElementCommon`` refuses, as far as a task's parts
        go: a reminder without an action or a trigger (``Alarm.parse``), a recurrence with
        neither a start nor a due date."""
        for alarm in comp.iterfind(f"{{{MAIL}}}alarm"):
            trigger = alarm.find(f"{{{MAIL}}}trigger")
            if (
                not alarm.get("action")
                or trigger is None
                or (
                    trigger.find(f"{{{MAIL}}}rel") is None
                    and trigger.find(f"{{{MAIL}}}abs") is None
                )
            ):
                raise SoapError(
                    "service.INVALID_REQUEST",
                    "invalid request: <trigger> must have either <rel> or <abs>",
                )
        dated = comp.find(f"{{{MAIL}}}s") is not None or comp.find(f"{{{MAIL}}}e") is not None
        if comp.find(f"{{{MAIL}}}recur") is not None and not dated:
            raise SoapError(
                "service.INVALID_REQUEST", "invalid request: recurrence used without DTSTART"
            )

    def _ids(self, element: str, task: ZTask) -> str:
        return (
            f'<{element} xmlns="{MAIL}" calItemId="{task.cal_item_id}" invId="{task.inv_id}" '
            f'ms="{task.ms}" rev="{task.rev}"/>'
        )
