"""``/healthz`` for load balancers and monitors; ``/metrics`` for Prometheus."""

from __future__ import annotations

import hmac

from django.conf import settings
from django.db import DatabaseError, connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET
from prometheus_client import CONTENT_TYPE_LATEST

from syncqueue import metrics as sync_metrics
from syncqueue.heartbeat import listener_status, worker_status
from syncqueue.stats import queue_stats


def _bearer_token(request: HttpRequest) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, else None."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else None


def _token_ok(request: HttpRequest) -> bool:
    given = _bearer_token(request)
    expected = settings.SYNC_METRICS_TOKEN
    return bool(given and expected and hmac.compare_digest(given.encode(), expected.encode()))


def may_see_operations(request: HttpRequest) -> bool:
    """Queue and worker details: staff who may view sync jobs, or the metrics token."""
    return _token_ok(request) or (
        request.user.is_staff and request.user.has_perm("syncqueue.view_syncjob")
    )


@never_cache
@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    """200 when the database answers and workers are alive; 503 otherwise. Anyone gets the
    status; what is wrong (workers, queue) only staff who may view sync jobs, or a caller with
    ``Authorization: Bearer $SYNC_METRICS_TOKEN``."""
    detailed = may_see_operations(request)
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        workers = worker_status()
        stats = queue_stats() if detailed else None
    except DatabaseError:
        body: dict[str, object] = {"status": "fail"}
        if detailed:
            body.update(database="unreachable", message="The database is unreachable.")
        return JsonResponse(body, status=503)
    status = 200 if workers.alive else 503
    if not detailed:
        return JsonResponse({"status": "ok" if workers.alive else "fail"}, status=status)
    body = {
        "status": "ok" if workers.alive else "fail",
        "database": "ok",
        "workers": {
            "alive": workers.alive,
            "last_heartbeat": workers.last_seen.isoformat() if workers.last_seen else None,
            "age_seconds": round(workers.age_seconds, 1)
            if workers.age_seconds is not None
            else None,
            "message": workers.message,
        },
        "queue": stats,
        # push is an addition: polling carries on without it, so it never fails the check
        "listener": _listener(),
    }
    return JsonResponse(body, status=status)


def _listener() -> dict[str, object]:
    listener = listener_status()
    return {
        "alive": listener.alive,
        "watched": listener.watched,
        "idling": listener.idling,
        "last_heartbeat": listener.last_seen.isoformat() if listener.last_seen else None,
        "message": listener.message,
    }


@never_cache
@require_GET
def metrics(request: HttpRequest) -> HttpResponse:
    """Prometheus metrics for staff users or a scraper holding ``SYNC_METRICS_TOKEN``.

    401 without credentials or with a wrong token (nothing configured: no token is right), 403
    for a signed-in user who is not staff with the permission to view sync jobs, 503 when the
    database does not answer. A scraper is never redirected to the login page.
    """
    given = _bearer_token(request)
    if not may_see_operations(request):
        if given is None and request.user.is_authenticated:
            return HttpResponse("Staff only.\n", status=403, content_type="text/plain")
        response = HttpResponse("Authentication required.\n", status=401, content_type="text/plain")
        response["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    try:
        body = sync_metrics.render()
    except DatabaseError:
        return HttpResponse("The database is unreachable.\n", status=503, content_type="text/plain")
    return HttpResponse(body, content_type=CONTENT_TYPE_LATEST)
