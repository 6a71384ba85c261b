from __future__ import annotations

from django.urls import path

from portal import api, task_api, views

app_name = "portal"

urlpatterns = [
    path("settings/sync/", views.settings_page, name="settings"),
    path("settings/sync/connect/<str:kind>/", views.connect, name="connect"),
    path("settings/sync/<int:connection_id>/edit/", views.edit, name="edit"),
    path("settings/sync/<int:connection_id>/enabled/", views.set_enabled, name="set_enabled"),
    path("settings/sync/<int:connection_id>/sync/", views.sync_now, name="sync_now"),
    path("settings/sync/switches/", views.save_switches, name="switches"),
    path(
        "settings/sync/switches/confirm/<str:token>/",
        views.confirm_address,
        name="confirm_address",
    ),
    path("api/connections/<int:connection_id>/sync", api.sync, name="api_sync"),
    path("api/connections/<int:connection_id>/schedule", api.schedule, name="api_schedule"),
    path("api/connections/<int:connection_id>", api.connection, name="api_connection"),
    path("api/jobs/<int:job_id>", api.job, name="api_job"),
    path("api/tasks", task_api.create, name="api_task_create"),
    path("api/tasks/<int:task_id>", task_api.task, name="api_task"),
    path(
        "api/tasks/<int:task_id>/<str:action>",
        task_api.assignees,
        name="api_task_assignees",
    ),
    path("api/queue/stats", api.stats, name="api_stats"),
]
