"""Every admin action of every model, offered to staff who may only view: none may be, since
each changes data or queues work. Generated from the admin site's registry, so a new action
without ``permissions=`` fails here without anyone remembering to add it."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib import admin
from django.contrib.auth.models import Permission
from django.test import RequestFactory

pytestmark = pytest.mark.django_db

OUR_PACKAGES = {"integrations", "mail", "portal", "syncqueue", "workspace"}


def test_staff_who_may_only_view_are_offered_no_action(django_user_model: Any) -> None:
    viewer = django_user_model.objects.create_user("vera", "vera@example.com", "pw", is_staff=True)
    viewer.user_permissions.set(Permission.objects.filter(codename__startswith="view_"))
    viewer = django_user_model.objects.get(pk=viewer.pk)  # fresh permission cache
    request = RequestFactory().get("/admin/")
    request.user = viewer
    offered = {}
    for model, model_admin in admin.site._registry.items():
        assert model_admin.has_view_permission(request), model  # the premise: they may look
        actions = set(model_admin.get_actions(request))
        if actions:
            offered[model._meta.label] = sorted(actions)
    # django-axes' own: it deletes only sign-in failures that have expired anyway
    assert offered == {"axes.AccessAttempt": ["cleanup_expired_attempts"]}


def test_each_action_is_offered_to_staff_who_may_change(django_user_model: Any) -> None:
    """The other side: the permissions the actions ask for exist and unlock them."""
    editor = django_user_model.objects.create_user("ed", "ed@example.com", "pw", is_staff=True)
    editor.user_permissions.set(
        Permission.objects.filter(codename__regex=r"^(view|change|delete)_")
    )
    editor = django_user_model.objects.get(pk=editor.pk)
    request = RequestFactory().get("/admin/")
    request.user = editor
    for model, model_admin in admin.site._registry.items():
        if model.__module__.split(".")[0] not in OUR_PACKAGES:
            continue
        ours = {a if isinstance(a, str) else a.__name__ for a in model_admin.actions or []}
        assert ours <= set(model_admin.get_actions(request)), model
