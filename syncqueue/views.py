"""``/healthz`` for load balancers and monitors."""

from __future__ import annotations

from django.db import DatabaseError, connection
from django.http import HttpRequest, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

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
