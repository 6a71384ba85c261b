"""The JSON API grants what the admin grants: model permissions, not ``is_staff``. The task API
stays inside the requester's organizations and shows nothing derived from another person."""

from __future__ import annotations

import json

import pytest
from django.contrib.auth.models import Permission

from integrations.models import UserSwitch
from integrations.zimbra.models import TaskCopy
from syncqueue import engine
from syncqueue.models import SyncJob
from workspace import assignments
from workspace.models import Assignment, Organization, Task

pytestmark = pytest.mark.django_db


def grant(user, *codenames: str):
    user.user_permissions.add(*Permission.objects.filter(codename__in=codenames))
    return type(user).objects.get(pk=user.pk)  # a fresh object: permissions are cached


def post(client, url, body=None):
    return client.post(url, json.dumps(body or {}), content_type="application/json")


def test_staff_without_permissions_get_what_another_user_gets(
    make_connection, bare_staff, outsider, as_user
):
    conn = make_connection()
    job = engine.enqueue(conn, SyncJob.Kind.INCREMENTAL)
    calls = [
        ("get", f"/api/connections/{conn.pk}"),
        ("get", f"/api/jobs/{job.pk}"),
        ("post", f"/api/connections/{conn.pk}/sync"),
        ("post", f"/api/connections/{conn.pk}/schedule"),
    ]
    for method, url in calls:
        answers = []
        for user in (outsider, bare_staff):
            client = as_user(user)
            response = client.get(url) if method == "get" else post(client, url, {"action": "stop"})
            answers.append((response.status_code, response.json()))
        assert answers[0] == answers[1] and answers[0][0] == 404, url
    assert as_user(bare_staff).get("/api/queue/stats").status_code == 403
    assert SyncJob.objects.count() == 1  # nothing was queued by either


def test_view_permission_reads_and_change_permission_acts(make_connection, bare_staff, as_user):
    conn = make_connection()
    job = engine.enqueue(conn, SyncJob.Kind.INCREMENTAL)
    viewer = grant(bare_staff, "view_connection", "view_syncjob")
    client = as_user(viewer)
    assert client.get(f"/api/connections/{conn.pk}").status_code == 200
    assert client.get(f"/api/jobs/{job.pk}").status_code == 200
    assert client.get("/api/queue/stats").status_code == 200
    assert post(client, f"/api/connections/{conn.pk}/sync").status_code == 404  # view only
    changer = grant(viewer, "change_connection")
    assert post(as_user(changer), f"/api/connections/{conn.pk}/sync").status_code == 202


@pytest.fixture
def world(django_user_model):
    """Ann and Ben work at Acme; Eve works elsewhere."""
    acme = Organization.objects.create(name="Acme", slug="acme")
    other = Organization.objects.create(name="Other", slug="other")
    ann = django_user_model.objects.create_user("ann", "ann@acme.test")
    ben = django_user_model.objects.create_user("ben", "ben@acme.test")
    eve = django_user_model.objects.create_user("eve", "eve@other.test")
    acme.members.add(ann, ben)
    other.members.add(eve)
    return ann, ben, eve


def test_assigning_outside_ones_organizations_looks_like_an_unknown_user(world, as_user):
    ann, ben, eve = world
    client = as_user(ann)
    task = post(client, "/api/tasks", {"title": "Order paper"}).json()
    url = f"/api/tasks/{task['id']}/assign"
    outside = post(client, url, {"user": eve.pk})
    unknown = post(client, url, {"user": 987654})
    assert (outside.status_code, outside.json()) == (unknown.status_code, unknown.json())
    assert outside.status_code == 400
    assert not Assignment.objects.filter(user=eve).exists()
    assert post(client, url, {"user": ben.pk}).status_code == 200
    assert post(client, url, {"user": ann.pk}).status_code == 200  # oneself


def test_nothing_about_another_assignee_is_shown(
    world, as_user, django_capture_on_commit_callbacks
):
    ann, ben, _ = world
    UserSwitch.objects.create(
        user=ben,
        key="zimbra.tasks",
        enabled=True,
        value="ben.private@acme.test",
        value_confirmed=True,
    )
    task = Task.objects.create(title="Order paper", created_by=ann)
    with django_capture_on_commit_callbacks(execute=True):  # copies are made on commit
        assignments.assign(task, ben)
    TaskCopy.objects.filter(assignment__user=ben).update(
        state="failed", error="No Zimbra account for ben.private@acme.test."
    )
    with django_capture_on_commit_callbacks(execute=True):
        assignments.assign(task, ann)
    body = as_user(ann).get(f"/api/tasks/{task.pk}").content.decode()
    assert "ben.private" not in body and "failed" not in body
    assignees = json.loads(body)["assignees"]
    assert {"user": ben.pk} in assignees
    assert any(a["user"] == ann.pk and "state" in a for a in assignees)  # her own copy


def test_task_rights_follow_model_permissions(world, bare_staff, as_user):
    ann, _, _ = world
    task = Task.objects.create(title="Order paper", created_by=ann)
    url = f"/api/tasks/{task.pk}"
    assert as_user(bare_staff).get(url).status_code == 404
    viewer = grant(bare_staff, "view_task")
    assert as_user(viewer).get(url).status_code == 200
    response = as_user(viewer).patch(url, json.dumps({"title": "x"}), "application/json")
    assert response.status_code == 404
    assert as_user(viewer).delete(url).status_code == 404
    changer = grant(viewer, "change_task")
    response = as_user(changer).patch(url, json.dumps({"title": "x"}), "application/json")
    assert response.status_code == 200
    assert Task.objects.filter(pk=task.pk).exists()
