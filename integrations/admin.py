"""Admin for connections: health at a glance, the actions staff need, and no secret ever shown.

The list page runs a fixed number of queries however long it is: owner and organization are
joined, and the running job's progress comes from subqueries.
"""

from __future__ import annotations

import json
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.core.exceptions import PermissionDenied
from django.db.models import OuterRef, Q, QuerySet, Subquery
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from pydantic import ValidationError

from integrations.base import Connector
from integrations.config_form import (
    PREFIX,
    config_fields,
    field_errors,
    initial_values,
    is_advanced,
    label_for,
    normalized,
    to_config,
    unknown_keys,
)
from integrations.errors import SyncError
from integrations.models import Connection, UserSwitch
from integrations.probe import probe
from integrations.registry import available, get_connector_class, kind_choices
from syncproject import limits
from syncqueue import control
from syncqueue.admin_display import badge, duration_words, progress_bar, relative
from syncqueue.models import SyncJob

TEST_LIMIT = 5  # connection tests run inside the request; keep them few
RECENT_RUNS = 12  # lines of the connection page's sync history


def _secret_field(name: str, conn: Connection | None) -> forms.CharField:
    stored, unusable = False, False
    if conn is not None and conn.pk and conn.secret:
        try:
            stored = name in conn.get_secrets()
        except SyncError:
            unusable = True
    if unusable:
        help_text = (
            "The stored credentials cannot be used (encryption key missing, or the server "
            "settings changed since they were entered): enter them again."
        )
    elif stored:
        help_text = (
            "A value is stored (encrypted); leave empty to keep it. It must be entered again "
            "when you change where it is sent (host, port, tenant, URLs)."
        )
    else:
        help_text = "Nothing stored yet."
    return forms.CharField(
        label=f"Replace {label_for(name, capitalize=False)}"
        if conn is not None and conn.pk
        else label_for(name),
        required=False,
        strip=False,
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "new-password"}),
        help_text=help_text,
    )


BASE_FIELDS = [
    "name",
    "owner",
    "organization",
    "enabled",
    "disabled_reason",
    "disabled_by_staff",
    "schedule",
    "scheduled",
]


class ConnectionForm(forms.ModelForm):
    """One provider's connection: its own settings as labelled fields (``config_form``) and
    one field per secret it keeps — left empty, the stored value is kept; it is never shown.
    ``connection_form_for(kind)`` makes the form of a kind."""

    connector: type[Connector]

    class Meta:
        model = Connection
        fields = BASE_FIELDS

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.instance.pk:
            self.initial.update(initial_values(self.connector.Config, self.instance.config))
        else:
            self.instance.kind = self.connector.kind  # shown as "Kind" on the add page
            self.initial.setdefault("schedule", self.connector.default_schedule)

    def entered_secrets(self) -> dict[str, Any]:
        return {
            name[len("secret_") :]: value
            for name, value in self.cleaned_data.items()
            if name.startswith("secret_") and value
        }

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if self.errors:
            return data
        config_model = self.connector.Config
        stored = self.instance.config if self.instance.pk else {}
        config = to_config(config_model, data, stored)
        try:
            config = normalized(config_model, config)
        except ValidationError as exc:
            per_field, general = field_errors(exc)
            for field, problems in per_field.items():
                self.add_error(field if field in self.fields else None, problems)
            for problem in general:
                self.add_error(None, problem)
            return data
        self.config = config
        problem = self.instance.account_problem(self.connector.kind, config)
        if problem:
            changed = self.connector.account_changes(self.instance.config, config)
            names = [f"{PREFIX}{name}" for name in changed]
            self.add_error(next((n for n in names if n in self.fields), None), problem)
            return data
        problem = self.instance.destination_problem(
            self.connector.kind, config, self.entered_secrets()
        )
        if problem:
            names = [f"secret_{n}" for n in self.connector.secret_fields]
            self.add_error(next((n for n in names if n in self.fields), None), problem)
        return data

    def _post_clean(self) -> None:
        # the model's own checks (Connection.clean) see the kind and settings being saved
        self.instance.kind = self.connector.kind
        if hasattr(self, "config"):
            self.instance.config = self.config
        super()._post_clean()  # type: ignore[misc]  # private in Django, absent from the stubs

    def _update_errors(self, errors: Any) -> None:
        # the model reports settings problems on "config", which this form shows as fields
        if hasattr(errors, "error_dict") and "config" in errors.error_dict:
            if hasattr(self, "config"):  # not already reported field by field
                self.add_error(None, errors.error_dict.pop("config"))
            else:
                errors.error_dict.pop("config")
            if not errors.error_dict:
                return
        super()._update_errors(errors)  # type: ignore[misc]  # private in Django, absent from the stubs

    def save(self, commit: bool = True) -> Connection:
        conn = super().save(commit=False)
        conn.kind = self.connector.kind
        conn.config = self.config
        secrets = self.entered_secrets()
        self.secrets_replaced = bool(secrets)
        if secrets:
            conn.set_secrets(secrets)
        if "enabled" in self.changed_data:  # staff's on/off binds the owner (see control)
            conn.disabled_by_staff = not conn.enabled
        if not conn.pk and not conn.schedule:
            conn.schedule = self.connector.default_schedule
        if commit:
            conn.save()
        return conn


def connection_form_for(kind: str, conn: Connection | None) -> type[ConnectionForm]:
    connector = get_connector_class(kind)
    fields: dict[str, Any] = {"connector": connector, **config_fields(connector.Config)}
    fields.update({f"secret_{name}": _secret_field(name, conn) for name in connector.secret_fields})
    return type(f"{connector.__name__}Form", (ConnectionForm,), fields)


class HasErrorFilter(admin.SimpleListFilter):
    title = "error"
    parameter_name = "has_error"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("yes", "Has an error"), ("no", "No error")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Connection]) -> Any:
        if self.value() == "yes":
            return queryset.exclude(last_error="")
        if self.value() == "no":
            return queryset.filter(last_error="")
        return queryset


class StaleFilter(admin.SimpleListFilter):
    title = "freshness"
    parameter_name = "stale"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("yes", "Stale (no success in 2x its interval)"), ("no", "Fresh")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Connection]) -> Any:
        now = timezone.now()
        if self.value() == "yes":
            return queryset.filter(enabled=True, stale_after__lt=now)
        if self.value() == "no":
            return queryset.filter(Q(stale_after__gte=now) | Q(stale_after__isnull=True))
        return queryset


class KindFilter(admin.SimpleListFilter):
    """Choices come from the registry, not from the database (no migration per provider)."""

    title = "provider"
    parameter_name = "kind"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return kind_choices()

    def queryset(self, request: HttpRequest, queryset: QuerySet[Connection]) -> Any:
        return queryset.filter(kind=self.value()) if self.value() else queryset


class ReasonForm(forms.Form):
    reason = forms.CharField(
        max_length=300,
        help_text="Shown to the connection's owner, e.g. 'Mailbox migrated to Microsoft 365'.",
    )


@admin.register(Connection)
class ConnectionAdmin(admin.ModelAdmin):
    form = ConnectionForm
    change_form_template = "admin/integrations/connection/change_form.html"
    list_display = [
        "name",
        "kind",
        "belongs_to",
        "status_badge",
        "last_success",
        "schedule_words",
        "next_run",
        "running",
        "fails",
        "short_error",
    ]
    list_filter = [KindFilter, "status", HasErrorFilter, StaleFilter, "enabled"]
    search_fields = [
        "name",
        "owner__username",
        "owner__email",
        "organization__name",
        "config__host",
        "config__username",
        "config__mailbox",
        "config__subdomain",
    ]
    list_select_related = ["owner", "organization"]
    readonly_fields = [
        "status",
        "credentials",
        "last_success_at",
        "last_attempt_at",
        "last_error",
        "consecutive_failures",
        "next_sync_at",
        "push_until",
        "stale_after",
        "schedule_words",
        "data_stats",
        "cursor_summary",
        "recent_runs",
        "skipped_link",
        "jobs_link",
        "created_at",
        "cursor_raw",
    ]
    actions = [
        "sync_now",
        "full_resync",
        "test_connection",
        "start_schedule",
        "stop_schedule",
        "enable",
        "disable",
    ]

    # --- adding and editing: choose the kind, then that provider's own fields ---------------
    def kind_for(self, request: HttpRequest, obj: Connection | None) -> str:
        """The kind being edited: the connection's, or on the add page ``?kind=``."""
        if obj is not None and obj.pk:
            return obj.kind
        kind = request.GET.get("kind", "")
        if kind not in available():
            raise Http404("Choose the kind of connection first.")
        return kind

    def get_form(
        self, request: HttpRequest, obj: Any = None, change: bool = False, **kwargs: Any
    ) -> Any:
        kwargs["form"] = connection_form_for(self.kind_for(request, obj), obj)
        return super().get_form(request, obj, change, **kwargs)

    def get_fieldsets(self, request: HttpRequest, obj: Any = None) -> Any:
        connector = get_connector_class(self.kind_for(request, obj))
        main: list[str] = []
        advanced: list[str] = []
        for name, info in connector.Config.model_fields.items():
            (advanced if is_advanced(name, info) else main).append(f"cfg_{name}")
        secrets = [f"secret_{name}" for name in connector.secret_fields]
        sets: list[Any] = [
            (None, {"fields": ["name", "kind_shown", "owner", "organization"]}),
            (f"{connector.label}: settings", {"fields": main}),
        ]
        if advanced:
            sets.append(("Advanced settings", {"classes": ["collapse"], "fields": advanced}))
        sets += [
            ("Credentials", {"fields": ["credentials", *secrets]}),
            (
                "Schedule and state",
                {"fields": ["schedule", "scheduled", "enabled", "disabled_reason"]},
            ),
        ]
        if obj is not None:
            internal = ("credentials", "cursor_raw", "kind_shown")
            health = [f for f in self.readonly_fields if f not in internal]
            sets.append(("Health and history", {"fields": health}))
            sets.append(("Internals", {"classes": ["collapse"], "fields": ["cursor_raw"]}))
        return sets

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        return [*self.readonly_fields, "kind_shown"]

    @admin.display(description="Kind")
    def kind_shown(self, conn: Connection) -> str:
        return get_connector_class(conn.kind).label if conn.kind in available() else conn.kind

    def add_view(
        self, request: HttpRequest, form_url: str = "", extra_context: Any = None
    ) -> HttpResponse:
        if request.GET.get("kind") not in available():
            if not self.has_add_permission(request):
                raise PermissionDenied
            return self.choose_kind(request)
        kind = request.GET["kind"]
        context = {
            **(extra_context or {}),
            "test_url": reverse("admin:integrations_connection_test_new") + f"?kind={kind}",
            "title": f"Add a connection: {get_connector_class(kind).label}",
        }
        return super().add_view(request, form_url, context)

    def change_view(
        self, request: HttpRequest, object_id: str, form_url: str = "", extra_context: Any = None
    ) -> HttpResponse:
        context = dict(extra_context or {})
        if self.has_change_permission(request):
            context["test_url"] = reverse("admin:integrations_connection_test", args=[object_id])
        return super().change_view(request, object_id, form_url, context)

    def choose_kind(self, request: HttpRequest) -> HttpResponse:
        """Step one of adding a connection (as Django's user admin does it in two steps)."""
        kinds = []
        for kind in sorted(available()):
            connector = get_connector_class(kind)
            about = (connector.__doc__ or "").strip().split("\n\n")[0].replace("\n", " ")
            kinds.append(
                {
                    "kind": kind,
                    "label": connector.label,
                    "about": about,
                    "url": reverse("admin:integrations_connection_add") + f"?kind={kind}",
                }
            )
        return TemplateResponse(
            request,
            "admin/integrations/connection/choose_kind.html",
            {
                **self.admin_site.each_context(request),
                "title": "Add a connection: which kind?",
                "kinds": kinds,
                "opts": self.model._meta,
            },
        )

    def get_urls(self) -> list[Any]:
        view = self.admin_site.admin_view
        return [
            path("add/test/", view(self.test_view), name="integrations_connection_test_new"),
            path(
                "<path:object_id>/test/",
                view(self.test_view),
                name="integrations_connection_test",
            ),
            *super().get_urls(),
        ]

    def test_view(self, request: HttpRequest, object_id: str | None = None) -> HttpResponse:
        """ "Test connection" on the add/change form: what was typed in, tested before saving
        (nothing is saved). Answers JSON to the page's script, a small page without it."""
        if request.method != "POST":
            return HttpResponse(status=405)
        obj = self.get_object(request, object_id) if object_id else None
        if object_id and obj is None:
            raise Http404("No such connection.")
        allowed = (
            self.has_change_permission(request, obj)
            if obj is not None
            else self.has_add_permission(request)
        )
        if not allowed:
            raise PermissionDenied
        kind = self.kind_for(request, obj)
        form = connection_form_for(kind, obj)(request.POST, instance=obj or Connection())
        ok, message = False, ""
        if not form.is_valid():
            problems = [
                f"{form.fields[f].label if f in form.fields else 'Form'}: {' '.join(map(str, e))}"
                for f, e in form.errors.items()
            ]
            message = "Not tested — fix these first: " + "; ".join(problems)
        else:
            candidate = form.save(commit=False)
            limited = limits.hit(request, "connection_test")
            try:
                if limited is not None:
                    raise limits.Busy(limited.message)
                result = probe(candidate)
            except limits.Busy as exc:
                message = exc.message
            except SyncError as exc:
                message = f"Connection test failed ({exc.error_class}): {exc.message}"
            else:
                ok, message = True, f"Connection test passed: {result.message} (not saved yet)"
        if request.headers.get("X-Requested-With") == "fetch":
            return JsonResponse({"ok": ok, "message": message})
        return TemplateResponse(
            request,
            "admin/integrations/connection/test_result.html",
            {
                **self.admin_site.each_context(request),
                "title": "Connection test",
                "ok": ok,
                "message": message,
                "opts": self.model._meta,
            },
        )

    def get_queryset(self, request: HttpRequest) -> QuerySet[Connection]:
        running = SyncJob.objects.filter(connection=OuterRef("pk"), state=SyncJob.State.RUNNING)
        return (
            super()
            .get_queryset(request)
            .annotate(
                running_job=Subquery(running.values("pk")[:1]),
                running_done=Subquery(running.values("progress_done")[:1]),
                running_total=Subquery(running.values("progress_total")[:1]),
            )
        )

    def save_model(self, request: HttpRequest, obj: Connection, form: Any, change: bool) -> None:
        stored = Connection.objects.filter(pk=obj.pk).values_list("config", flat=True).first()
        dropped = unknown_keys(form.connector.Config, stored or {}) if change else []
        super().save_model(request, obj, form, change)
        if dropped:
            self.message_user(
                request,
                f"Settings this provider no longer uses were removed: {', '.join(dropped)}.",
                messages.WARNING,
            )
        if getattr(form, "secrets_replaced", False):
            resumed = control.credentials_replaced(obj, request.user)
            if resumed is not None:
                self.message_user(
                    request, f"New credentials saved; sync queued (job {resumed.pk})."
                )
        job = control.after_save(obj, created=not change, user=request.user)
        if job is not None:
            self.message_user(request, f"Initial sync queued (job {job.pk}).")

    # --- columns -------------------------------------------------------------------------------
    @admin.display(description="Owner")
    def belongs_to(self, conn: Connection) -> str:
        return str(conn.organization or conn.owner or "—")

    @admin.display(description="Status", ordering="status")
    def status_badge(self, conn: Connection) -> str:
        return badge(conn.status, conn.get_status_display())

    @admin.display(description="Last success", ordering="last_success_at")
    def last_success(self, conn: Connection) -> str:
        return relative(conn.last_success_at)

    @admin.display(description="Next run", ordering="next_sync_at")
    def next_run(self, conn: Connection) -> str:
        if not conn.enabled:
            return "off"
        return relative(conn.next_sync_at, empty="not scheduled")

    @admin.display(description="Running")
    def running(self, conn: Connection) -> str:
        # annotated by get_queryset
        job, done, total = (getattr(conn, f"running_{n}") for n in ("job", "done", "total"))
        if job is None:
            return "—"
        url = reverse("admin:syncqueue_syncjob_change", args=[job])
        return format_html('<a href="{}">{}</a>', url, progress_bar(done, total))

    @admin.display(description="Fails", ordering="consecutive_failures")
    def fails(self, conn: Connection) -> int:
        """Failed jobs in a row."""
        return conn.consecutive_failures

    @admin.display(description="Last error")
    def short_error(self, conn: Connection) -> str:
        return conn.last_error[:70] + ("…" if len(conn.last_error) > 70 else "")

    @admin.display(description="Schedule", ordering="schedule")
    def schedule_words(self, conn: Connection) -> str:
        if not conn.scheduled:
            return "stopped (runs only when triggered)"
        try:
            words = conn.parsed_schedule.describe()
        except ValueError:
            return conn.schedule
        if conn.parsed_schedule.is_cron:
            words += f" ({conn.tz.key})"
        return words

    @admin.display(description="Synced data")
    def data_stats(self, conn: Connection) -> str:
        try:
            figures = conn.connector_class.stats(conn)
        except SyncError:
            return "—"
        return "; ".join(f"{name}: {value}" for name, value in figures.items()) or "—"

    @admin.display(description="Credentials")
    def credentials(self, conn: Connection) -> str:
        return "Stored, encrypted (never shown)." if conn.secret else "None stored."

    @admin.display(description="Sync position")
    def cursor_summary(self, conn: Connection) -> str:
        if not conn.cursor:
            return "Not synced yet: the next sync starts from the beginning."
        try:
            lines = conn.connector_class.describe_position(conn.cursor)
        except Exception:  # an unknown kind or an old cursor shape: say so, do not break
            lines = []
        if not lines:
            return "Kept (this provider does not describe it; see Internals)."
        return format_html_join("", "<div>{}</div>", ((line,) for line in lines[:50]))

    @admin.display(description="Sync position as stored")
    def cursor_raw(self, conn: Connection) -> str:
        text = json.dumps(conn.cursor, indent=1)
        return format_html("<pre>{}</pre>", text[:4000] + ("…" if len(text) > 4000 else ""))

    @admin.display(description="Recent syncs")
    def recent_runs(self, conn: Connection) -> str:
        """The last runs, one line each (start, duration, outcome, counts, error class)."""
        jobs = list(SyncJob.objects.filter(connection=conn).order_by("-pk")[:RECENT_RUNS])
        if not jobs:
            return "None yet."
        rows = []
        for job in jobs:
            counts = ", ".join(
                f"{n} {label}"
                for n, label in (
                    (job.created_count, "new"),
                    (job.updated_count, "changed"),
                    (job.deleted_count, "deleted"),
                    (job.skipped_items, "skipped"),
                )
                if n
            )
            rows.append(
                (
                    reverse("admin:syncqueue_syncjob_change", args=[job.pk]),
                    job.pk,
                    job.get_kind_display(),
                    relative(job.started_at or job.created_at),
                    duration_words(job),
                    badge(job.state, job.get_state_display()),
                    counts or "no changes",
                    job.error_class or "",
                )
            )
        body = format_html_join(
            "",
            '<tr><td><a href="{}">#{}</a> {}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>'
            "<td>{}</td></tr>",
            rows,
        )
        return format_html(
            '<table class="sync-timeline"><thead><tr><th>Job</th><th>Started</th><th>Took</th>'
            "<th>Outcome</th><th>Counts</th><th>Error</th></tr></thead><tbody>{}</tbody></table>",
            body,
        )

    @admin.display(description="Skipped items")
    def skipped_link(self, conn: Connection) -> str:
        url = (
            reverse("admin:syncqueue_skippeditem_changelist")
            + f"?connection__id__exact={conn.pk}&state__exact=open"
        )
        if not conn.skipped_items:
            return "None: every item read was stored."
        return format_html(
            '<a href="{}">{} item(s) could not be stored</a> (tried again at every sync)',
            url,
            conn.skipped_items,
        )

    @admin.display(description="Jobs")
    def jobs_link(self, conn: Connection) -> str:
        url = reverse("admin:syncqueue_syncjob_changelist") + f"?connection__id__exact={conn.pk}"
        return format_html('<a href="{}">All jobs of this connection</a>', url)

    # --- actions -------------------------------------------------------------------------------
    @admin.action(description="Sync now", permissions=["change"])
    def sync_now(self, request: HttpRequest, queryset: QuerySet[Connection]) -> None:
        queued = 0
        for conn in queryset:
            try:
                job = control.sync_now(conn, request.user)
            except control.ControlError as exc:
                self.message_user(request, f"{conn.name}: {exc}", messages.WARNING)
                continue
            queued += 1
            self.log_change(request, conn, f"Sync now: job {job.pk}.")
        if queued:
            self.message_user(request, f"Queued a sync for {queued} connection(s).")

    @admin.action(description="Start schedule", permissions=["change"])
    def start_schedule(self, request: HttpRequest, queryset: QuerySet[Connection]) -> None:
        for conn in queryset:
            control.schedule(conn, "start", user=request.user)
            self.log_change(request, conn, "Schedule started.")
        self.message_user(request, f"Schedule started for {queryset.count()} connection(s).")

    @admin.action(description="Stop schedule (manual syncs only)", permissions=["change"])
    def stop_schedule(self, request: HttpRequest, queryset: QuerySet[Connection]) -> None:
        for conn in queryset:
            control.schedule(conn, "stop", user=request.user)
            self.log_change(request, conn, "Schedule stopped.")
        self.message_user(request, f"Schedule stopped for {queryset.count()} connection(s).")

    @admin.action(description="Full resync (forget the sync position)", permissions=["change"])
    def full_resync(self, request: HttpRequest, queryset: QuerySet[Connection]) -> Any:
        if request.POST.get("confirm") != "yes":
            return TemplateResponse(
                request,
                "admin/integrations/connection/confirm_resync.html",
                {
                    **self.admin_site.each_context(request),
                    "title": "Full resync: are you sure?",
                    "connections": queryset,
                    "action": "full_resync",
                    "opts": self.model._meta,
                    "selected": request.POST.getlist(helpers.ACTION_CHECKBOX_NAME),
                },
            )
        for conn in queryset:
            try:
                job = control.sync_now(conn, request.user, full=True)
            except control.ControlError as exc:
                self.message_user(request, f"{conn.name}: {exc}", messages.WARNING)
                continue
            self.log_change(request, conn, f"Full resync: job {job.pk}.")
            self.message_user(request, f"{conn.name}: full resync queued (job {job.pk}).")
        return None

    @admin.action(description="Test connection", permissions=["change"])
    def test_connection(self, request: HttpRequest, queryset: QuerySet[Connection]) -> None:
        if queryset.count() > TEST_LIMIT:
            self.message_user(
                request,
                f"Select at most {TEST_LIMIT} connections to test at once.",
                messages.WARNING,
            )
            return
        for conn in queryset.select_related("organization", "owner"):
            limited = limits.hit(request, "connection_test")
            if limited is not None:
                self.message_user(request, f"{conn.name}: {limited.message}", messages.WARNING)
                break
            try:
                result = probe(conn)
            except SyncError as exc:
                self.message_user(
                    request, f"{conn.name}: {exc.error_class}: {exc.message}", messages.ERROR
                )
                self.log_change(request, conn, f"Test connection failed: {exc.error_class}.")
            else:
                self.message_user(request, f"{conn.name}: {result.message}", messages.SUCCESS)
                self.log_change(request, conn, "Test connection succeeded.")

    @admin.action(description="Enable", permissions=["change"])
    def enable(self, request: HttpRequest, queryset: QuerySet[Connection]) -> None:
        for conn in queryset:
            control.enable(conn)
            self.log_change(request, conn, "Enabled.")
        self.message_user(request, f"Enabled {queryset.count()} connection(s).")

    @admin.action(description="Disable (with a reason)", permissions=["change"])
    def disable(self, request: HttpRequest, queryset: QuerySet[Connection]) -> HttpResponse | None:
        form = ReasonForm(request.POST if "reason" in request.POST else None)
        if not form.is_valid():
            return TemplateResponse(
                request,
                "admin/integrations/connection/disable.html",
                {
                    **self.admin_site.each_context(request),
                    "title": "Disable connections",
                    "connections": queryset,
                    "form": form,
                    "action": "disable",
                    "opts": self.model._meta,
                    "selected": request.POST.getlist(helpers.ACTION_CHECKBOX_NAME),
                },
            )
        reason = form.cleaned_data["reason"]
        for conn in queryset:
            cancelled = control.disable(conn, reason)
            self.log_change(
                request, conn, f"Disabled: {reason} ({cancelled} waiting job(s) cancelled)."
            )
        self.message_user(request, f"Disabled {queryset.count()} connection(s).")
        return None


@admin.register(UserSwitch)
class UserSwitchAdmin(admin.ModelAdmin):
    """People's personal switches (e.g. "Add tasks assigned to me to my Zimbra task list").
    A value staff enter here counts as confirmed: it is how a person gets a Zimbra address
    other than their email without a confirmation mail."""

    list_display = ["user", "key", "enabled", "value", "value_confirmed", "updated_at"]
    list_filter = ["key", "enabled", "value_confirmed"]
    search_fields = ["user__username", "user__email", "value"]
    list_select_related = ["user"]
    autocomplete_fields = ["user"]
    readonly_fields = ["value_confirmed", "updated_at"]

    def save_model(self, request: HttpRequest, obj: UserSwitch, form: Any, change: bool) -> None:
        obj.value_confirmed = bool(obj.value)  # staff set it: they vouch for the address
        super().save_model(request, obj, form, change)
