"""Admin for jobs, logs and heartbeats. Jobs and logs are history: nobody edits them; staff
with change permission may retry or cancel jobs, and every such action is in the admin log."""

from __future__ import annotations

from datetime import timedelta
from functools import cached_property
from typing import Any, cast

from django.conf import settings
from django.contrib import admin, messages
from django.core.paginator import Paginator
from django.db.models import QuerySet
from django.http import HttpRequest
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join

from syncqueue import control, engine
from syncqueue.admin_display import badge, duration_words, progress_bar, relative, shown
from syncqueue.models import SkippedItem, SyncJob, SyncLog, WorkerHeartbeat

LOG_COUNT_CAP = 10_000


class CappedCountPaginator(Paginator):
    """Counts at most LOG_COUNT_CAP rows, so a page of a huge log table stays cheap."""

    @cached_property
    def count(self) -> int:
        rows = cast(QuerySet[Any], self.object_list)
        return rows.order_by()[: LOG_COUNT_CAP + 1].count()


class ReadOnlyAdmin(admin.ModelAdmin):
    """History: viewable, never added, edited or deleted through the admin."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        return [f.name for f in self.model._meta.fields] + list(self.readonly_fields)

    def changeform_view(
        self,
        request: HttpRequest,
        object_id: str | None = None,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> Any:
        hide = {
            "show_save": False,
            "show_save_and_continue": False,
            "show_save_and_add_another": False,
            "show_delete": False,
        }
        return super().changeform_view(
            request, object_id, form_url, {**hide, **(extra_context or {})}
        )


class SyncLogInline(admin.TabularInline):
    model = SyncLog
    fields = readonly_fields = ("created_at", "level", "message", "data")
    extra = 0
    max_num = 0
    can_delete = False
    ordering = ["id"]
    verbose_name_plural = "Log"

    def get_queryset(self, request: HttpRequest) -> QuerySet[SyncLog]:
        return super().get_queryset(request).order_by("id")


@admin.register(SyncJob)
class SyncJobAdmin(ReadOnlyAdmin):
    list_display = [
        "id",
        "connection_link",
        "kind",
        "state_badge",
        "priority",
        "attempts_shown",
        "run_after_shown",
        "progress",
        "counts",
        "duration_shown",
        "error_class",
        "short_error",
    ]
    list_filter = ["state", "kind", "error_class", "connection__kind"]
    search_fields = ["=id", "=connection__id", "connection__name", "error_message", "dedupe_key"]
    list_select_related = ["connection"]
    inlines = [SyncLogInline]
    actions = ["retry_jobs", "cancel_jobs"]
    show_full_result_count = False
    fieldsets = [
        (
            None,
            {
                "fields": [
                    "connection_link",
                    "kind",
                    "state_badge",
                    "priority",
                    "attempts_shown",
                    "run_after",
                    "progress",
                    "position",
                    "counts",
                    "duration_shown",
                    "requested_by",
                ]
            },
        ),
        ("Problem", {"fields": ["error_class", "error_message", "error_detail"]}),
        (
            "Internals",
            {
                "classes": ["collapse"],
                "fields": [
                    "worker_id",
                    "leased_until",
                    "slices",
                    "cancel_requested",
                    "payload",
                    "checkpoint",
                    "created_at",
                    "started_at",
                    "finished_at",
                ],
            },
        ),
    ]
    readonly_fields = [
        "connection_link",
        "state_badge",
        "attempts_shown",
        "progress",
        "counts",
        "duration_shown",
    ]

    @admin.display(description="Connection", ordering="connection__name")
    def connection_link(self, job: SyncJob) -> str:
        url = reverse("admin:integrations_connection_change", args=[job.connection_id])
        return format_html('<a href="{}">{}</a>', url, job.connection.name)

    @admin.display(description="State", ordering="state")
    def state_badge(self, job: SyncJob) -> str:
        label = job.get_state_display()
        if job.cancel_requested and job.state == SyncJob.State.RUNNING:
            label += " (stopping)"
        return badge(job.state, label)

    @admin.display(description="Attempts")
    def attempts_shown(self, job: SyncJob) -> str:
        return f"{job.attempts} / {job.max_attempts}"

    @admin.display(description="Run after", ordering="run_after")
    def run_after_shown(self, job: SyncJob) -> str:
        return relative(job.run_after) if job.state in SyncJob.WAITING else "—"

    @admin.display(description="Progress")
    def progress(self, job: SyncJob) -> str:
        return progress_bar(job.progress_done, job.progress_total)

    @admin.display(description="Created / updated / deleted / unchanged")
    def counts(self, job: SyncJob) -> str:
        figures = (job.created_count, job.updated_count, job.deleted_count, job.unchanged_count)
        text = " / ".join(str(n) for n in figures)
        if job.skipped_items:
            text += f"; {job.skipped_items} could not be stored (see Skipped items)"
        return text

    @admin.display(description="Duration")
    def duration_shown(self, job: SyncJob) -> str:
        return duration_words(job)

    @admin.display(description="Error")
    def short_error(self, job: SyncJob) -> str:
        return (job.error_message[:80] + "…") if len(job.error_message) > 80 else job.error_message

    @admin.action(description="Retry (queue again from the checkpoint)", permissions=["change"])
    def retry_jobs(self, request: HttpRequest, queryset: QuerySet[SyncJob]) -> None:
        done = 0
        for job in queryset.select_related("connection"):
            try:
                retried = control.retry_job(job)
            except engine.ConnectionDisabled as exc:
                self.message_user(request, f"Job {job.pk}: {exc.message}", messages.WARNING)
                continue
            except control.NeedsCredentials as exc:
                self.message_user(request, f"Job {job.pk}: {exc}", messages.WARNING)
                continue
            if retried:
                done += 1
                self.log_change(request, job, "Retried: queued again from its checkpoint.")
        self.message_user(
            request, f"Queued {done} job(s) again. Only failed or cancelled jobs can be retried."
        )

    @admin.action(
        description="Cancel (a running job stops at its next batch)", permissions=["change"]
    )
    def cancel_jobs(self, request: HttpRequest, queryset: QuerySet[SyncJob]) -> None:
        outcome = {"cancelled": 0, "stopping": 0, "finished": 0}
        for job in queryset:
            result = control.cancel_job(job)
            outcome[result] += 1
            if result != "finished":
                self.log_change(request, job, f"Cancel requested: {result}.")
        self.message_user(
            request,
            f"Cancelled {outcome['cancelled']} waiting job(s); {outcome['stopping']} running "
            f"job(s) will stop at their next batch; {outcome['finished']} had already finished.",
        )


@admin.register(SkippedItem)
class SkippedItemAdmin(ReadOnlyAdmin):
    """Remote items a sync could not store while the rest went on (a poison message, a ticket of
    an unexpected shape). Every sync of the connection tries the open ones again; "Retry these
    items" queues that sync now — after the cause (a bug, a full disk) was fixed."""

    list_display = [
        "label_shown",
        "connection_link",
        "state",
        "error_class",
        "short_message",
        "attempts",
        "first_seen",
        "last_tried",
    ]
    list_filter = ["state", "error_class", "connection__kind"]
    search_fields = ["=connection__id", "connection__name", "label", "key", "message"]
    list_select_related = ["connection"]
    actions = ["retry_items"]
    fields = [
        "connection_link",
        "label_shown",
        "key",
        "state",
        "error_class",
        "message",
        "detail",
        "attempts",
        "first_seen_at",
        "last_tried_at",
        "resolved_at",
        "job",
    ]
    readonly_fields = ["connection_link", "label_shown"]

    @admin.display(description="Item", ordering="label")
    def label_shown(self, item: SkippedItem) -> str:
        return shown(item.label)

    @admin.display(description="Connection", ordering="connection__name")
    def connection_link(self, item: SkippedItem) -> str:
        url = reverse("admin:integrations_connection_change", args=[item.connection_id])
        return format_html('<a href="{}">{}</a>', url, shown(item.connection.name))

    @admin.display(description="Error")
    def short_message(self, item: SkippedItem) -> str:
        return shown(item.message[:100])

    @admin.display(description="First seen", ordering="first_seen_at")
    def first_seen(self, item: SkippedItem) -> str:
        return relative(item.first_seen_at)

    @admin.display(description="Last tried", ordering="last_tried_at")
    def last_tried(self, item: SkippedItem) -> str:
        return relative(item.last_tried_at)

    def has_retry_permission(self, request: HttpRequest) -> bool:
        """Retrying queues a sync of the items' connections: the right to change them."""
        return request.user.has_perm("integrations.change_connection")

    @admin.action(
        description="Retry these items (queue their connections' sync now)", permissions=["retry"]
    )
    def retry_items(self, request: HttpRequest, queryset: QuerySet[SkippedItem]) -> None:
        items = queryset.filter(state=SkippedItem.State.OPEN).select_related("connection")
        # the oldest tries come first in the next sync's bounded retry list
        items.update(last_tried_at=timezone.now() - timedelta(days=3650))
        queued = 0
        for connection in {item.connection for item in items}:
            try:
                job = control.sync_now(connection, request.user)
            except control.ControlError as exc:
                self.message_user(request, f"{connection.name}: {exc}", messages.WARNING)
                continue
            queued += 1
            self.log_change(request, connection, f"Retry of skipped items: job {job.pk}.")
        self.message_user(
            request,
            f"Queued a sync for {queued} connection(s); it reads their skipped items first.",
        )


@admin.register(SyncLog)
class SyncLogAdmin(ReadOnlyAdmin):
    list_display = ["created_at", "level", "connection", "job_link", "message"]
    list_filter = ["level", "created_at", "connection__kind"]
    search_fields = ["=job__id", "=connection__id", "message"]
    list_select_related = ["connection"]
    paginator = CappedCountPaginator
    show_full_result_count = False

    @admin.display(description="Job")
    def job_link(self, log: SyncLog) -> str:
        url = reverse("admin:syncqueue_syncjob_change", args=[log.job_id])
        return format_html('<a href="{}">#{}</a>', url, log.job_id)


@admin.register(WorkerHeartbeat)
class WorkerHeartbeatAdmin(ReadOnlyAdmin):
    """Each cluster (and the dispatcher) as its last heartbeat says: alive, stopped cleanly or
    gone, and which syncs its workers run now. Rows of processes gone for a day are pruned by
    the dispatcher."""

    list_display = ["name", "alive", "seen", "running_now"]
    ordering = ["-seen_at"]

    @admin.display(description="State")
    def alive(self, beat: WorkerHeartbeat) -> str:
        if (beat.info or {}).get("stopped"):
            return badge("stopped", "stopped cleanly")
        age = (timezone.now() - beat.seen_at).total_seconds()
        fresh = age <= settings.SYNC_HEARTBEAT_STALE_SECONDS
        if beat.name.startswith("worker:"):
            # a worker process beats when it runs a ticket: quiet means idle, not dead (its
            # cluster's row says whether the cluster lives)
            return badge("ok", "working") if fresh else badge("stopped", "idle")
        return badge("ok", "alive") if fresh else badge("failed", "gone")

    @admin.display(description="Seen")
    def seen(self, beat: WorkerHeartbeat) -> str:
        return relative(beat.seen_at)

    @admin.display(description="Running now")
    def running_now(self, beat: WorkerHeartbeat) -> str:
        ids = (beat.info or {}).get("worker_ids") or []
        jobs = SyncJob.objects.filter(state=SyncJob.State.RUNNING, worker_id__in=ids)
        links = [
            format_html(
                '<a href="{}">{}</a>',
                reverse("admin:syncqueue_syncjob_change", args=[job.pk]),
                f"{job.connection.name} (job {job.pk})",
            )
            for job in jobs.select_related("connection")
        ]
        return format_html_join(", ", "{}", ((link,) for link in links)) if links else "—"


# --- django-q2's own admin: read-only except for superusers ------------------------------------
class SuperuserChangesOnly(admin.ModelAdmin):
    """django-q2's pages stay viewable for staff with view permission, but only superusers add,
    change, delete or resubmit: a schedule's free-text ``func`` (and a resubmitted task) runs
    whatever code it names, so ``add_schedule`` alone must not grant that."""

    def has_add_permission(self, request: HttpRequest, *args: Any) -> bool:
        return bool(request.user.is_superuser) and super().has_add_permission(request, *args)

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return bool(request.user.is_superuser) and super().has_change_permission(request, obj)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return bool(request.user.is_superuser) and super().has_delete_permission(request, obj)

    def get_actions(self, request: HttpRequest) -> dict[str, Any]:
        return super().get_actions(request) if request.user.is_superuser else {}


def _restrict_django_q_admin() -> None:
    import django_q.admin  # noqa: F401 - registers its model admins first (app order aside)
    from django_q.models import Failure, OrmQ, Schedule, Success

    for model in (Schedule, Success, Failure, OrmQ):
        current = admin.site._registry.get(model)
        if current is None:
            continue
        admin.site.unregister(model)
        restricted = type(type(current).__name__, (SuperuserChangesOnly, type(current)), {})
        admin.site.register(model, restricted)


_restrict_django_q_admin()
