"""What Zimbra's SOAP server is documented (and written) to do, played by the local server —
docs/protocols.md, Zimbra — and what the connector makes of it."""

from __future__ import annotations

import time
from datetime import date

import pytest
from django.db import transaction
from lxml import etree

from integrations.zimbra.config import ZimbraConfig
from integrations.zimbra.message import build_task
from integrations.zimbra.models import TaskCopy
from integrations.zimbra.soap import ZimbraSoap
from sandbox.zimbra import ADMIN_NAME, ADMIN_PASSWORD, MAIL
from syncqueue import engine
from syncqueue.models import SyncJob
from workspace import assignments
from workspace.models import Task

pytestmark = pytest.mark.django_db(transaction=True)


def soap(zimbra) -> ZimbraSoap:
    config = ZimbraConfig(
        soap_url=zimbra.soap_url, admin_url=zimbra.admin_url, admin_name=ADMIN_NAME
    )
    return ZimbraSoap(config, {"admin_password": ADMIN_PASSWORD})


def test_get_task_returns_md_and_ms_only_on_sync_requests(zimbra):
    box = zimbra.add_account("ann@corp.test")
    task = box.add_foreign_task("uid-1")
    plain = soap(zimbra).call("ann@corp.test", "GetTask", id=str(task.cal_item_id))
    synced = soap(zimbra).call("ann@corp.test", "GetTask", id=str(task.cal_item_id), sync="1")
    item, item_sync = plain.find(f"{{{MAIL}}}task"), synced.find(f"{{{MAIL}}}task")
    assert item.get("ms") is None and item.get("md") is None and item.get("rev")
    assert item_sync.get("ms") and item_sync.get("md") and item_sync.get("rev")


def test_a_later_change_in_zimbra_wins_because_md_is_asked_for(zimbra, zimbra_server, people, work):
    """Without sync="1" Zimbra's change time read as 1970 and ours always won."""
    zimbra_server.config = {**zimbra_server.config, "incoming": True}
    zimbra_server.save()
    ann = people[0]
    with transaction.atomic():
        task = Task.objects.create(title="Report", due_date=date(2026, 12, 1))
        assignment = assignments.assign(task, ann)
    assignment = TaskCopy.objects.get(pk=assignment.pk)
    work()
    engine.enqueue(zimbra_server, SyncJob.Kind.MANUAL)
    work()
    with transaction.atomic():  # changed here first ...
        task.status, task.percent_complete = "inprogress", 30
        task.save()
    zimbra.edit_in_zimbra(
        ann.email, assignment.uid, at=time.time() + 5, status="COMP", percentComplete="100"
    )  # ... and later in Zimbra
    work()  # the push meets INVITE_OUT_OF_DATE, reads the task again and merges
    task.refresh_from_db()
    assert (task.status, task.percent_complete) == ("completed", 100)


def test_the_modify_conflict_check_needs_both_ms_and_rev(zimbra, zimbra_server, people, work):
    ann = people[0]
    with transaction.atomic():
        task = Task.objects.create(title="Report")
        assignment = assignments.assign(task, ann)
    assignment = TaskCopy.objects.get(pk=assignment.pk)
    work()
    assignment.refresh_from_db()
    zimbra.edit_in_zimbra(ann.email, assignment.uid, percentComplete="10")
    client = soap(zimbra)
    message = build_task(assignment.uid, task, zimbra_server.build_connector().zimbra.tasks_folder)
    from integrations.zimbra.soap import OutOfDate

    with pytest.raises(OutOfDate):  # both sent, one stale: refused
        client.call(
            ann.email,
            "ModifyTask",
            [message],
            id=assignment.inv_id,
            comp="0",
            ms=assignment.ms,
            rev=assignment.rev,
        )
    answer = client.call(
        ann.email, "ModifyTask", [message], id=assignment.inv_id, comp="0", ms=assignment.ms
    )  # only ms: Zimbra skips the check
    assert answer.get("calItemId") == assignment.cal_item_id


def test_missing_items_answer_no_such_item_and_calitem(zimbra):
    zimbra.add_account("ann@corp.test")
    from integrations.zimbra.soap import ItemGone

    for attrs in ({"id": "999"}, {"uid": "nope"}):
        with pytest.raises(ItemGone):
            soap(zimbra).call("ann@corp.test", "GetTask", **attrs)
    assert {"GetTaskRequest"} <= set(zimbra.operations)


REMINDER = (
    '<alarm action="DISPLAY"><trigger><rel neg="1" m="15" related="START"/></trigger></alarm>'
)
ANN = "ann@corp.test"


class Created:
    """A task "Report" created in Ann's mailbox under ``uid``, and the calls the tests make."""

    def __init__(self, zimbra, uid: str) -> None:
        self.box = zimbra.add_account(ANN)
        self.client = soap(zimbra)
        self.uid = uid
        self.task = Task(title="Report", due_date=date(2026, 12, 1))
        self.inv_id = self.client.call(ANN, "CreateTask", [self.message()]).get("invId")

    def message(self, held=None):
        return build_task(self.uid, self.task, "15", held=held)

    def modify(self, message=None):
        return self.client.call(
            ANN,
            "ModifyTask",
            [message if message is not None else self.message()],
            id=self.inv_id,
            comp="0",
        )

    def read(self, **attrs):
        return self.client.call(ANN, "GetTask", uid=self.uid, sync="1", **attrs).find(
            f"{{{MAIL}}}task"
        )

    @property
    def held(self):
        return self.box.tasks[self.uid]


def test_a_modify_replaces_the_whole_invite(zimbra):
    """ModifyTask builds the new invite from the request alone
    (CalendarUtils.parseInviteForModify): a reminder the request leaves out is gone."""
    made = Created(zimbra, "uid-9")
    zimbra.edit_in_zimbra(ANN, "uid-9", loc="Room 4", add=[REMINDER])
    comp = made.read().find(f"{{{MAIL}}}inv/{{{MAIL}}}comp")
    assert comp.get("loc") == "Room 4" and comp.find(f"{{{MAIL}}}alarm") is not None
    assert comp.get("x_uid") == "uid-9" and comp.get("calItemId") == str(made.held.cal_item_id)

    made.modify()
    assert "loc" not in made.held.comp and not any(b"alarm" in p for p in made.held.parts)

    zimbra.edit_in_zimbra(ANN, "uid-9", loc="Room 5", add=[REMINDER])
    made.modify(made.message(held=made.read()))
    assert made.held.comp["loc"] == "Room 5" and any(b"alarm" in p for p in made.held.parts)


def test_a_modify_takes_the_task_to_the_folder_it_names_and_checks_reminders(zimbra):
    """ModifyTask moves the task to the request's folder (CalendarItem: "Move
    appointment/task to a different folder"); a reminder without a trigger is refused
    (Alarm.parse)."""
    from integrations.errors import Permanent

    made = Created(zimbra, "uid-7")
    made.held.folder = "300"  # filed in another task list in the web client
    made.modify()
    assert made.held.folder == "15"

    broken = made.message()
    broken.find(f"{{{MAIL}}}inv/{{{MAIL}}}comp").append(
        etree.fromstring(f'<alarm xmlns="{MAIL}" action="DISPLAY"/>')
    )
    with pytest.raises(Permanent, match="INVALID_REQUEST"):
        made.modify(broken)


def _dated(
    made, all_day: str | None, start: str | None, due: str | None, *, zone="Europe/Berlin", add=""
):
    """Modify with these dates (``add``: more parts); what GetTask then says: (allDay, start
    d, due d)."""
    message = made.message()
    comp = message.find(f"{{{MAIL}}}inv/{{{MAIL}}}comp")
    comp.attrib.pop("allDay", None)
    if all_day is not None:
        comp.set("allDay", all_day)
    for old in comp.findall(f"{{{MAIL}}}e"):
        comp.remove(old)
    for name, value in (("s", start), ("e", due)):
        if value is not None:
            tz = f' tz="{zone}"' if "T" in value and not value.endswith("Z") else ""
            comp.append(etree.fromstring(f'<{name} xmlns="{MAIL}" d="{value}"{tz}/>'))
    if add:
        comp.append(etree.fromstring(add.replace("<recur>", f'<recur xmlns="{MAIL}">')))
    made.modify(message)
    read = made.read().find(f"{{{MAIL}}}inv/{{{MAIL}}}comp")
    found = {n: read.find(f"{{{MAIL}}}{n}") for n in ("s", "e")}
    return (read.get("allDay"), *(w.get("d") if w is not None else None for w in found.values()))


def test_a_task_s_dates_as_zimbra_settles_them(zimbra):
    """CalendarUtils.parseInviteElementCommon ("fixup for bug 30121"): allDay="1" takes the
    time off the start and the due; a date alone makes the invite all-day. Invite.sanitize:
    no start without a due; the all-day flag follows the start (else the due); a due
    earlier than the start becomes the start. ToXML writes allDay only when true."""
    made = Created(zimbra, "uid-6")
    assert _dated(made, "1", "20261125T090000", "20261201T170000") == ("1", "20261125", "20261201")
    timed = ("20261125T090000", "20261201")  # a timed start, our date-only due
    assert _dated(made, None, *timed) == (None, *timed)
    assert _dated(made, "0", *timed) == (None, *timed)
    assert _dated(made, None, "20261125T090000", "20261201T170000") == (
        None,
        "20261125T090000",
        "20261201T170000",
    )
    assert _dated(made, None, "20261125", "20261201T170000") == ("1", "20261125", "20261201")
    assert _dated(made, None, "20261125T090000", None) == (None, None, None)
    assert _dated(made, None, None, "20261201") == ("1", None, "20261201")
    assert _dated(made, None, None, None) == (None, None, None)
    # a due before the start (a date is midnight in the account's zone, UTC here)
    assert _dated(made, None, "20261125T090000", "20261125") == (
        None,
        "20261125T090000",
        "20261125T090000",
    )
    # 00:00:00 leaves the flag as the request's dates made it
    assert _dated(made, None, "20261125T000000", "20261201") == ("1", "20261125", "20261201")
    # a time taken off still counts in the comparison: 23:00 in New York is the 26th in UTC
    late = _dated(made, "1", "20261125T230000", "20261126", zone="America/New_York")
    assert late == ("1", "20261125", "20261125")


def test_a_recurring_task_s_dates(zimbra):
    """A recurrence needs a start: with only a due, Zimbra makes one (the due less a day, or
    a second); with neither it refuses (CalendarUtils). A start without a due is dropped,
    and then the recurrence with it (Invite.sanitize(false): dropped, not refused). A date
    Zimbra cannot read is refused (parseDtElement); GetTask gives a time's moment as ``u``."""
    from integrations.errors import Permanent

    made = Created(zimbra, "uid-5")
    weekly = '<recur><add><rule freq="WEE"><interval ival="1"/></rule></add></recur>'
    assert _dated(made, None, None, "20261201", add=weekly) == ("1", "20261130", "20261201")
    assert any(b"recur" in part for part in made.held.parts)
    assert _dated(made, None, None, "20261201T170000Z", add=weekly) == (
        None,
        "20261201T165959Z",
        "20261201T170000Z",
    )
    assert _dated(made, None, "20261125T090000", None, add=weekly) == (None, None, None)
    assert not any(b"recur" in part for part in made.held.parts)
    with pytest.raises(Permanent, match="INVALID_REQUEST"):
        _dated(made, None, None, None, add=weekly)
    with pytest.raises(Permanent, match="INVALID_REQUEST"):
        _dated(made, None, "20261325", "20261201")
    _dated(made, None, "20261125T090000", "20261201T170000")
    start = made.read().find(f"{{{MAIL}}}inv/{{{MAIL}}}comp/{{{MAIL}}}s")
    assert start.get("tz") == "Europe/Berlin" and start.get("u") == "1795593600000"  # 08:00 UTC


def test_a_modify_keeps_only_the_files_it_attaches_by_reference(zimbra):
    """The stored message is replaced by the one the modify builds (CalendarItem.modifyBlob);
    ``<attach><mp mid="calItemId-invId" part/>`` takes a file from the task's own message
    (ParseMimeMessage.attachPart), and a part that is not there is refused."""
    from integrations.errors import Permanent

    made = Created(zimbra, "uid-8")
    zimbra.attach_in_zimbra(ANN, "uid-8", "a.txt", b"A")
    zimbra.attach_in_zimbra(ANN, "uid-8", "b.txt", b"B")
    read = made.read(includeContent="1")
    listed = read.find(f"{{{MAIL}}}inv").iter(f"{{{MAIL}}}mp")
    assert [(p.get("part"), p.get("filename")) for p in listed if p.get("cd")] == [
        ("2", "a.txt"),
        ("3", "b.txt"),
    ]
    message = made.message(held=read)
    made.modify(message)
    assert [name for name, _, _ in made.held.attachments] == ["a.txt", "b.txt"]

    message.find(f"{{{MAIL}}}attach/{{{MAIL}}}mp").set("part", "4")
    with pytest.raises(Permanent, match="NO_SUCH_PART"):
        made.modify(message)

    made.modify()
    assert made.held.attachments == []  # a modify without them drops them


def test_a_mail_attached_to_a_task_is_attached_again_whole():
    """GetTask lists parts as Mime.listParts names them (the root multipart unnumbered, then
    "2", "2.2", …): an attached mail (message/rfc822) is attached again as one part — its own
    parts are inside it, and attaching them too would add a copy at every push."""
    from integrations.zimbra.message import attachments_of

    held = etree.fromstring(
        f'<task xmlns="{MAIL}" id="300"><inv id="301"><comp name="Report"/>'
        '<mp ct="multipart/mixed"><mp part="1" ct="text/plain" body="1"/>'
        '<mp part="2" ct="message/rfc822" cd="attachment" filename="Quote.eml">'
        '<mp part="2.1" ct="text/plain"/>'
        '<mp part="2.2" ct="application/pdf" cd="attachment" filename="inner.pdf"/></mp>'
        '<mp part="3" ct="multipart/related"><mp part="3.1" ct="text/html"/>'
        '<mp part="3.2" ct="image/png" cd="attachment" filename="plan.png"/></mp>'
        "</mp></inv></task>"
    )
    assert attachments_of(held) == [("300-301", "2"), ("300-301", "3.2")]
