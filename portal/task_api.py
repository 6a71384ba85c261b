"""A small JSON API for tasks: create, update, assign, unassign, delete; changes reach
assignees' connected task lists when the transaction commits.

Rights are the admin's: a task's creator may read and change it; anyone else needs the model
permission (view task to read, change task to change or assign, delete task to delete) — without
it the task answers 404 exactly like one that does not exist. A person assigns only people of
their own organizations (or themselves); anybody else answers exactly like a user id that does
not exist, so the API cannot be used to discover accounts. What an answer says about an
assignee's copy in a connected task list (its state, its error, which carry their address
there and their switch) is shown only to that assignee and to holders of the change
permission.
"""

from __future__ import annotations

import json
from typing import Any

from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Q
from django.http import HttpRequest, JsonResponse

from portal.api import api_view, error, too_many
from syncproject import limits
from syncproject.requests import SignedInRequest
from workspace import assignments
from workspace.models import Task

EDITABLE = ["title", "description", "due_date", "priority", "status", "percent_complete"]


def _body(request: HttpRequest) -> dict[str, Any] | JsonResponse:
    try:
        body = json.loads(request.body or b"{}")
    except ValueError:
        return error(400, "invalid_json", "The request body is not valid JSON.")
    if not isinstance(body, dict):
        return error(400, "invalid_json", "Send a JSON object.")
    return body


def _summary(task: Task, viewer: Any) -> dict[str, Any]:
    full = viewer.has_perm("workspace.change_task")
    active = list(task.assignments.filter(active=True).order_by("pk"))
    copies = assignments.status_of(active)
    assignees = []
    for a in active:
        if full or a.user_id == viewer.pk:
            assignees.append({"user": a.user_id, **copies.get(a.pk, {})})
        else:
            assignees.append({"user": a.user_id})
    return {
        "id": task.pk,
        **{name: getattr(task, name) for name in EDITABLE},
        "due_date": task.due_date.isoformat() if task.due_date else None,
        "assignees": assignees,
    }


#: the JSON types each field takes (None: the field may be emptied with null)
JSON_TYPES: dict[str, tuple[type, ...]] = {
    "title": (str,),
    "description": (str,),
    "due_date": (str, type(None)),
    "priority": (str,),
    "status": (str,),
    "percent_complete": (int,),
}
JSON_WORDS = {str: "text", int: "a whole number", type(None): "null"}


def _wrong_type(name: str, value: Any) -> str | None:
    """What is wrong with ``value`` for field ``name`` before the model sees it: a list or an
    object where text belongs (the model would store its Python spelling), a number where a
    date belongs, true/1e400/Infinity as a percentage, text that is not Unicode."""
    allowed = JSON_TYPES[name]
    if isinstance(value, bool) or not isinstance(value, allowed):
        return f"{name}: give {' or '.join(JSON_WORDS[t] for t in allowed)}."
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return f"{name}: the text holds characters that are not valid Unicode."
    return None


def _save(task: Task, body: dict[str, Any]) -> JsonResponse | None:
    unknown = set(body) - set(EDITABLE)
    if unknown:
        return error(400, "invalid", f"Unknown field(s): {', '.join(sorted(unknown))}.")
    wrong = [problem for name, value in body.items() if (problem := _wrong_type(name, value))]
    if wrong:
        return error(400, "invalid", " ".join(wrong))
    for name, value in body.items():
        setattr(task, name, value)
    try:
        task.full_clean(exclude=["created_by"])
    except ValidationError as exc:
        problems = "; ".join(f"{k}: {' '.join(v)}" for k, v in exc.message_dict.items())
        return error(400, "invalid", problems)
    task.save()
    return None


PERMISSION = {"GET": "view_task", "PATCH": "change_task", "POST": "change_task"}


def _own(request: SignedInRequest, task_id: int) -> Task | None:
    """The task if this person may do ``request.method`` to it, else None (answered 404)."""
    task = Task.objects.filter(pk=task_id).first()
    if task is None:
        return None
    if task.created_by_id == request.user.pk:
        return task
    codename = PERMISSION.get(request.method or "", "delete_task")
    allowed = request.user.has_perm(f"workspace.{codename}")
    if codename == "view_task":
        allowed = allowed or request.user.has_perm("workspace.change_task")
    return task if allowed else None


def assignable_users(requester: Any, task: Task) -> Any:
    """People ``requester`` may assign to (or unassign from) ``task``: themselves and the
    members of their organizations — everyone with the change-task permission — plus those
    already assigned (so they can be unassigned)."""
    users = get_user_model().objects.filter(is_active=True)
    if requester.has_perm("workspace.change_task"):
        return users
    return users.filter(
        Q(pk=requester.pk)
        | Q(organizations__in=requester.organizations.all())
        | Q(task_assignments__task=task, task_assignments__active=True)
    ).distinct()


@api_view("POST")
def create(request: SignedInRequest) -> JsonResponse:
    body = _body(request)
    if isinstance(body, JsonResponse):
        return body
    limited = limits.hit(request, "task_create")
    if limited is not None:
        return too_many(limited)
    with transaction.atomic():
        task = Task(created_by=request.user)
        problem = _save(task, body)
        if problem:
            transaction.set_rollback(True)
            return problem
    return JsonResponse(_summary(task, request.user), status=201)


@api_view("GET", "PATCH", "DELETE")
def task(request: SignedInRequest, task_id: int) -> JsonResponse:
    found = _own(request, task_id)
    if found is None:
        return error(404, "not_found", "No such task.")
    if request.method == "GET":
        return JsonResponse(_summary(found, request.user))
    if request.method == "DELETE":
        with transaction.atomic():
            found.delete()
        return JsonResponse({"deleted": task_id})
    body = _body(request)
    if isinstance(body, JsonResponse):
        return body
    with transaction.atomic():
        problem = _save(found, body)
        if problem:
            transaction.set_rollback(True)
            return problem
    return JsonResponse(_summary(found, request.user))


@api_view("POST")
def assignees(request: SignedInRequest, task_id: int, action: str) -> JsonResponse:
    """``POST …/assign`` or ``…/unassign`` with ``{"user": <id>}``."""
    found = _own(request, task_id)
    if found is None or action not in ("assign", "unassign"):
        return error(404, "not_found", "No such task or action (use assign or unassign).")
    body = _body(request)
    if isinstance(body, JsonResponse):
        return body
    wanted = body.get("user")
    user = None
    if isinstance(wanted, str) and wanted.isdigit():
        wanted = int(wanted)
    if isinstance(wanted, int) and not isinstance(wanted, bool):
        user = assignable_users(request.user, found).filter(pk=wanted).first()
    if user is None:  # outside the requester's world answers like a user that does not exist
        return error(400, "invalid", "Give an existing user id in 'user'.")
    with transaction.atomic():
        if action == "assign":
            assignments.assign(found, user)
        else:
            assignments.unassign(found, user)
    return JsonResponse(_summary(found, request.user))
