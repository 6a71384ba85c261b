"""Abuse limits: sign-in lockout on every login page (django-axes) and per-person rate limits on
"Sync now", new tasks and connection tests (django-ratelimit, counted in the shared database
cache): a clear 429 with Retry-After in the API, a plain message on the page."""

from __future__ import annotations

import json

import pytest

from syncqueue.models import SyncJob

pytestmark = pytest.mark.django_db

LOGIN_PAGES = ["/accounts/login/", "/admin/login/"]


@pytest.mark.parametrize("login_page", LOGIN_PAGES)
def test_repeated_wrong_passwords_lock_the_name_on_every_login_page(
    login_page, client, staff, settings
):
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        response = client.post(login_page, {"username": staff.username, "password": "wrong"})
        assert response.status_code == 200  # the form again, "please enter a correct …"
    last = client.post(login_page, {"username": staff.username, "password": "wrong"})
    assert last.status_code == 429
    locked = client.post(login_page, {"username": staff.username, "password": "pw-stella-1"})
    assert locked.status_code == 429
    assert "Too many sign-in attempts" in locked.content.decode()
    assert int(locked["Retry-After"]) == int(settings.AXES_COOLOFF_TIME.total_seconds())
    assert "_auth_user_id" not in client.session  # even the right password is refused now


def test_a_lockout_binds_the_name_from_that_address_only(client, staff, settings):
    for _ in range(settings.AXES_FAILURE_LIMIT):
        client.post("/accounts/login/", {"username": staff.username, "password": "wrong"})
    elsewhere = client.post(
        "/accounts/login/",
        {"username": staff.username, "password": "pw-stella-1"},
        REMOTE_ADDR="10.9.8.7",
    )
    assert elsewhere.status_code == 302  # the real owner, from another address, gets in


def test_sync_now_is_rate_limited_with_a_429_and_retry_after(
    client, owner, make_connection, settings
):
    settings.SYNC_RATE_LIMITS = {**settings.SYNC_RATE_LIMITS, "sync_now": "3/m"}
    conn = make_connection()
    client.force_login(owner)
    codes = [client.post(f"/api/connections/{conn.pk}/sync").status_code for _ in range(4)]
    assert codes == [202, 202, 202, 429]
    limited = client.post(f"/api/connections/{conn.pk}/sync")
    body = limited.json()["error"]
    assert body["code"] == "rate_limited" and "try again in" in body["message"]
    assert 1 <= int(limited["Retry-After"]) <= 60
    page = client.post(f"/settings/sync/{conn.pk}/sync/", follow=True)
    assert "Too many sync requests" in page.content.decode()


def test_task_creation_is_rate_limited(client, owner, settings):
    settings.SYNC_RATE_LIMITS = {**settings.SYNC_RATE_LIMITS, "task_create": "2/m"}
    client.force_login(owner)
    codes = [
        client.post(
            "/api/tasks", json.dumps({"title": f"T{i}"}), content_type="application/json"
        ).status_code
        for i in range(3)
    ]
    assert codes == [201, 201, 429]


def test_connection_tests_are_rate_limited(client, owner, settings):
    settings.SYNC_RATE_LIMITS = {**settings.SYNC_RATE_LIMITS, "connection_test": "1/10m"}
    settings.SYNC_ALLOWED_PRIVATE_NETWORKS = []  # the test fails fast: refused host
    client.force_login(owner)
    form = {
        "name": "Mail",
        "host": "127.0.0.1",
        "security": "none",
        "username": "olivia",
        "password": "pw",
        "folders": "INBOX",
        "history": "30",
    }
    first = client.post("/settings/sync/connect/imap/", form).content.decode()
    assert "not allowed" in first
    second = client.post("/settings/sync/connect/imap/", form).content.decode()
    assert "Too many connection tests" in second


def test_the_limit_is_per_person(client, owner, outsider, make_connection, settings):
    settings.SYNC_RATE_LIMITS = {**settings.SYNC_RATE_LIMITS, "sync_now": "1/m"}
    mine, theirs = make_connection(), make_connection(owner=outsider)
    client.force_login(owner)
    assert client.post(f"/api/connections/{mine.pk}/sync").status_code == 202
    assert client.post(f"/api/connections/{mine.pk}/sync").status_code == 429
    client.force_login(outsider)
    assert client.post(f"/api/connections/{theirs.pk}/sync").status_code == 202
    assert SyncJob.objects.count() == 2
