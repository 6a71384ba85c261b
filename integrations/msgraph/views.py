"""The endpoint Microsoft Graph posts change notifications to (integrations.msgraph.push)."""

from __future__ import annotations

import json

from django.http import HttpRequest, HttpResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from integrations.msgraph import push

MAX_TOKEN = 2048


@csrf_exempt  # Graph cannot send a CSRF token; each notification proves itself (clientState)
@require_POST
def notifications(request: HttpRequest) -> HttpResponse:
    """Validation handshake: echo the decoded ``validationToken`` as text/plain within 10 s.
    Notifications: 202 once acted on (a queued sync); 403 when no item proves it comes from
    one of our subscriptions; 400 for a body that is not a notification collection."""
    token = request.GET.get("validationToken")
    if token is not None:
        if not token or len(token) > MAX_TOKEN:
            return HttpResponse("Bad validation token.\n", status=400, content_type="text/plain")
        response = HttpResponse(token, content_type="text/plain; charset=utf-8")
        response["X-Content-Type-Options"] = "nosniff"
        return response
    if not push.notification_url():
        return HttpResponse("Push is off here.\n", status=404, content_type="text/plain")
    try:
        payload = json.loads(request.body)
    except (ValueError, RecursionError):  # not JSON, or nested beyond reason
        return HttpResponse("Not JSON.\n", status=400, content_type="text/plain")
    if not isinstance(payload, dict) or not isinstance(payload.get("value"), list):
        return HttpResponse(
            "Not a notification collection.\n", status=400, content_type="text/plain"
        )
    accepted, _ = push.handle(payload)
    if not accepted:
        return HttpResponse("Not from a subscription of ours.\n", status=403)
    return HttpResponse(status=202)
