"""Validated, non-secret settings of a Zendesk connection. The secret is the agent's
``api_token`` (used with ``email``) or an ``oauth_token``."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta

from pydantic import Field, field_validator

from integrations.base import ConnectorConfig

_SUBDOMAIN = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")


class ZendeskConfig(ConnectorConfig):
    subdomain: str = Field(description="The account's subdomain: 'acme' for acme.zendesk.com.")
    email: str = Field(default="", max_length=320, description="Admin's email (API token auth).")
    history_days: int | None = Field(
        default=7, ge=1, description="First sync covers this many days; empty = every ticket."
    )
    start_date: date | None = Field(default=None, description="First sync from this date.")
    per_page: int = Field(default=500, ge=1, le=1000)
    request_timeout: float = Field(default=60.0, gt=0, le=600)

    @field_validator("subdomain", mode="before")
    @classmethod
    def _subdomain(cls, value: object) -> str:
        text = str(value or "").strip().lower()
        text = re.sub(r"^https?://", "", text).removesuffix("/")
        text = text.removesuffix(".zendesk.com")
        if not _SUBDOMAIN.match(text):
            raise ValueError("expected the subdomain only, e.g. 'acme' for acme.zendesk.com")
        return text

    def first_start_time(self, now: datetime) -> int:
        """Unix time the first export starts from."""
        if self.start_date is not None:
            return int(datetime.combine(self.start_date, datetime.min.time(), UTC).timestamp())
        if self.history_days is None:
            return 0  # everything
        return int((now - timedelta(days=self.history_days)).timestamp())
