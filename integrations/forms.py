"""The base of the forms people fill in on the settings page to connect an account.

A provider's form turns its fields into non-secret ``config`` and secret values; the settings
page then tests the connection *before* saving and shows the test's plain-language result.
Secret fields are never filled with the stored value: left empty they keep it.
"""

from __future__ import annotations

from typing import Any

from django import forms

from integrations.errors import SyncError
from integrations.models import Connection


class ConnectionSettingsForm(forms.Form):
    """Subclasses set ``kind`` and implement ``to_config``/``secrets``/``initial_for``."""

    kind: str = ""
    name = forms.CharField(
        max_length=200,
        label="Name",
        help_text="How this account is shown to you, e.g. 'Work mail'.",
    )

    def __init__(self, *args: Any, instance: Connection | None = None, **kwargs: Any) -> None:
        self.instance = instance
        if instance is not None and "initial" not in kwargs:
            kwargs["initial"] = {"name": instance.name, **self.initial_for(instance)}
        super().__init__(*args, **kwargs)

    def initial_for(self, conn: Connection) -> dict[str, Any]:
        return {}

    def to_config(self) -> dict[str, Any]:
        raise NotImplementedError

    def secrets(self) -> dict[str, Any]:
        """New secret values typed in (empty ones are left out: they keep what is stored)."""
        raise NotImplementedError

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        if not self.errors:
            from integrations.registry import get_connector_class

            try:
                get_connector_class(self.kind).validate_config(self.to_config())
            except SyncError as exc:
                raise forms.ValidationError(exc.message) from None
        return data

    def build(self, owner: Any) -> Connection:
        """The connection as it would be saved (unsaved): to test it before saving."""
        conn = self.instance or Connection(kind=self.kind, owner=owner)
        conn.name = self.cleaned_data["name"]
        conn.config = self.to_config()
        conn.set_secrets(self.secrets())
        if not conn.pk:
            from integrations.registry import get_connector_class

            conn.schedule = get_connector_class(self.kind).default_schedule
        return conn
