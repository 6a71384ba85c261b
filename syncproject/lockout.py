"""What a locked-out sign-in sees (django-axes' ``AXES_LOCKOUT_CALLABLE``): a plain page with
the wait in minutes, HTTP 429 with Retry-After."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render


def locked_out(
    request: HttpRequest, original_response: Any = None, credentials: Any = None
) -> HttpResponse:
    seconds = int(settings.AXES_COOLOFF_TIME.total_seconds())
    minutes = max(1, round(seconds / 60))
    response = render(
        request,
        "registration/locked_out.html",
        {"minutes": minutes, "plural": minutes != 1},
        status=429,
    )
    response["Retry-After"] = str(seconds)
    return response
