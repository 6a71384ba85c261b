"""Incoming: status and percent complete changed in Zimbra come back to the task, per person's
Tasks folder from a sync token. A three-way merge: the side that did not change gives way; when
both changed, the later change wins and the losing value is logged."""

from __future__ import annotations

import time
from datetime import date
from typing import Any

import pytest
from django.db import transaction

from integrations.zimbra.models import TaskCopy
from syncqueue import engine
from syncqueue.models import SyncJob, SyncLog
from workspace import assignments
from workspace.models import Task

pytestmark = pytest.mark.django_db(transaction=True)
ORDERS = pytest.mark.parametrize("read_first", [True, False], ids=["read-first", "push-first"])


@pytest.fixture
def incoming_server(zimbra_server: Any) -> Any:
    zimbra_server.config = {**zimbra_server.config, "incoming": True, "incoming_page": 10}
    zimbra_server.save()
    return zimbra_server


def new_task(title: str = "Call the supplier") -> Task:
    with transaction.atomic():
        return Task.objects.create(title=title, due_date=date(2026, 12, 1))


def assign(task: Task, *people: Any) -> list[TaskCopy]:
    with transaction.atomic():
        made = [assignments.assign(task, person) for person in people]
    return [TaskCopy.objects.get(pk=a.pk) for a in made]  # made when the assignment committed


def read_back(server: Any, work: Any) -> SyncJob:
    job = engine.enqueue(server, SyncJob.Kind.MANUAL)
    work()
    job.refresh_from_db()
    assert job.state == SyncJob.State.SUCCEEDED, (job.error_class, job.error_message)
    return job


def read_and_push(server: Any, work: Any, read_first: bool) -> None:
    """Run a queued push and an incoming read in the given order."""
    priority = SyncJob.Priority.MANUAL if read_first else SyncJob.Priority.SCHEDULED
    read = engine.enqueue(server, SyncJob.Kind.INCREMENTAL, priority=priority)
    work()
    push = SyncJob.objects.filter(kind="push").latest("id")
    read.refresh_from_db()
    assert read.state == push.state == SyncJob.State.SUCCEEDED
    assert read.started_at is not None and push.started_at is not None
    assert (read.started_at < push.started_at) == read_first


def logged() -> list[str]:
    return list(SyncLog.objects.values_list("message", flat=True))


def remote(zimbra: Any, assignment: TaskCopy) -> dict[str, str]:
    return zimbra.mailboxes[assignment.account].tasks[assignment.uid].comp


def test_off_by_default_reads_nothing(zimbra, zimbra_server, people, work):
    assign(new_task(), people[0])
    work()
    read_back(zimbra_server, work)
    assert "SyncRequest" not in zimbra.operations
    assert any("off for this server" in m for m in logged())


def test_a_change_made_in_zimbra_comes_back_and_reaches_the_other_assignees(
    zimbra, incoming_server, people, work
):
    ann, ben = people[:2]
    task = new_task()
    a_ann, a_ben = assign(task, ann, ben)
    work()
    read_back(incoming_server, work)  # first read: Zimbra lists ids only, so each is read once
    assert zimbra.operations.count("GetTaskRequest") == 2
    task.refresh_from_db()
    assert task.status == "need"
    incoming_server.refresh_from_db()
    assert set(incoming_server.cursor["tokens"]) == {"ann@corp.test/15", "ben@corp.test/15"}

    zimbra.edit_in_zimbra(ann.email, a_ann.uid, status="COMP", percentComplete="100")
    modifies_before = zimbra.mailboxes[ann.email].modifies
    job = read_back(incoming_server, work)

    task.refresh_from_db()
    assert (task.status, task.percent_complete) == ("completed", 100)
    assert job.updated_count == 1
    assert any("took Completed, 100% from ann@corp.test's Zimbra" in m for m in logged())
    assert remote(zimbra, a_ben)["status"] == "COMP"  # ben's copy follows
    assert zimbra.mailboxes[ann.email].modifies == modifies_before  # ann's is not sent back
    a_ann.refresh_from_db()
    assert (a_ann.pushed_status, a_ann.pushed_percent) == ("completed", 100)

    reads = zimbra.operations.count("GetTaskRequest")
    again = read_back(incoming_server, work)  # nothing new: one SyncRequest per person
    assert again.updated_count == 0 and zimbra.operations.count("GetTaskRequest") == reads


@ORDERS
def test_a_zimbra_change_survives_a_later_edit_of_another_field_here(
    zimbra, incoming_server, people, work, read_first
):
    ann = people[0]
    task = new_task()
    (assignment,) = assign(task, ann)
    work()
    zimbra.edit_in_zimbra(ann.email, assignment.uid, status="COMP", percentComplete="100")
    time.sleep(1.1)  # Zimbra's md has one-second steps: our edit is clearly later
    with transaction.atomic():
        task.title = "Call the supplier today"
        task.save()
    read_and_push(incoming_server, work, read_first)

    task.refresh_from_db()
    assert (task.title, task.status, task.percent_complete) == (
        "Call the supplier today",
        "completed",
        100,
    )
    copy = remote(zimbra, assignment)
    assert (copy["name"], copy["status"], copy["percentComplete"]) == (
        "Call the supplier today",
        "COMP",
        "100",
    )
    assert not any("kept ours" in m for m in logged())


@ORDERS
def test_when_both_change_progress_our_later_change_wins_and_zimbras_is_logged(
    zimbra, incoming_server, people, work, read_first
):
    ann = people[0]
    task = new_task()
    (assignment,) = assign(task, ann)
    work()
    zimbra.edit_in_zimbra(ann.email, assignment.uid, status="DEFERRED")
    time.sleep(1.1)
    with transaction.atomic():
        task.status, task.percent_complete = "inprogress", 40
        task.save()
    read_and_push(incoming_server, work, read_first)

    task.refresh_from_db()
    assert (task.status, task.percent_complete) == ("inprogress", 40)
    copy = remote(zimbra, assignment)
    assert (copy["status"], copy["percentComplete"]) == ("INPR", "40")
    assert any("kept ours" in m and "Deferred, 0%" in m for m in logged())


@ORDERS
def test_when_both_change_progress_a_later_zimbra_change_wins_and_ours_is_logged(
    zimbra, incoming_server, people, work, read_first
):
    ann = people[0]
    task = new_task()
    (assignment,) = assign(task, ann)
    work()
    with transaction.atomic():
        task.status, task.percent_complete = "inprogress", 40
        task.save()
    later = time.time() + 2
    zimbra.edit_in_zimbra(ann.email, assignment.uid, at=later, status="COMP", percentComplete="90")
    read_and_push(incoming_server, work, read_first)

    task.refresh_from_db()
    assert (task.status, task.percent_complete) == ("completed", 90)
    copy = remote(zimbra, assignment)
    assert (copy["status"], copy["percentComplete"]) == ("COMP", "90")
    assert any("replaced In progress, 40%" in m for m in logged())


def test_two_assignees_changing_it_in_zimbra_the_later_one_wins(
    zimbra, incoming_server, people, work
):
    ann, ben = people[:2]
    task = new_task()
    a_ann, a_ben = assign(task, ann, ben)
    work()
    read_back(incoming_server, work)
    now = time.time()
    zimbra.edit_in_zimbra(ann.email, a_ann.uid, at=now + 1, status="WAITING")
    zimbra.edit_in_zimbra(ben.email, a_ben.uid, at=now + 2, status="COMP", percentComplete="100")
    read_back(incoming_server, work)  # ann's list is read first, ben's change is later

    task.refresh_from_db()
    assert (task.status, task.percent_complete) == ("completed", 100)
    assert remote(zimbra, a_ann)["status"] == remote(zimbra, a_ben)["status"] == "COMP"
    assert any("replaced Waiting, 0%" in m for m in logged())


def test_a_token_zimbra_forgot_means_reading_the_lists_again_and_nothing_is_lost(
    zimbra, incoming_server, people, work
):
    ann, ben = people[:2]
    task = new_task()
    a_ann, _ = assign(task, ann, ben)
    work()
    read_back(incoming_server, work)
    zimbra.edit_in_zimbra(ann.email, a_ann.uid, percentComplete="70")
    zimbra.expire_tombstones()  # Zimbra purged its change log after the edit
    read_back(incoming_server, work)
    for person in ("ann@corp.test", "ben@corp.test"):
        assert any(f"no longer knows the sync position of {person}" in m for m in logged())
    task.refresh_from_db()
    assert task.percent_complete == 70
    incoming_server.refresh_from_db()
    for key, token in incoming_server.cursor["tokens"].items():
        account = key.split("/")[0]
        assert int(token.split("-")[0]) >= zimbra.mailboxes[account].horizon  # a fresh token


def test_many_changes_are_read_in_pages(zimbra, incoming_server, people, work):
    ann = people[0]
    for n in range(25):
        assign(new_task(f"Task {n}"), ann)
    work()
    read_back(incoming_server, work)
    for assignment in TaskCopy.objects.filter(assignment__user=ann):
        zimbra.edit_in_zimbra(ann.email, assignment.uid, status="INPR")
    before = zimbra.operations.count("SyncRequest")
    job = read_back(incoming_server, work)
    assert job.updated_count == 25
    assert zimbra.operations.count("SyncRequest") - before == 3  # pages of 10
    assert Task.objects.filter(status="inprogress").count() == 25


def test_one_mailbox_in_maintenance_does_not_stop_the_others(zimbra, incoming_server, people, work):
    ann, ben = people[:2]
    task = new_task()
    _, a_ben = assign(task, ann, ben)
    work()
    read_back(incoming_server, work)
    zimbra.edit_in_zimbra(ben.email, a_ben.uid, status="INPR", percentComplete="20")
    zimbra.fault_code("Sync", "mail.MAINTENANCE")  # the first list read: ann's
    read_back(incoming_server, work)
    assert any("Skipped ann@corp.test" in m for m in logged())
    task.refresh_from_db()
    assert (task.status, task.percent_complete) == ("inprogress", 20)
    incoming_server.refresh_from_db()
    assert incoming_server.status == "ok"


def test_a_task_deleted_in_zimbra_but_still_assigned_is_added_again(
    zimbra, incoming_server, people, work
):
    ann = people[0]
    (assignment,) = assign(new_task(), ann)
    work()
    read_back(incoming_server, work)
    zimbra.delete_in_zimbra(ann.email, assignment.uid)  # the web client: to the Trash
    read_back(incoming_server, work)
    box = zimbra.mailboxes[ann.email]
    assert assignment.uid in box.live  # back in the Tasks folder, not left in the Trash
    assert box.creates == 2 and "ItemActionRequest" in zimbra.operations  # Trash emptied of it
    assert any("was deleted in ann@corp.test's Zimbra" in m for m in logged())
    assignment.refresh_from_db()
    assert assignment.cal_item_id == str(box.tasks[assignment.uid].cal_item_id)

    with transaction.atomic():  # deleted there again, then unassigned here: no failure
        zimbra.delete_in_zimbra(ann.email, assignment.uid)
        assignments.unassign(assignment.task, ann)
    work()
    assignment.refresh_from_db()
    assert assignment.state == "removed" and not SyncJob.objects.filter(state="failed").exists()


def test_the_queue_holds_no_token(zimbra, incoming_server, people, work):
    from tests.conftest import tickets

    assign(new_task(), people[0])
    work()
    engine.enqueue(incoming_server, SyncJob.Kind.MANUAL)
    queued = repr(tickets()) + repr(list(SyncJob.objects.values("payload", "checkpoint")))
    held = list(zimbra.tokens)
    assert held and not any(token in queued for token in held)
    work()
