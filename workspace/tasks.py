"""Tasks to Zimbra: which assignments need a push, queued when the change commits.

A push job names only the assignment id; the worker reads the latest state of the task when it
runs, so several quick edits waiting in the queue become one push (``dedupe_key``).
"""

from __future__ import annotations

import hashlib
import json
import uuid
from typing import Any

from django.contrib.auth import get_user_model
from django.db import transaction

from integrations.models import Connection, UserSwitch
from syncqueue import engine
from syncqueue.models import SyncJob
from workspace.models import Assignment, Task

SWITCH = "zimbra.tasks"


def zimbra_server() -> Connection | None:
    return Connection.objects.filter(kind="zimbra", enabled=True).order_by("pk").first()


def switch_of(user: Any) -> UserSwitch | None:
    return UserSwitch.objects.filter(user=user, key=SWITCH, enabled=True).first()


def zimbra_address(user: Any) -> str:
    """The Zimbra mailbox that gets this person's tasks: their email, unless a different
    address was proven theirs (confirmed by mail, or set by staff)."""
    switch = UserSwitch.objects.filter(user=user, key=SWITCH).first()
    if switch is not None and switch.value and switch.value_confirmed:
        return switch.value
    return user.email


def content_hash(task: Task | None, active: bool) -> str:
    """What a push would send; unchanged content is not sent again."""
    if task is None or not active:
        return "absent"
    fields = [
        task.title,
        task.description,
        str(task.due_date),
        task.priority,
        task.status,
        task.percent_complete,
    ]
    return hashlib.sha256(json.dumps(fields).encode()).hexdigest()


def queue_push(assignment: Assignment, user: Any = None) -> SyncJob | None:
    """Queue a push of this assignment if its person has the switch on (or it must be
    removed from Zimbra); returns the job, or None when nothing is to be pushed."""
    server = zimbra_server()
    if server is None:
        Assignment.objects.filter(pk=assignment.pk).update(
            error="No Zimbra server is connected: staff must add one."
        )
        return None
    removing = not assignment.active or assignment.task_id is None
    if removing and not assignment.inv_id and not assignment.cal_item_id:
        Assignment.objects.filter(pk=assignment.pk).update(state=Assignment.State.REMOVED)
        return None
    if not removing and switch_of(assignment.user) is None:
        Assignment.objects.filter(pk=assignment.pk, state=Assignment.State.PENDING).update(
            state=Assignment.State.OFF
        )
        return None
    return engine.enqueue(
        server,
        SyncJob.Kind.PUSH,
        payload={"assignment": assignment.pk},
        dedupe_key=f"zimbra:assignment:{assignment.pk}",
        requested_by=user,
    )


def watched_assignments(server: Connection) -> dict[str, dict[str, Any]]:
    """Pushed assignments whose people have the switch on, by Zimbra address and then by
    ``calItemId``: what an incoming sync reads back."""
    from integrations.zimbra.connector import Watched

    if server != zimbra_server():
        return {}
    rows = (
        Assignment.objects.filter(
            active=True,
            task__isnull=False,
            state=Assignment.State.PUSHED,
            user__sync_switches__key=SWITCH,
            user__sync_switches__enabled=True,
        )
        .exclude(cal_item_id="")
        .values_list("account", "user__email", "user_id", "cal_item_id", "pk", "ms")
    )
    confirmed = dict(
        UserSwitch.objects.filter(key=SWITCH, value_confirmed=True)
        .exclude(value="")
        .values_list("user_id", "value")
    )
    found: dict[str, dict[str, Any]] = {}
    for account, email, user_id, cal_item_id, pk, ms in rows:  # no address: pushed to email
        held = (account or email).lower()
        if held != confirmed.get(user_id, email).lower():
            continue  # the person's address changed: the next push moves this copy
        found.setdefault(held, {})[cal_item_id] = Watched(pk, ms)
    return found


def push_later(assignment_ids: list[int]) -> None:
    def run() -> None:
        for assignment in Assignment.objects.filter(pk__in=assignment_ids).select_related("user"):
            queue_push(assignment)

    transaction.on_commit(run)


# --- what the JSON API and the admin call -------------------------------------------------------
def assign(task: Task, user: Any) -> Assignment:
    existing = Assignment.objects.filter(task=task, user=user, active=True).first()
    if existing:
        return existing
    assignment = Assignment.objects.create(
        task=task,
        user=user,
        uid=f"syncproject-task-{task.pk}-{uuid.uuid4().hex[:16]}",
        account=zimbra_address(user),
    )
    push_later([assignment.pk])
    return assignment


def unassign(task: Task, user: Any) -> int:
    ids = list(
        Assignment.objects.filter(task=task, user=user, active=True).values_list("pk", flat=True)
    )
    Assignment.objects.filter(pk__in=ids).update(active=False)
    push_later(ids)
    return len(ids)


def task_changed(task: Task) -> None:
    push_later(list(task.assignments.filter(active=True).values_list("pk", flat=True)))


def task_deleting(task: Task) -> None:
    ids = list(task.assignments.filter(active=True).values_list("pk", flat=True))
    Assignment.objects.filter(pk__in=ids).update(active=False)
    push_later(ids)


def switch_turned_on(user: Any) -> None:
    """Turning the switch on pushes the person's current tasks."""
    ids = list(
        Assignment.objects.filter(user=user, active=True, task__isnull=False)
        .exclude(state=Assignment.State.PUSHED)
        .values_list("pk", flat=True)
    )
    Assignment.objects.filter(pk__in=ids).update(state=Assignment.State.PENDING)
    push_later(ids)


# --- signal receivers (connected in WorkspaceConfig.ready) ----------------------------------------
def on_task_saved(sender: Any, instance: Task, created: bool, **kwargs: Any) -> None:
    if not created:
        task_changed(instance)


def on_task_deleting(sender: Any, instance: Task, **kwargs: Any) -> None:
    task_deleting(instance)


def address_changed(user: Any) -> None:
    """The person's Zimbra address changed: every copy held in another mailbox is pushed, and
    the push removes it there and creates it afresh in the new one (Zimbra numbers items per
    mailbox, so no id carries over)."""
    target = zimbra_address(user).lower()
    moved = [
        pk
        for pk, account in Assignment.objects.filter(user=user)
        .exclude(inv_id="", cal_item_id="")
        .values_list("pk", "account")
        if account and account.lower() != target
    ]
    push_later(moved)


def on_switch_saved(sender: Any, instance: UserSwitch, **kwargs: Any) -> None:
    if instance.key != SWITCH:
        return
    user = get_user_model().objects.get(pk=instance.user_id)
    address_changed(user)
    if instance.enabled:
        switch_turned_on(user)


def on_job_finished(sender: Any, job: SyncJob, **kwargs: Any) -> None:
    """A push that failed for good shows its reason on the assignment."""
    if (
        job.kind == SyncJob.Kind.PUSH
        and job.payload.get("assignment")
        and (job.state == SyncJob.State.FAILED)
    ):
        Assignment.objects.filter(pk=job.payload["assignment"]).update(
            state=Assignment.State.FAILED, error=job.error_message[:500]
        )
