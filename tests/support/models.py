"""Tables of the test connector: what it wrote, which faults fired, when each slice ran."""

from __future__ import annotations

from django.db import models


class FakeRecord(models.Model):
    """A synced record. ``writes`` counts how often it was written: 1 means no duplicate work."""

    connection = models.ForeignKey("integrations.Connection", on_delete=models.CASCADE)
    key = models.IntegerField()
    value = models.CharField(max_length=100)
    writes = models.PositiveIntegerField(default=1)
    deleted = models.BooleanField(default=False)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["connection", "key"], name="fake_record_identity")
        ]


class FaultHit(models.Model):
    """How often fault ``index`` of a connection's plan has fired (faults survive processes)."""

    connection = models.ForeignKey("integrations.Connection", on_delete=models.CASCADE)
    index = models.IntegerField()
    hits = models.PositiveIntegerField(default=0)


class RunSpan(models.Model):
    """When a worker process ran batches of a connection (to prove runs never overlap)."""

    connection = models.ForeignKey("integrations.Connection", on_delete=models.CASCADE)
    job_id = models.BigIntegerField()
    pid = models.IntegerField()
    started = models.FloatField()
    ended = models.FloatField(null=True)
