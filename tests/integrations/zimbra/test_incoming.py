"""Incoming: status and percent complete changed in Zimbra come back to the task, per person's
Tasks folder from a sync token; the later change wins and the losing value is logged."""

from __future__ import annotations

import time
from datetime import date
from typing import Any

import pytest
from django.db import transaction

from syncqueue import engine
from syncqueue.models import SyncJob, SyncLog
from workspace import tasks
from workspace.models import Assignment, Task

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def incoming_server(zimbra_server: Any) -> Any:
    zimbra_server.config = {**zimbra_server.config, "incoming": True, "incoming_page": 10}
    zimbra_server.save()
    return zimbra_server


def new_task(title: str = "Call the supplier") -> Task:
    with transaction.atomic():
        return Task.objects.create(title=title, due_date=date(2026, 12, 1))


def assign(task: Task, *people: Any) -> list[Assignment]:
    with transaction.atomic():
        return [tasks.assign(task, person) for person in people]


def read_back(server: Any, work: Any) -> SyncJob:
    job = engine.enqueue(server, SyncJob.Kind.MANUAL)
    work()
    job.refresh_from_db()
    assert job.state == SyncJob.State.SUCCEEDED, (job.error_class, job.error_message)
    return job


def messages(job: SyncJob) -> list[str]:
    return list(SyncLog.objects.filter(job=job).values_list("message", flat=True))


def test_off_by_default_reads_nothing(zimbra, zimbra_server, people, work):
    assign(new_task(), people[0])
    work()
    job = read_back(zimbra_server, work)
    assert "SyncRequest" not in zimbra.operations
    assert any("off for this server" in m for m in messages(job))


def test_a_change_made_in_zimbra_comes_back_and_reaches_the_other_assignees(
    zimbra, incoming_server, people, work
):
    ann, ben = people[:2]
    task = new_task()
    a_ann, a_ben = assign(task, ann, ben)
    work()
    read_back(incoming_server, work)  # first read: our own pushes only, nothing to fetch
    assert "GetTaskRequest" not in zimbra.operations
    assert set(incoming_server.__class__.objects.get(pk=incoming_server.pk).cursor["tokens"]) == {
        "ann@corp.test/15",
        "ben@corp.test/15",
    }

    zimbra.edit_in_zimbra(ann.email, a_ann.uid, at=time.time() + 5, status="COMP")
    zimbra.mailboxes[ann.email].tasks[a_ann.uid].comp["percentComplete"] = "100"
    modifies_before = zimbra.mailboxes[ann.email].modifies
    job = read_back(incoming_server, work)

    task.refresh_from_db()
    assert (task.status, task.percent_complete) == ("completed", 100)
    assert job.updated_count == 1
    assert any("changed it in Zimbra to Completed, 100%" in m for m in messages(job))
    # ben's copy follows; ann's is not sent back to her
    assert zimbra.mailboxes[ben.email].tasks[a_ben.uid].comp["status"] == "COMP"
    assert zimbra.mailboxes[ann.email].modifies == modifies_before
    a_ann.refresh_from_db()
    assert a_ann.ms == str(zimbra.mailboxes[ann.email].tasks[a_ann.uid].ms)

    again = read_back(incoming_server, work)  # nothing new: one SyncRequest per person
    assert again.updated_count == 0


@pytest.mark.parametrize("read_first", [True, False], ids=["read-first", "push-first"])
def test_our_later_change_wins_and_zimbras_value_is_logged(
    zimbra, incoming_server, people, work, read_first
):
    ann = people[0]
    task = new_task()
    (assignment,) = assign(task, ann)
    work()
    zimbra.edit_in_zimbra(ann.email, assignment.uid, at=time.time() - 60, status="DEFERRED")
    with transaction.atomic():  # our change, later than Zimbra's
        task.status, task.percent_complete = "inprogress", 40
        task.save()
    priority = SyncJob.Priority.MANUAL if read_first else SyncJob.Priority.SCHEDULED
    read = engine.enqueue(incoming_server, SyncJob.Kind.INCREMENTAL, priority=priority)
    work()
    push = SyncJob.objects.filter(kind="push").latest("id")
    read.refresh_from_db()
    assert (read.started_at < push.started_at) == read_first
    task.refresh_from_db()
    assert (task.status, task.percent_complete) == ("inprogress", 40)
    remote = zimbra.mailboxes[ann.email].tasks[assignment.uid]
    assert (remote.comp["status"], remote.comp["percentComplete"]) == ("INPR", "40")
    logged = SyncLog.objects.filter(message__contains="kept ours").values_list("message", flat=True)
    assert any("Deferred, 0%" in m for m in logged)


def test_a_later_zimbra_change_survives_our_edit_of_another_field(
    zimbra, incoming_server, people, work
):
    ann = people[0]
    task = new_task()
    (assignment,) = assign(task, ann)
    work()
    with transaction.atomic():
        task.title = "Call the supplier today"
        task.save()
    # the person completes it in Zimbra after our edit, before the push runs
    zimbra.edit_in_zimbra(ann.email, assignment.uid, at=time.time() + 5, status="COMP")
    work()
    remote = zimbra.mailboxes[ann.email].tasks[assignment.uid]
    assert remote.comp["name"] == "Call the supplier today" and remote.comp["status"] == "COMP"
    task.refresh_from_db()
    assert task.status == "completed"
    assert SyncLog.objects.filter(message__contains="changed it in Zimbra to Completed").exists()


def test_a_token_zimbra_forgot_resets_that_folder_only(zimbra, incoming_server, people, work):
    ann = people[0]
    task = new_task()
    (assignment,) = assign(task, ann)
    work()
    read_back(incoming_server, work)
    zimbra.expire_tombstones()
    zimbra.edit_in_zimbra(ann.email, assignment.uid, at=time.time() + 5, percentComplete="70")
    job = read_back(incoming_server, work)
    assert any("no longer knows the sync position of ann@corp.test" in m for m in messages(job))
    task.refresh_from_db()
    assert task.percent_complete == 70
    incoming_server.refresh_from_db()
    assert int(incoming_server.cursor["tokens"]["ann@corp.test/15"]) >= zimbra.tombstone_horizon


def test_many_changes_are_read_in_pages(zimbra, incoming_server, people, work):
    ann = people[0]
    made = [new_task(f"Task {n}") for n in range(25)]
    for task in made:
        assign(task, ann)
    work()
    read_back(incoming_server, work)
    later = time.time() + 5
    for assignment in Assignment.objects.filter(user=ann):
        zimbra.edit_in_zimbra(ann.email, assignment.uid, at=later, status="INPR")
    before = zimbra.operations.count("SyncRequest")
    job = read_back(incoming_server, work)
    assert job.updated_count == 25
    assert zimbra.operations.count("SyncRequest") - before == 3  # pages of 10
    assert Task.objects.filter(status="inprogress").count() == 25


def test_the_queue_holds_no_token(zimbra, incoming_server, people, work):
    from tests.conftest import tickets

    assign(new_task(), people[0])
    work()
    engine.enqueue(incoming_server, SyncJob.Kind.MANUAL)
    queued = repr(tickets()) + repr(list(SyncJob.objects.values("payload", "checkpoint")))
    held = [token for token in zimbra.tokens]
    assert held and not any(token in queued for token in held)
    work()
