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
