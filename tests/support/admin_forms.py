"""The admin's connection form as a browser would post it: the provider's own fields
(``cfg_<name>``), no raw JSON."""

from __future__ import annotations

import json
from typing import Any

from integrations.config_form import initial_values
from integrations.models import Connection
from integrations.registry import get_connector_class


def connection_form(
    conn: Connection, config: dict[str, Any] | None = None, **changes: Any
) -> dict[str, Any]:
    """``conn`` as the change form shows it, with ``config`` (a whole config) and ``changes``
    (any form field) typed over it."""
    model = get_connector_class(conn.kind).Config
    fields = {k: v for k, v in initial_values(model, conn.config).items()}
    if config is not None:
        fields = {k: "" for k in fields} | initial_values(model, config)
    data: dict[str, Any] = {
        "name": conn.name,
        "owner": conn.owner_id or "",
        "organization": conn.organization_id or "",
        "disabled_reason": conn.disabled_reason,
        "schedule": conn.schedule,
        "_save": "Save",
    }
    for key, value in fields.items():
        if isinstance(value, bool):
            if value:
                data[key] = "on"
        elif isinstance(value, list | dict):  # a structured (JSON) field
            data[key] = json.dumps(value)
        elif value is not None:
            data[key] = value
    if conn.enabled:
        data["enabled"] = "on"
    if conn.scheduled:
        data["scheduled"] = "on"
    return {**data, **changes}
