"""Assigned tasks to Zimbra: which copies need a push, queued when the change commits.

The host announces changed assignments (``workspace.signals.assignments_changed``); each gets
its :class:`TaskCopy` (our uid, the person's Zimbra address) and a push job. A push job names
only the assignment id; the worker reads the latest state of the task when it runs, so several
quick edits waiting in the queue become one push (``dedupe_key``).
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Iterable
from typing import Any, NamedTuple

from django.contrib.auth import get_user_model
from django.db import transaction

from integrations.models import Connection, UserSwitch
from integrations.zimbra.models import TaskCopy
from syncqueue import engine
from syncqueue.models import SyncJob
from workspace.models import Assignment, Task

SWITCH = "zimbra.tasks"  # the personal switch "Add tasks assigned to me to my Zimbra task list"


class Watched(NamedTuple):
    assignment_id: int
    ms: str
    uid: str


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


def ensure_copies(assignment_ids: Iterable[int]) -> None:
    """A copy (with our uid, fixed before the first push) for each active assignment that has
    none yet."""
    missing = Assignment.objects.filter(
        pk__in=list(assignment_ids), active=True, task__isnull=False, zimbra_copy__isnull=True
    ).select_related("user")
    TaskCopy.objects.bulk_create(
        [
            TaskCopy(
                assignment=a,
                uid=f"syncproject-task-{a.task_id}-{uuid.uuid4().hex[:16]}",
                account=zimbra_address(a.user),
            )
            for a in missing
        ],
        ignore_conflicts=True,  # created meanwhile by another process: that one is kept
    )


def queue_push(copy: TaskCopy, user: Any = None) -> SyncJob | None:
    """Queue a push of this copy if its person has the switch on (or it must be removed from
    Zimbra); returns the job, or None when nothing is to be pushed."""
    server = zimbra_server()
    if server is None:
        TaskCopy.objects.filter(pk=copy.pk).update(
            error="No Zimbra server is connected: staff must add one."
        )
        return None
    removing = not copy.active or copy.task_id is None
    if removing and not copy.inv_id and not copy.cal_item_id:
        TaskCopy.objects.filter(pk=copy.pk).update(state=TaskCopy.State.REMOVED)
        return None
    if not removing and switch_of(copy.user) is None:
        TaskCopy.objects.filter(pk=copy.pk, state=TaskCopy.State.PENDING).update(
            state=TaskCopy.State.OFF
        )
        return None
    return engine.enqueue(
        server,
        SyncJob.Kind.PUSH,
        payload={"assignment": copy.pk},
        dedupe_key=f"zimbra:assignment:{copy.pk}",
        requested_by=user,
    )


def push(assignment_ids: Iterable[int]) -> None:
    """Bring these assignments' copies in step (now: called after the change committed)."""
    ids = list(assignment_ids)
    ensure_copies(ids)
    for copy in TaskCopy.objects.filter(pk__in=ids).select_related("assignment__user"):
        queue_push(copy)


def push_later(assignment_ids: list[int]) -> None:
    """:func:`push` once the current transaction commits."""
    transaction.on_commit(lambda: push(assignment_ids))


def watched_copies(server: Connection) -> dict[str, dict[str, Watched]]:
    """Pushed copies whose people have the switch on, by Zimbra address and then by
    ``calItemId``: what an incoming sync reads back."""
    if server != zimbra_server():
        return {}
    rows = (
        TaskCopy.objects.filter(
            assignment__active=True,
            assignment__task__isnull=False,
            state=TaskCopy.State.PUSHED,
            assignment__user__sync_switches__key=SWITCH,
            assignment__user__sync_switches__enabled=True,
        )
        .exclude(cal_item_id="")
        .values_list(
            "account",
            "assignment__user__email",
            "assignment__user_id",
            "cal_item_id",
            "pk",
            "ms",
            "uid",
        )
    )
    confirmed = dict(
        UserSwitch.objects.filter(key=SWITCH, value_confirmed=True)
        .exclude(value="")
        .values_list("user_id", "value")
    )
    found: dict[str, dict[str, Watched]] = {}
    for account, email, user_id, cal_item_id, pk, ms, uid in rows:  # no address: pushed to email
        held = (account or email).lower()
        if held != confirmed.get(user_id, email).lower():
            continue  # the person's address changed: the next push moves this copy
        found.setdefault(held, {})[cal_item_id] = Watched(pk, ms, uid)
    return found


def switch_turned_on(user: Any) -> None:
    """Turning the switch on pushes the person's current tasks."""
    active = list(
        Assignment.objects.filter(user=user, active=True, task__isnull=False).values_list(
            "pk", flat=True
        )
    )
    ensure_copies(active)
    ids = list(
        TaskCopy.objects.filter(pk__in=active)
        .exclude(state=TaskCopy.State.PUSHED)
        .values_list("pk", flat=True)
    )
    TaskCopy.objects.filter(pk__in=ids).update(state=TaskCopy.State.PENDING)
    push_later(ids)


def address_changed(user: Any) -> None:
    """The person's Zimbra address changed: every copy held in another mailbox is pushed, and
    the push removes it there and creates it afresh in the new one (Zimbra numbers items per
    mailbox, so no id carries over)."""
    target = zimbra_address(user).lower()
    moved = [
        pk
        for pk, account in TaskCopy.objects.filter(assignment__user=user)
        .exclude(inv_id="", cal_item_id="")
        .values_list("pk", "account")
        if account and account.lower() != target
    ]
    push_later(moved)


# --- signal receivers (connected in ZimbraAppConfig.ready) --------------------------------------
def on_assignments_changed(sender: Any, assignment_ids: list[int], **kwargs: Any) -> None:
    push(assignment_ids)


def on_switch_saved(sender: Any, instance: UserSwitch, **kwargs: Any) -> None:
    if instance.key != SWITCH:
        return
    user = get_user_model().objects.get(pk=instance.user_id)
    address_changed(user)
    if instance.enabled:
        switch_turned_on(user)


def _soap_url(config: Any) -> str:
    from integrations.zimbra.connector import ZimbraConnector

    return str(ZimbraConnector.destination(config or {}).get("soap_url") or "")


def on_connection_saving(sender: Any, instance: Connection, **kwargs: Any) -> None:
    """Note whether this save points the Zimbra connection at another server (pre_save)."""
    fields = kwargs.get("update_fields")
    if kwargs.get("raw") or instance.kind != "zimbra" or not instance.pk:
        return
    if fields is not None and "config" not in fields:
        return
    saved = Connection.objects.filter(pk=instance.pk).values_list("config", flat=True).first()
    instance._zimbra_moved = saved is not None and _soap_url(saved) != _soap_url(  # type: ignore[attr-defined]
        instance.config
    )


def on_connection_saved(sender: Any, instance: Connection, **kwargs: Any) -> None:
    """The Zimbra connection now points at another server: the item ids its copies hold are
    numbers of the old server's mailboxes, and may name someone else's task on the new one
    (docs/protocols.md). They are forgotten here, in the save's transaction, and a job pushes
    every copy to the new server (found there by our uid, or created)."""
    if not getattr(instance, "_zimbra_moved", False):
        return
    instance._zimbra_moved = False  # type: ignore[attr-defined]
    if zimbra_server() not in (None, instance):
        return  # another connection is the server the copies are pushed to
    TaskCopy.objects.exclude(cal_item_id="").update(cal_item_id="", pushed_hash="")
    TaskCopy.objects.exclude(inv_id="").update(pushed_hash="")
    if instance.enabled:
        engine.enqueue(
            instance,
            SyncJob.Kind.PUSH,
            payload={"moved_server": True},
            dedupe_key="zimbra:moved-server",
        )


def on_job_finished(sender: Any, job: SyncJob, **kwargs: Any) -> None:
    """A push that failed for good shows its reason on the copy."""
    if (
        job.connection.kind == "zimbra"
        and job.kind == SyncJob.Kind.PUSH
        and job.payload.get("assignment")
        and job.state == SyncJob.State.FAILED
    ):
        TaskCopy.objects.filter(pk=job.payload["assignment"]).update(
            state=TaskCopy.State.FAILED, error=job.error_message[:500]
        )


def on_assignee_status(
    sender: Any, assignments: list[Assignment], **kwargs: Any
) -> dict[int, dict[str, str]]:
    copies = TaskCopy.objects.filter(pk__in=[a.pk for a in assignments])
    return {
        pk: {"state": state, "error": error}
        for pk, state, error in copies.values_list("pk", "state", "error")
    }
