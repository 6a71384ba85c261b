from __future__ import annotations

from django.contrib import admin, messages
from django.db.models import Count, QuerySet
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html

from integrations.errors import SyncError
from syncqueue.admin_display import badge, relative
from workspace import cases
from workspace.models import Case, CaseContact, Organization


@admin.register(Organization)
class OrganizationAdmin(admin.ModelAdmin):
    list_display = ["name", "slug", "timezone"]
    search_fields = ["name", "slug"]
    prepopulated_fields = {"slug": ["name"]}
    filter_horizontal = ["members"]


class ContactInline(admin.TabularInline):
    model = CaseContact
    fields = ["email", "name", "added_at"]
    readonly_fields = ["added_at"]
    extra = 1


@admin.register(Case)
class CaseAdmin(admin.ModelAdmin):
    """Cases and the search for their contacts' mail. Adding a contact queues a history search
    in the owner's Microsoft 365 mailbox (and the other mailboxes named here); the state
    follows the searches' outcomes. "Retry history sync" queues failed searches again."""

    list_display = ["title", "owner", "contact_count", "state", "sync_error", "synced", "mail"]
    list_filter = ["sync_state"]
    search_fields = ["title", "contacts__email"]
    list_select_related = ["owner"]
    autocomplete_fields = ["owner"]
    filter_horizontal = ["mailboxes"]
    inlines = [ContactInline]
    readonly_fields = ["state", "sync_error", "synced_at", "mail", "searches"]
    fieldsets = [
        (None, {"fields": ["title", "owner", "mailboxes"]}),
        ("Mail history", {"fields": ["state", "sync_error", "synced_at", "mail", "searches"]}),
    ]
    actions = ["retry_history"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Case]:
        return (
            super()
            .get_queryset(request)
            .annotate(
                n_contacts=Count("contacts", distinct=True),
                n_links=Count("links", distinct=True),
            )
        )

    @admin.display(description="Contacts", ordering="n_contacts")
    def contact_count(self, case: Case) -> int:
        return getattr(case, "n_contacts", case.contacts.count())

    @admin.display(description="Mail history", ordering="sync_state")
    def state(self, case: Case) -> str:
        return badge(case.sync_state, case.get_sync_state_display())

    @admin.display(description="Synced", ordering="synced_at")
    def synced(self, case: Case) -> str:
        return relative(case.synced_at)

    @admin.display(description="Linked messages")
    def mail(self, case: Case) -> str:
        count = getattr(case, "n_links", None)
        if count is None:
            count = case.links.count()
        url = (
            reverse("admin:mail_mailmessage_changelist") + f"?case_links__case__id__exact={case.pk}"
        )
        return format_html('<a href="{}">{} message(s)</a>', url, count)

    @admin.display(description="History searches")
    def searches(self, case: Case) -> str:
        url = reverse("admin:syncqueue_syncjob_changelist") + f"?q=history%3A{case.pk}%3A"
        jobs = cases.history_jobs(case).count()
        return format_html('<a href="{}">{} search job(s)</a>', url, jobs)

    @admin.action(description="Retry history sync")
    def retry_history(self, request: HttpRequest, queryset: QuerySet[Case]) -> None:
        total = 0
        for case in queryset:
            try:
                total += cases.retry(case, request.user)
            except SyncError as exc:
                self.message_user(request, f"{case}: {exc.message}", messages.ERROR)
        self.message_user(request, f"{total} history search(es) queued again.", messages.SUCCESS)
