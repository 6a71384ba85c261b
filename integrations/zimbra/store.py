"""Storing what the Zimbra connector read or pushed, inside the engine's transaction."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.utils import timezone

from integrations.base import Batch, Counts, JobLog
from integrations.zimbra import merge
from integrations.zimbra.models import TaskCopy
from integrations.zimbra.outbound import content_hash, push_later
from integrations.zimbra.records import (
    GoneThere,
    Incoming,
    LeftMailbox,
    MovedServer,
    NotOurs,
    Pushed,
)
from workspace.models import Task

LABELS = dict(Task.Status.choices)


def apply(batch: Batch, log: JobLog) -> Counts:
    counts = Counts()
    for record in batch.records:
        if isinstance(record, Incoming):
            apply_incoming(record, counts, log)
        elif isinstance(record, GoneThere):
            apply_gone(record, counts, log)
        elif isinstance(record, MovedServer):
            push_later(record.assignment_ids)  # each its own push job, once this commits
        elif isinstance(record, NotOurs):
            apply_not_ours(record, counts, log)
        elif isinstance(record, LeftMailbox):
            TaskCopy.objects.filter(pk=record.assignment_id).update(
                cal_item_id="", inv_id="", ms="", rev="", pushed_hash=""
            )
        elif isinstance(record, Pushed):
            apply_pushed(record, counts)
    return counts


def apply_pushed(record: Pushed, counts: Counts) -> None:
    row = TaskCopy.objects.select_for_update().get(pk=record.assignment_id)
    if record.removed:
        row.state = TaskCopy.State.REMOVED
        row.cal_item_id = row.inv_id = row.ms = row.rev = ""
        counts.deleted += 1
    else:
        created = not row.inv_id
        ids = record.ids or {}
        row.cal_item_id = ids.get("calItemId", row.cal_item_id)
        row.inv_id = ids.get("invId", row.inv_id)
        row.account = record.account or row.account
        row.ms, row.rev = ids.get("ms", ""), ids.get("rev", "")
        if record.progress is not None:
            row.pushed_status, row.pushed_percent = record.progress
        row.state = TaskCopy.State.PUSHED
        if created:
            counts.created += 1
        else:
            counts.updated += 1
    row.pushed_hash, row.error, row.pushed_at = record.content_hash, "", timezone.now()
    row.save()


def _current(assignment_id: int) -> TaskCopy | None:
    """The copy, locked, if its assignment is still active on a task."""
    row = (
        TaskCopy.objects.select_for_update()
        .select_related("assignment")
        .filter(pk=assignment_id)
        .first()
    )
    if row is None or not row.active or row.task_id is None:
        return None
    return row


def apply_incoming(record: Incoming, counts: Counts, log: JobLog) -> None:
    """Three-way merge of status and percent complete (:mod:`.merge`)."""
    row = _current(record.assignment_id)
    if row is None or row.task_id is None:
        counts.unchanged += 1
        return
    task = Task.objects.select_for_update().get(pk=row.task_id)
    decision = merge.decide(record, task, merge.base_of(row))
    row.ms, row.rev = record.ms, record.rev
    fields = ["ms", "rev"]
    message = ""
    if decision == "same":
        row.pushed_status, row.pushed_percent = task.progress()
        fields += ["pushed_status", "pushed_percent"]
        counts.unchanged += 1
    elif decision in ("theirs", "theirs-later"):
        theirs = merge.theirs(record, task)
        message = (
            f"“{task.title}”: took {merge.describe(*theirs, LABELS)} from {row.account}'s Zimbra"
        )
        if decision == "theirs-later":
            replaced = merge.describe(*task.progress(), LABELS)
            message += f" (changed there after ours; replaced {replaced})"
        in_step = row.pushed_hash == content_hash(task, True)  # no other change waits
        # Zimbra's time is the change's time: a later change elsewhere still wins over it
        Task.objects.filter(pk=task.pk).update(
            status=theirs[0],
            percent_complete=theirs[1],
            progress_changed_at=record.changed_at,
            updated_at=timezone.now(),
        )
        task.refresh_from_db()
        row.pushed_status, row.pushed_percent = theirs
        fields += ["pushed_status", "pushed_percent"]
        others = task.assignments.filter(active=True).exclude(pk=row.pk)
        follow = list(others.values_list("pk", flat=True))  # the other copies follow
        if in_step:
            row.pushed_hash = content_hash(task, True)  # Zimbra already has all of it
            fields.append("pushed_hash")
        else:
            follow.append(row.pk)  # our other changes still have to reach this copy
        push_later(follow)
        counts.updated += 1
    else:
        if decision == "ours-later":
            message = merge.kept_ours(task, row.account, record, LABELS)
        row.pushed_hash = ""  # Zimbra no longer has our version: send it again
        fields.append("pushed_hash")
        push_later([row.pk])
        counts.unchanged += 1
    row.save(update_fields=fields)
    if message:
        log("info", message, **_data(assignment=row.pk, zimbra_md=record.changed_at))


def apply_gone(record: GoneThere, counts: Counts, log: JobLog) -> None:
    row = _current(record.assignment_id)
    if row is None:
        return
    row.pushed_hash = ""
    row.save(update_fields=["pushed_hash"])
    push_later([row.pk])  # the modify finds it gone and creates it again
    counts.unchanged += 1
    log(
        "info",
        f"“{row.task}” was deleted in {row.account}'s Zimbra but is still assigned here; "
        "adding it again.",
        assignment=row.pk,
    )


def apply_not_ours(record: NotOurs, counts: Counts, log: JobLog) -> None:
    row = _current(record.assignment_id)
    if row is None or row.cal_item_id != record.item_id:
        return  # pushed meanwhile: its ids are new
    row.cal_item_id, row.pushed_hash = "", ""  # not read back until a push finds it by uid
    row.save(update_fields=["cal_item_id", "pushed_hash"])
    push_later([row.pk])
    counts.unchanged += 1
    log(
        "warning",
        f"Item {record.item_id} in {record.account}'s Zimbra is not “{row.task}” any more "
        "(another task has that number: was the mailbox restored or moved to another "
        f"server?). Its status was not taken; “{row.task}” is pushed again, found by its "
        "own id or added anew.",
        assignment=row.pk,
        zimbra_item=record.item_id,
    )


def _data(**data: Any) -> dict[str, Any]:
    return {k: v.isoformat() if isinstance(v, datetime) else v for k, v in data.items()}
