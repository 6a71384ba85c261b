"""The users' settings page, without JavaScript: own connections only, toggles, Sync now, the
IMAP form that tests before saving, personal switches and plain-language messages."""

from __future__ import annotations

import pytest
from django.test import Client
from django.utils import timezone

from integrations.base import PersonalSwitch
from integrations.models import Connection, UserSwitch
from mail.models import MailMessage
from syncqueue.models import SyncJob, WorkerHeartbeat
from tests.support.connector import FakeConnector

pytestmark = pytest.mark.django_db
SETTINGS = "/settings/sync/"


def login(client: Client, user) -> Client:
    client.force_login(user)
    return client


def alive() -> None:
    WorkerHeartbeat.objects.update_or_create(
        name="cluster:test:1", defaults={"seen_at": timezone.now()}
    )


def test_login_required(client):
    response = client.get(SETTINGS)
    assert response.status_code == 302 and response["Location"].startswith("/accounts/login/")


def test_only_own_connections_are_listed(client, owner, outsider, make_connection):
    make_connection(name="Mine")
    make_connection(name="Not mine", owner=outsider)
    page = login(client, owner).get(SETTINGS).content.decode()
    assert "Mine" in page and "Not mine" not in page


def test_other_users_connections_are_404(client, owner, outsider, make_connection):
    theirs = make_connection(owner=outsider)
    login(client, owner)
    assert client.post(f"{SETTINGS}{theirs.pk}/sync/").status_code == 404
    assert client.post(f"{SETTINGS}{theirs.pk}/enabled/").status_code == 404
    assert client.get(f"{SETTINGS}{theirs.pk}/edit/").status_code == 404
    assert not SyncJob.objects.exists()


def test_sync_now_without_javascript(client, owner, make_connection):
    conn = make_connection()
    login(client, owner)
    response = client.post(f"{SETTINGS}{conn.pk}/sync/", follow=True)
    job = SyncJob.objects.get(connection=conn)
    assert f"Sync started for Fake account (job {job.pk})" in response.content.decode()
    client.post(f"{SETTINGS}{conn.pk}/sync/")
    assert SyncJob.objects.count() == 1  # a second click returns the same job
    page = client.get(SETTINGS).content.decode()
    assert "Queued" in page and "<progress" in page


def test_toggle_off_stops_the_schedule_and_on_resumes(client, owner, make_connection):
    conn = make_connection(schedule="every 15m")
    assert conn.next_sync_at is not None
    login(client, owner)
    client.post(f"{SETTINGS}{conn.pk}/enabled/", {})
    conn.refresh_from_db()
    assert not conn.enabled and conn.next_sync_at is None
    assert (
        "This connection is turned off: Turned off by you." in client.get(SETTINGS).content.decode()
    )
    client.post(f"{SETTINGS}{conn.pk}/enabled/", {"enabled": "on"})
    conn.refresh_from_db()
    assert conn.enabled and conn.next_sync_at is not None


def test_workers_down_is_said_plainly(client, owner, make_connection):
    make_connection()
    page = login(client, owner).get(SETTINGS).content.decode()
    assert "Background workers are not running — your administrator has been notified." in page
    alive()
    assert "Background workers are not running" not in client.get(SETTINGS).content.decode()


def test_rejected_password_message_for_imap(client, owner, make_connection):
    alive()
    conn = make_connection(
        kind="imap", name="Work mail", config={"host": "imap.example.com", "username": "olivia"}
    )
    Connection.objects.filter(pk=conn.pk).update(
        status="auth_required", last_error="The mail server rejected the username or password."
    )
    page = login(client, owner).get(SETTINGS).content.decode()
    assert "The mail server rejected the username or password — update it below." in page
    assert "Change settings" in page


def test_credentials_only_an_administrator_can_change_are_not_the_owners_to_fix(
    client, owner, make_connection
):
    """A Microsoft 365 mailbox is set up by staff (an app registration): when Microsoft
    rejects the app's secret, its owner is told their administrator is on it — not the fix
    meant for staff, nor the app's client id — on the page and through the API."""
    alive()
    conn = make_connection(
        kind="msgraph",
        name="Support shared mailbox",
        config={"tenant_id": "t", "client_id": "5e0d1f2a", "mailbox": "support@corp.test"},
    )
    fix = (
        "Microsoft rejected the app's credentials (invalid client secret or certificate): "
        "enter the current secret for client 5e0d1f2a."
    )
    Connection.objects.filter(pk=conn.pk).update(status="auth_required", last_error=fix)
    job = SyncJob.objects.create(
        connection=conn,
        kind="incremental",
        state="failed",
        error_class="AuthFailed",
        error_message=fix,
        run_after=timezone.now(),
    )
    page = login(client, owner).get(SETTINGS).content.decode()
    assert "credentials your administrator set up" in page
    api = [
        client.get(f"/api/connections/{conn.pk}").json(),
        client.get(f"/api/jobs/{job.pk}").json(),
    ]
    for shown in (page, str(api)):
        assert "enter the current secret" not in shown and "5e0d1f2a" not in shown
    assert api[1]["error"] == api[0]["job"]["error"] == api[0]["health"]["message"]


def test_personal_switches(client, owner, outsider, monkeypatch, make_connection):
    from workspace.models import Organization

    monkeypatch.setattr(
        FakeConnector,
        "personal_switches",
        (
            PersonalSwitch(
                "fake.tasks", "Add tasks assigned to me to my fake list", value_label="Address"
            ),
        ),
    )
    login(client, owner)
    label = "Add tasks assigned to me to my fake list"
    assert label not in client.get(SETTINGS).content.decode()  # no such server: no switch
    acme = Organization.objects.create(name="Acme", slug="acme")
    acme.members.add(owner)
    server = make_connection(name="Acme's fake server", owner=None, organization=acme)
    assert label in client.get(SETTINGS).content.decode()  # one for my organization
    assert label not in login(Client(), outsider).get(SETTINGS).content.decode()
    Connection.objects.filter(pk=server.pk).update(organization=None)  # the company's own
    assert label in login(Client(), outsider).get(SETTINGS).content.decode()
    assert label in client.get(SETTINGS).content.decode()
    client.post(f"{SETTINGS}switches/", {"switch-fake.tasks": "on", "value-fake.tasks": "o@x"})
    switch = UserSwitch.objects.get(user=owner, key="fake.tasks")
    assert switch.enabled and switch.value == "o@x"
    client.post(f"{SETTINGS}switches/", {})
    switch.refresh_from_db()
    assert not switch.enabled


@pytest.mark.django_db(transaction=True)
def test_connect_imap_tests_before_saving(client, owner, dovecot, imap_user):
    from tests.support.mailfactory import message

    dovecot.deliver(imap_user, [message(subject="hello there")])
    login(client, owner)
    url = f"{SETTINGS}connect/imap/"
    form = {
        "name": "Work mail",
        "host": "127.0.0.1",
        "security": "none",
        "port": dovecot.port,
        "username": imap_user,
        "password": "wrong",
        "folders": "INBOX",
        "history": "all",
    }
    page = client.post(url, form).content.decode()
    assert "Connection test failed: The mail server rejected the username or password." in page
    assert 'value="wrong"' not in page  # the password is never echoed
    assert not Connection.objects.exists()

    response = client.post(url, {**form, "password": dovecot.users[imap_user]}, follow=True)
    text = response.content.decode()
    assert "Connection test passed" in text and "The first sync has started" in text
    conn = Connection.objects.get(name="Work mail", owner=owner)
    assert conn.kind == "imap" and conn.config["history_days"] is None
    assert conn.get_secrets() == {"password": dovecot.users[imap_user]}
    assert SyncJob.objects.get(connection=conn).kind == SyncJob.Kind.INITIAL

    edit = client.get(f"{SETTINGS}{conn.pk}/edit/").content.decode()
    assert dovecot.users[imap_user] not in edit and "Leave empty to keep" in edit
    client.post(f"{SETTINGS}{conn.pk}/edit/", {**form, "name": "Renamed", "password": ""})
    conn.refresh_from_db()
    assert conn.name == "Renamed" and conn.get_secrets() == {"password": dovecot.users[imap_user]}
    page = client.post(f"{SETTINGS}{conn.pk}/edit/", {**form, "password": "nope"}).content.decode()
    assert "Connection test failed" in page
    conn.refresh_from_db()
    assert conn.get_secrets() == {"password": dovecot.users[imap_user]}  # unchanged
    assert not MailMessage.objects.exists()  # nothing synced by the page itself


def test_form_errors_name_the_field(client, owner):
    page = (
        login(client, owner)
        .post(
            f"{SETTINGS}connect/imap/",
            {
                "name": "x",
                "host": "imap://bad host",
                "security": "ssl",
                "username": "u",
                "password": "p",
                "folders": "INBOX",
                "history": "30",
            },
        )
        .content.decode()
    )
    assert "give only the host name" in page
