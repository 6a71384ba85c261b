"""What a calendar feed connection keeps: one row per event UID."""

from __future__ import annotations

from django.db import models


class FeedEvent(models.Model):
    connection = models.ForeignKey(
        "integrations.Connection", on_delete=models.CASCADE, related_name="feed_events"
    )
    uid = models.CharField(max_length=255)
    summary = models.TextField(blank=True)
    starts = models.CharField(max_length=64, blank=True, help_text="DTSTART as the feed gives it")
    ends = models.CharField(max_length=64, blank=True, help_text="DTEND as the feed gives it")
    sequence = models.IntegerField(default=0)
    status = models.CharField(max_length=20, blank=True)
    deleted = models.BooleanField(default=False, help_text="No longer in the feed")

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["connection", "uid"], name="calfeed_one_row_per_uid")
        ]

    def __str__(self) -> str:
        return self.summary or self.uid
