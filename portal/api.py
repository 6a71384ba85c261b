"""The JSON API: the settings page's operations for scripts and other front ends.

Session authentication with CSRF protection (Django's middleware enforces it on every POST).
Rights are the admin's: reading any connection needs the model permission to view (or change)
connections, acting on one (sync, schedule) to change connections, reading any job to view
sync jobs. Without them a person reaches only their own connections — anything else answers
404, never 403, so its existence is not confirmed, and staff without the permission get
exactly the answer another user gets. Every error has one shape:
``{"error": {"code": "...", "message": "..."}}``; a rate limit answers 429 with Retry-After.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import wraps
from typing import Any

from django.db.models import QuerySet
from django.http import HttpRequest, JsonResponse
from django.views.decorators.cache import never_cache

from integrations.models import Connection
from portal.status import connection_summary, job_summary
from syncproject import limits
from syncqueue import control
from syncqueue.heartbeat import worker_status
from syncqueue.models import SyncJob
from syncqueue.stats import queue_stats, recent_queue_stats


def error(status: int, code: str, message: str) -> JsonResponse:
    return JsonResponse({"error": {"code": code, "message": message}}, status=status)


def api_view(*methods: str) -> Callable[[Callable[..., JsonResponse]], Callable[..., JsonResponse]]:
    """Allowed methods, signed-in users only (401 as JSON, not a login redirect), no caching."""

    def decorate(view: Callable[..., JsonResponse]) -> Callable[..., JsonResponse]:
        @wraps(view)
        @never_cache
        def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> JsonResponse:
            if request.method not in methods:
                response = error(
                    405, "method_not_allowed", f"Use {' or '.join(methods)} for this endpoint."
                )
                response["Allow"] = ", ".join(methods)
                return response
            if not request.user.is_authenticated:
                return error(401, "not_authenticated", "Sign in first (session authentication).")
            return view(request, *args, **kwargs)

        return wrapper

    return decorate


def may_view_all_connections(user: Any) -> bool:
    """The admin's rule: view or change permission on connections."""
    return bool(
        user.has_perm("integrations.view_connection")
        or user.has_perm("integrations.change_connection")
    )


def visible_connections(user: Any) -> QuerySet[Connection]:
    """Connections this person may read: all with the admin's permission, else their own."""
    qs = Connection.objects.select_related("organization")
    return qs if may_view_all_connections(user) else qs.filter(owner=user)


def changeable_connections(user: Any) -> QuerySet[Connection]:
    """Connections this person may act on: all with change permission, else their own."""
    qs = Connection.objects.select_related("organization")
    return qs if user.has_perm("integrations.change_connection") else qs.filter(owner=user)


def visible_jobs(user: Any) -> QuerySet[SyncJob]:
    """Jobs this person may read: all with the admin's permission, else their connections'."""
    if user.has_perm("syncqueue.view_syncjob") or user.has_perm("syncqueue.change_syncjob"):
        return SyncJob.objects.all()
    return SyncJob.objects.filter(connection__in=visible_connections(user))


def _own_or(
    request: HttpRequest,
    connection_id: int,
    allowed: Callable[[Any], QuerySet[Connection]],
    *,
    organization: bool = True,
) -> Connection | None:
    """The connection if it is this person's; else as ``allowed`` rules (their permissions).

    Most requests are people acting on their own connections: those are answered without
    reading the person's permissions (two queries), which could only add others' connections.
    ``organization``: read with its organization (its time zone, for schedules and times).
    """
    own = Connection.objects.select_related("organization") if organization else Connection.objects
    try:  # get(), not first(): no ORDER BY name, id to build and sort for one id
        return own.get(pk=connection_id, owner_id=request.user.pk)
    except Connection.DoesNotExist:
        pass
    return allowed(request.user).filter(pk=connection_id).order_by().first()


def _connection(request: HttpRequest, connection_id: int) -> Connection | None:
    return _own_or(request, connection_id, visible_connections)


def _changeable(
    request: HttpRequest, connection_id: int, *, organization: bool = True
) -> Connection | None:
    return _own_or(request, connection_id, changeable_connections, organization=organization)


def too_many(limited: limits.Limited) -> JsonResponse:
    """429 with Retry-After, in the API's error shape."""
    response = error(429, "rate_limited", limited.message)
    response["Retry-After"] = str(limited.retry_after)
    return response


def _queue() -> dict[str, int]:
    stats = recent_queue_stats()
    return {key: stats[key] for key in ("waiting", "running", "retrying", "failed", "succeeded")}


NOT_FOUND = "No such connection."


@api_view("POST")
def sync(request: HttpRequest, connection_id: int) -> JsonResponse:
    """Queue a sync now: 202 with the job (the same one while it waits) and queue numbers."""
    conn = _changeable(request, connection_id, organization=False)  # (no times to show)
    if conn is None:
        return error(404, "not_found", NOT_FOUND)
    limited = limits.hit(request, "sync_now")
    if limited is not None:
        return too_many(limited)
    try:
        job = control.sync_now(conn, request.user)
    except control.NeedsCredentials as exc:
        return error(409, "credentials_required", str(exc))
    except control.ControlError as exc:
        return error(409, "connection_disabled", str(exc))
    return JsonResponse({"job_id": job.pk, "state": job.state, "queue": _queue()}, status=202)


@api_view("GET")
def connection(request: HttpRequest, connection_id: int) -> JsonResponse:
    conn = _connection(request, connection_id)
    if conn is None:
        return error(404, "not_found", NOT_FOUND)
    return JsonResponse(connection_summary(conn, worker_status()))


@api_view("GET")
def job(request: HttpRequest, job_id: int) -> JsonResponse:
    found = visible_jobs(request.user).filter(pk=job_id).first()
    if found is None:
        return error(404, "not_found", "No such job.")
    return JsonResponse(job_summary(found))


@api_view("GET")
def stats(request: HttpRequest) -> JsonResponse:
    if not request.user.has_perm("syncqueue.view_syncjob"):
        return error(403, "forbidden", "Queue statistics need the permission to view sync jobs.")
    workers = worker_status()
    return JsonResponse({**queue_stats(), "workers_running": workers.alive})


@api_view("POST")
def schedule(request: HttpRequest, connection_id: int) -> JsonResponse:
    """``{"action": "start"|"stop"|"trigger"|"update-interval", "interval": "<cron>"}``."""
    conn = _changeable(request, connection_id)
    if conn is None:
        return error(404, "not_found", NOT_FOUND)
    try:
        body = json.loads(request.body or b"{}")
    except ValueError:
        return error(400, "invalid_json", "The request body is not valid JSON.")
    if not isinstance(body, dict):
        return error(400, "invalid_json", 'Send a JSON object, e.g. {"action": "start"}.')
    if body.get("action") == "trigger":
        limited = limits.hit(request, "sync_now")
        if limited is not None:
            return too_many(limited)
    try:
        result = control.schedule(
            conn, str(body.get("action", "")), body.get("interval"), request.user
        )
    except control.ControlError as exc:
        return error(400, "invalid", str(exc))
    if isinstance(result, SyncJob):
        return JsonResponse(
            {"job_id": result.pk, "state": result.state, "queue": _queue()}, status=202
        )
    conn.refresh_from_db()
    return JsonResponse(connection_summary(conn, worker_status()))


def csrf_failure(request: HttpRequest, reason: str = "") -> Any:
    """JSON for the API, Django's usual page elsewhere."""
    if request.path.startswith("/api/"):
        return error(
            403,
            "csrf_failed",
            "CSRF check failed: send the csrftoken cookie's value in the X-CSRFToken header.",
        )
    from django.views.csrf import csrf_failure as default

    return default(request, reason)
