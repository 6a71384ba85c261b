"""Storing exported Zendesk tickets: upsert by (connection, ticket id), deletions kept."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from django.utils import timezone
from django.utils.dateparse import parse_datetime

from integrations.base import Counts
from integrations.models import Connection
from integrations.zendesk.models import Ticket

FIELDS = [
    "subject",
    "description",
    "status",
    "priority",
    "type",
    "requester_id",
    "requester_name",
    "assignee_id",
    "assignee_name",
    "group_id",
    "brand_id",
    "external_id",
    "channel",
    "tags",
    "custom_fields",
    "created_at_remote",
    "updated_at_remote",
    "due_at",
    "generated_timestamp",
    "deleted",
    "raw",
    "changed_at",
]


def _when(value: Any) -> datetime | None:
    return parse_datetime(value) if isinstance(value, str) and value else None


def _name(users: Mapping[int, Mapping[str, Any]], user_id: Any) -> str:
    user = users.get(user_id) if isinstance(user_id, int) else None
    return str((user or {}).get("name") or "")[:300]


SCRUBBED_FIELDS = ("subject", "description", "requester_name", "assignee_name")


def _values(item: Mapping[str, Any], users: Mapping[int, Mapping[str, Any]]) -> dict[str, Any]:
    return {
        "subject": str(item.get("subject") or "")[:500],
        "description": str(item.get("description") or ""),
        "status": str(item.get("status") or "")[:20],
        "priority": str(item.get("priority") or "")[:20],
        "type": str(item.get("type") or "")[:20],
        "requester_id": item.get("requester_id"),
        "requester_name": _name(users, item.get("requester_id")),
        "assignee_id": item.get("assignee_id"),
        "assignee_name": _name(users, item.get("assignee_id")),
        "group_id": item.get("group_id"),
        "brand_id": item.get("brand_id"),
        "external_id": str(item.get("external_id") or "")[:300],
        "channel": str((item.get("via") or {}).get("channel") or "")[:50],
        "tags": list(item.get("tags") or []),
        "custom_fields": list(item.get("custom_fields") or []),
        "created_at_remote": _when(item.get("created_at")),
        "updated_at_remote": _when(item.get("updated_at")),
        "due_at": _when(item.get("due_at")),
        "generated_timestamp": int(item.get("generated_timestamp") or 0),
        "deleted": item.get("status") == "deleted",
        "raw": dict(item),
    }


def upsert_tickets(
    connection: Connection,
    items: Sequence[Mapping[str, Any]],
    users: Mapping[int, Mapping[str, Any]],
) -> Counts:
    """Create new tickets, update changed ones; a ticket seen again unchanged is unchanged (the
    export repeats tickets across a fallback's overlap)."""
    counts = Counts()
    latest = {int(item["id"]): item for item in items if "id" in item}  # last copy wins
    existing = {
        t.zendesk_id: t
        for t in Ticket.objects.filter(connection=connection, zendesk_id__in=list(latest))
    }
    now = timezone.now()
    new, changed = [], []
    for ticket_id, item in latest.items():
        values = _values(item, users)
        row = existing.get(ticket_id)
        if row is None:
            new.append(
                Ticket(
                    connection=connection,
                    organization_id=connection.organization_id,
                    zendesk_id=ticket_id,
                    changed_at=now,
                    **values,
                )
            )
            counts.created += 1
            continue
        if "generated_timestamp" not in item:
            # Show Ticket (a skipped ticket read again) has no generated_timestamp: only the
            # export carries it, and the stored one stays
            values["generated_timestamp"] = row.generated_timestamp
        if row.raw == values["raw"]:
            counts.unchanged += 1
            continue
        if values["deleted"] and not row.deleted:
            counts.deleted += 1
        else:
            counts.updated += 1
        if values["deleted"]:
            # A deleted ticket is exported with its content scrubbed ("SCRUBBED", "X"): keep
            # the last real subject and description we had; the raw JSON keeps what came.
            values = {k: v for k, v in values.items() if k not in SCRUBBED_FIELDS}
        for name, value in values.items():
            setattr(row, name, value)
        row.changed_at = now
        changed.append(row)
    Ticket.objects.bulk_create(new, batch_size=500)
    Ticket.objects.bulk_update(changed, FIELDS, batch_size=500)
    return counts


def mark_deleted(connection: Connection, ticket_ids: Sequence[int]) -> int:
    """Tickets Zendesk no longer shows (Show Ticket: 404) are deleted there: mark the stored
    copies, keeping their last text as a deletion the export carried does. Returns how many."""
    return Ticket.objects.filter(
        connection=connection, zendesk_id__in=list(ticket_ids), deleted=False
    ).update(deleted=True, status="deleted", changed_at=timezone.now())
