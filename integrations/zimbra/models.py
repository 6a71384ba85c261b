"""Zimbra's data in this application: each assignee's copy of a task in their mailbox."""

from __future__ import annotations

from typing import Any

from django.db import models


class TaskCopy(models.Model):
    """The copy of an assigned task in its person's Zimbra Tasks.

    Its primary key is the assignment's, so a push job, a skipped item and a log line name
    the same number. ``uid`` is ours, fixed before the first push, so a retried create updates
    the same Zimbra task instead of adding a second one.
    """

    class State(models.TextChoices):
        PENDING = "pending", "Waiting to be pushed"
        PUSHED = "pushed", "In Zimbra"
        REMOVED = "removed", "Removed from Zimbra"
        FAILED = "failed", "Failed"
        OFF = "off", "Not pushed (switch off)"

    assignment = models.OneToOneField(
        "workspace.Assignment",
        on_delete=models.CASCADE,
        primary_key=True,
        related_name="zimbra_copy",
    )
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

    class Meta:
        verbose_name = "Zimbra task copy"
        verbose_name_plural = "Zimbra task copies"

    def __str__(self) -> str:
        return f"{self.assignment} ({self.account or 'no address yet'})"

    # The assignment's host side, as the Zimbra code reads it.
    @property
    def task(self) -> Any:
        return self.assignment.task

    @property
    def task_id(self) -> int | None:
        return self.assignment.task_id

    @property
    def user(self) -> Any:
        return self.assignment.user

    @property
    def active(self) -> bool:
        return self.assignment.active
