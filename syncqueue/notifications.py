"""Email notifications through Django's email backend (``django.core.mail``).

Staff
    A dashboard alert (``dashboard.alerts()``) is mailed when it starts ("Alert: …", with since
    when and a link to the dashboard) and when it clears ("Resolved: …", with how long it
    lasted), never on every check. ``check_alerts`` keeps each alert's state in ``AlertState``
    and mails whenever an alert's state differs from what the last mail said, at most once per
    alert per ``SYNC_NOTIFY_MIN_INTERVAL``. A change inside that quiet period is mailed when the
    period is over, and only if it still holds, so an alert that flaps sends nothing extra.
    Recipients: active staff users with an email address, one message each.

Owners
    When the engine marks a connection ``auth_required`` or turns it off after repeated failures
    (``engine.record_connection_outcome`` calls ``connection_changed``), its owner is mailed the
    reason (``last_error`` / ``disabled_reason``, which are written to be shown to people, never
    config or credentials) and a link to the settings page, after the transaction commits (a
    rollback sends nothing). Only the change mails: further failures of a connection already in
    that state send nothing until it recovers and breaks again. At most one mail per connection
    per interval; a held-back one goes out later if the trouble is still there.
    A connection without an owner (an organization's) is mailed to staff, with a link to its
    admin page. An owner who is inactive or has no email address gets nothing (the settings
    page and the staff "reauth" alert still show it). A connection turned off by a person (the
    admin, the settings page) sends nothing: that person already knows.

The dispatcher calls ``run_due`` on every pass; it does its work at most every ``CHECK_EVERY``
across all dispatchers (an expiring lock), and each mail is claimed with a conditional UPDATE
first, so two hosts never send the same one.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.mail import EmailMessage, get_connection
from django.db import IntegrityError, transaction
from django.db.models import F, Q
from django.urls import reverse
from django.utils import timezone
from django.utils.timesince import timesince

from integrations.models import Connection
from syncqueue import dashboard
from syncqueue.dashboard import Alert
from syncqueue.locks import hold_lock
from syncqueue.models import AlertState, ConnectionNotice

log = logging.getLogger(__name__)

CHECK_EVERY = timedelta(seconds=30)
Problem = ConnectionNotice.Problem


def run_due(now: datetime | None = None) -> bool:
    """Check the alerts and send held-back mails, unless some dispatcher did so within the last
    ``CHECK_EVERY``. Returns whether it ran. Raises what the database or mail backend raises."""
    now = now or timezone.now()
    with hold_lock("notifications", seconds=int(CHECK_EVERY.total_seconds()), release=False) as due:
        if due:
            check_alerts(now)
            send_pending_notices(now)
    return due


# --- Staff: dashboard alerts ---------------------------------------------------------------------


def check_alerts(now: datetime | None = None, current: list[Alert] | None = None) -> int:
    """Record which alerts started or cleared and mail staff about the changes that are due.

    ``current`` is the list of alerts that are on (default: ``dashboard.alerts()``). Returns the
    number of messages sent.
    """
    now = now or timezone.now()
    on = {alert.key: alert for alert in (dashboard.alerts() if current is None else current)}
    known = {state.key: state for state in AlertState.objects.all()}
    for key, alert in on.items():
        state = known.get(key)
        if state is None:
            try:
                with transaction.atomic():
                    AlertState.objects.create(
                        key=key, active=True, message=alert.message[:500], started_at=now
                    )
            except IntegrityError:
                pass  # another dispatcher recorded it a moment ago
        elif not state.active:
            changes: dict[str, Any] = {"active": True, "message": alert.message[:500]}
            off_for = now - state.cleared_at if state.cleared_at is not None else None
            flapping = off_for is not None and off_for.total_seconds() < _grace_seconds()
            if not state.notified_active and not flapping:
                # Staff were told it cleared (or nothing yet): a new episode. Otherwise it flapped
                # (inside the quiet period, or off for less than the grace period) and has been
                # on since the first start: an alert that keeps coming back is mailed.
                changes["started_at"] = now
            AlertState.objects.filter(key=key, active=False).update(**changes)
    for key, state in known.items():
        if state.active and key not in on:
            AlertState.objects.filter(key=key, active=True).update(active=False, cleared_at=now)
    # an alert is mailed once it has been on for the grace period (a starting system has no
    # heartbeat for a few seconds); one that cleared before it was mailed is never mailed
    on_since = now - timedelta(seconds=_grace_seconds())
    due = (
        AlertState.objects.exclude(active=F("notified_active"))
        .filter(_quiet_over(now))
        .exclude(active=True, started_at__gt=on_since)
    )
    return sum(_tell_staff(state, on.get(state.key), now) for state in due)


def _grace_seconds() -> int:
    return int(settings.SYNC_ALERT_GRACE_SECONDS)


def _tell_staff(state: AlertState, alert: Alert | None, now: datetime) -> int:
    """Claim the change with a conditional UPDATE, then mail it; put the claim back if the mail
    fails, so the next check tries again. Returns the number of messages sent."""
    claimed = AlertState.objects.filter(
        key=state.key,
        active=state.active,
        notified_active=state.notified_active,
        notified_at=state.notified_at,
    ).update(notified_active=state.active, notified_at=now)
    if not claimed:
        return 0  # another dispatcher got there first, or the alert changed meanwhile
    dashboard_url = absolute_url(reverse("admin:sync_dashboard"))
    if state.active:
        message = alert.message if alert else state.message
        subject = _subject("Alert", message)
        lines = [message, "", f"On since {_when(state.started_at or now)}.", ""]
        lines.append(f"Dashboard: {dashboard_url}")
        if alert and alert.link:
            lines.append(f"Details: {absolute_url(alert.link)}")
    else:
        cleared = state.cleared_at or now
        started = state.started_at or cleared
        subject = _subject("Resolved", state.message)
        lines = [
            f"This alert has cleared: {state.message}",
            "",
            f"On from {_when(started)} to {_when(cleared)} (lasted {_duration(started, cleared)}).",
            "",
            f"Dashboard: {dashboard_url}",
        ]
    lines += ["", _footer()]
    try:
        return _send(subject, "\n".join(lines), staff_emails())
    except Exception:
        # A mail server outage must not lose the news: undo the claim for the next check.
        AlertState.objects.filter(key=state.key, notified_at=now).update(
            notified_active=state.notified_active, notified_at=state.notified_at
        )
        log.exception("Could not mail staff about alert %r; will try again.", state.key)
        return 0


# --- Owners: connections that need a person --------------------------------------------------


def connection_changed(conn: Connection, *, was_status: str, was_enabled: bool) -> None:
    """Call inside the transaction that changed ``conn``'s health (the engine's failure path).

    If the connection has just started to need new credentials, or has just been turned off,
    remember that and mail about it once the transaction commits. Anything else does nothing.
    """
    if was_enabled and not conn.enabled:
        problem = Problem.DISABLED
    elif (
        conn.status == Connection.Status.AUTH_REQUIRED
        and was_status != Connection.Status.AUTH_REQUIRED
    ):
        problem = Problem.AUTH_REQUIRED
    else:
        return
    ConnectionNotice.objects.update_or_create(
        connection_id=conn.pk, defaults={"problem": problem, "pending": True}
    )
    connection_id = conn.pk
    # robust: a failing callback is logged by Django instead of raising into the engine.
    transaction.on_commit(lambda: send_connection_notice(connection_id), robust=True)


def send_connection_notice(connection_id: int, now: datetime | None = None) -> bool:
    """Mail a connection's pending notice if its quiet period is over and the trouble is still
    there. Returns True if a mail went out; a held-back notice stays pending for
    ``send_pending_notices``."""
    now = now or timezone.now()
    notice = (
        ConnectionNotice.objects.select_related("connection__owner")
        .filter(pk=connection_id, pending=True)
        .first()
    )
    if notice is None or (notice.notified_at and notice.notified_at > _quiet_start(now)):
        return False
    claimed = ConnectionNotice.objects.filter(
        pk=connection_id, pending=True, notified_at=notice.notified_at
    ).update(pending=False, notified_at=now)
    if not claimed:
        return False  # another process is sending it

    def undo(**extra: Any) -> None:
        ConnectionNotice.objects.filter(pk=connection_id, notified_at=now).update(
            notified_at=notice.notified_at, **extra
        )

    mail = _connection_mail(notice.connection, notice.problem)
    if mail is None:
        undo()  # fixed meanwhile, or nobody to tell: nothing sent, nothing to rate-limit
        return False
    try:
        _send(*mail)
    except Exception:
        undo(pending=True)
        log.exception("Could not mail about connection %s; will try again.", connection_id)
        return False
    return True


def send_pending_notices(now: datetime | None = None) -> int:
    """Send the connection notices that were held back and whose quiet period is over."""
    now = now or timezone.now()
    pending = ConnectionNotice.objects.filter(_quiet_over(now), pending=True)
    return sum(send_connection_notice(pk, now) for pk in pending.values_list("pk", flat=True))


def _connection_mail(conn: Connection, problem: str) -> tuple[str, str, list[str]] | None:
    """(subject, body, recipients) for a connection still in ``problem``; None if it is not, or
    if there is nobody to tell."""
    owner = conn.owner
    if problem == Problem.DISABLED:
        if conn.enabled:
            return None
        subject = f'"{conn.name}" was turned off'
        reason = conn.disabled_reason or conn.last_error
        what = "it failed too many times in a row, so it was turned off and nothing syncs."
        todo = "Open it here and turn it on again once the problem is fixed:"
    else:
        if not conn.enabled or conn.status != Connection.Status.AUTH_REQUIRED:
            return None
        subject = f'"{conn.name}" needs new sign-in details'
        reason = conn.last_error or "The service rejected the credentials."
        what = "the service no longer accepts its sign-in details, so nothing syncs."
        todo = "Open it here and enter the current password (or sign in again); syncing resumes:"
        if owner is not None and not conn.owner_edits_settings:
            # set up by staff (an app registration, a server account): the owner can do
            # nothing about it, and the provider's wording names app internals
            reason = "The service no longer accepts the credentials your administrator set up."
            todo = (
                "Your administrator has been told; syncing resumes by itself once they have "
                "renewed them. You can follow it here:"
            )
    if owner is None:
        recipients = staff_emails()
        link = absolute_url(reverse("admin:integrations_connection_change", args=[conn.pk]))
        greeting, whose = "Hello,", "This connection has no owner, so staff are told. "
    elif owner.is_active and owner.email:
        recipients = [owner.email]
        link = absolute_url(reverse("portal:settings"))
        greeting, whose = f"Hello {owner.get_short_name() or owner.get_username()},", ""
    else:
        return None
    if not recipients:
        return None
    body = "\n".join(
        [
            greeting,
            "",
            f'{whose}"{conn.name}" ({conn.provider_label}) needs attention: {what}',
            "",
            f"Reason: {reason}",
            "",
            todo,
            link,
            "",
            _footer(),
        ]
    )
    return _subject("", subject), body, recipients


# --- Helpers -------------------------------------------------------------------------------------


def staff_emails() -> list[str]:
    """Addresses of the active staff users that have one."""
    users = get_user_model().objects.filter(is_staff=True, is_active=True).exclude(email="")
    return list(users.order_by("pk").values_list("email", flat=True))


def absolute_url(path: str) -> str:
    """``path`` on the public site (``SITE_URL``)."""
    return settings.SITE_URL.rstrip("/") + path


def _send(subject: str, body: str, recipients: list[str]) -> int:
    """Send one message per recipient (nobody sees the others' addresses) through one backend
    connection. Returns how many were sent; raises what the backend raises."""
    if not recipients:
        return 0
    messages = [EmailMessage(subject, body, to=[address]) for address in recipients]
    return get_connection().send_messages(messages) or 0


def _subject(prefix: str, text: str) -> str:
    """One line (a header must not contain a newline), at most about 150 characters."""
    subject = " ".join((f"{prefix}: {text}" if prefix else text).split())
    return subject if len(subject) <= 150 else subject[:149] + "…"


def _quiet_start(now: datetime) -> datetime:
    return now - timedelta(seconds=settings.SYNC_NOTIFY_MIN_INTERVAL)


def _quiet_over(now: datetime) -> Q:
    """Rows whose last mail is older than the quiet period (or that were never mailed)."""
    return Q(notified_at__isnull=True) | Q(notified_at__lte=_quiet_start(now))


def _duration(start: datetime, end: datetime) -> str:
    """'1 hour, 5 minutes' (Django's timesince, with plain spaces for a plain-text mail)."""
    return timesince(start, end).replace("\xa0", " ")


def _when(moment: datetime) -> str:
    return f"{timezone.localtime(moment):%Y-%m-%d %H:%M %Z}"


def _footer() -> str:
    minutes = max(1, round(settings.SYNC_NOTIFY_MIN_INTERVAL / 60))
    return (
        f"-- \nSent by syncproject ({settings.SITE_URL}); "
        f"at most one mail about the same thing every {minutes} minutes."
    )
