"""Tasks reach each assignee's Zimbra Tasks exactly once: create, edit, unassign, delete,
through lost answers, expired tokens, conflicts and missing accounts."""

from __future__ import annotations

import time
from datetime import date

import pytest
from django.db import transaction

from integrations.zimbra.models import TaskCopy
from sandbox.zimbra import ADMIN_NAME
from syncqueue.models import SyncJob
from tests.conftest import tickets
from workspace import assignments
from workspace.models import Task

pytestmark = pytest.mark.django_db(transaction=True)
State = SyncJob.State


def new_task(**fields) -> Task:
    defaults = {
        "title": "Call the supplier",
        "description": "About the May invoice",
        "due_date": date(2026, 12, 1),
        "priority": "high",
    }
    with transaction.atomic():
        return Task.objects.create(**{**defaults, **fields})


def assign(task: Task, user) -> TaskCopy:
    with transaction.atomic():
        made = assignments.assign(task, user)
    return TaskCopy.objects.get(pk=made.pk)  # made when the assignment committed


def retitle(task: Task, title: str) -> None:
    """Rename ``task`` as a user would (the change is pushed when the transaction commits)."""
    with transaction.atomic():
        task.title = title
        task.save()


def box(zimbra, user):
    return zimbra.mailboxes[user.email]


def retry_now(job: SyncJob, work) -> None:
    """Run a job that is waiting out its retry backoff now, as its next ticket would."""
    from syncqueue import engine

    SyncJob.objects.filter(pk=job.pk).update(state=State.QUEUED, run_after=job.created_at)
    engine.submit_ticket(job.pk)
    work()


def test_create_edit_unassign_reach_zimbra_once_each(zimbra, zimbra_server, people, work):
    ann = people[0]
    task = new_task()
    assignment = assign(task, ann)
    work()
    assignment.refresh_from_db()
    assert assignment.state == TaskCopy.State.PUSHED and assignment.inv_id
    remote = box(zimbra, ann).tasks[assignment.uid]
    assert remote.comp["name"] == "Call the supplier" and remote.comp["priority"] == "1"
    assert remote.due == "20261201" and remote.description == "About the May invoice"
    assert box(zimbra, ann).creates == 1

    with transaction.atomic():  # three quick edits: one push of the latest state
        for percent in (10, 20, 30):
            task.percent_complete = percent
            task.status = "inprogress"
            task.save()
    assert SyncJob.objects.filter(kind="push", state=State.QUEUED).count() == 1
    work()
    remote = box(zimbra, ann).tasks[assignment.uid]
    assert remote.comp["percentComplete"] == "30" and remote.comp["status"] == "INPR"
    assert box(zimbra, ann).modifies == 1

    task.save()  # saved without a change: nothing sent
    work()
    assert box(zimbra, ann).modifies == 1

    with transaction.atomic():
        assignments.unassign(task, ann)
    work()
    assert assignment.uid not in box(zimbra, ann).live and box(zimbra, ann).cancels == 1
    assignment.refresh_from_db()
    assert assignment.state == TaskCopy.State.REMOVED


def test_deleting_a_task_removes_it_for_every_assignee(zimbra, zimbra_server, people, work):
    task = new_task()
    for person in people:
        assign(task, person)
    work()
    assert all(len(box(zimbra, p).tasks) == 1 for p in people)
    with transaction.atomic():
        task.delete()
    work()
    assert all(len(box(zimbra, p).live) == 0 and box(zimbra, p).cancels == 1 for p in people)


def test_a_lost_answer_is_retried_without_a_duplicate(zimbra, zimbra_server, people, work):
    ann = people[0]
    zimbra.drop_after_commit("CreateTask")  # Zimbra creates it, the answer never arrives
    assignment = assign(new_task(), ann)
    work()
    job = SyncJob.objects.get(kind="push")
    assert job.state == State.RETRYING and job.error_class == "Transient"
    retry_now(job, work)
    assignment.refresh_from_db()
    assert assignment.state == TaskCopy.State.PUSHED
    assert len(box(zimbra, ann).tasks) == 1  # the retry found the task by our uid
    assert box(zimbra, ann).tasks[assignment.uid].cal_item_id == int(assignment.cal_item_id)


def test_a_lost_answer_then_an_edit_in_zimbra_is_retried_without_a_duplicate(
    zimbra, zimbra_server, people, work
):
    """The create's answer is lost and someone edits the task in Zimbra before the retry:
    Zimbra now holds a newer version under our uid and silently ignores the retried create.
    The push finds that task and modifies it — one task, ids stored, later changes arrive."""
    ann = people[0]
    zimbra.drop_after_commit("CreateTask")
    assignment = assign(new_task(), ann)
    work()
    job = SyncJob.objects.get(kind="push")
    assert job.state == State.RETRYING
    zimbra.edit_in_zimbra(box(zimbra, ann).name, assignment.uid, percentComplete="40")
    retry_now(job, work)
    assignment.refresh_from_db()
    held = box(zimbra, ann).tasks[assignment.uid]
    assert assignment.state == TaskCopy.State.PUSHED
    assert len(box(zimbra, ann).tasks) == 1
    assert (assignment.cal_item_id, assignment.inv_id) == (str(held.cal_item_id), held.inv_id)
    task = Task.objects.get(pk=assignment.task_id)
    retitle(task, "Call the supplier today")
    work()
    assert box(zimbra, ann).tasks[assignment.uid].comp["name"] == "Call the supplier today"


def test_a_task_left_in_the_trash_under_our_uid_is_replaced(zimbra, zimbra_server, people, work):
    """A create meets an edited copy of its task in the Trash (the person was unassigned,
    the copy cancelled, then assigned again): the old copy is removed and the task created."""
    ann = people[0]
    assignment = assign(new_task(), ann)
    work()
    zimbra.edit_in_zimbra(box(zimbra, ann).name, assignment.uid, percentComplete="40")
    zimbra.delete_in_zimbra(box(zimbra, ann).name, assignment.uid)
    TaskCopy.objects.filter(pk=assignment.pk).update(inv_id="", cal_item_id="", ms="", rev="")
    task = Task.objects.get(pk=assignment.task_id)
    retitle(task, "Back again")
    work()
    assignment.refresh_from_db()
    live = box(zimbra, ann).live
    assert assignment.state == TaskCopy.State.PUSHED and assignment.inv_id
    assert [t.comp["name"] for t in live.values()] == ["Back again"]


def test_switch_off_means_no_pushes_and_on_pushes_current_tasks(
    zimbra, zimbra_server, people, work
):
    from integrations.models import UserSwitch

    ann = people[0]
    UserSwitch.objects.filter(user=ann).update(enabled=False)
    assignment = assign(new_task(), ann)
    work()
    assert not SyncJob.objects.filter(kind="push").exists() and not box(zimbra, ann).tasks
    assignment.refresh_from_db()
    assert assignment.state == TaskCopy.State.OFF

    switch = UserSwitch.objects.get(user=ann)
    switch.enabled = True
    with transaction.atomic():
        switch.save()
    work()
    assert len(box(zimbra, ann).tasks) == 1


def test_tokens_expiring_mid_batch_are_renewed_once(zimbra, zimbra_server, people, work):
    task = new_task()
    for person in people:
        assign(task, person)
    work()
    zimbra.expire_tokens()  # every cached admin and user token is now expired on the server
    retitle(task, "Call the supplier today")
    work()
    assert all(
        box(zimbra, p).tasks[a.uid].comp["name"] == "Call the supplier today"
        for p in people
        for a in TaskCopy.objects.filter(assignment__user=p)
    )
    assert SyncJob.objects.filter(state=State.FAILED).count() == 0


def test_an_edit_in_zimbra_meanwhile_is_reread_and_a_deleted_task_recreated(
    zimbra, zimbra_server, people, work
):
    ann = people[0]
    task = new_task()
    assignment = assign(task, ann)
    work()
    zimbra.edit_in_zimbra(ann.email, assignment.uid, percentComplete="50")
    retitle(task, "Renamed")
    zimbra.edit_after_next_read(ann.email, assignment.uid, priority="9")  # and again, racing
    del zimbra.operations[:]
    work()
    assert box(zimbra, ann).tasks[assignment.uid].comp["name"] == "Renamed"
    # read, INVITE_OUT_OF_DATE (the edit after the read), read again, modify
    assert zimbra.operations == ["GetTaskRequest", "ModifyTaskRequest"] * 2
    assert SyncJob.objects.filter(kind="push", state=State.SUCCEEDED).count() == 2

    zimbra.delete_in_zimbra(ann.email, assignment.uid)
    retitle(task, "Renamed again")
    work()
    assert box(zimbra, ann).tasks[assignment.uid].comp["name"] == "Renamed again"


def test_a_missing_account_fails_only_that_assignment(zimbra, zimbra_server, people, work):
    from django.contrib.auth import get_user_model

    from integrations.models import UserSwitch

    ghost = get_user_model().objects.create_user("ghost", "ghost@corp.test")
    UserSwitch.objects.create(user=ghost, key="zimbra.tasks", enabled=True)
    task = new_task()
    for person in [ghost, *people]:
        assign(task, person)
    work()
    failed = TaskCopy.objects.get(assignment__user=ghost)
    assert failed.state == TaskCopy.State.FAILED
    assert failed.error == "No Zimbra account for ghost@corp.test."
    assert all(len(box(zimbra, p).tasks) == 1 for p in people)
    zimbra_server.refresh_from_db()
    assert zimbra_server.status != "auth_required"


def test_wrong_admin_password_marks_the_server_connection(zimbra, zimbra_server, people, work):
    zimbra.admins[ADMIN_NAME] = "changed"
    assign(new_task(), people[0])
    work()
    zimbra_server.refresh_from_db()
    assert zimbra_server.status == "auth_required"
    assert "Zimbra rejected the admin account" in zimbra_server.last_error


def test_maintenance_and_503_are_transient(zimbra, zimbra_server, people, work):
    zimbra.fault_code("CreateTask", "mail.MAINTENANCE")
    assign(new_task(), people[0])
    work()
    job = SyncJob.objects.get(kind="push")
    assert job.state == State.RETRYING and job.error_class == "Transient"
    zimbra.fault("/service/soap", 503, times=1)
    zimbra.fault_code("CreateTask", "mail.MAINTENANCE", times=0)
    retry_now(job, work)
    job.refresh_from_db()
    assert job.state == State.RETRYING and "HTTP 503" in job.error_message


def test_the_queue_never_holds_a_secret_or_token(zimbra, zimbra_server, people, work):
    assign(new_task(), people[0])
    for ticket in tickets():
        text = repr(ticket)
        assert "zimbra-admin-pw" not in text and "0_" not in text
    for job in SyncJob.objects.all():
        assert set(job.payload) == {"assignment"}
    work()
    tokens = list(zimbra.tokens)
    from syncqueue.models import SyncLog

    logged = " ".join(SyncLog.objects.values_list("message", flat=True))
    assert tokens and not any(t in logged for t in tokens)


def test_characters_xml_cannot_carry_are_left_out_not_the_push(zimbra, zimbra_server, people, work):
    """A title pasted with a form feed, a description with a vertical tab: XML 1.0 cannot
    carry them (lxml refuses), so the task goes without them instead of failing every try."""
    ann = people[0]
    assignment = assign(new_task(title="Call\x0c the supplier", description="Ask\x0b twice"), ann)
    work()
    assignment.refresh_from_db()
    assert assignment.state == TaskCopy.State.PUSHED
    held = box(zimbra, ann).tasks[assignment.uid]
    assert held.comp["name"] == "Call the supplier" and held.description == "Ask twice"


def test_an_edit_made_in_zimbra_before_a_retried_create_is_kept(
    zimbra, zimbra_server, people, work
):
    """Reading back on: the create's answer is lost and the person completes the task in
    Zimbra before the retry. The retry finds that version and merges it as a conflict is
    merged — the completion stays, in Zimbra and here."""
    zimbra_server.config = {**zimbra_server.config, "incoming": True}
    zimbra_server.save()
    ann = people[0]
    zimbra.drop_after_commit("CreateTask")
    assignment = assign(new_task(), ann)
    work()
    job = SyncJob.objects.get(kind="push")
    zimbra.edit_in_zimbra(  # a while later (Zimbra's md has whole seconds)
        box(zimbra, ann).name,
        assignment.uid,
        at=time.time() + 2,
        status="COMP",
        percentComplete="100",
    )
    retry_now(job, work)
    held = box(zimbra, ann).tasks[assignment.uid]
    assert (held.comp["status"], held.comp["percentComplete"]) == ("COMP", "100")
    task = Task.objects.get(pk=assignment.task_id)
    assert (task.status, task.percent_complete) == ("completed", 100)


REMINDER = (
    '<alarm action="DISPLAY"><trigger><abs d="20261130T080000Z"/></trigger>'
    "<desc>Call the supplier</desc></alarm>"
)


def parts_of(zimbra, user, uid: str) -> dict[str, bytes]:
    """The invite's parts Zimbra holds, by name (the last of each)."""
    from lxml import etree

    return {
        etree.QName(etree.fromstring(p)).localname: p for p in box(zimbra, user).tasks[uid].parts
    }


def test_what_the_person_set_in_zimbra_survives_our_modify(zimbra, zimbra_server, people, work):
    """Zimbra builds a modified task from the request alone: a reminder, a location, a start
    date or a category set in the web client would be gone after our next change unless the
    modify carries them (docs/protocols.md, Zimbra). Ours — title, due date, description —
    replace Zimbra's, and Zimbra's own bookkeeping in a GetTask answer is not sent back."""
    ann = people[0]
    task = new_task()
    assignment = assign(task, ann)
    work()
    zimbra.edit_in_zimbra(
        ann.email,
        assignment.uid,
        loc="Room 4",
        add=[REMINDER, '<s d="20261125"/>', "<category>Suppliers</category>"],
    )
    with transaction.atomic():
        task.title, task.due_date, task.description = (
            "Call the new supplier",
            date(2026, 12, 4),
            "Soon",
        )
        task.save()
    work()
    held = box(zimbra, ann).tasks[assignment.uid]
    assert held.comp["loc"] == "Room 4" and held.comp["name"] == "Call the new supplier"
    parts = parts_of(zimbra, ann, assignment.uid)
    assert {"alarm", "s", "category", "desc", "e"} <= set(parts)
    assert b"20261130T080000Z" in parts["alarm"] and b"Suppliers" in parts["category"]
    assert b'd="20261125"' in parts["s"] and held.comp["allDay"] == "1"
    assert held.description == "Soon" and held.due == "20261204"
    bookkeeping = {"x_uid", "seq", "d", "compNum", "method", "isOrg", "calItemId", "ciFolder"}
    assert not bookkeeping & set(held.comp)
    assert b"<fr" not in b"".join(held.parts)

    with transaction.atomic():  # done here: Zimbra records when; a later edit keeps that time
        task.status, task.percent_complete = "completed", 100
        task.save()
    work()
    done_at = box(zimbra, ann).tasks[assignment.uid].comp["completed"]
    time.sleep(1.1)
    retitle(task, "Called the new supplier")
    work()
    held = box(zimbra, ann).tasks[assignment.uid]
    assert held.comp["completed"] == done_at and "alarm" in parts_of(zimbra, ann, assignment.uid)


def test_times_set_in_zimbra_survive_our_modify(zimbra, zimbra_server, people, work):
    """Our tasks are all-day, but a CalDAV or Outlook client can give one a start at 09:00
    and a due time. allDay="1" would take both times off (CalendarUtils, "bug 30121"), so a
    modify sends the held start back without it, and the held due when it names our due
    day (a time in UTC may be another day where the person is: not taken for ours). A due on
    the start's day, or before it, becomes the start's time (Invite.sanitize), and Zimbra
    keeps no start on a task without a due: removing our due date removes the start."""
    ann = people[0]
    task = new_task(due_date=date(2026, 12, 4))
    assignment = assign(task, ann)
    work()
    start = '<s d="20261201T090000" tz="Europe/Berlin"/>'
    zimbra.edit_in_zimbra(ann.email, assignment.uid, allDay="0", add=[start])
    held = box(zimbra, ann).tasks[assignment.uid]
    assert "allDay" not in held.comp and held.due == "20261204"  # as Zimbra writes it back

    retitle(task, "Call the supplier at nine")
    work()
    held = box(zimbra, ann).tasks[assignment.uid]
    parts = parts_of(zimbra, ann, assignment.uid)
    assert held.comp["name"] == "Call the supplier at nine" and "allDay" not in held.comp
    assert b'd="20261201T090000"' in parts["s"] and b'tz="Europe/Berlin"' in parts["s"]
    assert held.due == "20261204"

    due = '<e d="20261204T170000" tz="Europe/Berlin"/>'
    zimbra.edit_in_zimbra(ann.email, assignment.uid, add=[due])
    retitle(task, "Call the supplier at nine, by five")
    work()
    assert box(zimbra, ann).tasks[assignment.uid].due == "20261204T170000"

    with transaction.atomic():  # another due day: ours, as a date
        task.due_date = date(2026, 12, 8)
        task.save()
    work()
    held = box(zimbra, ann).tasks[assignment.uid]
    assert held.due == "20261208" and b"T090000" in parts_of(zimbra, ann, assignment.uid)["s"]

    zimbra.edit_in_zimbra(ann.email, assignment.uid, add=['<e d="20261208T233000Z"/>'])
    retitle(task, "Call the supplier at nine, by the 8th")
    work()
    assert box(zimbra, ann).tasks[assignment.uid].due == "20261208"  # 9 Dec in Berlin

    with transaction.atomic():  # the start's day: Zimbra gives the due the start's time
        task.due_date = date(2026, 12, 1)
        task.save()
    work()
    assert box(zimbra, ann).tasks[assignment.uid].due == "20261201T090000"
    retitle(task, "Call the supplier at nine, today")
    work()
    assert box(zimbra, ann).tasks[assignment.uid].due == "20261201T090000"

    with transaction.atomic():
        task.due_date = None
        task.save()
    work()
    parts = parts_of(zimbra, ann, assignment.uid)
    assert "s" not in parts and "e" not in parts


def test_files_attached_in_zimbra_survive_our_modify(zimbra, zimbra_server, people, work):
    """Zimbra replaces the task's stored message with the one a modify builds
    (CalendarItem.modifyBlob): the push attaches the task's files again by reference."""
    ann = people[0]
    task = new_task()
    assignment = assign(task, ann)
    work()
    zimbra.attach_in_zimbra(
        ann.email, assignment.uid, "quote.pdf", b"%PDF-1.4 quote", "application/pdf"
    )
    zimbra.attach_in_zimbra(ann.email, assignment.uid, "notes.txt", b"call before noon")
    retitle(task, "Call the supplier again")
    work()
    held = box(zimbra, ann).tasks[assignment.uid]
    assert held.comp["name"] == "Call the supplier again"
    assert held.attachments == [
        ("quote.pdf", "application/pdf", b"%PDF-1.4 quote"),
        ("notes.txt", "text/plain", b"call before noon"),
    ]
