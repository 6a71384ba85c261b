"""Validated, non-secret settings of a Microsoft Graph mailbox connection.

The secret is the app registration's ``client_secret``, or a certificate's ``private_key``
(PEM) when ``certificate_thumbprint`` is set.
"""

from __future__ import annotations

import re
from datetime import date

from pydantic import Field, field_validator

from integrations.base import ConnectorConfig

_GUID = re.compile(r"^[0-9a-fA-F-]{36}$")
_DOMAIN = re.compile(r"^[A-Za-z0-9.-]+\.[A-Za-z]{2,}$")


class GraphConfig(ConnectorConfig):
    tenant_id: str = Field(min_length=1, description="Directory (tenant) id or domain.")
    client_id: str = Field(min_length=1, description="Application (client) id.")
    mailbox: str = Field(min_length=1, description="User id or principal name of the mailbox.")
    certificate_thumbprint: str = Field(default="", description="Use a certificate, not a secret.")
    authority_host: str = "https://login.microsoftonline.com"
    graph_url: str = "https://graph.microsoft.com"
    folders: list[str] = Field(default_factory=list, description="Empty: every mail folder.")
    page_size: int = Field(default=100, ge=1, le=1000)
    history_start: date = date(2000, 1, 1)
    request_timeout: float = Field(default=60.0, gt=0, le=600)

    @field_validator("tenant_id")
    @classmethod
    def _tenant(cls, value: str) -> str:
        value = value.strip()
        if value.lower() in {"common", "organizations", "consumers"}:
            raise ValueError("use the tenant's id or domain; app-only tokens need a tenant")
        if not (_GUID.match(value) or _DOMAIN.match(value)):
            raise ValueError("expected a tenant id (GUID) or a domain such as contoso.com")
        return value

    @field_validator("authority_host", "graph_url")
    @classmethod
    def _https(cls, value: str) -> str:
        value = value.rstrip("/")
        if not value.startswith("https://"):
            raise ValueError("must be an https:// URL")
        return value

    @property
    def authority(self) -> str:
        return f"{self.authority_host}/{self.tenant_id}"

    @property
    def api(self) -> str:
        return f"{self.graph_url}/v1.0"
