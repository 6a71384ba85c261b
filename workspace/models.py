"""Host-domain models: the company's own objects that syncs read from or write to."""

from __future__ import annotations

import zoneinfo
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator
from django.db import models
from django.utils import timezone

from syncproject.safetext import neutral


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


class Ticket(models.Model):
    """A Zendesk ticket of an organization, as the last export showed it (raw JSON kept)."""

    connection = models.ForeignKey(
        "integrations.Connection", on_delete=models.CASCADE, related_name="tickets"
    )
    organization = models.ForeignKey(
        Organization, null=True, blank=True, on_delete=models.CASCADE, related_name="tickets"
    )
    zendesk_id = models.BigIntegerField(help_text="The ticket's id in Zendesk.")
    subject = models.CharField(max_length=500, blank=True)
    description = models.TextField(blank=True)
    status = models.CharField(max_length=20, blank=True, db_index=True)
    priority = models.CharField(max_length=20, blank=True)
    type = models.CharField(max_length=20, blank=True)
    requester_id = models.BigIntegerField(null=True, blank=True)
    requester_name = models.CharField(max_length=300, blank=True)
    assignee_id = models.BigIntegerField(null=True, blank=True)
    assignee_name = models.CharField(max_length=300, blank=True)
    group_id = models.BigIntegerField(null=True, blank=True)
    brand_id = models.BigIntegerField(null=True, blank=True)
    external_id = models.CharField(max_length=300, blank=True)
    channel = models.CharField(max_length=50, blank=True, help_text="How it came in (via).")
    tags = models.JSONField(default=list, blank=True)
    custom_fields = models.JSONField(default=list, blank=True)
    created_at_remote = models.DateTimeField(null=True, blank=True, verbose_name="created")
    updated_at_remote = models.DateTimeField(null=True, blank=True, verbose_name="updated")
    due_at = models.DateTimeField(null=True, blank=True)
    generated_timestamp = models.BigIntegerField(default=0)
    deleted = models.BooleanField(default=False, help_text="Deleted in Zendesk (kept here).")
    raw = models.JSONField(default=dict, help_text="The ticket exactly as exported.")
    changed_at = models.DateTimeField(help_text="When a sync last created or changed it.")

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["connection", "zendesk_id"], name="one_row_per_ticket")
        ]
        indexes = [models.Index(fields=["connection", "changed_at"], name="ticket_changed_idx")]

    def __str__(self) -> str:
        return f"#{self.zendesk_id} {neutral(self.subject)}"


class Task(models.Model):
    """A task in this application; its assignees may see it in their Zimbra task list."""

    class Priority(models.TextChoices):
        HIGH = "high", "High"
        NORMAL = "normal", "Normal"
        LOW = "low", "Low"

    class Status(models.TextChoices):
        NEED = "need", "Not started"
        IN_PROGRESS = "inprogress", "In progress"
        WAITING = "waiting", "Waiting"
        DEFERRED = "deferred", "Deferred"
        COMPLETED = "completed", "Completed"

    title = models.CharField(max_length=300)
    description = models.TextField(blank=True)
    due_date = models.DateField(null=True, blank=True)
    priority = models.CharField(max_length=10, choices=Priority.choices, default=Priority.NORMAL)
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.NEED)
    percent_complete = models.PositiveSmallIntegerField(
        default=0, validators=[MaxValueValidator(100)]
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    progress_changed_at = models.DateTimeField(
        null=True,
        blank=True,
        help_text="When status or percent complete last changed (here, or in Zimbra: then "
        "Zimbra's time). Decides which side wins when both changed.",
    )

    def __str__(self) -> str:
        return self.title

    def save(self, *args: Any, **kwargs: Any) -> None:
        if self.progress() != getattr(self, "_loaded_progress", None):
            self.progress_changed_at = timezone.now()
            if kwargs.get("update_fields") is not None:
                kwargs["update_fields"] = {*kwargs["update_fields"], "progress_changed_at"}
        super().save(*args, **kwargs)
        self._loaded_progress = self.progress()

    @classmethod
    def from_db(cls, db: Any, field_names: Any, values: Any) -> Task:
        task = super().from_db(db, field_names, values)
        task._loaded_progress = task.progress()
        return task

    def progress(self) -> tuple[str, int]:
        return (self.status, self.percent_complete)


class Assignment(models.Model):
    """A task assigned to a person, with the copy of it in their Zimbra mailbox.

    ``uid`` is ours, fixed before the first push, so a retried create updates the same
    Zimbra task instead of adding a second one. ``active`` False (unassigned, or the task was
    deleted) means the Zimbra copy is to be cancelled.
    """

    class State(models.TextChoices):
        PENDING = "pending", "Waiting to be pushed"
        PUSHED = "pushed", "In Zimbra"
        REMOVED = "removed", "Removed from Zimbra"
        FAILED = "failed", "Failed"
        OFF = "off", "Not pushed (switch off)"

    task = models.ForeignKey(
        Task, null=True, blank=True, on_delete=models.SET_NULL, related_name="assignments"
    )
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="task_assignments"
    )
    active = models.BooleanField(default=True, help_text="Off: unassigned or task deleted.")
    uid = models.CharField(max_length=200, unique=True, help_text="Our iCalendar UID in Zimbra.")
    account = models.CharField(max_length=320, blank=True, help_text="Zimbra address used.")
    cal_item_id = models.CharField(max_length=50, blank=True)
    inv_id = models.CharField(max_length=50, blank=True)
    ms = models.CharField(max_length=30, blank=True)
    rev = models.CharField(max_length=30, blank=True)
    pushed_hash = models.CharField(max_length=64, blank=True, help_text="Of what was last sent.")
    pushed_status = models.CharField(max_length=20, blank=True, help_text="Status last in step.")
    pushed_percent = models.PositiveSmallIntegerField(
        null=True, blank=True, help_text="Percent complete last in step with Zimbra."
    )
    state = models.CharField(max_length=10, choices=State.choices, default=State.PENDING)
    error = models.CharField(max_length=500, blank=True)
    pushed_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["task", "user"],
                condition=models.Q(active=True),
                name="one_active_assignment",
            )
        ]

    def __str__(self) -> str:
        return f"{self.task or 'deleted task'} → {self.user}"
