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


def test_password_reset_mails_are_limited_per_address_and_link_to_the_site(
    client, staff, settings, mailoutbox
):
    """Anyone may ask for a reset mail: at most SYNC_RATE_PASSWORD_RESET per address, whoever
    asks and from wherever, and the link names SITE_URL, not the Host the request came with."""
    from django.core.cache import cache

    cache.clear()
    settings.SITE_URL = "https://sync.example.com"
    settings.ALLOWED_HOSTS = ["testserver", "evil.example"]
    settings.SYNC_RATE_LIMITS = {**settings.SYNC_RATE_LIMITS, "password_reset": "3/h"}
    for n in range(3):
        answer = client.post(
            "/accounts/password_reset/",
            {"email": staff.email.upper()},  # the same address, however written
            HTTP_HOST="evil.example",
            REMOTE_ADDR=f"10.0.0.{n}",  # from anywhere
        )
        assert answer.status_code == 302
    assert len(mailoutbox) == 3
    assert "https://sync.example.com/accounts/reset/" in mailoutbox[0].body
    assert "evil.example" not in mailoutbox[0].body
    limited = client.post("/accounts/password_reset/", {"email": staff.email})
    assert limited.status_code == 429 and int(limited["Retry-After"]) > 0
    assert "Too many password reset mails for this address" in limited.content.decode()
    assert len(mailoutbox) == 3
    other = client.post("/accounts/password_reset/", {"email": "nobody@example.com"})
    assert other.status_code == 302  # another address counts on its own (and says nothing)
