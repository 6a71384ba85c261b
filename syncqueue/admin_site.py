"""The admin site: Django's, plus the failure dashboard and an index that links to it."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.urls import path

TITLE = "syncproject control room"


class SyncAdminSite(admin.AdminSite):
    site_header = TITLE
    site_title = "syncproject"
    index_title = "Sync control room"
    index_template = "admin/sync_index.html"
    # the app list lives on the index and in the breadcrumbs: list pages get the whole width
    # (with the sidebar, a 1280 px screen cut the connections list after "Next run")
    enable_nav_sidebar = False

    def get_urls(self) -> list[Any]:
        from syncqueue import admin_views

        return [
            path("dashboard/", self.admin_view(admin_views.dashboard), name="sync_dashboard"),
            path(
                "dashboard/retry-group/",
                self.admin_view(admin_views.retry_group),
                name="sync_retry_group",
            ),
            *super().get_urls(),
        ]

    def index(self, request: Any, extra_context: dict[str, Any] | None = None) -> Any:
        from syncqueue import dashboard

        # the alerts are the dashboard's (queue sizes, failures, workers): for those who may
        # see it; staff without that permission get Django's index only
        allowed = request.user.has_perm("syncqueue.view_syncjob")
        context = {"sync_alerts": dashboard.alerts() if allowed else [], **(extra_context or {})}
        return super().index(request, context)
