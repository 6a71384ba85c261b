"""The users' settings page: their own connections, personal switches, connect a mailbox.

Every action is a plain form POST that redirects back (it all works without JavaScript);
the page's script only adds live progress and answers "Sync now" in place.
"""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.db import transaction
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.urls import reverse
from django.utils.module_loading import import_string
from django.views.decorators.http import require_POST

from integrations.base import PersonalSwitch
from integrations.errors import SyncError
from integrations.models import Connection, UserSwitch
from integrations.registry import available, get_connector_class
from portal.status import can_edit, current_job, job_summary, notice
from syncqueue import control
from syncqueue.heartbeat import worker_status

SETTINGS = "portal:settings"


def home(request: HttpRequest) -> HttpResponse:
    if request.user.is_authenticated and request.user.is_staff:
        return HttpResponseRedirect(reverse("admin:index"))
    return HttpResponseRedirect(reverse(SETTINGS))


def _own(request: HttpRequest, connection_id: int) -> Connection:
    conn = Connection.objects.filter(pk=connection_id, owner=request.user).first()
    if conn is None:
        raise Http404("No such connection.")
    return conn


def personal_switches() -> list[PersonalSwitch]:
    found: dict[str, PersonalSwitch] = {}
    for kind in available():
        for switch in get_connector_class(kind).personal_switches:
            found.setdefault(switch.key, switch)
    return list(found.values())


def addable_kinds() -> list[tuple[str, str]]:
    return [
        (kind, get_connector_class(kind).label)
        for kind in sorted(available())
        if get_connector_class(kind).settings_form
    ]


@login_required
def settings_page(request: HttpRequest) -> HttpResponse:
    workers = worker_status()
    rows = []
    for conn in Connection.objects.filter(owner=request.user).select_related("organization"):
        job = current_job(conn)
        rows.append(
            {
                "conn": conn,
                "label": conn.connector_class.label,
                "notice": notice(conn, workers),
                "job": job_summary(job) if job else None,
                "editable": can_edit(conn),
            }
        )
    stored = {s.key: s for s in UserSwitch.objects.filter(user=request.user)}
    switches = [
        {
            "switch": switch,
            "enabled": stored[switch.key].enabled if switch.key in stored else False,
            "value": stored[switch.key].value if switch.key in stored else "",
        }
        for switch in personal_switches()
    ]
    return render(
        request,
        "portal/settings.html",
        {
            "rows": rows,
            "switches": switches,
            "kinds": addable_kinds(),
            "workers": workers,
        },
    )


@login_required
@require_POST
def set_enabled(request: HttpRequest, connection_id: int) -> HttpResponse:
    conn = _own(request, connection_id)
    if request.POST.get("enabled") == "on":
        control.enable(conn)
        messages.success(request, f"{conn.name} is on: it syncs on its schedule again.")
    else:
        control.disable(conn, "Turned off by you.")
        messages.info(request, f"{conn.name} is off: nothing syncs until you turn it on.")
    return HttpResponseRedirect(reverse(SETTINGS) + f"#connection-{conn.pk}")


@login_required
@require_POST
def sync_now(request: HttpRequest, connection_id: int) -> HttpResponse:
    conn = _own(request, connection_id)
    try:
        job = control.sync_now(conn, request.user)
    except control.ControlError as exc:
        messages.error(request, str(exc))
    else:
        messages.success(
            request, f"Sync started for {conn.name} (job {job.pk}); this page shows its progress."
        )
    return HttpResponseRedirect(reverse(SETTINGS) + f"#connection-{conn.pk}")


@login_required
@require_POST
def save_switches(request: HttpRequest) -> HttpResponse:
    with transaction.atomic():
        for switch in personal_switches():
            UserSwitch.objects.update_or_create(
                user=request.user,
                key=switch.key,
                defaults={
                    "enabled": request.POST.get(f"switch-{switch.key}") == "on",
                    "value": request.POST.get(f"value-{switch.key}", "").strip()[:320],
                },
            )
    messages.success(request, "Your sync preferences are saved.")
    return HttpResponseRedirect(reverse(SETTINGS) + "#personal")


def _form_class(kind: str) -> Any:
    try:
        path = get_connector_class(kind).settings_form
    except SyncError:
        raise Http404("Unknown kind.") from None
    if not path:
        raise Http404("This kind of account is set up by an administrator.")
    return import_string(path)


@login_required
def connect(request: HttpRequest, kind: str) -> HttpResponse:
    return _edit(request, _form_class(kind), None)


@login_required
def edit(request: HttpRequest, connection_id: int) -> HttpResponse:
    conn = _own(request, connection_id)
    return _edit(request, _form_class(conn.kind), conn)


def _edit(request: HttpRequest, form_class: Any, conn: Connection | None) -> HttpResponse:
    """Test the connection with what was typed in, and save only when the test passes."""
    form = form_class(request.POST or None, instance=conn)
    result = None
    if request.method == "POST" and form.is_valid():
        candidate = form.build(owner=request.user)
        try:
            result = candidate.build_connector().check()
        except SyncError as exc:
            form.add_error(None, f"Connection test failed: {exc.message}")
        else:
            created = candidate.pk is None
            candidate.save()
            control.credentials_replaced(candidate)
            control.after_save(candidate, created=created, user=request.user)
            note = " The first sync has started." if created else ""
            messages.success(request, f"Connection test passed: {result.message}{note}")
            return HttpResponseRedirect(reverse(SETTINGS) + f"#connection-{candidate.pk}")
    label = get_connector_class(form_class.kind).label
    return render(
        request,
        "portal/connection_form.html",
        {
            "form": form,
            "conn": conn,
            "label": label,
            "title": f"Edit {conn.name}" if conn else f"Connect a new {label}",
        },
    )
