"""Admin pages that are not a model's list: the failure dashboard and its group retry."""

from __future__ import annotations

from typing import cast

from django.contrib import admin, messages
from django.contrib.admin.models import CHANGE, LogEntry
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.urls import reverse
from django.utils.safestring import mark_safe
from django.views.decorators.http import require_POST

from syncqueue import control, engine
from syncqueue import dashboard as data
from syncqueue.heartbeat import START_COMMAND, clusters, worker_status
from syncqueue.models import SyncJob
from syncqueue.stats import queue_stats, recount


def dashboard(request: HttpRequest) -> HttpResponse:
    """Queue, workers, alerts, failures by cause, outcomes per hour, connections to look at."""
    if not request.user.has_perm("syncqueue.view_syncjob"):
        raise PermissionDenied
    stats = queue_stats()
    workers = worker_status()
    context = {
        **admin.site.each_context(request),
        "title": "Failure dashboard",
        "stats": stats,
        "workers": workers,
        "clusters": clusters(),
        "start_command": START_COMMAND,
        "alerts": data.alerts(stats, workers),
        "groups": data.failure_groups(),
        # built from numbers and escaped labels only (see dashboard.outcomes_svg)
        "chart": mark_safe(data.outcomes_svg(data.hourly_outcomes())),  # noqa: S308
        "failing": data.failing_connections(),
        "stalest": data.stalest_connections(),
        "can_retry": request.user.has_perm("syncqueue.change_syncjob"),
    }
    return render(request, "admin/syncqueue/dashboard.html", context)


@require_POST
def retry_group(request: HttpRequest) -> HttpResponse:
    """Queue again every failed job of one failure group (keeping their checkpoints)."""
    if not request.user.has_perm("syncqueue.change_syncjob"):
        raise PermissionDenied
    group = data.find_group(request.POST.get("group", ""))
    target = reverse("admin:sync_dashboard")
    if group is None:
        messages.warning(request, "That failure group is gone (already retried or expired).")
        return HttpResponseRedirect(target)
    retried, blocked, off = [], [], 0
    jobs = SyncJob.objects.filter(pk__in=data.failed_job_ids(group)).select_related("connection")
    for job in jobs:
        try:
            if control.retry_job(job):
                retried.append(job.pk)
        except control.NeedsCredentials:
            blocked.append(job.connection.name)
        except engine.ConnectionDisabled:
            off += 1
    # the groups may be served from the dispatcher's last count: the page must not offer
    # this one again (the day's counts catch up with the dispatcher's next pass)
    recount("failure-groups", "failing-connections")
    if retried:
        LogEntry.objects.log_actions(
            cast(int, request.user.pk),
            SyncJob.objects.filter(pk__in=retried),
            CHANGE,
            change_message=f"Retried with its failure group: {group.error_class}: "
            f"{group.example[:120]}",
        )
    if not (retried or blocked or off):
        messages.warning(request, "Nothing to retry: that group's jobs were queued again already.")
        return HttpResponseRedirect(target)
    text = f"Queued {len(retried)} job(s) of “{group.example[:80]}” again."
    if blocked:
        names = ", ".join(sorted(set(blocked))[:5])
        text += (
            f" {len(blocked)} not retried: their connection needs new credentials first "
            f"({names}); saving them starts a sync."
        )
    if off:
        text += f" {off} could not be retried (connection turned off)."
    (messages.success if retried else messages.warning)(request, text)
    return HttpResponseRedirect(target)
