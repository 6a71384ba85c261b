"""The settings-page form for connecting an IMAP mailbox."""

from __future__ import annotations

from typing import Any

from django import forms

from integrations.forms import ConnectionSettingsForm
from integrations.models import Connection


class ImapSettingsForm(ConnectionSettingsForm):
    kind = "imap"
    secret_form_fields = ("password",)
    host = forms.CharField(label="Mail server", help_text="e.g. imap.example.com")
    security = forms.ChoiceField(
        label="Encryption",
        choices=[
            ("ssl", "SSL/TLS (port 993)"),
            ("starttls", "STARTTLS (port 143)"),
            ("none", "None (only to this machine)"),
        ],
        initial="ssl",
    )
    port = forms.IntegerField(
        label="Port",
        required=False,
        min_value=1,
        max_value=65535,
        help_text="Leave empty for the usual port.",
    )
    username = forms.CharField(label="User name", help_text="Usually your email address.")
    password = forms.CharField(
        label="Password",
        required=False,
        strip=False,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
    )
    folders = forms.CharField(
        label="Folders", initial="INBOX", help_text="Comma-separated, e.g. INBOX, Archive."
    )
    all_folders = forms.BooleanField(label="Sync every folder", required=False)
    history = forms.ChoiceField(
        label="Mail to bring in first",
        choices=[("30", "The last 30 days"), ("365", "The last year"), ("all", "All mail")],
        initial="30",
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.stored_secret_usable():
            self.fields["password"].help_text = (
                "Leave empty to keep the saved password (it is needed again if you change the "
                "mail server, port or encryption)."
            )
        else:
            self.fields["password"].required = True
            if self.instance is not None and self.instance.has_secret:
                self.fields[
                    "password"
                ].help_text = "The saved password can no longer be used: enter it again."

    def initial_for(self, conn: Connection) -> dict[str, Any]:
        config = conn.config
        days = config.get("history_days")
        return {
            "host": config.get("host", ""),
            "security": config.get("security", "ssl"),
            "port": config.get("port"),
            "username": config.get("username", ""),
            "folders": ", ".join(config.get("folders", ["INBOX"])),
            "all_folders": config.get("all_folders", False),
            "history": "all" if days is None else str(days),
        }

    def to_config(self) -> dict[str, Any]:
        data = self.cleaned_data
        config: dict[str, Any] = {
            "host": data["host"].strip(),
            "security": data["security"],
            "username": data["username"].strip(),
            "folders": [f.strip() for f in data["folders"].split(",") if f.strip()] or ["INBOX"],
            "all_folders": data["all_folders"],
            "history_days": None if data["history"] == "all" else int(data["history"]),
        }
        if data.get("port"):
            config["port"] = data["port"]
        if self.instance is not None:  # keep expert settings staff may have set
            for key in ("batch_size", "connect_timeout", "read_timeout", "flag_window"):
                if key in self.instance.config:
                    config[key] = self.instance.config[key]
        return config

    def secrets(self) -> dict[str, Any]:
        password = self.cleaned_data.get("password")
        return {"password": password} if password else {}
