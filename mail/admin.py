"""Read-only admin for stored mail: what the syncs brought in, with defects and deletions.

Everything a sender wrote (subject, names, addresses, file names) is shown neutralised:
control and direction-changing characters appear as ``[U+202E]`` markers instead of turning
``‮fdp.exe`` into what reads as ``exe.pdf``. The stored values keep the original, and the raw
message as the server sent it is kept beside each message.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.html import format_html, format_html_join

from integrations.errors import SyncError
from mail.models import MailAttachment, MailMessage, MailSource
from syncqueue.admin import ReadOnlyAdmin
from syncqueue.admin_display import shown

SOURCE_PREVIEW_BYTES = 4000


class AttachmentInline(admin.TabularInline):
    model = MailAttachment
    fields = readonly_fields = ("filename_shown", "content_type", "size", "inline", "file", "note")
    extra = 0
    max_num = 0
    can_delete = False

    @admin.display(description="File name")
    def filename_shown(self, attachment: MailAttachment) -> str:
        return shown(attachment.filename) or "—"


def _people(entries: list[dict[str, str]]) -> str:
    return ", ".join(
        shown(f"{e.get('name', '')} <{e.get('address', '')}>".strip()) for e in entries or []
    )


@admin.register(MailMessage)
class MailMessageAdmin(ReadOnlyAdmin):
    list_display = [
        "subject_shown",
        "sender_shown",
        "folder_shown",
        "received_at",
        "connection",
        "deleted",
        "truncated",
        "defect_count",
    ]
    list_filter = ["deleted", "truncated", "has_attachments", "connection__kind"]
    search_fields = ["subject", "from_address", "=message_id", "=connection__id"]
    list_select_related = ["connection"]
    inlines = [AttachmentInline]
    show_full_result_count = False
    fieldsets = [
        (
            None,
            {
                "fields": [
                    "subject_shown",
                    "sender_shown",
                    "to_shown",
                    "cc_shown",
                    "sent_at",
                    "received_at",
                    "message_id_shown",
                    "connection",
                    "folder_shown",
                    "uidvalidity",
                    "uid",
                    "remote_id",
                    "flags",
                    "labels",
                    "deleted",
                ]
            },
        ),
        ("Content", {"fields": ["snippet_shown", "text_body", "size", "has_attachments"]}),
        (
            "What was wrong with it",
            {"fields": ["truncated", "defects_shown", "source_shown"]},
        ),
    ]
    readonly_fields = [
        "subject_shown",
        "sender_shown",
        "to_shown",
        "cc_shown",
        "message_id_shown",
        "folder_shown",
        "snippet_shown",
        "defects_shown",
        "source_shown",
        "defect_count",
    ]

    def get_queryset(self, request: HttpRequest) -> QuerySet[MailMessage]:
        return super().get_queryset(request).defer("text_body", "html_body")

    def lookup_allowed(self, lookup: str, value: str, request: Any = None) -> bool:
        # a case's "linked messages" link filters by case
        return lookup == "case_links__case__id__exact" or super().lookup_allowed(
            lookup, value, request
        )

    @admin.display(description="Subject", ordering="subject")
    def subject_shown(self, message: MailMessage) -> str:
        return shown(message.subject) or "(no subject)"

    @admin.display(description="From", ordering="from_address")
    def sender_shown(self, message: MailMessage) -> str:
        if message.from_name:
            return shown(f"{message.from_name} <{message.from_address}>")
        return shown(message.from_address) or "—"

    @admin.display(description="To")
    def to_shown(self, message: MailMessage) -> str:
        return _people(message.to) or "—"

    @admin.display(description="Cc")
    def cc_shown(self, message: MailMessage) -> str:
        return _people(message.cc) or "—"

    @admin.display(description="Message-ID")
    def message_id_shown(self, message: MailMessage) -> str:
        return shown(message.message_id) or "—"

    @admin.display(description="Folder", ordering="folder")
    def folder_shown(self, message: MailMessage) -> str:
        """The folder's name (a Graph message is filed by folder id: named from the sync's
        position, which the list already has with the connection)."""
        conn = message.connection
        try:
            label = conn.connector_class.folder_label(conn.cursor or {}, message.folder)
        except SyncError:  # a provider this installation no longer has
            label = message.folder
        return shown(label)

    @admin.display(description="Snippet")
    def snippet_shown(self, message: MailMessage) -> str:
        return shown(message.snippet)

    @admin.display(description="Defects")
    def defect_count(self, message: MailMessage) -> int:
        return len(message.defects or [])

    @admin.display(description="Defects (how it was read)")
    def defects_shown(self, message: MailMessage) -> str:
        if not message.defects:
            return "None: read as written."
        return format_html(
            "<ul>{}</ul>",
            format_html_join("", "<li>{}</li>", ((shown(d),) for d in message.defects)),
        )

    @admin.display(description="As received")
    def source_shown(self, message: MailMessage) -> str:
        source = MailSource.objects.filter(message=message).only("format", "size").first()
        if source is None:
            return "Not kept (stored before raw messages were kept)."
        head = bytes(
            MailSource.objects.filter(message=message).values_list("data", flat=True).first() or b""
        )[:SOURCE_PREVIEW_BYTES]
        text = head.decode("utf-8", "replace")
        more = " (first bytes)" if source.size > SOURCE_PREVIEW_BYTES else ""
        return format_html(
            "<p>{} · {} bytes{}</p><pre style='white-space:pre-wrap;max-height:30em;"
            "overflow:auto'>{}</pre>",
            source.get_format_display(),
            source.size,
            more,
            shown(text.replace("\r\n", "\n")).replace("[U+000A]", "\n"),
        )
