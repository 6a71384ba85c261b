"""Host-domain models: the company's own objects that syncs read from or write to."""

from __future__ import annotations

import zoneinfo

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models


def validate_timezone(value: str) -> None:
    """Reject names that are not IANA time zones (e.g. 'Europe/Berlin')."""
    try:
        zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ValidationError(f"{value!r} is not a known time zone, e.g. Europe/Berlin.") from None


class Organization(models.Model):
    """A customer organization; owns connections such as its Zendesk account."""

    name = models.CharField(max_length=200, help_text="Display name.")
    slug = models.SlugField(unique=True, help_text="Short unique identifier used in URLs.")
    timezone = models.CharField(
        max_length=64,
        default="UTC",
        validators=[validate_timezone],
        help_text="IANA time zone; cron schedules of this organization's connections use it.",
    )
    members = models.ManyToManyField(
        settings.AUTH_USER_MODEL,
        blank=True,
        related_name="organizations",
        help_text="People who belong to this organization.",
    )

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Case(models.Model):
    """A matter people work on; its contacts' mail is found and linked to it."""

    class SyncState(models.TextChoices):
        IDLE = "idle", "Not synced"
        SYNCING = "syncing", "Syncing"
        SYNCED = "synced", "Synced"
        FAILED = "failed", "Failed"

    title = models.CharField(max_length=300)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.CASCADE,
        related_name="cases",
        help_text="Their Microsoft 365 mailbox is searched for the contacts' mail.",
    )
    mailboxes = models.ManyToManyField(
        "integrations.Connection",
        blank=True,
        related_name="+",
        limit_choices_to={"kind": "msgraph"},
        help_text="Other Microsoft 365 mailboxes to search as well (e.g. a shared mailbox).",
    )
    sync_state = models.CharField(
        max_length=20,
        choices=SyncState.choices,
        default=SyncState.IDLE,
        help_text="Whether the contacts' mail has been found, from the history jobs' outcomes.",
    )
    sync_error = models.CharField(max_length=500, blank=True, help_text="Why syncing failed.")
    synced_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return self.title


class CaseContact(models.Model):
    """A person involved in a case: all mail with them is linked to the case."""

    case = models.ForeignKey(Case, on_delete=models.CASCADE, related_name="contacts")
    email = models.EmailField()
    name = models.CharField(max_length=200, blank=True)
    added_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["case", "email"], name="one_contact_per_case_email")
        ]

    def __str__(self) -> str:
        return f"{self.name} <{self.email}>" if self.name else self.email


class CaseMessage(models.Model):
    """A message linked to a case (once, however many contacts or searches found it)."""

    case = models.ForeignKey(Case, on_delete=models.CASCADE, related_name="links")
    message = models.ForeignKey(
        "mail.MailMessage", on_delete=models.CASCADE, related_name="case_links"
    )
    contact = models.ForeignKey(CaseContact, null=True, blank=True, on_delete=models.SET_NULL)
    linked_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["case", "message"], name="one_link_per_case_message")
        ]

    def __str__(self) -> str:
        return f"{self.case_id} ← {self.message_id}"
