from __future__ import annotations

from django.apps import AppConfig
from django.contrib.admin import apps as admin_apps  # (a module: its AdminConfig would count)


class SyncProjectConfig(AppConfig):
    """``syncproject`` itself (listed as ``"syncproject"``): no models, only ``manage.py``
    commands such as ``env_docs``."""

    default = True
    name = "syncproject"
    verbose_name = "Project"


class SyncAdminConfig(admin_apps.AdminConfig):
    """Django's admin, with the site that adds the failure dashboard and the worker banner
    (listed as ``"syncproject.apps.SyncAdminConfig"``, in place of ``django.contrib.admin``)."""

    default = False  # AdminConfig's own default would compete with SyncProjectConfig
    default_site = "syncqueue.admin_site.SyncAdminSite"
