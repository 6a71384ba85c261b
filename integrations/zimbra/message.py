"""Zimbra's wire format for tasks: the message a create or modify sends, and what a
``GetTask``/``SyncResponse`` answer says (docs/protocols.md, Zimbra)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from copy import deepcopy
from datetime import UTC, date, datetime
from typing import Any

from lxml import etree

from integrations.zimbra.records import Incoming
from integrations.zimbra.soap import MAIL, element

STATUS = {
    "need": "NEED",
    "inprogress": "INPR",
    "waiting": "WAITING",
    "deferred": "DEFERRED",
    "completed": "COMP",
}
FROM_STATUS = {zimbra: ours for ours, zimbra in STATUS.items()}
PRIORITY = {"high": "1", "normal": "5", "low": "9"}
TRASH = "3"  # Zimbra's Trash folder: a task deleted in the web client moves there


# what XML 1.0 cannot carry at all (C0 controls but tab, line feed and carriage return; lone
# surrogates; U+FFFE/U+FFFF): lxml refuses such text, and no escaping can send it
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def xml_text(value: Any) -> str:
    """``value`` as text an XML document can carry (characters XML cannot hold left out)."""
    return _NOT_XML.sub("", str(value))


# A modify replaces the whole invite with the one sent: Zimbra builds the new version from the
# request alone (``CalendarUtils.parseInviteForModify``), so whatever the person set in Zimbra
# and we do not own — a reminder, a location, a start date, categories — is sent back as
# Zimbra gave it (``ToXML.encodeInviteComponent`` writes these in the form the parser reads).
# Ours: the title, status, priority, percent complete, due date and description; everything
# else a GetTask answer adds (uid, seq, d, compNum, method, isOrg, calItemId, the fragment)
# is Zimbra's own bookkeeping and is not sent back. Files attached to the task are sent back
# by reference (``attachments_of``).
KEPT_ATTRIBUTES = ("loc", "url", "class", "draft", "neverSent")
KEPT_PARTS = frozenset(
    {"s", "alarm", "recur", "category", "comment", "contact", "geo", "at", "or", "xprop"}
)


def _kept(held: etree._Element | None) -> tuple[list[Any], dict[str, str], list[Any]]:
    """From the ``<task>`` Zimbra holds: its time zones, and the attributes and parts of its
    invite that a modify of ours must carry over (copies)."""
    inv = held.find(f"{{{MAIL}}}inv") if held is not None else None
    comp = inv.find(f"{{{MAIL}}}comp") if inv is not None else None
    if inv is None or comp is None:
        return [], {}, []
    zones = [deepcopy(tz) for tz in inv.iterfind(f"{{{MAIL}}}tz")]
    attributes = {k: str(comp.get(k)) for k in KEPT_ATTRIBUTES if comp.get(k) is not None}
    if comp.get("completed") and comp.get("status") == "COMP":
        attributes["completed"] = str(comp.get("completed"))  # when it was done stays put
    parts = [deepcopy(c) for c in comp if etree.QName(c).localname in KEPT_PARTS]
    return zones, attributes, parts


def _due(due_date: date | None, held: etree._Element | None) -> etree._Element | None:
    """The ``<e>`` for our due date: the one Zimbra holds when it is a time on that day in
    its own zone (set by a CalDAV or Outlook client: the time stays), else the date alone.
    A time in UTC (``d`` ending in Z) may fall on another day where the person is, so it is
    not taken for ours."""
    if due_date is None:
        return None
    day = due_date.strftime("%Y%m%d")
    found = held.find(f"{{{MAIL}}}inv/{{{MAIL}}}comp/{{{MAIL}}}e") if held is not None else None
    if found is not None and found.get("tz"):
        value = str(found.get("d", ""))
        if value.startswith(f"{day}T") and not value.endswith("Z"):
            # as a request gives it: d and tz (GetTask adds u, the moment in UTC, not read)
            return element("e", d=value, tz=str(found.get("tz")))
    return element("e", d=day)


def attachments_of(held: etree._Element | None) -> list[tuple[str, str]]:
    """(message id, part) of each file attached to the task Zimbra holds, as a GetTask with
    ``includeContent="1"`` lists them (``<mp part cd="attachment">`` under the ``<inv>``; the
    invite's message is ``calItemId-invId``)."""
    inv = held.find(f"{{{MAIL}}}inv") if held is not None else None
    if held is None or inv is None:
        return []
    mid = f"{held.get('id', '')}-{inv.get('id', '')}"
    found: list[tuple[str, str]] = []

    def walk(parent: etree._Element) -> None:
        for mp in parent.iterfind(f"{{{MAIL}}}mp"):
            if (mp.get("cd") or "").lower() == "attachment" and mp.get("part"):
                found.append((mid, str(mp.get("part"))))  # with what it holds (a mail's parts)
            elif not (mp.get("ct") or "").lower().startswith("message/"):
                walk(mp)

    walk(inv)
    return found


def build_task(uid: str, task: Any, folder: str, held: etree._Element | None = None) -> Any:
    """The ``<m>`` of a CreateTask/ModifyTask for ``task`` under our ``uid``; ``held`` is the
    ``<task>`` Zimbra holds (a GetTask answer), whose fields we do not own are carried over,
    and whose attached files are attached again by reference (Zimbra replaces the task's
    stored message with the one a modify builds, so files it leaves out are gone). A title
    or description with characters XML cannot carry (a pasted form feed, say) goes without
    them, rather than never."""
    title, description = xml_text(task.title), xml_text(task.description)
    zones, kept, parts = _kept(held)
    status = STATUS.get(task.status, "NEED")
    if status != "COMP":
        kept.pop("completed", None)
    m = element("m", l=folder)
    inv = element("inv")
    inv.extend(zones)
    due = _due(task.due_date, held)
    dates = [part for part in parts if etree.QName(part).localname == "s"] + (
        [due] if due is not None else []
    )
    timed = any("T" in str(when.get("d", "")) for when in dates)
    comp = element(
        "comp",
        name=title,
        uid=uid,
        status=status,
        priority=PRIORITY.get(task.priority, "5"),
        percentComplete=task.percent_complete,
        # all-day unless a time set in Zimbra is sent back: allDay="1" would take it off
        # (CalendarUtils.parseInviteElementCommon, "bug 30121"); left out, Zimbra tells from
        # the start whether the task is all-day (Invite.sanitize)
        **({} if timed else {"allDay": "1"}),
        **kept,
    )
    if due is not None:
        comp.append(due)
    comp.append(element("desc", description))
    comp.extend(parts)
    inv.append(comp)
    m.append(inv)
    m.append(element("su", title))
    mp = element("mp", ct="text/plain")
    mp.append(element("content", description))
    m.append(mp)
    files = attachments_of(held)
    if files:
        attach = element("attach")
        attach.extend(element("mp", mid=mid, part=part) for mid, part in files)
        m.append(attach)
    return m


def parse_task(found: etree._Element, assignment_id: int) -> Incoming:
    """A ``<task>`` read with ``sync="1"`` (else md and ms are missing)."""
    comp = found.find(f"{{{MAIL}}}inv/{{{MAIL}}}comp")
    attrs = {str(k): str(v) for k, v in comp.attrib.items()} if comp is not None else {}
    try:
        percent = max(0, min(100, int(attrs.get("percentComplete") or 0)))
    except ValueError:
        percent = 0
    return Incoming(
        assignment_id=assignment_id,
        status=FROM_STATUS.get(str(attrs.get("status") or "").upper()),
        percent=percent,
        changed_at=datetime.fromtimestamp(int(found.get("md") or 0), tz=UTC),
        ms=found.get("ms", ""),
        rev=found.get("rev", ""),
    )


def changed_items(answer: etree._Element) -> Iterator[tuple[str, str | None]]:
    """(item id, ms) of the tasks a SyncResponse lists. A delta lists ``<task id ms …/>``; a
    first sync (no token) lists the folder's ids only (``<folder><task ids="257,258"/>``), so
    their ``ms`` is unknown (None) and each is read."""
    for item in answer.iter(f"{{{MAIL}}}task"):
        if item.get("ids") is not None:
            for item_id in item.get("ids", "").split(","):
                if item_id:
                    yield item_id, None
        elif item.get("id"):
            yield item.get("id", ""), item.get("ms")


def ids_of(answer: Any) -> dict[str, str]:
    """The ids a CreateTask/ModifyTask answer gives."""
    return {k: str(answer.get(k, "")) for k in ("calItemId", "invId", "ms", "rev")}
