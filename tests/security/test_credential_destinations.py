"""A stored secret goes only where it was entered for.

For every provider kind: change what decides where the secret is sent (IMAP host/port, Graph
authority, Zendesk subdomain, Zimbra URLs) to point at a local listener, leave the secret empty,
and try it — through the admin form, through "Test connection", and through the settings page.
The form refuses with a message naming the changed settings, and the listener receives nothing:
no connection, let alone a password. Typing the secret again in the same form is accepted."""

from __future__ import annotations

from typing import Any

import pytest
from django.urls import reverse

from integrations import crypto
from integrations.models import Connection, CredentialsNotForThisServer
from tests.support.admin_forms import connection_form
from tests.support.listener import Listener

pytestmark = pytest.mark.django_db

SECRET = {
    "imap": "password",
    "msgraph": "client_secret",
    "zendesk": "api_token",
    "zimbra": "admin_password",
}


@pytest.fixture
def listener():
    with Listener() as found:
        yield found


def elsewhere(kind: str, listener: Listener, settings: Any) -> dict[str, Any]:
    """Config changes that send the secret to the listener."""
    url = f"http://127.0.0.1:{listener.port}"
    if kind == "imap":
        return {"host": "127.0.0.1", "port": listener.port, "security": "none"}
    if kind == "msgraph":
        return {"authority_host": f"https://127.0.0.1:{listener.port}"}
    if kind == "zendesk":
        settings.ZENDESK_BASE_URL = f"https://127.0.0.1:{listener.port}/{{subdomain}}"
        return {"subdomain": "elsewhere"}
    return {"soap_url": f"{url}/service/soap", "admin_url": f"{url}/service/admin/soap"}


@pytest.fixture
def stored(request, make_connection, organization, test_ca, settings) -> Connection:
    """A connection of the parametrized kind with its secret stored (its servers need not
    exist: nothing in these tests may contact them)."""
    settings.SYNC_CA_BUNDLE = str(test_ca.ca_file)
    kind = request.param
    config = {
        "imap": {"host": "imap.example.com", "username": "olivia", "security": "ssl"},
        "msgraph": {
            "tenant_id": "contoso.com",
            "client_id": "11111111-2222-3333-4444-555555555555",
            "mailbox": "megan@contoso.com",
        },
        "zendesk": {"subdomain": "acme", "email": "admin@acme.test"},
        "zimbra": {
            "soap_url": "https://mail.example.com/service/soap",
            "admin_url": "https://mail.example.com:7071/service/admin/soap",
            "admin_name": "admin@example.com",
        },
    }[kind]
    return make_connection(
        kind=kind,
        name=f"{kind} account",
        config=config,
        organization=organization if kind == "zendesk" else None,
        owner=None if kind == "zendesk" else request.getfixturevalue("owner"),
        secrets={SECRET[kind]: f"the-{kind}-secret-value"},
        schedule="",
    )


KINDS = ["imap", "msgraph", "zendesk", "zimbra"]


@pytest.mark.parametrize("stored", KINDS, indirect=True)
def test_admin_refuses_a_new_destination_without_the_secret(
    stored, client, staff, listener, settings
):
    client.force_login(staff)
    url = reverse("admin:integrations_connection_change", args=[stored.pk])
    config = {**stored.config, **elsewhere(stored.kind, listener, settings)}
    response = client.post(url, connection_form(stored, config=config))
    assert response.status_code == 200  # the form again, with the error
    errors = response.context["adminform"].form.errors
    secret_errors = " ".join(errors.get(f"secret_{SECRET[stored.kind]}", []))
    assert "enter the password/secret again" in secret_errors, errors
    stored.refresh_from_db()
    assert stored.config != config  # nothing saved

    # "Test connection" on the stored settings, after someone changed them by another path
    # (the shell, a bug): the sealed secret refuses to leave for the new destination.
    Connection.objects.filter(pk=stored.pk).update(config=config)
    stored.refresh_from_db()
    with pytest.raises(CredentialsNotForThisServer):
        stored.get_secrets()
    changelist = reverse("admin:integrations_connection_changelist")
    answer = client.post(
        changelist, {"action": "test_connection", "_selected_action": [stored.pk]}, follow=True
    )
    texts = [str(m) for m in answer.context["messages"]]
    assert any("enter the credentials again" in t for t in texts), texts
    assert listener.connections == 0 and listener.received == b""


@pytest.mark.parametrize("stored", KINDS, indirect=True)
def test_admin_accepts_a_new_destination_with_the_secret_typed_again(
    stored, client, staff, listener, settings
):
    client.force_login(staff)
    url = reverse("admin:integrations_connection_change", args=[stored.pk])
    config = {**stored.config, **elsewhere(stored.kind, listener, settings)}
    form = connection_form(stored, config=config)
    form[f"secret_{SECRET[stored.kind]}"] = "a-new-secret-value"
    response = client.post(url, form)
    assert response.status_code == 302, response.context["adminform"].form.errors
    stored.refresh_from_db()
    assert stored.get_secrets() == {SECRET[stored.kind]: "a-new-secret-value"}
    assert listener.connections == 0  # saving never contacts anything


def test_settings_page_refuses_a_new_mail_server_without_the_password(
    client, owner, make_connection, listener
):
    conn = make_connection(
        kind="imap",
        name="Work mail",
        config={"host": "imap.example.com", "username": "olivia", "security": "ssl"},
        secrets={"password": "olivias-mail-password"},
    )
    client.force_login(owner)
    form = {
        "name": "Work mail",
        "host": "127.0.0.1",
        "security": "none",
        "port": str(listener.port),
        "username": "olivia",
        "password": "",
        "folders": "INBOX",
        "history": "30",
    }
    response = client.post(f"/settings/sync/{conn.pk}/edit/", form)
    assert response.status_code == 200
    assert "enter the password/secret again" in " ".join(
        response.context["form"].errors["password"]
    )
    assert listener.connections == 0 and listener.received == b""
    conn.refresh_from_db()
    assert conn.config["host"] == "imap.example.com"

    # With the password typed again the test does run against the new server (so the refusal
    # above is what kept the listener silent): it connects, gets no greeting, and reports it.
    response = client.post(f"/settings/sync/{conn.pk}/edit/", {**form, "password": "typed-again"})
    assert "Connection test failed" in response.content.decode()
    assert listener.connections == 1
    assert b"olivias-mail-password" not in listener.received


def test_the_settings_page_and_admin_store_a_secret_again_after_the_key_was_lost(
    client, owner, staff, make_connection, settings
):
    """Lost or replaced encryption keys: re-entering the credentials (what the error message
    tells people to do) simply stores them."""
    conn = make_connection(
        kind="imap",
        name="Work mail",
        config={"host": "imap.example.com", "username": "olivia", "security": "ssl"},
        secrets={"password": "old-password"},
    )
    settings.SYNC_ENCRYPTION_KEYS = [crypto.generate_key()]  # the old key is gone
    assert not conn.secrets_readable()

    client.force_login(owner)
    page = client.get(f"/settings/sync/{conn.pk}/edit/")
    assert page.status_code == 200 and "can no longer be used" in page.content.decode()

    client.force_login(staff)
    url = reverse("admin:integrations_connection_change", args=[conn.pk])
    assert "cannot be used" in client.get(url).content.decode()
    response = client.post(url, connection_form(conn, secret_password="new-password"))
    assert response.status_code == 302
    conn.refresh_from_db()
    assert conn.get_secrets() == {"password": "new-password"}


def test_sealing_survives_spelling_variants_of_the_same_destination(make_connection):
    conn = make_connection(
        kind="imap",
        name="Work mail",
        config={"host": "imap.example.com", "username": "olivia", "security": "ssl"},
        secrets={"password": "pw-123456"},
    )
    conn.config = {**conn.config, "host": "IMAP.Example.com", "port": 993, "folders": ["Sent"]}
    assert conn.get_secrets() == {"password": "pw-123456"}  # same server, other settings
    assert conn.destination_problem("imap", conn.config, {}) == ""
    conn.config = {**conn.config, "port": 1993}
    with pytest.raises(CredentialsNotForThisServer):
        conn.get_secrets()


def test_a_message_names_what_changed(make_connection):
    conn = make_connection(
        kind="imap",
        name="Work mail",
        config={"host": "imap.example.com", "username": "olivia", "security": "ssl"},
        secrets={"password": "pw-123456"},
    )
    problem = conn.destination_problem("imap", {**conn.config, "host": "evil.example"}, {})
    assert "(host)" in problem
    entered = {"password": "x"}
    assert conn.destination_problem("imap", {**conn.config, "host": "evil.example"}, entered) == ""


def test_an_unsealed_secret_is_not_carried_to_a_new_destination_with_another_one(
    make_connection: Any,
) -> None:
    """A secret stored before sealing existed, a new authority host and only the *other*
    secret typed in: the stored client secret must not come along to the new host."""
    from integrations import crypto

    conn = make_connection(
        kind="msgraph",
        config={"tenant_id": "t", "client_id": "c", "mailbox": "m@x.test"},
        secrets={"client_secret": "placeholder"},
    )
    Connection.objects.filter(pk=conn.pk).update(
        secret=crypto.encrypt_secrets({"client_secret": "the-real-one"}, None)  # unsealed
    )
    conn.refresh_from_db()
    conn.config = {**conn.config, "authority_host": "https://elsewhere.example.net"}
    assert conn.destination_problem("msgraph", conn.config, {"private_key": "junk"}) == ""
    conn.set_secrets({"private_key": "junk"})
    assert conn.get_secrets() == {"private_key": "junk"}  # the client secret stayed behind
