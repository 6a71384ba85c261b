"""Microsoft Graph's push state: one change-notification subscription per mailbox."""

from __future__ import annotations

from django.db import models


class Subscription(models.Model):
    """A Graph subscription on a mailbox's messages (integrations.msgraph.push). Only a hash of
    its ``clientState`` is kept: enough to check a notification, useless to forge one."""

    connection = models.OneToOneField(
        "integrations.Connection", on_delete=models.CASCADE, related_name="graph_subscription"
    )
    subscription_id = models.CharField(
        max_length=100,
        unique=True,
        null=True,
        blank=True,
        help_text="Graph's id; empty until made.",
    )
    resource = models.CharField(max_length=500, blank=True)
    notification_url = models.CharField(
        max_length=500,
        blank=True,
        help_text="Where Graph posts this subscription's notifications (SYNC_PUBLIC_URL when "
        "it was made or last renewed); one posting elsewhere is made again on the next pass. "
        "Empty: not known yet (checked on the next pass).",
    )
    client_state_hash = models.CharField(max_length=64, blank=True, db_index=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    renew_now = models.BooleanField(
        default=False, help_text="Graph asked for reauthorization: renewed on the next pass."
    )
    last_error = models.CharField(max_length=500, blank=True)
    failures = models.PositiveIntegerField(default=0)
    notifications = models.PositiveIntegerField(default=0)
    last_notified_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = "Graph change-notification subscription"

    def __str__(self) -> str:
        return (
            f"{self.connection} until {self.expires_at:%Y-%m-%d %H:%M}"
            if self.expires_at
            else str(self.connection)
        )


class RetiredSubscription(models.Model):
    """The subscription of a mailbox connection that was deleted, until Graph has deleted it
    too (integrations.msgraph.push). The connection's row, and with it the credentials to tell
    Graph, is gone; Graph would post to us until the subscription expired (up to about three
    days). So the deletion keeps what the DELETE needs: the settings and the credentials *as
    stored* (still encrypted, sealed for the same destination), never in the clear."""

    subscription_id = models.CharField(max_length=100, unique=True)
    client_state_hash = models.CharField(
        max_length=64,
        blank=True,
        db_index=True,
        help_text="SHA-256 of its clientState: its notifications, until it is gone, are "
        "recognised (and dropped) instead of refused.",
    )
    name = models.CharField(max_length=200, help_text="The deleted connection's name.")
    config = models.JSONField(default=dict, help_text="The deleted connection's settings.")
    secret = models.TextField(help_text="Its credentials, encrypted as the connection kept them.")
    expires_at = models.DateTimeField(null=True, blank=True)
    failures = models.PositiveIntegerField(default=0)
    last_error = models.CharField(max_length=500, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = "Graph subscription of a deleted connection"

    def __str__(self) -> str:
        return f"{self.name} ({self.subscription_id})"
