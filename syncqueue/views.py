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
from syncqueue.heartbeat import worker_status
from syncqueue.stats import queue_stats


@never_cache
@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    """200 when the database answers and workers are alive; 503 otherwise, saying which."""
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        workers = worker_status()
        stats = queue_stats()
    except DatabaseError:
        return JsonResponse(
            {
                "status": "fail",
                "database": "unreachable",
                "message": "The database is unreachable.",
            },
            status=503,
        )
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
    }
    return JsonResponse(body, status=200 if workers.alive else 503)


def _bearer_token(request: HttpRequest) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, else None."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else None


@never_cache
@require_GET
def metrics(request: HttpRequest) -> HttpResponse:
    """Prometheus metrics for staff users or a scraper holding ``SYNC_METRICS_TOKEN``.

    401 without credentials or with a wrong token (nothing configured: no token is right), 403
    for a signed-in user who is not staff, 503 when the database does not answer. A scraper
    is never redirected to the login page.
    """
    given = _bearer_token(request)
    expected = settings.SYNC_METRICS_TOKEN
    token_ok = bool(given and expected and hmac.compare_digest(given.encode(), expected.encode()))
    if not token_ok and not request.user.is_staff:
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
