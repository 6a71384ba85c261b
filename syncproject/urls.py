"""URL configuration."""

from __future__ import annotations

from django.contrib import admin
from django.urls import include, path

from integrations.msgraph import views as graph_views
from portal import views as portal_views
from syncproject import accounts
from syncqueue import views as queue_views

urlpatterns = [
    path("", portal_views.home, name="home"),
    path("", include("portal.urls")),
    path("admin/", admin.site.urls),
    # Django's sign-in pages; its password reset with links to SITE_URL and a per-address limit
    path(
        "accounts/password_reset/",
        accounts.PasswordResetView.as_view(),
        name="password_reset",
    ),
    path("accounts/", include("django.contrib.auth.urls")),
    path("healthz", queue_views.healthz, name="healthz"),
    path("metrics", queue_views.metrics, name="metrics"),
    path("hooks/graph/", graph_views.notifications, name="graph-notifications"),
]
