"""Zendesk's data in this application: the tickets of each connected account."""

from __future__ import annotations

from django.db import models

from syncproject.safetext import neutral


class Ticket(models.Model):
    """A Zendesk ticket of an organization, as the last export showed it (raw JSON kept)."""

    connection = models.ForeignKey(
        "integrations.Connection", on_delete=models.CASCADE, related_name="tickets"
    )
    organization = models.ForeignKey(
        "workspace.Organization",
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="tickets",
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
        db_table = "workspace_ticket"  # where it was created (workspace/migrations/0003)

    def __str__(self) -> str:
        return f"#{self.zendesk_id} {neutral(self.subject)}"
