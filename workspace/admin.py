from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import Count, QuerySet
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html

from integrations.errors import SyncError
from syncqueue.admin_display import badge, relative
from workspace import assignments, cases
from workspace.models import Assignment, Case, CaseContact, Organization, Task


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
    in the owner's mailboxes that can search history (and the other mailboxes named here); the
    state follows the searches' outcomes. "Retry history sync" queues failed searches again."""

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

    def get_fieldsets(self, request: HttpRequest, obj: Case | None = None) -> Any:
        """ "Why syncing failed." is shown only when a search did fail."""
        fieldsets = super().get_fieldsets(request, obj)
        if obj is not None and obj.sync_error:
            return fieldsets
        return [
            (name, {**options, "fields": [f for f in options["fields"] if f != "sync_error"]})
            for name, options in fieldsets
        ]

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

    @admin.action(description="Retry history sync", permissions=["change"])
    def retry_history(self, request: HttpRequest, queryset: QuerySet[Case]) -> None:
        total = 0
        for case in queryset:
            try:
                queued = cases.retry(case, request.user)
            except SyncError as exc:
                self.message_user(request, f"{case}: {exc.message}", messages.ERROR)
                continue
            total += queued
            if queued:
                self.log_change(request, case, f"Retry history sync: {queued} search(es).")
        self.message_user(request, f"{total} history search(es) queued again.", messages.SUCCESS)


class AssignmentInline(admin.TabularInline):
    model = Assignment
    fields = ["user", "active", "copies"]
    readonly_fields = ["copies"]
    extra = 1
    autocomplete_fields = ["user"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Assignment]:
        return super().get_queryset(request).filter(active=True)

    @admin.display(description="Copies")
    def copies(self, assignment: Assignment) -> str:
        """What connected task lists say about this assignee's copy."""
        if assignment.pk is None:
            return "—"
        status = assignments.status_of([assignment]).get(assignment.pk)
        if not status:
            return "—"
        return f"{status.get('state', '')}{': ' + status['error'] if status.get('error') else ''}"


@admin.register(Task)
class TaskAdmin(admin.ModelAdmin):
    """Tasks and who they are assigned to. Connected task lists (each assignee's, when they
    switched it on) get each change when it is saved; removing an assignee or deleting the
    task removes it there."""

    list_display = ["title", "status", "priority", "due_date", "percent_complete", "updated_at"]
    list_filter = ["status", "priority"]
    search_fields = ["title"]
    inlines = [AssignmentInline]

    def save_formset(self, request: HttpRequest, form: Any, formset: Any, change: bool) -> None:
        """New assignees go through ``assignments.assign`` (announced on commit); unticking
        "active" or deleting a row unassigns."""
        if formset.model is not Assignment:
            return super().save_formset(request, form, formset, change)
        task = form.instance
        for inline in formset.forms:
            if not inline.has_changed() or not inline.cleaned_data:
                continue
            row = inline.instance
            user = inline.cleaned_data.get("user")
            gone = inline.cleaned_data.get("DELETE") or not inline.cleaned_data.get("active", True)
            if row.pk is None and user is not None and not gone:
                assignments.assign(task, user)
            elif row.pk is not None and gone:
                assignments.unassign(task, row.user)
        return None
