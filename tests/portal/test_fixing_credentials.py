"""After fixing credentials it looks and acts fixed: saving new ones for a connection that
waits for them queues a sync at once, and nothing queues jobs that can only fail the same way
while it waits ("fix the credentials first")."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client

from integrations.models import Connection
from syncqueue import control, engine
from syncqueue.models import SyncJob
from tests.support.mailfactory import message

SETTINGS = "/settings/sync/"


def needs_credentials(conn: Connection) -> None:
    Connection.objects.filter(pk=conn.pk).update(
        status="auth_required",
        last_error="The mail server rejected the username or password.",
        next_sync_at=None,
    )
    conn.refresh_from_db()


@pytest.mark.django_db(transaction=True)
def test_saving_new_credentials_starts_a_sync_at_once(
    client: Client, owner: Any, dovecot: Any, imap_user: str, work: Any
) -> None:
    dovecot.deliver(imap_user, [message(subject="waiting for me")])
    client.force_login(owner)
    form = {
        "name": "Work mail",
        "host": "127.0.0.1",
        "security": "none",
        "port": dovecot.port,
        "username": imap_user,
        "password": dovecot.users[imap_user],
        "folders": "INBOX",
        "history": "all",
    }
    client.post(f"{SETTINGS}connect/imap/", form)
    conn = Connection.objects.get(owner=owner)
    work()
    needs_credentials(conn)
    before = SyncJob.objects.filter(connection=conn).count()

    page = client.get(SETTINGS).content.decode()
    assert "Enter new credentials" in page  # in place of a "Sync now" that could only fail

    answer = client.post(f"{SETTINGS}{conn.pk}/edit/", form, follow=True).content.decode()
    assert "Syncing has resumed: a sync has started." in answer
    conn.refresh_from_db()
    assert conn.status == "ok" and conn.last_error == ""
    job = SyncJob.objects.filter(connection=conn).latest("pk")
    assert SyncJob.objects.filter(connection=conn).count() == before + 1
    assert job.kind == SyncJob.Kind.MANUAL and job.requested_by == owner
    assert "rejected the username" not in answer  # the old failure is gone from the card
    work()
    job.refresh_from_db()
    assert job.state == "succeeded"


@pytest.mark.django_db
def test_sync_now_and_retry_are_refused_until_the_credentials_are_fixed(
    client: Client, owner: Any, make_connection: Any
) -> None:
    conn = make_connection(name="Old password")
    failed = engine.enqueue(conn, SyncJob.Kind.MANUAL)
    SyncJob.objects.filter(pk=failed.pk).update(state="failed", error_class="AuthFailed")
    failed.refresh_from_db()
    needs_credentials(conn)

    with pytest.raises(control.NeedsCredentials, match="needs new credentials first"):
        control.sync_now(conn)
    with pytest.raises(control.NeedsCredentials):
        control.retry_job(failed)

    client.force_login(owner)
    page = client.post(f"{SETTINGS}{conn.pk}/sync/", follow=True).content.decode()
    assert "needs new credentials first" in page
    api = client.post(f"/api/connections/{conn.pk}/sync")
    assert api.status_code == 409 and api.json()["error"]["code"] == "credentials_required"
    assert SyncJob.objects.filter(connection=conn).count() == 1  # nothing queued to fail again

    control.credentials_replaced(conn)
    conn.refresh_from_db()
    assert conn.status == "ok"
    assert SyncJob.objects.filter(connection=conn, state="queued").count() == 1
