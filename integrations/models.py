"""Connections: one external account each, with its encrypted credentials, schedule and health."""

from __future__ import annotations

import random
from datetime import datetime, timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import Q
from django.utils import timezone

from integrations import crypto
from integrations.errors import AuthFailed, SyncError
from integrations.schedule import Schedule, parse_schedule, validate_schedule
from syncproject.safetext import neutral

if TYPE_CHECKING:
    from integrations.base import Connector


class CredentialsNotForThisServer(AuthFailed):
    """The connection's settings now send its secret somewhere other than where it was entered
    for; a person must enter it again."""


class Connection(models.Model):
    """An account in an external system (a mailbox, a Zendesk account, a Zimbra server).

    Fields in ``ENGINE_FIELDS`` are written by the sync engine with queryset updates while a job
    runs; a plain ``save()`` of an existing row (an admin form, a settings page) leaves them
    alone, so editing a connection can never roll back a cursor a worker just committed. Pass
    ``update_fields`` to write them on purpose.
    """

    ENGINE_FIELDS = frozenset(
        {
            "cursor",
            "status",
            "last_success_at",
            "last_attempt_at",
            "last_error",
            "consecutive_failures",
            "stale_after",
            "skipped_items",
            "push_until",  # (and by push: the listener, Graph's subscriptions)
        }
    )

    class Status(models.TextChoices):
        OK = "ok", "OK"
        DEGRADED = "degraded", "Degraded"
        AUTH_REQUIRED = "auth_required", "Auth required"
        FAILING = "failing", "Failing"
        DISABLED = "disabled", "Disabled"

    kind = models.CharField(
        "provider",
        max_length=32,
        db_index=True,
        help_text="Which provider this is (imap, msgraph, zendesk, zimbra). Choices come from the "
        "connector registry, not from the database, so adding a provider needs no migration.",
    )
    name = models.CharField(
        max_length=200, help_text="A name people recognise, e.g. 'Sales inbox'."
    )
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="sync_connections",
        help_text="The person this account belongs to; they see it on their settings page.",
    )
    organization = models.ForeignKey(
        "workspace.Organization",
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="connections",
        help_text="The organization this account belongs to (e.g. its Zendesk account).",
    )
    config = models.JSONField(
        default=dict,
        blank=True,
        help_text="Non-secret settings, validated by the provider's schema (host, folders, ...).",
    )
    secret = models.TextField(
        blank=True,
        default="",
        editable=False,
        help_text="Credentials, encrypted with SYNC_ENCRYPTION_KEYS. Never shown.",
    )
    enabled = models.BooleanField(
        default=True, help_text="Off: nothing syncs, neither on schedule nor on request."
    )
    disabled_reason = models.CharField(
        max_length=300, blank=True, help_text="Why the connection was disabled, shown to people."
    )
    disabled_by_staff = models.BooleanField(
        default=False,
        help_text="Turned off by staff: its owner cannot turn it on again (they see the reason "
        "and are told to ask an administrator).",
    )
    schedule = models.CharField(
        max_length=100,
        blank=True,
        validators=[validate_schedule],
        help_text="Cron expression (e.g. '*/15 * * * *', in the organization's time zone), an "
        "interval such as 'every 30m', or empty for manual syncs only.",
    )
    scheduled = models.BooleanField(
        default=True,
        help_text="Run on the schedule. Off ('stopped'): syncs run only when triggered.",
    )
    next_sync_at = models.DateTimeField(
        null=True,
        blank=True,
        help_text="When the dispatcher next queues a scheduled sync (empty: not scheduled).",
    )
    cursor = models.JSONField(
        default=dict,
        blank=True,
        help_text="Where the last sync stopped (per folder/stream); committed with the data.",
    )
    status = models.CharField(
        max_length=20, choices=Status.choices, default=Status.OK, help_text="Health of the sync."
    )
    last_success_at = models.DateTimeField(
        null=True, blank=True, help_text="When a sync last finished successfully."
    )
    last_attempt_at = models.DateTimeField(
        null=True, blank=True, help_text="When a sync last finished, successfully or not."
    )
    last_error = models.CharField(
        max_length=500, blank=True, help_text="The latest problem, in words safe to show the owner."
    )
    consecutive_failures = models.PositiveIntegerField(
        default=0, help_text="Failed jobs since the last success."
    )
    skipped_items = models.PositiveIntegerField(
        default=0,
        help_text="Remote items not stored yet because storing them failed (see Skipped items); "
        "every sync tries them again.",
    )
    stale_after = models.DateTimeField(
        null=True,
        blank=True,
        editable=False,
        help_text="Stale when no sync succeeded by then: twice the schedule's interval after "
        "the last success (empty for manual-only connections).",
    )
    push_until = models.DateTimeField(
        null=True,
        blank=True,
        editable=False,
        help_text="Push reports this connection's changes until then: a live Graph "
        "subscription's expiry, or a little after the IMAP listener last saw it idling "
        "(empty: not watched). Only then does SYNC_PUSHED_POLL_FACTOR stretch its polls.",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name", "id"]
        indexes = [
            # The dispatcher's one query: due connections. Only scheduled rows are indexed.
            models.Index(
                fields=["next_sync_at"],
                condition=Q(next_sync_at__isnull=False),
                name="connection_due_idx",
            ),
            # The dashboard's "need new credentials" count and the admin filter. Partial: a
            # connection that is fine is never in it, so its updates do not touch it.
            models.Index(
                fields=["id"],
                condition=Q(status="auth_required"),
                name="connection_reauth_idx",
            ),
        ]

    def __str__(self) -> str:
        return f"{neutral(self.name)} ({self.kind})"

    def save(self, *args: Any, **kwargs: Any) -> None:
        if self._state.adding and not self.schedule:
            from integrations.registry import available, get_connector_class

            if self.kind in available():  # the provider's default, e.g. Zendesk's */15 cron
                self.schedule = get_connector_class(self.kind).default_schedule
        if self._state.adding and self.next_sync_at is None:
            self.next_sync_at = self.compute_next_sync()  # scheduled however it was created
        if not self._state.adding and kwargs.get("update_fields") is None:
            kwargs["update_fields"] = [
                f.name
                for f in self._meta.concrete_fields
                if not f.primary_key and f.name not in self.ENGINE_FIELDS
            ]
        super().save(*args, **kwargs)

    # --- connector ------------------------------------------------------------------------------
    @property
    def connector_class(self) -> type[Connector]:
        from integrations.registry import get_connector_class

        return get_connector_class(self.kind)

    @property
    def is_stale(self) -> bool:
        """No sync succeeded by ``stale_after``."""
        return self.stale_after is not None and self.stale_after < timezone.now()

    @property
    def provider_label(self) -> str:
        """The provider in words ("Microsoft 365 mailbox"), not its code ("msgraph")."""
        from integrations.registry import label_of

        return label_of(self.kind)

    @property
    def owner_edits_settings(self) -> bool:
        """Whether the owner edits this connection's settings on their settings page (its
        provider has a settings-page form); otherwise staff do, in the admin. False for an
        unknown kind: staff's business."""
        from integrations.registry import UnknownConnectorKind

        try:
            return bool(self.connector_class.settings_form)
        except UnknownConnectorKind:
            return False

    def build_connector(self) -> Connector:
        """A connector for this connection (raises ``UnknownConnectorKind``/``ConfigError``)."""
        return self.connector_class(self)

    def clean(self) -> None:
        try:
            self.connector_class.validate_config(self.config)
        except SyncError as exc:
            raise ValidationError({"config": exc.message}) from None
        if self.connector_class.requires_organization and not self.organization_id:
            raise ValidationError(
                {"organization": f"{self.connector_class.label} belong to an organization."}
            )

    # --- secrets --------------------------------------------------------------------------------
    def destination(self, kind: str | None = None, config: Any = None) -> dict[str, Any]:
        """Where this connection's secret is sent (its kind and the provider's destination
        fields); ``kind``/``config`` ask the same of settings about to be saved."""
        from integrations.registry import get_connector_class

        kind = self.kind if kind is None else kind
        config = self.config if config is None else config
        try:
            found = get_connector_class(kind).destination(config or {})
        except SyncError:
            found = {"config": config}
        return {"kind": kind, **found}

    def sealed_destination(self) -> dict[str, Any] | None:
        """The destination the stored secret was entered for (None: nothing stored, or stored
        before secrets were sealed). Raises ``SecretsUnavailable`` when it cannot be read."""
        return crypto.open_secrets(self.secret)[1] if self.secret else None

    def get_secrets(self) -> dict[str, Any]:
        """Decrypted credentials, only while the connection still points where they were
        entered for. Raises ``SecretsUnavailable`` when no key opens them, and
        ``CredentialsNotForThisServer`` when the settings now send them elsewhere."""
        values, sealed_for = crypto.open_secrets(self.secret)
        if sealed_for is not None and sealed_for != self.destination():
            raise CredentialsNotForThisServer(
                "The server settings changed after the credentials were entered: enter the "
                "credentials again (they are only ever sent where they were entered for).",
                detail=f"sealed for {sorted(sealed_for)}; settings changed since",
            )
        return values

    def secrets_readable(self) -> bool:
        """True when stored credentials can be used as they are (or none are stored)."""
        try:
            self.get_secrets()
        except SyncError:
            return False
        return True

    def set_secrets(self, values: dict[str, Any], *, replace: bool = False) -> None:
        """Store credentials, sealed for where the connection now points.

        Blank values keep what is stored — unless ``replace``, or the stored credentials were
        entered for another destination (a changed host keeps nothing), or they can no longer
        be decrypted (lost key: what was typed in simply replaces them).
        """
        current: dict[str, Any] = {}
        if self.secret and not replace:
            try:
                current, sealed_for = crypto.open_secrets(self.secret)
            except SyncError:
                current, sealed_for = {}, None
            if sealed_for is None and self.pk:  # sealed before that rule: the saved settings
                saved = Connection.objects.filter(pk=self.pk).values("kind", "config").first()
                if saved is not None:
                    sealed_for = self.destination(saved["kind"], saved["config"])
            if sealed_for is not None and sealed_for != self.destination():
                current = {}
        current.update({k: v for k, v in values.items() if v not in (None, "")})
        self.secret = crypto.encrypt_secrets(current, self.destination())

    def destination_problem(self, kind: str, config: Any, entered: dict[str, Any]) -> str:
        """The form error for saving ``kind``/``config`` with ``entered`` secrets, or "".

        A stored secret goes only where it was entered for: new settings that send it
        elsewhere must come with the secret typed in again, in the same form.
        """
        if not self.pk or not self.secret or any(v not in (None, "") for v in entered.values()):
            return ""
        try:
            before = self.sealed_destination()
        except SyncError:
            return ""  # unreadable: it is never sent anywhere; the form asks for a new one
        if before is None:  # sealed before this rule: compare with the saved settings
            saved = Connection.objects.filter(pk=self.pk).values("kind", "config").first()
            if saved is None:
                return ""
            before = self.destination(saved["kind"], saved["config"])
        after = self.destination(kind, config)
        changed = sorted(k for k in {*before, *after} if before.get(k) != after.get(k))
        if not changed:
            return ""
        names = ", ".join(name.replace("_", " ") for name in changed)
        return (
            f"You changed where the credentials are sent ({names}): enter the "
            "password/secret again in this form. A stored secret is only ever sent to the "
            "server it was entered for."
        )

    def account_problem(self, kind: str, config: Any) -> str:
        """The form error for saving ``kind``/``config`` when they name another account than
        the one this connection has synced data from, or "".

        What a connection stores (messages by folder and UID, tickets by number) and the
        position it has reached only mean something in the account they came from: read on
        in another one, the position would skip that account's older data, and items with the
        same number would be taken for each other. It has data when it has a position, has
        ever succeeded, holds items, or a sync of it has started (a first sync commits its
        first batch only minutes later, with the settings it started with). A connection that
        has synced nothing yet (a mistyped login that never worked) may be pointed anywhere.
        (A sync that starts between this check and the save is not seen: a narrow window.)
        """
        if not self.pk:
            return ""
        saved = (
            Connection.objects.filter(pk=self.pk)
            .values("kind", "config", "cursor", "last_success_at")
            .first()
        )
        if saved is None:
            return ""
        from integrations.registry import get_connector_class
        from syncqueue.models import SyncJob

        try:
            before_class, after_class = (
                get_connector_class(saved["kind"]),
                get_connector_class(kind),
            )
        except SyncError:
            return ""
        before = before_class.account(saved["config"])
        if before_class is after_class and before == after_class.account(config):
            return ""
        labels = {name: before_class.account_label(name) for name in before}
        what = " and ".join(
            f"{labels[name]} '{(saved['config'] or {}).get(name, value)}'"
            for name, value in before.items()
        )
        started = SyncJob.objects.filter(connection_id=self.pk).filter(
            Q(state=SyncJob.State.RUNNING) | Q(state__in=SyncJob.WAITING, slices__gt=0)
        )
        synced = bool(saved["cursor"] or saved["last_success_at"]) or before_class.holds_data(self)
        if not synced:
            if started.exists():
                return (
                    f"A sync of this connection has started reading {what or 'its account'}. "
                    "Wait until it ends (or cancel it) before pointing the connection at "
                    "another account."
                )
            return ""
        return (
            f"This connection holds data synced from {what or 'its account'}, and its next "
            "sync carries on from where that one stopped, so it cannot be pointed at another "
            "account. To sync another account, add a new connection; this one keeps what it "
            "has (turn it off once you no longer need it)."
        )

    @property
    def has_secret(self) -> bool:
        return bool(self.secret)

    # --- schedule -------------------------------------------------------------------------------
    @cached_property
    def tz(self) -> ZoneInfo:
        """Time zone for cron schedules: the organization's, else the site's."""
        name = self.organization.timezone if self.organization else settings.TIME_ZONE
        return ZoneInfo(name)

    @property
    def parsed_schedule(self) -> Schedule:
        return parse_schedule(self.schedule)

    def compute_next_sync(self, now: datetime | None = None) -> datetime | None:
        """Next scheduled run after ``now``, or None when nothing should be scheduled.

        Interval schedules are spread by a random fraction (``SYNC_SCHEDULE_JITTER``, at most
        five minutes) so connections created together drift apart instead of hitting workers
        and providers at the same second.
        """
        if not (self.enabled and self.scheduled) or self.status == self.Status.AUTH_REQUIRED:
            return None
        now = now or timezone.now()
        schedule = self.parsed_schedule
        nxt = schedule.next_after(now, self.tz)
        factor = settings.SYNC_PUSHED_POLL_FACTOR
        interval = schedule.interval
        if nxt is not None and interval is not None and factor > 1 and self.pushed(now):
            nxt = now + interval * factor  # push brings the changes; the poll is the net
        if nxt is not None and schedule.interval is not None:
            spread = min(schedule.interval.total_seconds() * settings.SYNC_SCHEDULE_JITTER, 300)
            nxt += timedelta(seconds=random.uniform(0, spread))
        return nxt

    def pushed(self, now: datetime | None = None) -> bool:
        """Is push (IMAP IDLE, Graph notifications) reporting this connection's changes now?
        Its kind must offer push as configured, and push must be live: a Graph subscription
        that has not expired, or an IDLE session the listener saw a moment ago
        (``push_until``). A mailbox whose subscription cannot be made, or whose listener is
        not running, is polled as scheduled (see SYNC_PUSHED_POLL_FACTOR)."""
        if self.push_until is None or self.push_until <= (now or timezone.now()):
            return False
        try:
            return self.connector_class.push_watched(self)
        except SyncError:
            return False

    def typical_interval(self) -> timedelta | None:
        return self.parsed_schedule.typical_interval(timezone.now(), self.tz)

    def compute_stale_after(self, since: datetime | None = None) -> datetime | None:
        """Twice the schedule's interval after ``since`` (the last success, else creation)."""
        interval = self.typical_interval()
        start = since or self.last_success_at or self.created_at or timezone.now()
        return start + 2 * interval if interval else None


class UserSwitch(models.Model):
    """A person's choice for a provider's personal switch (see ``PersonalSwitch``)."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="sync_switches"
    )
    key = models.CharField(max_length=100, help_text="The switch, e.g. 'zimbra.tasks'.")
    enabled = models.BooleanField(default=False)
    value = models.CharField(
        max_length=320, blank=True, help_text="A per-user value, e.g. their Zimbra address."
    )
    value_confirmed = models.BooleanField(
        default=False,
        help_text="The value is an address proven to be theirs (they confirmed a mail sent to "
        "it, or staff set it). Switches whose value is an address ignore unconfirmed values.",
    )
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name_plural = "user switches"
        constraints = [
            models.UniqueConstraint(fields=["user", "key"], name="one_switch_per_user_and_key")
        ]

    def __str__(self) -> str:
        return f"{self.user} {self.key}={'on' if self.enabled else 'off'}"
