"""The project package as a Django app, so that its management commands are found.

``syncproject/apps.py`` already holds the admin's config (a subclass of Django's default
``AdminConfig``), so listing plain ``"syncproject"`` in ``INSTALLED_APPS`` would be ambiguous;
this config names the package explicitly.
"""

from __future__ import annotations

from django.apps import AppConfig


class SyncProjectConfig(AppConfig):
    """``syncproject`` itself: no models, only ``manage.py`` commands such as ``env_docs``."""

    name = "syncproject"
    label = "syncproject"
    verbose_name = "Project"
