"""The tasks JSON API drives Zimbra pushes like the admin does."""

from __future__ import annotations

import json

import pytest

from integrations.zimbra.models import TaskCopy

pytestmark = pytest.mark.django_db(transaction=True)


def call(client, method: str, url: str, body: dict | None = None):
    response = getattr(client, method)(url, json.dumps(body or {}), content_type="application/json")
    return response.status_code, response.json()


def test_create_assign_update_unassign_delete(client, staff, people, zimbra, zimbra_server, work):
    client.force_login(staff)
    ann = people[0]
    status, task = call(
        client, "post", "/api/tasks", {"title": "Renew contract", "priority": "low"}
    )
    assert status == 201, task
    status, body = call(client, "post", f"/api/tasks/{task['id']}/assign", {"user": ann.pk})
    assert status == 200 and body["assignees"][0]["user"] == ann.pk
    work()
    uid = TaskCopy.objects.get(assignment__user=ann).uid
    assert zimbra.mailboxes[ann.email].tasks[uid].comp["priority"] == "9"

    status, body = call(client, "patch", f"/api/tasks/{task['id']}", {"percent_complete": 150})
    assert status == 400 and "percent_complete" in body["error"]["message"]
    status, body = call(client, "patch", f"/api/tasks/{task['id']}", {"status": "completed"})
    assert status == 200
    work()
    assert zimbra.mailboxes[ann.email].tasks[uid].comp["status"] == "COMP"

    call(client, "post", f"/api/tasks/{task['id']}/unassign", {"user": ann.pk})
    work()
    assert not zimbra.mailboxes[ann.email].live  # cancelled: in the Trash
    assert call(client, "delete", f"/api/tasks/{task['id']}")[0] == 200


def test_others_cannot_touch_a_task(client, owner, outsider, people):
    client.force_login(owner)
    status, task = call(client, "post", "/api/tasks", {"title": "Mine"})
    assert status == 201
    client.force_login(outsider)
    assert call(client, "patch", f"/api/tasks/{task['id']}", {"title": "x"})[0] == 404
