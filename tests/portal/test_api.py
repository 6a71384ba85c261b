"""The JSON API: every endpoint as the owner, another user, staff and anonymous; CSRF; shapes."""

from __future__ import annotations

import json

import pytest
from django.test import Client
from django.utils import timezone

from syncqueue import engine
from syncqueue.models import SyncJob, WorkerHeartbeat

pytestmark = pytest.mark.django_db


@pytest.fixture
def conn(make_connection):
    return make_connection(schedule="every 15m")


def as_user(user) -> Client:
    client = Client()
    if user is not None:
        client.force_login(user)
    return client


def post_json(client: Client, url: str, body: dict | None = None):
    return client.post(url, json.dumps(body or {}), content_type="application/json")


def endpoints(conn, job):
    return [
        ("post", f"/api/connections/{conn.pk}/sync", None),
        ("get", f"/api/connections/{conn.pk}", None),
        ("get", f"/api/jobs/{job.pk}", None),
        ("post", f"/api/connections/{conn.pk}/schedule", {"action": "stop"}),
    ]


def call(client, method, url, body):
    return post_json(client, url, body) if method == "post" else client.get(url)


def test_permissions_matrix(conn, owner, outsider, staff):
    job = engine.enqueue(conn, SyncJob.Kind.INCREMENTAL)
    for method, url, body in endpoints(conn, job):
        anonymous = call(as_user(None), method, url, body)
        assert anonymous.status_code == 401, url
        assert anonymous.json()["error"]["code"] == "not_authenticated"
        other = call(as_user(outsider), method, url, body)
        assert other.status_code == 404, url  # not 403: existence is not confirmed
        assert other.json()["error"]["code"] == "not_found"
        assert call(as_user(owner), method, url, body).status_code in (200, 202), url
        assert call(as_user(staff), method, url, body).status_code in (200, 202), url
    assert as_user(None).get("/api/queue/stats").status_code == 401
    assert as_user(owner).get("/api/queue/stats").status_code == 403
    assert as_user(staff).get("/api/queue/stats").status_code == 200


def test_csrf_is_enforced_on_state_changes(conn, owner):
    client = Client(enforce_csrf_checks=True)
    client.force_login(owner)
    response = post_json(client, f"/api/connections/{conn.pk}/sync")
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "csrf_failed"
    assert not SyncJob.objects.exists()
    client.get("/settings/sync/")  # sets the csrftoken cookie
    token = client.cookies["csrftoken"].value
    response = client.post(f"/api/connections/{conn.pk}/sync", HTTP_X_CSRFTOKEN=token)
    assert response.status_code == 202


def test_sync_answers_202_with_job_and_queue_and_coalesces(conn, owner):
    client = as_user(owner)
    first = post_json(client, f"/api/connections/{conn.pk}/sync")
    assert first.status_code == 202
    body = first.json()
    assert set(body) == {"job_id", "state", "queue"} and body["state"] == "queued"
    assert set(body["queue"]) == {"waiting", "running", "retrying", "failed", "succeeded"}
    assert body["queue"]["waiting"] == 1
    second = post_json(client, f"/api/connections/{conn.pk}/sync").json()
    assert second["job_id"] == body["job_id"]


def test_connection_and_job_status(conn, owner, work):
    WorkerHeartbeat.objects.create(name="cluster:test:1", seen_at=timezone.now())
    client = as_user(owner)
    job_id = post_json(client, f"/api/connections/{conn.pk}/sync").json()["job_id"]
    work()
    data = client.get(f"/api/connections/{conn.pk}").json()
    assert data["status"] == "ok" and data["health"]["message"] is None
    assert data["last_success_at"] and data["next_sync_at"]
    assert data["job"]["id"] == job_id and data["job"]["state"] == "succeeded"
    job = client.get(f"/api/jobs/{job_id}").json()
    assert job["progress"] == {"done": 10, "total": 10, "percent": 100, "per_second": None}
    assert job["counts"]["created"] == 10 and job["error"] is None


def test_job_error_is_the_user_safe_message(make_connection, owner, work):
    conn = make_connection(
        config={"faults": [{"at": 0, "error": "crash"}]}, secrets={"password": "sekrit-value"}
    )
    client = as_user(owner)
    job_id = post_json(client, f"/api/connections/{conn.pk}/sync").json()["job_id"]
    work()
    text = client.get(f"/api/jobs/{job_id}").content.decode()
    body = json.loads(text)
    assert body["error"].startswith(
        "An unexpected error (RuntimeError) stopped the sync. Trying again in"
    )
    assert body["error"].endswith("(attempt 2 of 5).")
    assert "Traceback" not in text and "sekrit-value" not in text


def test_schedule_actions(conn, owner):
    client = as_user(owner)
    url = f"/api/connections/{conn.pk}/schedule"
    stopped = post_json(client, url, {"action": "stop"}).json()
    assert stopped["scheduled"] is False and stopped["next_sync_at"] is None
    started = post_json(client, url, {"action": "start"}).json()
    assert started["scheduled"] is True and started["next_sync_at"]
    changed = post_json(client, url, {"action": "update-interval", "interval": "0 6 * * 1-5"})
    assert changed.status_code == 200 and changed.json()["schedule"] == "0 6 * * 1-5"
    triggered = post_json(client, url, {"action": "trigger"})
    assert triggered.status_code == 202 and triggered.json()["job_id"]


@pytest.mark.parametrize(
    "body,problem",
    [
        ({"action": "update-interval", "interval": "61 * * * *"}, "not a valid cron expression"),
        ({"action": "update-interval", "interval": "*/5 * *"}, "5 fields"),
        ({"action": "update-interval", "interval": "every 999999999d"}, "at most ten years"),
        ({"action": "update-interval", "interval": "0 0 30 2 *"}, "never runs"),
        ({"action": "update-interval"}, "Give the new schedule"),
        ({"action": "pause"}, "Unknown schedule action 'pause'"),
        ({}, "Unknown schedule action ''"),
    ],
)
def test_schedule_rejects_bad_input_naming_the_problem(conn, owner, body, problem):
    response = post_json(as_user(owner), f"/api/connections/{conn.pk}/schedule", body)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "invalid" and problem in error["message"]


def test_bad_json_and_wrong_method_are_json_errors(conn, owner):
    client = as_user(owner)
    response = client.post(
        f"/api/connections/{conn.pk}/schedule", "{not json", content_type="application/json"
    )
    assert response.status_code == 400 and response.json()["error"]["code"] == "invalid_json"
    response = client.get(f"/api/connections/{conn.pk}/sync")
    assert response.status_code == 405 and response.json()["error"]["code"] == "method_not_allowed"


def test_disabled_connection_sync_is_a_conflict(make_connection, owner):
    conn = make_connection(enabled=False, disabled_reason="Paused for the audit")
    response = post_json(as_user(owner), f"/api/connections/{conn.pk}/sync")
    assert (
        response.status_code == 409
        and "Paused for the audit" in response.json()["error"]["message"]
    )


def test_staff_sees_queue_stats(conn, staff):
    engine.enqueue(conn, SyncJob.Kind.MANUAL)
    body = as_user(staff).get("/api/queue/stats").json()
    assert body["waiting"] == 1 and body["workers_running"] is False
    assert {"running", "retrying", "failed", "succeeded", "oldest_waiting_seconds"} <= set(body)


@pytest.mark.parametrize(
    "raw,problem",
    [
        ('{"title": "t", "percent_complete": Infinity}', "percent_complete: give a whole number"),
        ('{"title": "t", "percent_complete": 1e400}', "percent_complete: give a whole number"),
        ('{"title": "t", "percent_complete": true}', "percent_complete: give a whole number"),
        ('{"title": "t", "percent_complete": 50.5}', "percent_complete: give a whole number"),
        ('{"title": "t", "due_date": 5}', "due_date: give text or null"),
        ('{"title": "t", "due_date": ["x"]}', "due_date: give text or null"),
        ('{"title": "t", "due_date": {"a": 1}}', "due_date: give text or null"),
        ('{"title": ["a"]}', "title: give text"),
        ('{"title": {"a": 1}}', "title: give text"),
        ('{"title": "\\ud800"}', "not valid Unicode"),
    ],
)
def test_tasks_refuse_values_of_the_wrong_kind(owner, raw, problem):
    """JSON that parses but does not fit a field: a clear 400 naming it, never a 500 (these
    raised OverflowError, TypeError, UnicodeEncodeError) nor a list saved as its Python text."""
    from workspace.models import Task

    client = as_user(owner)
    created = client.post("/api/tasks", raw, content_type="application/json")
    assert created.status_code == 400, created.content
    assert problem in created.json()["error"]["message"]
    assert not Task.objects.exists()
    task = Task.objects.create(title="kept", created_by=owner)
    changed = client.patch(f"/api/tasks/{task.pk}", raw, content_type="application/json")
    assert changed.status_code == 400 and problem in changed.json()["error"]["message"]
    task.refresh_from_db()
    assert task.title == "kept" and task.percent_complete == 0 and task.due_date is None


def test_sync_now_on_ones_own_connection_reads_no_permissions(conn, owner, monkeypatch):
    """The common request — a person syncing their own connection — is answered without
    the two permission queries (they could only add other people's connections), and the
    open rate-limit window costs one read and one increment, not a failed insert."""
    import functools

    from django.db import connection as db
    from django.test.utils import CaptureQueriesContext

    from portal import api

    # the queue numbers in the answer: kept for an hour here, not a second, so a slow machine
    # does not add their refresh to the count
    monkeypatch.setattr(
        api, "recent_queue_stats", functools.partial(api.recent_queue_stats, max_age=3600)
    )
    from workspace.models import Organization

    conn.organization = Organization.objects.create(name="Acme", timezone="Europe/Vienna")
    conn.save(update_fields=["organization"])  # (a sync needs no time zone: not read)
    client = as_user(owner)
    assert client.post(f"/api/connections/{conn.pk}/sync").status_code == 202  # opens the window
    with CaptureQueriesContext(db) as queries:
        response = client.post(f"/api/connections/{conn.pk}/sync")
    assert response.status_code == 202
    statements = [q["sql"] for q in queries.captured_queries]
    assert not [s for s in statements if "auth_permission" in s], statements
    assert not [s for s in statements if "COUNT(*)" in s or "ROLLBACK" in s], statements
    assert not [s for s in statements if s.startswith("INSERT") and "cache" in s], statements
    read = [s for s in statements if 'FROM "integrations_connection"' in s]
    assert len(read) == 1 and "ORDER BY" not in read[0], read  # a get(), nothing to sort
    assert not [s for s in statements if "workspace_organization" in s], statements
    if db.vendor == "postgresql":  # session, user, connection, limit read + write, enqueue
        assert len(statements) == 6, statements
