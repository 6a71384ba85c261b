from __future__ import annotations

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from integrations.zimbra import outbound
from integrations.zimbra.models import TaskCopy


@admin.register(TaskCopy)
class TaskCopyAdmin(admin.ModelAdmin):
    """Each assignee's copy of a task in Zimbra: its state, ids and last error."""

    list_display = [
        "assignment",
        "assignee",
        "active",
        "state",
        "account",
        "error",
        "pushed_at",
    ]
    list_filter = ["state", "assignment__active"]
    search_fields = ["assignment__task__title", "assignment__user__username", "account", "uid"]
    list_select_related = ["assignment__task", "assignment__user"]
    readonly_fields = [
        "assignment",
        "uid",
        "account",
        "cal_item_id",
        "inv_id",
        "ms",
        "rev",
        "pushed_hash",
        "pushed_status",
        "pushed_percent",
        "state",
        "error",
        "pushed_at",
    ]
    actions = ["push_again"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    @admin.display(description="Assignee", ordering="assignment__user")
    def assignee(self, copy: TaskCopy) -> object:
        return copy.user

    @admin.display(description="Active", boolean=True, ordering="assignment__active")
    def active(self, copy: TaskCopy) -> bool:
        return copy.active

    @admin.action(description="Push to Zimbra again", permissions=["change"])
    def push_again(self, request: HttpRequest, queryset: QuerySet[TaskCopy]) -> None:
        queued = 0
        for copy in queryset.select_related("assignment__user"):
            TaskCopy.objects.filter(pk=copy.pk).update(pushed_hash="", state="pending")
            copy.pushed_hash = ""
            job = outbound.queue_push(copy, request.user)
            if job is not None:
                queued += 1
                self.log_change(request, copy, f"Push to Zimbra again: job {job.pk}.")
        self.message_user(request, f"{queued} push(es) queued.", messages.SUCCESS)
