"""A small JSON API for tasks: create, update, assign, unassign, delete. Staff and a task's
creator may change it; changes reach assignees' Zimbra Tasks when the transaction commits."""

from __future__ import annotations

import json
from typing import Any

from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.db import transaction
from django.http import HttpRequest, JsonResponse

from portal.api import api_view, error
from workspace import tasks
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


def _summary(task: Task) -> dict[str, Any]:
    return {
        "id": task.pk,
        **{name: getattr(task, name) for name in EDITABLE},
        "due_date": task.due_date.isoformat() if task.due_date else None,
        "assignees": [
            {"user": a.user_id, "state": a.state, "error": a.error}
            for a in task.assignments.filter(active=True)
        ],
    }


def _save(task: Task, body: dict[str, Any]) -> JsonResponse | None:
    unknown = set(body) - set(EDITABLE)
    if unknown:
        return error(400, "invalid", f"Unknown field(s): {', '.join(sorted(unknown))}.")
    for name, value in body.items():
        setattr(task, name, value)
    try:
        task.full_clean(exclude=["created_by"])
    except ValidationError as exc:
        problems = "; ".join(f"{k}: {' '.join(v)}" for k, v in exc.message_dict.items())
        return error(400, "invalid", problems)
    task.save()
    return None


def _own(request: HttpRequest, task_id: int) -> Task | None:
    task = Task.objects.filter(pk=task_id).first()
    if task is None or not (request.user.is_staff or task.created_by_id == request.user.pk):
        return None
    return task


@api_view("POST")
def create(request: HttpRequest) -> JsonResponse:
    body = _body(request)
    if isinstance(body, JsonResponse):
        return body
    with transaction.atomic():
        task = Task(created_by=request.user)
        problem = _save(task, body)
        if problem:
            transaction.set_rollback(True)
            return problem
    return JsonResponse(_summary(task), status=201)


@api_view("GET", "PATCH", "DELETE")
def task(request: HttpRequest, task_id: int) -> JsonResponse:
    found = _own(request, task_id)
    if found is None:
        return error(404, "not_found", "No such task.")
    if request.method == "GET":
        return JsonResponse(_summary(found))
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
    return JsonResponse(_summary(found))


@api_view("POST")
def assignees(request: HttpRequest, task_id: int, action: str) -> JsonResponse:
    """``POST …/assign`` or ``…/unassign`` with ``{"user": <id>}``."""
    found = _own(request, task_id)
    if found is None or action not in ("assign", "unassign"):
        return error(404, "not_found", "No such task or action (use assign or unassign).")
    body = _body(request)
    if isinstance(body, JsonResponse):
        return body
    user = get_user_model().objects.filter(pk=body.get("user")).first()
    if user is None:
        return error(400, "invalid", "Give an existing user id in 'user'.")
    with transaction.atomic():
        if action == "assign":
            tasks.assign(found, user)
        else:
            tasks.unassign(found, user)
    return JsonResponse(_summary(found))
