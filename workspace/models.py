"""Host-domain models: the company's own objects that syncs read from or write to."""

from __future__ import annotations

import zoneinfo
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator
from django.db import models
from django.utils import timezone


def validate_timezone(value: str) -> None:
    """Reject names that are not IANA time zones (e.g. 'Europe/Berlin')."""
    try:
        zoneinfo.ZoneInfo(value)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ValidationError(f"{value!r} is not a known time zone, e.g. Europe/Berlin.") from None


def history_mailboxes() -> models.Q:
    """Connections whose kind can search a mailbox's whole history for a contact's mail."""
    from integrations.registry import kinds_with

    return models.Q(kind__in=kinds_with("searches_history"))


class Organization(models.Model):
    """A customer organization; owns connections such as its ticket system account."""

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
        help_text="Their mailboxes that can search history are searched for the contacts' mail.",
    )
    mailboxes = models.ManyToManyField(
        "integrations.Connection",
        blank=True,
        related_name="+",
        limit_choices_to=history_mailboxes,
        help_text="Other mailboxes to search as well (e.g. a shared mailbox).",
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


class Task(models.Model):
    """A task in this application; its assignees may see it in their connected task lists."""

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
        help_text="When status or percent complete last changed (here, or in a connected task "
        "list: then that list's time). Decides which side wins when both changed.",
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
    """A task assigned to a person. ``active`` False: unassigned, or the task was deleted (the
    row stays, so that connected task lists can remove their copies)."""

    task = models.ForeignKey(
        Task, null=True, blank=True, on_delete=models.SET_NULL, related_name="assignments"
    )
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="task_assignments"
    )
    active = models.BooleanField(default=True, help_text="Off: unassigned or task deleted.")
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
