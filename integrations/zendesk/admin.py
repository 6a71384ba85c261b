from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from integrations.zendesk.models import Ticket


@admin.register(Ticket)
class TicketAdmin(admin.ModelAdmin):
    """Zendesk tickets as the last export showed them. Read-only: Zendesk is the source."""

    list_display = [
        "zendesk_id",
        "subject",
        "status",
        "priority",
        "requester_name",
        "assignee_name",
        "organization",
        "updated_at_remote",
        "deleted",
    ]
    list_filter = ["status", "deleted", "organization", "priority"]
    search_fields = ["=zendesk_id", "subject", "requester_name", "assignee_name"]
    list_select_related = ["organization"]
    show_full_result_count = False
    readonly_fields = [f.name for f in Ticket._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
