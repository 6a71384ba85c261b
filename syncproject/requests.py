"""Request types for views that only signed-in people reach (type checkers only)."""

from __future__ import annotations

from django.contrib.auth.models import User
from django.http import HttpRequest


class SignedInRequest(HttpRequest):
    """A request behind ``login_required`` (or the API's sign-in check): ``user`` is a real
    account, never ``AnonymousUser``."""

    user: User
