"""URL configuration."""

from __future__ import annotations

from django.contrib import admin
from django.urls import include, path

from integrations.msgraph import views as graph_views
from portal import views as portal_views
from syncqueue import views as queue_views

urlpatterns = [
    path("", portal_views.home, name="home"),
    path("", include("portal.urls")),
    path("admin/", admin.site.urls),
    path("accounts/", include("django.contrib.auth.urls")),
    path("healthz", queue_views.healthz, name="healthz"),
    path("metrics", queue_views.metrics, name="metrics"),
    path("hooks/graph/", graph_views.notifications, name="graph-notifications"),
]
