"""Validated, non-secret settings of a Zimbra server connection (the secret is the admin
account's ``admin_password``)."""

from __future__ import annotations

from urllib.parse import urlsplit

from pydantic import Field, field_validator

from integrations.base import ConnectorConfig
from integrations.netguard import is_loopback


class ZimbraConfig(ConnectorConfig):
    soap_url: str = Field(
        description="User SOAP endpoint, e.g. https://mail.example.com/service/soap"
    )
    admin_url: str = Field(
        description="Admin SOAP endpoint, e.g. https://mail.example.com:7071/service/admin/soap"
    )
    admin_name: str = Field(min_length=3, description="Admin account, e.g. admin@example.com.")
    delegated_token_lifetime: int = Field(
        default=3600, ge=60, le=172800, description="Seconds a per-user token is asked to live."
    )
    tasks_folder: str = Field(default="15", description="Folder id of Tasks (15 by default).")
    incoming: bool = Field(
        default=False,
        description="Read status and percent complete changed in Zimbra back into the tasks, "
        "on this connection's schedule (give it one, e.g. 'every 15m'). When both sides "
        "changed, the later change wins and the other value is logged.",
    )
    incoming_page: int = Field(
        default=200, ge=10, le=1000, description="Changes asked for per SyncRequest."
    )
    request_timeout: float = Field(default=30.0, gt=0, le=300)

    @field_validator("soap_url", "admin_url")
    @classmethod
    def _url(cls, value: str) -> str:
        value = value.strip().rstrip("/")
        host = urlsplit(value).hostname or ""
        if value.startswith("http://") and is_loopback(host):
            return value  # a local test or demo server
        if not value.startswith("https://"):
            raise ValueError("must be an https:// URL (the admin password travels in it)")
        return value
