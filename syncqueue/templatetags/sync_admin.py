"""``{% worker_banner %}``: the red banner on every admin page when workers are down;
``{% admin_site_name "site_title" %}``: the admin site's names, for pages whose view does not
pass them (Django's sign-in and password pages extend the admin's base template)."""

from __future__ import annotations

from typing import Any

from django import template

from syncqueue.heartbeat import START_COMMAND, worker_status

register = template.Library()


@register.inclusion_tag("admin/syncqueue/worker_banner.html", takes_context=True)
def worker_banner(context: dict[str, Any]) -> dict[str, Any]:
    request = context.get("request")
    user = getattr(request, "user", None)
    if not (user and user.is_active and user.is_staff):
        return {"show": False}  # the login page tells nothing about the system
    status = worker_status()
    return {"show": not status.alive, "status": status, "command": START_COMMAND}


@register.simple_tag
def admin_site_name(which: str) -> str:
    """``site_title`` or ``site_header`` of the admin site."""
    from django.contrib import admin

    return str(getattr(admin.site, which))
