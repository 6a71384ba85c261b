"""The users' settings page: their own connections, personal switches, connect a mailbox.

Every action is a plain form POST that redirects back (it all works without JavaScript);
the page's script only adds live progress and answers "Sync now" in place.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core import signing
from django.core.exceptions import ValidationError
from django.core.mail import send_mail
from django.core.validators import validate_email
from django.db import transaction
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.urls import reverse
from django.utils.module_loading import import_string
from django.views.decorators.http import require_POST

from integrations.base import PersonalSwitch
from integrations.errors import SyncError
from integrations.models import Connection, UserSwitch
from integrations.probe import probe
from integrations.registry import available, get_connector_class
from portal.status import current_job, job_summary, notice
from syncproject import limits
from syncproject.requests import SignedInRequest
from syncqueue import control
from syncqueue.heartbeat import worker_status

SETTINGS = "portal:settings"


def home(request: HttpRequest) -> HttpResponse:
    if request.user.is_authenticated and request.user.is_staff:
        return HttpResponseRedirect(reverse("admin:index"))
    return HttpResponseRedirect(reverse(SETTINGS))


def _own(request: SignedInRequest, connection_id: int) -> Connection:
    conn = Connection.objects.filter(pk=connection_id, owner=request.user).first()
    if conn is None:
        raise Http404("No such connection.")
    return conn


def personal_switches(user: Any) -> list[PersonalSwitch]:
    """The switches of providers that serve this person (e.g. Zimbra's only where a Zimbra
    connection exists for them)."""
    found: dict[str, PersonalSwitch] = {}
    for kind in available():
        connector = get_connector_class(kind)
        if connector.personal_switches and connector.serves(user):
            for switch in connector.personal_switches:
                found.setdefault(switch.key, switch)
    return list(found.values())


def addable_kinds() -> list[tuple[str, str]]:
    return [
        (kind, get_connector_class(kind).label)
        for kind in sorted(available())
        if get_connector_class(kind).settings_form
    ]


def _shown_value(switch: PersonalSwitch, row: UserSwitch | None) -> str:
    """The value in effect (an address only once confirmed; else the person's email applies)."""
    if row is None or (switch.value_is_confirmed_address and not row.value_confirmed):
        return ""
    return row.value


@login_required
def settings_page(request: SignedInRequest) -> HttpResponse:
    workers = worker_status()
    rows = []
    for conn in Connection.objects.filter(owner=request.user).select_related("organization"):
        job = current_job(conn)
        rows.append(
            {
                "conn": conn,
                "label": conn.connector_class.label,
                "notice": notice(conn, workers, job),
                "job": job_summary(job) if job else None,
                "editable": conn.owner_edits_settings,
            }
        )
    stored = {s.key: s for s in UserSwitch.objects.filter(user=request.user)}
    switches = [
        {
            "switch": switch,
            "enabled": stored[switch.key].enabled if switch.key in stored else False,
            "value": _shown_value(switch, stored.get(switch.key)),
        }
        for switch in personal_switches(request.user)
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
def set_enabled(request: SignedInRequest, connection_id: int) -> HttpResponse:
    conn = _own(request, connection_id)
    try:
        if request.POST.get("enabled") == "on":
            control.enable(conn, by_staff=False)
            messages.success(request, f"{conn.name} is on: it syncs on its schedule again.")
        else:
            control.disable(conn, "Turned off by you.", by_staff=False)
            messages.info(request, f"{conn.name} is off: nothing syncs until you turn it on.")
    except control.ControlError as exc:
        messages.error(request, str(exc))
    return HttpResponseRedirect(reverse(SETTINGS) + f"#connection-{conn.pk}")


@login_required
@require_POST
def sync_now(request: SignedInRequest, connection_id: int) -> HttpResponse:
    conn = _own(request, connection_id)
    limited = limits.hit(request, "sync_now")
    try:
        if limited is not None:
            raise control.ControlError(limited.message)
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
def save_switches(request: SignedInRequest) -> HttpResponse:
    """Switches are saved as ticked. A value that names an address (whose mailbox a switch
    writes to) is never taken as typed: a confirmation link is mailed to that address, and the
    value changes only when its owner opens the link signed in as this person."""
    to_confirm: list[tuple[PersonalSwitch, str]] = []
    with transaction.atomic():
        for switch in personal_switches(request.user):
            row = UserSwitch.objects.filter(user=request.user, key=switch.key).first()
            row = row or UserSwitch(user=request.user, key=switch.key)
            row.enabled = request.POST.get(f"switch-{switch.key}") == "on"
            typed = request.POST.get(f"value-{switch.key}", "").strip()[:320]
            if not switch.value_label:
                row.value, row.value_confirmed = "", False
            elif not switch.value_is_confirmed_address:
                row.value = typed
            elif not typed or typed.lower() == (request.user.email or "").lower():
                row.value, row.value_confirmed = "", False  # back to their own email
            elif not (row.value_confirmed and typed.lower() == row.value.lower()):
                to_confirm.append((switch, typed))
            row.save()
    messages.success(request, "Your sync preferences are saved.")
    for switch, address in to_confirm:
        ask_to_confirm(request, switch, address)
    return HttpResponseRedirect(reverse(SETTINGS) + "#personal")


CONFIRM_SALT = "syncproject.switch-address"
CONFIRM_MAX_AGE = 2 * 24 * 3600


def ask_to_confirm(request: SignedInRequest, switch: PersonalSwitch, address: str) -> None:
    """Mail a confirmation link to ``address``; the page says what happens next."""
    try:
        validate_email(address)
    except ValidationError:
        messages.error(request, f"“{address}” is not an email address; nothing was changed.")
        return
    limited = limits.hit(request, "address_confirmation")
    if limited is not None:
        messages.error(request, limited.message)
        return
    token = signing.dumps(
        {"u": request.user.pk, "k": switch.key, "v": address}, salt=CONFIRM_SALT, compress=True
    )
    link = settings.SITE_URL.rstrip("/") + reverse("portal:confirm_address", args=[token])
    send_mail(
        f"Confirm {address} for “{switch.label}”",
        f"The syncproject user “{request.user.get_username()}” asked to use {address} for "
        f"“{switch.label}”.\n\nIf that is you, open this link while signed in as "
        f"“{request.user.get_username()}” within two days:\n\n{link}\n\nIf it is not you, "
        "ignore this mail: nothing changes without the link.",
        settings.DEFAULT_FROM_EMAIL,
        [address],
        fail_silently=False,
    )
    messages.info(
        request,
        f"We sent a confirmation link to {address}. Until you open it, your own email address "
        "is used.",
    )


@login_required
def confirm_address(request: SignedInRequest, token: str) -> HttpResponse:
    """The link from the confirmation mail: GET shows what will change, POST changes it. Only
    the person who asked (signed in) can confirm; a mail scanner opening the link changes
    nothing."""
    try:
        claim = signing.loads(token, salt=CONFIRM_SALT, max_age=CONFIRM_MAX_AGE)
    except signing.BadSignature:
        raise Http404("This confirmation link is not valid (or more than two days old).") from None
    switch = next((s for s in personal_switches(request.user) if s.key == claim.get("k")), None)
    if switch is None or claim.get("u") != request.user.pk:
        raise Http404("This confirmation link is not for the account you are signed in with.")
    address = str(claim.get("v", ""))
    if request.method == "POST":
        with transaction.atomic():
            row = UserSwitch.objects.filter(user=request.user, key=switch.key).first()
            row = row or UserSwitch(user=request.user, key=switch.key)
            row.value, row.value_confirmed = address, True
            row.save()
        messages.success(request, f"{address} is confirmed for “{switch.label}”.")
        return HttpResponseRedirect(reverse(SETTINGS) + "#personal")
    return render(request, "portal/confirm_address.html", {"switch": switch, "address": address})


def _form_class(kind: str) -> Any:
    try:
        path = get_connector_class(kind).settings_form
    except SyncError:
        raise Http404("Unknown kind.") from None
    if not path:
        raise Http404("This kind of account is set up by an administrator.")
    return import_string(path)


@login_required
def connect(request: SignedInRequest, kind: str) -> HttpResponse:
    return _edit(request, _form_class(kind), None)


@login_required
def edit(request: SignedInRequest, connection_id: int) -> HttpResponse:
    conn = _own(request, connection_id)
    return _edit(request, _form_class(conn.kind), conn)


def _edit(request: SignedInRequest, form_class: Any, conn: Connection | None) -> HttpResponse:
    """Test the connection with what was typed in, and save only when the test passes."""
    form = form_class(request.POST or None, instance=conn)
    result = None
    if request.method == "POST" and form.is_valid():
        candidate = form.build(owner=request.user)
        limited = limits.hit(request, "connection_test")
        try:
            if limited is not None:
                raise limits.Busy(limited.message)
            with limits.one_at_a_time(
                request, "connection_test", longest=settings.SYNC_CONNECTION_TEST_TIMEOUT * 12
            ):
                result = probe(candidate)
        except limits.Busy as exc:
            form.add_error(None, exc.message)
        except SyncError as exc:
            form.add_error(None, f"Connection test failed: {exc.message}")
        else:
            created = candidate.pk is None
            candidate.save()
            resumed = control.credentials_replaced(candidate, request.user)
            control.after_save(candidate, created=created, user=request.user)
            note = " The first sync has started." if created else ""
            if resumed is not None:
                note = " Syncing has resumed: a sync has started."
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
