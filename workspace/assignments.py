"""Who is assigned to which task: the host-side operations the JSON API and the admin call.

Every change is announced with ``workspace.signals.assignments_changed`` when its transaction
commits, so a connected task list (a provider app) updates its copies of exactly those
assignments; several quick edits of one task become one announcement per commit.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, cast

from django.db import transaction

from workspace.models import Assignment, Task
from workspace.signals import assignee_status, assignments_changed


def announce(assignment_ids: Iterable[int]) -> None:
    """Send ``assignments_changed`` for these ids once the current transaction commits."""
    ids = sorted(set(assignment_ids))
    if ids:
        transaction.on_commit(
            lambda: assignments_changed.send(sender=Assignment, assignment_ids=ids)
        )


def assign(task: Task, user: Any) -> Assignment:
    existing = Assignment.objects.filter(task=task, user=user, active=True).first()
    if existing:
        return existing
    assignment = Assignment.objects.create(task=task, user=user)
    announce([assignment.pk])
    return assignment


def unassign(task: Task, user: Any) -> int:
    ids = list(
        Assignment.objects.filter(task=task, user=user, active=True).values_list("pk", flat=True)
    )
    Assignment.objects.filter(pk__in=ids).update(active=False)
    announce(ids)
    return len(ids)


def task_changed(task: Task) -> None:
    announce(task.assignments.filter(active=True).values_list("pk", flat=True))


def task_deleting(task: Task) -> None:
    ids = list(task.assignments.filter(active=True).values_list("pk", flat=True))
    Assignment.objects.filter(pk__in=ids).update(active=False)
    announce(ids)


def status_of(assignments: list[Assignment]) -> dict[int, dict[str, Any]]:
    """What connected task lists say about each assignee's copy (state, error)."""
    found: dict[int, dict[str, Any]] = {}
    for _, answer in assignee_status.send(sender=Assignment, assignments=assignments):
        answered = cast(dict[int, dict[str, Any]], answer or {})
        for pk, status in answered.items():
            found.setdefault(pk, {}).update(status)
    return found


# --- receivers (connected in WorkspaceConfig.ready) ---------------------------------------------
def on_task_saved(sender: Any, instance: Task, created: bool, **kwargs: Any) -> None:
    if not created:
        task_changed(instance)


def on_task_deleting(sender: Any, instance: Task, **kwargs: Any) -> None:
    task_deleting(instance)
