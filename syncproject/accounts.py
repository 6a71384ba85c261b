"""Django's password reset, made safe to leave open to anyone.

- **Links point at ``SITE_URL``**, not at the Host header of the request that asked for them
  (any name in ``ALLOWED_HOSTS`` would otherwise do: a reset link to another site's name).
- **Limited per address** (``SYNC_RATE_PASSWORD_RESET``): nobody can flood a person's mailbox
  with reset mails. The answer is the same whether or not the address belongs to anyone.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from django.conf import settings
from django.contrib.auth import views as auth_views
from django.contrib.auth.forms import PasswordResetForm
from django.http import HttpRequest, HttpResponse

from syncproject import limits


class SiteLinkForm(PasswordResetForm):
    """Django's form, its links naming ``SITE_URL`` whatever the view passes."""

    def save(self, *args: Any, **kwargs: Any) -> None:
        site = urlsplit(settings.SITE_URL)
        kwargs.update(domain_override=site.netloc, use_https=site.scheme == "https")
        super().save(*args, **kwargs)


class PasswordResetView(auth_views.PasswordResetView):
    form_class = SiteLinkForm

    def post(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        form = self.get_form()
        if not form.is_valid():
            return self.form_invalid(form)
        address = form.cleaned_data["email"].strip().lower()
        limited = limits.hit(request, "password_reset", key=address)
        if limited is not None:
            form.add_error("email", limited.message)
            response = self.form_invalid(form)
            response.status_code = 429
            response["Retry-After"] = str(limited.retry_after)
            return response
        return self.form_valid(form)
