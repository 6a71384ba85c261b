"""A connection that has synced data cannot be pointed at another account.

Its stored items (IMAP messages by folder, UIDVALIDITY and UID; Zendesk tickets by number) and
its position only mean something in the account they came from. Read on in another account,
the position would skip that account's older data, and items with the same number would be
taken for each other (one mailbox's message 7 kept as the other's). Both forms refuse the
change, next to the field, and save nothing; before any data came, the account may change."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from django.urls import reverse

from integrations.models import Connection
from tests.support.admin_forms import connection_form
from tests.support.listener import Listener
from workspace.models import Organization

pytestmark = pytest.mark.django_db

IMAP = {"host": "imap.example.com", "username": "olivia@example.com", "security": "ssl"}


@pytest.fixture
def listener():
    with Listener() as found:
        yield found


@pytest.fixture
def mailbox(make_connection, listener) -> Connection:
    """An IMAP connection that has synced its INBOX up to UID 120; its server is a local
    listener, so that nothing can leave the machine if a refusal fails."""
    config = {**IMAP, "host": "127.0.0.1", "port": listener.port, "security": "none"}
    conn = make_connection(
        kind="imap", name="Work mail", config=config, secrets={"password": "olivias-password"}
    )
    Connection.objects.filter(pk=conn.pk).update(
        cursor={"folders": {"INBOX": {"uidvalidity": 1700000000, "last_uid": 120}}},
        last_success_at=datetime(2026, 11, 30, tzinfo=UTC),
    )
    conn.refresh_from_db()
    return conn


def settings_form(conn: Connection, **changes: Any) -> dict[str, Any]:
    return {
        "name": "Work mail",
        "host": conn.config["host"],
        "security": conn.config["security"],
        "port": str(conn.config["port"]),
        "username": IMAP["username"],
        "password": "",
        "folders": "INBOX",
        "history": "30",
        **changes,
    }


def test_the_settings_page_refuses_another_mailbox_for_a_synced_connection(
    client, owner, mailbox, listener
):
    client.force_login(owner)
    response = client.post(
        f"/settings/sync/{mailbox.pk}/edit/",
        settings_form(mailbox, username="bob@example.com", password="bobs-password"),
    )
    assert response.status_code == 200
    errors = " ".join(response.context["form"].errors["username"])
    assert "holds data synced from host '127.0.0.1' and user name 'olivia@example.com'" in errors
    assert "add a new connection" in errors
    assert "bobs-password" not in response.content.decode()
    assert listener.connections == 0  # refused before the connection test
    mailbox.refresh_from_db()
    assert mailbox.config["username"] == "olivia@example.com"
    assert mailbox.get_secrets() == {"password": "olivias-password"}


@pytest.fixture
def support(make_connection) -> Connection:
    """A Zendesk connection of subdomain 'acme' that has synced nothing yet."""
    return make_connection(
        kind="zendesk",
        name="Support",
        owner=None,
        organization=Organization.objects.create(name="Acme", slug="acme"),
        config={"subdomain": "acme", "email": "admin@acme.test"},
        secrets={"api_token": "acme-token"},
        schedule="",
    )


def refused_another_subdomain(client: Any, staff: Any, conn: Connection) -> str:
    """Staff change the subdomain to 'globex' in the admin, with that account's token; the
    form is shown again and nothing is saved. Returns the subdomain field's errors."""
    client.force_login(staff)
    form = connection_form(conn, config={**conn.config, "subdomain": "globex"})
    form["secret_api_token"] = "globex-token"
    url = reverse("admin:integrations_connection_change", args=[conn.pk])
    response = client.post(url, form)
    assert response.status_code == 200
    conn.refresh_from_db()
    assert conn.config["subdomain"] == "acme"
    return " ".join(response.context["adminform"].form.errors["cfg_subdomain"])


def test_the_admin_refuses_another_zendesk_account_for_a_synced_connection(client, staff, support):
    conn = support
    Connection.objects.filter(pk=conn.pk).update(cursor={"after_cursor": "MTcwMDAwMDAwMC4x"})
    errors = refused_another_subdomain(client, staff, conn)
    assert "holds data synced from subdomain 'acme'" in errors
    assert conn.get_secrets() == {"api_token": "acme-token"}


def test_the_admin_saves_other_settings_of_a_synced_connection(client, staff, mailbox):
    """Only the account is fixed: the folders, the schedule, and another port of the same
    server (typed with the password again, as any new destination needs) are saved."""
    client.force_login(staff)
    port = mailbox.config["port"] + 1
    config = {**mailbox.config, "port": port, "folders": ["INBOX", "Sent"]}
    form = connection_form(mailbox, config=config)
    form["secret_password"] = "olivias-password"
    response = client.post(reverse("admin:integrations_connection_change", args=[mailbox.pk]), form)
    assert response.status_code == 302, response.context["adminform"].form.errors
    mailbox.refresh_from_db()
    assert mailbox.config["port"] == port
    assert mailbox.config["folders"] == ["INBOX", "Sent"]


def test_what_counts_as_another_account(make_connection, mailbox):
    same = {**mailbox.config, "username": "  Olivia@Example.com "}  # the same mailbox
    assert mailbox.account_problem("imap", same) == ""
    assert mailbox.account_problem("imap", {**same, "port": 143}) == ""  # another port
    assert mailbox.account_problem("imap", {**same, "username": "bob@example.com"}) != ""
    assert mailbox.account_problem("zendesk", {"subdomain": "acme"}) != ""  # another provider

    # nothing synced yet (a mistyped login that never worked): any account may be named
    fresh = make_connection(kind="imap", config=IMAP, secrets={"password": "x"})
    assert fresh.account_problem("imap", {**IMAP, "username": "bob@example.com"}) == ""

    # Graph stores messages by their immutable ids and folders by id: another mailbox is
    # read from the start beside the old one's (whose folders are then gone), so it may change
    graph = make_connection(
        kind="msgraph",
        config={"tenant_id": "contoso.com", "client_id": "c", "mailbox": "megan@contoso.com"},
        secrets={"client_secret": "x"},
    )
    Connection.objects.filter(pk=graph.pk).update(cursor={"folders": {"AAA": {"delta": "d"}}})
    assert graph.account_problem("msgraph", {**graph.config, "mailbox": "alex@contoso.com"}) == ""


def test_another_server_for_the_same_login_is_another_account(mailbox):
    """RFC 3501 makes UIDVALIDITY unique per folder of one server only: a mailbox moved to
    another provider under the same login may have the same UIDVALIDITY and other messages
    under the stored UIDs."""
    moved = {**mailbox.config, "host": "outlook.office365.com", "security": "ssl", "port": None}
    problem = mailbox.account_problem("imap", moved)
    assert "host '127.0.0.1' and user name 'olivia@example.com'" in problem


def test_stored_messages_count_as_data_without_a_position(make_connection):
    """A full resync clears the position and may fail before its first batch: the messages
    stored from the account are still there."""
    from mail.models import MailMessage

    conn = make_connection(kind="imap", config=IMAP, secrets={"password": "x"})
    assert conn.account_problem("imap", {**IMAP, "username": "bob@example.com"}) == ""
    MailMessage.objects.create(
        connection=conn, folder="INBOX", uidvalidity=1, uid=7, fingerprint="f" * 64
    )
    assert "holds data synced from" in conn.account_problem(
        "imap", {**IMAP, "username": "bob@example.com"}
    )


def test_a_first_sync_under_way_keeps_its_account(client, staff, support):
    """A first sync commits its first batch minutes after it starts, with the settings it
    started with: until it ends, the account cannot change. A sync that is only queued has
    read nothing yet (a typo can be fixed at once)."""
    from syncqueue import engine
    from syncqueue.models import SyncJob

    conn = support
    job = engine.enqueue(conn, SyncJob.Kind.INITIAL)
    assert conn.account_problem("zendesk", {**conn.config, "subdomain": "globex"}) == ""
    SyncJob.objects.filter(pk=job.pk).update(state="running", slices=1)
    errors = refused_another_subdomain(client, staff, conn)
    assert "A sync of this connection has started reading subdomain 'acme'" in errors
