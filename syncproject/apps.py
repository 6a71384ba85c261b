from __future__ import annotations

from django.contrib.admin.apps import AdminConfig


class SyncAdminConfig(AdminConfig):
    """Django's admin, with the site that adds the failure dashboard and the worker banner."""

    default_site = "syncqueue.admin_site.SyncAdminSite"
