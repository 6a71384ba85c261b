"""Read-only admin for stored mail: what the syncs brought in, with defects and deletions."""

from __future__ import annotations

from typing import Any

from django.contrib import admin

from mail.models import MailAttachment, MailMessage
from syncqueue.admin import ReadOnlyAdmin


class AttachmentInline(admin.TabularInline):
    model = MailAttachment
    fields = ["filename", "content_type", "size", "inline", "file", "note"]
    readonly_fields = fields
    extra = 0
    max_num = 0
    can_delete = False


@admin.register(MailMessage)
class MailMessageAdmin(ReadOnlyAdmin):
    list_display = [
        "subject",
        "from_address",
        "folder",
        "received_at",
        "connection",
        "deleted",
        "truncated",
    ]
    list_filter = ["deleted", "truncated", "has_attachments", "connection__kind"]
    search_fields = ["subject", "from_address", "=message_id", "=connection__id"]
    list_select_related = ["connection"]
    inlines = [AttachmentInline]
    show_full_result_count = False

    def lookup_allowed(self, lookup: str, value: str, request: Any = None) -> bool:
        # a case's "linked messages" link filters by case
        return lookup == "case_links__case__id__exact" or super().lookup_allowed(
            lookup, value, request
        )
