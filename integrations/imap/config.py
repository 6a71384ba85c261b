"""Validated, non-secret settings of an IMAP connection (the password is the secret)."""

from __future__ import annotations

from typing import Literal

from django.conf import settings
from pydantic import Field, field_validator, model_validator

from integrations.base import ConnectorConfig
from integrations.netguard import is_loopback


class ImapConfig(ConnectorConfig):
    host: str = Field(min_length=1, max_length=253, description="Mail server host name.")
    port: int | None = Field(default=None, ge=1, le=65535, description="Default 993 or 143.")
    security: Literal["ssl", "starttls", "none"] = "ssl"
    username: str = Field(min_length=1, max_length=320)
    folders: list[str] = Field(default_factory=lambda: ["INBOX"], min_length=1)
    all_folders: bool = False
    history_days: int | None = Field(
        default=30, ge=1, description="Initial sync covers this many days; empty = all mail."
    )
    batch_size: int = Field(default=500, ge=1, le=5000)
    connect_timeout: float = Field(default=10.0, gt=0, le=300)
    read_timeout: float = Field(default=120.0, gt=0, le=3600)
    idle: bool = Field(
        default=True,
        description="Watch with IMAP IDLE so new mail arrives within seconds (if the server "
        "offers IDLE); the schedule still polls as a safety net.",
    )
    idle_folders: list[str] = Field(
        default_factory=lambda: ["INBOX"],
        description="Folders watched with IDLE (one server session each).",
    )
    flag_window: int = Field(
        default=2000, ge=0, description="Without CONDSTORE: re-check flags of this many newest."
    )

    @field_validator("host")
    @classmethod
    def _plain_host(cls, value: str) -> str:
        value = value.strip()
        if "://" in value or "/" in value or " " in value:
            raise ValueError("give only the host name, e.g. imap.example.com")
        return value

    @model_validator(mode="after")
    def _no_clear_text_passwords(self) -> ImapConfig:
        if (
            self.security == "none"
            and not is_loopback(self.host)
            and not (settings.IMAP_ALLOW_PLAINTEXT)
        ):
            raise ValueError(
                "security 'none' would send the password unencrypted; it is only allowed to "
                "localhost (or set IMAP_ALLOW_PLAINTEXT)"
            )
        return self

    @property
    def effective_port(self) -> int:
        return self.port or (993 if self.security == "ssl" else 143)
