"""Email notifications: staff on alert start/clear, owners when a connection needs them;
transitions only, rate-limited, and never a secret in a mail."""

from __future__ import annotations

import smtplib
from datetime import UTC, datetime, timedelta

import pytest
from django.contrib.auth import get_user_model
from django.db import transaction
from django.utils import timezone

from integrations.errors import AuthFailed
from integrations.models import Connection
from syncqueue import dashboard, dispatcher, engine, notifications
from syncqueue.dashboard import Alert
from syncqueue.models import AlertState, ConnectionNotice, SyncJob
from tests.support import connector as fake_connector

pytestmark = pytest.mark.django_db(transaction=True)
Kind, Status = SyncJob.Kind, Connection.Status

SITE = "https://sync.example.com"
BACKLOG = Alert("backlog", "150 jobs are waiting (alert above 100).")
T0 = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)


@pytest.fixture(autouse=True)
def _site(settings) -> None:
    settings.SITE_URL = SITE
    settings.SYNC_NOTIFY_MIN_INTERVAL = 900


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def fault(error: str, times: int = 99) -> dict:
    return {"at": 0, "error": error, "times": times}


# --- Staff: dashboard alerts ---------------------------------------------------------------------


def test_an_alert_mails_staff_once_when_it_starts(staff, mailoutbox):
    assert notifications.check_alerts(at(0), [BACKLOG]) == 1
    assert notifications.check_alerts(at(1), [BACKLOG]) == 0  # still on: not on every check
    assert notifications.check_alerts(at(30), [BACKLOG]) == 0  # even after the quiet period

    [mail] = mailoutbox
    assert mail.to == ["stella@example.com"]
    assert mail.subject == "Alert: 150 jobs are waiting (alert above 100)."
    assert "On since 2030-01-01 12:00" in mail.body
    assert f"{SITE}/admin/dashboard/" in mail.body


def test_an_alert_is_mailed_only_after_the_grace_period(staff, mailoutbox, settings):
    """A starting system has no heartbeat for a few seconds: no false alarm for that."""
    settings.SYNC_ALERT_GRACE_SECONDS = 120
    workers_down = Alert("workers", "Background workers have never run, so no sync will happen.")
    assert notifications.check_alerts(at(0), [workers_down]) == 0
    assert notifications.check_alerts(at(0.5), []) == 0  # the first heartbeat came: cleared
    assert notifications.check_alerts(at(1), [BACKLOG]) == 0
    assert notifications.check_alerts(at(2.5), [BACKLOG]) == 0  # on for 90 s: not yet
    assert notifications.check_alerts(at(3.5), [BACKLOG]) == 1  # on for 150 s: mailed
    assert [m.subject for m in mailoutbox] == ["Alert: 150 jobs are waiting (alert above 100)."]
    assert notifications.check_alerts(at(40), []) == 1  # its clearing is mailed as usual


def test_no_success_alert_waits_for_connections_older_than_the_window(make_connection):
    conn = make_connection()
    assert "no_success" not in {a.key for a in dashboard.alerts()}  # created just now
    Connection.objects.filter(pk=conn.pk).update(created_at=timezone.now() - timedelta(minutes=61))
    assert "no_success" in {a.key for a in dashboard.alerts()}


def test_a_cleared_alert_mails_resolved_with_how_long_it_lasted(staff, mailoutbox):
    notifications.check_alerts(at(0), [BACKLOG])
    assert notifications.check_alerts(at(20), []) == 1
    assert notifications.check_alerts(at(21), []) == 0

    assert [m.subject for m in mailoutbox] == [
        "Alert: 150 jobs are waiting (alert above 100).",
        "Resolved: 150 jobs are waiting (alert above 100).",
    ]
    assert "lasted 20 minutes" in mailoutbox[1].body
    assert f"{SITE}/admin/dashboard/" in mailoutbox[1].body


def test_a_flapping_alert_sends_nothing_extra_within_the_interval(staff, mailoutbox):
    for minute, current in [(0, [BACKLOG]), (1, []), (2, [BACKLOG]), (3, []), (4, [BACKLOG])]:
        notifications.check_alerts(at(minute), current)
    assert len(mailoutbox) == 1  # the start; staff were never told it cleared
    notifications.check_alerts(at(16), [BACKLOG])
    assert len(mailoutbox) == 1  # on, as staff were told: nothing to say

    notifications.check_alerts(at(17), [])
    assert [m.subject.split(":")[0] for m in mailoutbox] == ["Alert", "Resolved"]
    assert "On from 2030-01-01 12:00" in mailoutbox[1].body  # the episode staff know about


def test_a_clear_inside_the_quiet_period_is_mailed_once_it_is_over(staff, mailoutbox):
    notifications.check_alerts(at(0), [BACKLOG])
    notifications.check_alerts(at(5), [])  # cleared, but staff were mailed 5 minutes ago
    assert len(mailoutbox) == 1
    notifications.check_alerts(at(10), [])
    assert len(mailoutbox) == 1
    notifications.check_alerts(at(15), [])  # the interval has passed and it is still clear
    assert [m.subject.split(":")[0] for m in mailoutbox] == ["Alert", "Resolved"]
    assert "lasted 5 minutes" in mailoutbox[1].body


def test_staff_without_email_or_inactive_are_skipped(staff, mailoutbox):
    users = get_user_model().objects
    users.create_superuser("nomail", "", "pw-nomail-1")
    users.create_superuser("gone", "gone@example.com", "pw-gone-1", is_active=False)
    users.create_user("member", "member@example.com", "pw-member-1")  # not staff
    users.create_user("helper", "helper@example.com", "pw-helper-1", is_staff=True)

    notifications.check_alerts(at(0), [BACKLOG])

    assert sorted(address for m in mailoutbox for address in m.to) == [
        "helper@example.com",
        "stella@example.com",
    ]
    assert all(len(m.to) == 1 for m in mailoutbox)  # nobody sees the others' addresses


def test_dispatch_mails_an_alert_once_and_survives_a_mail_failure(staff, mailoutbox, monkeypatch):
    monkeypatch.setattr(dashboard, "alerts", lambda: [BACKLOG])

    def broken(*args, **kwargs):
        raise smtplib.SMTPServerDisconnected("mail server down")

    monkeypatch.setattr(notifications, "_send", broken)
    report = dispatcher.dispatch()  # the mail fails: logged, dispatching goes on
    assert report.skipped == "" and mailoutbox == []
    assert AlertState.objects.get(key="backlog").notified_at is None  # not counted as sent

    monkeypatch.undo()
    monkeypatch.setattr(dashboard, "alerts", lambda: [BACKLOG])
    assert notifications.check_alerts() == 1  # the next check delivers it
    dispatcher.dispatch()
    assert len(mailoutbox) == 1


def test_dispatch_checks_at_most_every_check_every(staff, mailoutbox, monkeypatch):
    monkeypatch.setattr(dashboard, "alerts", lambda: [BACKLOG])
    assert notifications.run_due() is True
    assert notifications.run_due() is False
    assert len(mailoutbox) == 1


# --- Owners: connections that need a person ------------------------------------------------------


def test_auth_failure_mails_the_owner_once_with_reason_and_link(
    make_connection, work, mailoutbox, monkeypatch
):
    password = "s3cret-fake-password"
    # A provider that echoes the password back: the engine must scrub it before anyone sees it.
    monkeypatch.setattr(
        fake_connector,
        "_error",
        lambda name, retry_after: AuthFailed(f"Login with {password} was rejected."),
    )
    # the owner edits this kind on the settings page (as for an IMAP mailbox)
    monkeypatch.setattr(fake_connector.FakeConnector, "settings_form", "a form")
    conn = make_connection(name="Sales inbox", config={"faults": [fault("auth")]})
    engine.enqueue(conn, Kind.MANUAL)
    work()

    conn.refresh_from_db()
    assert conn.status == Status.AUTH_REQUIRED
    [mail] = mailoutbox
    assert mail.to == ["olivia@example.com"]
    assert mail.subject == '"Sales inbox" needs new sign-in details'
    assert f"Reason: {conn.last_error}" in mail.body and "was rejected" in mail.body
    assert f"{SITE}/settings/sync/" in mail.body
    assert password not in mail.body and password not in mail.subject
    assert "config" not in mail.body and "batch" not in mail.body

    engine.enqueue(conn, Kind.MANUAL)  # fails again while already auth_required
    work()
    assert len(mailoutbox) == 1


def test_an_owner_who_cannot_fix_the_credentials_is_told_the_administrator_does(
    make_connection, work, mailoutbox, monkeypatch
):
    monkeypatch.setattr(
        fake_connector,
        "_error",
        lambda name, retry_after: AuthFailed(
            "AADSTS7000215: invalid client secret for client 3f2a-…; enter the current secret."
        ),
    )
    conn = make_connection(name="Team mailbox", config={"faults": [fault("auth")]})
    engine.enqueue(conn, Kind.MANUAL)
    work()
    [mail] = mailoutbox
    assert "Your administrator has been told" in mail.body
    assert "AADSTS" not in mail.body and "client" not in mail.body  # no app internals
    assert "enter the current password" not in mail.body  # nothing they could do
    assert '"Team mailbox" (Fake) needs attention' in mail.body  # the provider's name, not a code


def test_a_connection_that_breaks_again_soon_is_mailed_after_the_interval(
    make_connection, work, mailoutbox
):
    conn = make_connection(config={"faults": [fault("auth")]})
    engine.enqueue(conn, Kind.MANUAL)
    work()
    assert len(mailoutbox) == 1

    Connection.objects.filter(pk=conn.pk).update(status=Status.OK)  # new password, then...
    engine.enqueue(conn, Kind.MANUAL)
    work()  # ...rejected again within the interval: held back
    assert len(mailoutbox) == 1
    assert ConnectionNotice.objects.get(pk=conn.pk).pending

    later = timezone.now() + timedelta(seconds=901)
    assert notifications.send_pending_notices(later) == 1
    assert notifications.send_pending_notices(later) == 0
    assert len(mailoutbox) == 2


def test_a_held_back_notice_is_dropped_if_fixed_meanwhile(make_connection, work, mailoutbox):
    conn = make_connection(config={"faults": [fault("auth")]})
    engine.enqueue(conn, Kind.MANUAL)
    work()
    Connection.objects.filter(pk=conn.pk).update(status=Status.OK)
    engine.enqueue(conn, Kind.MANUAL)
    work()
    Connection.objects.filter(pk=conn.pk).update(status=Status.OK)  # fixed again

    assert notifications.send_pending_notices(timezone.now() + timedelta(seconds=901)) == 0
    assert len(mailoutbox) == 1
    assert not ConnectionNotice.objects.get(pk=conn.pk).pending


def test_a_connection_disabled_after_failures_mails_the_owner(
    make_connection, work, mailoutbox, settings
):
    settings.SYNC_DISABLE_AFTER = 2
    conn = make_connection(name="Zendesk", config={"faults": [fault("permanent")]})
    for _ in range(2):
        engine.enqueue(conn, Kind.MANUAL)
        work()

    conn.refresh_from_db()
    assert not conn.enabled
    [mail] = mailoutbox
    assert mail.subject == '"Zendesk" was turned off'
    assert "2 failed syncs in a row" in mail.body and "not allowed" in mail.body
    assert f"{SITE}/settings/sync/" in mail.body


def test_a_connection_turned_off_by_a_person_sends_nothing(make_connection, mailoutbox):
    from syncqueue import control

    control.disable(make_connection(), "Not needed any more.")
    assert mailoutbox == []


def test_a_connection_without_owner_goes_to_staff(make_connection, work, staff, mailoutbox):
    conn = make_connection(owner=None, config={"faults": [fault("auth")]})
    engine.enqueue(conn, Kind.MANUAL)
    work()

    [mail] = mailoutbox
    assert mail.to == ["stella@example.com"]
    assert "no owner" in mail.body
    assert f"{SITE}/admin/integrations/connection/{conn.pk}/change/" in mail.body


def test_an_owner_without_email_gets_nothing(make_connection, owner, work, mailoutbox):
    get_user_model().objects.filter(pk=owner.pk).update(email="")
    conn = make_connection(config={"faults": [fault("auth")]})
    engine.enqueue(conn, Kind.MANUAL)
    work()
    assert mailoutbox == []


def test_a_rolled_back_failure_sends_nothing(make_connection, mailoutbox):
    conn = make_connection()
    with pytest.raises(RuntimeError), transaction.atomic():
        engine.record_connection_outcome(
            conn.pk, "AuthFailed", "Rejected.", job_failed=True, now=timezone.now()
        )
        raise RuntimeError("the worker died")
    assert mailoutbox == []
    assert not ConnectionNotice.objects.exists()


def test_sync_notify_tells_staff_that_every_worker_is_down(staff, make_connection, mailoutbox):
    """The dispatcher runs inside the workers; the web host's timer covers their absence."""
    from django.core.management import call_command

    make_connection(name="Sales inbox")  # enabled connections, no heartbeat at all
    call_command("sync_notify")
    subjects = [mail.subject for mail in mailoutbox]
    assert any(s.startswith("Alert: Background workers have never run") for s in subjects)
    call_command("sync_notify")  # within the check interval: nothing more
    assert len(mailoutbox) == len(subjects)


def test_a_shared_database_without_a_secret_key_is_warned_about(settings):
    from syncqueue.checks import check_shared_secret_key

    settings.SYNC_USING_DEV_SECRET_KEY = True
    settings.DATABASE_URL = "postgres://sync@db.example.com/sync"
    assert [w.id for w in check_shared_secret_key()] == ["syncqueue.W005"]
    settings.DATABASE_URL = ""
    assert check_shared_secret_key() == []


def test_an_alert_that_keeps_coming_back_is_mailed(staff, mailoutbox, settings):
    """On 90 s, off 30 s, again and again (a crash-looping worker): never two minutes in one
    go, but it is one episode and staff hear of it."""
    settings.SYNC_ALERT_GRACE_SECONDS = 120
    sent = 0
    for cycle in range(4):
        start = cycle * 2
        sent += notifications.check_alerts(at(start), [BACKLOG])
        sent += notifications.check_alerts(at(start + 1), [BACKLOG])
        sent += notifications.check_alerts(at(start + 1.5), [])  # off for 30 s
    assert sent == 1 and len(mailoutbox) == 1
