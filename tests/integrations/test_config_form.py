"""A provider's settings as form fields and back, without changing what is stored."""

from __future__ import annotations

from typing import Any

import pytest
from django import forms

from integrations.config_form import (
    config_fields,
    initial_values,
    normalized,
    to_config,
    unknown_keys,
)
from integrations.registry import get_connector_class

STORED: dict[str, dict[str, Any]] = {
    "imap": {
        "host": "mail.example.com",
        "username": "ann",
        "folders": ["INBOX", "Sent"],
        "history_days": None,
        "security": "starttls",
        "all_folders": True,
    },
    "msgraph": {
        "tenant_id": "contoso.com",
        "client_id": "c",
        "mailbox": "m@x.test",
        "history_start": "2020-01-02",
        "folders": [],
    },
    "zendesk": {"subdomain": "acme", "email": "a@acme.test", "start_date": None},
    "zimbra": {
        "soap_url": "https://z.test/service/soap",
        "admin_url": "https://z.test:7071/x",
        "admin_name": "admin@z.test",
        "incoming": False,
    },
}


@pytest.mark.parametrize("kind", sorted(STORED))
def test_every_provider_round_trips_through_its_form(kind: str) -> None:
    model = get_connector_class(kind).Config
    form_cls: Any = type("F", (forms.Form,), config_fields(model))
    fields = form_cls.base_fields
    # what the page shows (defaults, then stored values) is what the browser posts back;
    # an unchecked box is not posted at all
    shown = {n: f.initial for n, f in fields.items() if f.initial not in (None, False)}
    shown.update(initial_values(model, STORED[kind]))
    data = {n: ("on" if v is True else v) for n, v in shown.items() if v is not False}
    form = form_cls(data=data)
    assert form.is_valid(), form.errors
    config = normalized(model, to_config(model, form.cleaned_data, STORED[kind]))
    expected = normalized(model, STORED[kind])
    assert {k: config.get(k) for k in expected} == expected
    defaults = model.model_validate(expected).model_dump(mode="json")
    for key in set(config) - set(expected):  # anything added is only a default made explicit
        assert config[key] == defaults[key]


def test_defaults_are_not_frozen_and_unknown_keys_go() -> None:
    model = get_connector_class("imap").Config
    stored = {"host": "h.example.com", "username": "u", "obsolete_option": True}
    assert unknown_keys(model, stored) == ["obsolete_option"]
    cleaned = {"cfg_host": "h.example.com", "cfg_username": "u", "cfg_batch_size": 500}
    config = to_config(model, cleaned, stored)
    assert config == {"host": "h.example.com", "username": "u"}  # 500 is the default
    assert normalized(model, {**config, "batch_size": "250"})["batch_size"] == 250
