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
    #: the form fields holding secrets (errors about secrets are shown next to the first)
    secret_form_fields: tuple[str, ...] = ()
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
        data = super().clean() or {}
        if not self.errors:
            from integrations.registry import get_connector_class

            config = self.to_config()
            try:
                get_connector_class(self.kind).validate_config(config)
            except SyncError as exc:
                raise forms.ValidationError(exc.message) from None
            if self.instance is not None:
                problem = self.instance.account_problem(self.kind, config)
                if problem:
                    fields = get_connector_class(self.kind).account_changes(
                        self.instance.config, config
                    )
                    self.add_error(next((f for f in fields if f in self.fields), None), problem)
                    return data
                problem = self.instance.destination_problem(self.kind, config, self.secrets())
                if problem:
                    field = self.secret_form_fields[0] if self.secret_form_fields else None
                    self.add_error(field, problem)
        return data

    def stored_secret_usable(self) -> bool:
        """True when the connection has a secret that can be used as it is."""
        return bool(self.instance and self.instance.has_secret and self.instance.secrets_readable())

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
