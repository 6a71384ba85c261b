"""What the failure dashboard shows: alerts, failures grouped by cause, outcomes per hour, and
the connections that need attention. Plain functions over the database, used by the admin page
(and by notifications, which watch the same alerts)."""

from __future__ import annotations

import hashlib
import re
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db.models import Count, Max, Min, Q
from django.db.models.functions import TruncHour
from django.utils import timezone
from django.utils.html import escape

from integrations.models import Connection
from integrations.registry import label_of
from syncqueue import stats
from syncqueue.heartbeat import WorkerStatus, clusters, listener_status, worker_status
from syncqueue.models import SyncJob, SyncLog
from syncqueue.stats import queue_stats

State = SyncJob.State
FAILURE_WINDOW = timedelta(days=7)
#: connections named per failure group; a cause that hit thousands shows the newest and a count
SHOWN_CONNECTIONS = 10
LOST_CLUSTER_WINDOW = 3600  # a cluster that went silent this recently (s) is an alert
_NUMBERS = re.compile(r"\d+")
_UUIDS = re.compile(r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b", re.I)
_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"")


@dataclass(frozen=True)
class Alert:
    key: str
    message: str
    link: str = ""


def alerts(stats: dict[str, Any] | None = None, workers: WorkerStatus | None = None) -> list[Alert]:
    """The alerts that are on now, with thresholds from settings (SYNC_ALERT_*)."""
    stats = stats or queue_stats()
    workers = workers or worker_status()
    now = timezone.now()
    found = []
    if not workers.alive:
        found.append(Alert("workers", workers.message))
    lost = [c for c in clusters() if c.lost and c.age_seconds < LOST_CLUSTER_WINDOW]
    if lost:
        names = ", ".join(f"{c.name} ({c.age_seconds / 60:.0f} min ago)" for c in lost)
        found.append(
            Alert(
                "clusters",
                f"{len(lost)} worker cluster(s) stopped proving they work without shutting "
                f"down: {names}. A supervisor (systemd, make run) restarts a frozen or killed "
                "cluster; if it does not, restart it.",
                "/admin/syncqueue/dashboard/#clusters",
            )
        )
    if stats["waiting"] > settings.SYNC_ALERT_BACKLOG:
        found.append(
            Alert(
                "backlog",
                f"{stats['waiting']} jobs are waiting (alert above {settings.SYNC_ALERT_BACKLOG}).",
            )
        )
    if stats["failed"] > settings.SYNC_ALERT_FAILURES_24H:
        found.append(
            Alert(
                "failures",
                f"{stats['failed']} jobs failed in the last 24 hours "
                f"(alert above {settings.SYNC_ALERT_FAILURES_24H}).",
            )
        )
    quiet = timedelta(minutes=settings.SYNC_ALERT_NO_SUCCESS_MINUTES)
    enabled = Connection.objects.filter(enabled=True)
    # only connections that existed for the whole window could have been expected to succeed
    if (
        enabled.filter(created_at__lte=now - quiet).exists()
        and not SyncJob.objects.filter(state=State.SUCCEEDED, finished_at__gte=now - quiet).exists()
    ):
        found.append(
            Alert(
                "no_success",
                f"No sync has succeeded in the last "
                f"{settings.SYNC_ALERT_NO_SUCCESS_MINUTES} minutes "
                "although connections are enabled.",
            )
        )
    listener = listener_status()
    if not listener.alive and watched_connections():
        found.append(Alert("listener", listener.message))
    reauth = enabled.filter(status=Connection.Status.AUTH_REQUIRED).count()
    if reauth:
        found.append(
            Alert(
                "reauth",
                f"{reauth} connection(s) need new credentials.",
                "/admin/integrations/connection/?status__exact=auth_required",
            )
        )
    return found


def watched_connections() -> bool:
    """Whether any enabled connection is one a listener watches (a rollup: without any, this is
    a scan of every connection)."""
    return stats.rollup("watched-connections", _watched_connections)


@stats.rollup_of("watched-connections")
def _watched_connections() -> bool:
    return Connection.objects.filter(enabled=True, kind="imap").exists()


def normalize_message(message: str) -> str:
    """Numbers and quoted names vary between occurrences of the same cause."""
    return _NUMBERS.sub("#", _UUIDS.sub("…", _QUOTED.sub("'…'", message))).strip()


@dataclass
class FailureGroup:
    kind: str
    error_class: str
    message: str
    count: int = 0
    first_seen: datetime | None = None
    last_seen: datetime | None = None
    #: the connections that failed most recently (at most ``SHOWN_CONNECTIONS``), newest first
    connections: dict[int, str] = field(default_factory=dict)
    #: how many connections the group has in all
    connection_count: int = 0
    #: the newest real message of the group (``message`` is its shape, used to group)
    example: str = ""

    @property
    def provider(self) -> str:
        return label_of(self.kind)

    @property
    def key(self) -> str:
        raw = "\x1f".join((self.kind, self.error_class, self.message))
        return hashlib.sha256(raw.encode()).hexdigest()[:16]


def failure_groups() -> list[FailureGroup]:
    """Failed jobs of the last 7 days grouped by connection kind + error class + message shape
    (a ``stats.rollup``: at scale, the last grouping, at most a dispatcher pass old)."""
    return stats.rollup("failure-groups", _failure_groups)


@stats.rollup_of("failure-groups")
def _failure_groups(since: timedelta = FAILURE_WINDOW) -> list[FailureGroup]:
    groups: dict[tuple[str, str, str], FailureGroup] = {}
    seen: dict[tuple[str, str, str], set[int]] = defaultdict(set)
    # counted per connection and message in the database (a cause that failed 200,000 jobs
    # is one row per connection, not 200,000 rows), grouped by message shape here
    rows = (
        SyncJob.objects.filter(state=State.FAILED, finished_at__gte=timezone.now() - since)
        .values_list(
            "connection_id", "connection__name", "connection__kind", "error_class", "error_message"
        )
        .annotate(n=Count("id"), first=Min("finished_at"), last=Max("finished_at"))
        .order_by("last")
    )
    for conn_id, conn_name, kind, error_class, message, count, first, last in rows:
        key = (kind, error_class or "Unknown", normalize_message(message or ""))
        group = groups.get(key) or groups.setdefault(key, FailureGroup(*key))
        group.count += count
        group.first_seen = min(group.first_seen or first, first)
        group.last_seen = last
        seen[key].add(conn_id)
        group.connections.pop(conn_id, None)  # re-inserted: the dict ends with the newest
        group.connections[conn_id] = conn_name
        group.example = message or group.message
    for key, group in groups.items():
        group.connection_count = len(seen[key])
        newest = list(group.connections.items())[: -SHOWN_CONNECTIONS - 1 : -1]
        group.connections = dict(newest)
    return sorted(groups.values(), key=lambda g: (-g.count, g.kind))


def failed_job_ids(group: FailureGroup, since: timedelta = FAILURE_WINDOW) -> list[int]:
    """The failed jobs of the last 7 days that belong to ``group`` (read when they are retried:
    the dashboard's figures do not carry them)."""
    rows = SyncJob.objects.filter(
        state=State.FAILED,
        finished_at__gte=timezone.now() - since,
        connection__kind=group.kind,
    )
    if group.error_class == "Unknown":
        rows = rows.filter(Q(error_class__in=["", "Unknown"]) | Q(error_class__isnull=True))
    else:
        rows = rows.filter(error_class=group.error_class)
    return [
        pk
        for pk, message in rows.values_list("pk", "error_message")
        if normalize_message(message or "") == group.message
    ]


def find_group(key: str) -> FailureGroup | None:
    return next((g for g in failure_groups() if g.key == key), None)


def hourly_outcomes() -> list[dict[str, Any]]:
    """Per hour of the last 24: jobs succeeded, jobs failed, attempts retried (a rollup)."""
    return stats.rollup("hourly-outcomes", _hourly_outcomes)


@stats.rollup_of("hourly-outcomes")
def _hourly_outcomes(hours: int = 24) -> list[dict[str, Any]]:
    now = timezone.now()
    start = (now - timedelta(hours=hours - 1)).replace(minute=0, second=0, microsecond=0)
    buckets: dict[datetime, dict[str, int]] = defaultdict(
        lambda: {"succeeded": 0, "failed": 0, "retried": 0}
    )
    finished = (
        SyncJob.objects.filter(finished_at__gte=start, state__in=[State.SUCCEEDED, State.FAILED])
        .annotate(hour=TruncHour("finished_at"))
        .values_list("hour", "state")
        .annotate(n=Count("id"))
    )
    for hour, state, count in finished:
        buckets[hour][state] += count
    retried = (
        SyncLog.objects.filter(created_at__gte=start, data__has_key="retry_in")
        .annotate(hour=TruncHour("created_at"))
        .values_list("hour")
        .annotate(n=Count("id"))
    )
    for hour, count in retried:
        buckets[hour]["retried"] += count
    return [
        {"hour": start + timedelta(hours=i), **buckets[start + timedelta(hours=i)]}
        for i in range(hours)
    ]


COLORS = {"succeeded": "#2e7d32", "failed": "#c62828", "retried": "#ef8f00"}


def outcomes_svg(rows: list[dict[str, Any]]) -> str:
    """A stacked bar per hour, drawn as inline SVG. Every bar has a tooltip with its numbers,
    the colour key is written in the same colours right above the bars, and the hours are
    labelled underneath: nothing to look up elsewhere."""
    width, height, left, bottom, top = 760, 190, 34, 22, 26
    peak = max([r["succeeded"] + r["failed"] + r["retried"] for r in rows] + [1])
    slot = (width - left) / len(rows)
    scale = (height - bottom - top) / peak
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" '
        # at most its own width: scaled up, its 10-12 px labels grew to 20 px headings
        f'width="100%" style="max-width: {width}px" role="img" '
        f'aria-label="Job outcomes per hour, last {len(rows)} hours">',
        f'<text x="{left}" y="14" font-size="12" fill="#333">Jobs per hour: '
        + "".join(
            f'<tspan fill="{COLORS[name]}" font-weight="bold">  ■ {name}</tspan>'
            for name in ("succeeded", "failed", "retried")
        )
        + "</text>",
        f'<text x="{left - 4}" y="{top + 4}" font-size="10" text-anchor="end" fill="#666">'
        f"{peak}</text>",
        f'<text x="{left - 4}" y="{height - bottom}" font-size="10" text-anchor="end" '
        f'fill="#666">0</text>',
        f'<line x1="{left}" y1="{height - bottom}" x2="{width}" y2="{height - bottom}" '
        'stroke="#999"/>',
    ]
    for index, row in enumerate(rows):
        x = left + index * slot + 2
        y = height - bottom
        tip = escape(
            f"{row['hour']:%H:00}: {row['succeeded']} succeeded, {row['failed']} "
            f"failed, {row['retried']} retried"
        )
        parts.append(f"<g><title>{tip}</title>")
        for name in ("succeeded", "failed", "retried"):
            bar = row[name] * scale
            if bar:
                y -= bar
                parts.append(
                    f'<rect x="{x:.1f}" y="{y:.1f}" width="{slot - 4:.1f}" '
                    f'height="{bar:.1f}" fill="{COLORS[name]}"/>'
                )
        parts.append("</g>")
        if index % 3 == 0:
            parts.append(
                f'<text x="{x + (slot - 4) / 2:.1f}" y="{height - 6}" font-size="10" '
                f'text-anchor="middle" fill="#666">{row["hour"]:%H}h</text>'
            )
    parts.append("</svg>")
    return "".join(parts)


def failing_connections() -> list[Connection]:
    """Connections with the most failed jobs in the last 7 days (a rollup)."""
    return stats.rollup("failing-connections", _failing_connections)


@stats.rollup_of("failing-connections")
def _failing_connections(limit: int = 10) -> list[Connection]:
    since = timezone.now() - FAILURE_WINDOW
    top = list(
        SyncJob.objects.filter(state=State.FAILED, finished_at__gte=since)
        .values_list("connection_id", "connection__name")
        .annotate(n=Count("id"))
        .order_by("-n", "connection__name")[:limit]
    )
    found = Connection.objects.in_bulk([conn_id for conn_id, _, _ in top])
    result = []
    for conn_id, _, count in top:
        if conn_id in found:
            found[conn_id].failures = count  # type: ignore[attr-defined]
            result.append(found[conn_id])
    return result


def stalest_connections() -> list[Connection]:
    """Enabled, scheduled connections whose last success is the oldest, never first (a rollup:
    it sorts every connection; an index would cost every sync's update)."""
    return stats.rollup("stalest-connections", _stalest_connections)


@stats.rollup_of("stalest-connections")
def _stalest_connections(limit: int = 10) -> list[Connection]:
    return list(
        Connection.objects.filter(enabled=True, stale_after__isnull=False).order_by(
            "stale_after", "name"
        )[:limit]
    )
