"""Prometheus metrics for ``/metrics``, computed from the database at scrape time.

``SyncCollector`` runs a fixed number of aggregate queries per scrape (about eight, whatever
the number of jobs) and keeps no state of its own, so every web process answers the same and
nothing is lost on restart. It is registered on the private ``REGISTRY``, never on
prometheus_client's global one, so library defaults (process and GC metrics) stay out and
nothing is collected at import time.

Windowed figures ("in the last 24 h") come from rows the engine prunes, so they can go down:
they are exposed as gauges or as histogram/summary snapshots to read directly (e.g.
``histogram_quantile(0.95, syncproject_job_duration_seconds_bucket)``), not through ``rate()``.
Only names, kinds, states and numbers are exported: never a connection's config or secrets.
"""

from __future__ import annotations

from collections.abc import Generator, Iterable, Iterator
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from django.conf import settings
from django.db.models import Count, DurationField, ExpressionWrapper, F, FloatField, Q, Sum
from django.db.models.fields.json import KT
from django.db.models.functions import Cast
from django.utils import timezone
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
    SummaryMetricFamily,
)
from prometheus_client.utils import floatToGoString

from integrations.models import Connection
from integrations.schedule import parse_schedule
from syncqueue.heartbeat import worker_status
from syncqueue.models import SyncJob, SyncLog, WorkerHeartbeat

State = SyncJob.State
WINDOW = timedelta(hours=24)
# Upper bounds (seconds) of the job duration histogram: a quick incremental sync takes
# seconds, an initial sync of a large mailbox can run for hours over many slices.
DURATION_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600)
OUTCOMES = (State.SUCCEEDED, State.FAILED, State.CANCELLED)
CONNECTION_LABELS = ["connection_id", "kind", "name"]


def _seconds(delta: timedelta | None) -> float:
    return delta.total_seconds() if delta is not None else 0.0


class SyncCollector:
    """Jobs, finished-job outcomes and durations, connection freshness, worker heartbeats and
    rate-limit waits. Each ``collect()`` reads the database afresh."""

    def collect(self) -> Iterator[Metric]:
        now = timezone.now()
        yield self._jobs()
        yield from self._finished(now)
        connection_kinds = yield from self._connections(now)
        yield from self._workers(now)
        yield from self._rate_limits(now, connection_kinds)

    # --- jobs -----------------------------------------------------------------------------------
    def _jobs(self) -> Metric:
        counts = {
            (row["state"], row["kind"]): row["n"]
            for row in SyncJob.objects.order_by().values("state", "kind").annotate(n=Count("id"))
        }
        family = GaugeMetricFamily(
            "syncproject_jobs",
            "Sync jobs now in the database by state and kind (finished ones until pruned).",
            labels=["state", "kind"],
        )
        for state in State.values:
            for kind in SyncJob.Kind.values:
                family.add_metric([state, kind], counts.get((state, kind), 0))
        return family

    def _finished(self, now: datetime) -> Iterator[Metric]:
        """Outcome counts and a duration histogram of jobs finished in the window, in one
        grouped query: the database counts each bucket (``took <= le``)."""
        duration = ExpressionWrapper(
            F("finished_at") - F("started_at"), output_field=DurationField()
        )
        started = Q(started_at__isnull=False)
        buckets = {
            f"le_{i}": Count("id", filter=started & Q(took__lte=timedelta(seconds=bound)))
            for i, bound in enumerate(DURATION_BUCKETS)
        }
        rows = (
            SyncJob.objects.filter(finished_at__gte=now - WINDOW, state__in=OUTCOMES)
            .order_by()
            .annotate(took=duration)
            .values("kind", "state")
            .annotate(
                n=Count("id"),
                timed=Count("id", filter=started),
                total=Sum("took", filter=started),
                **buckets,
            )
        )
        outcomes = GaugeMetricFamily(
            "syncproject_jobs_finished_24h",
            "Jobs that finished in the last 24 hours, by kind and outcome.",
            labels=["kind", "outcome"],
        )
        durations = HistogramMetricFamily(
            "syncproject_job_duration_seconds",
            "Duration (finished_at - started_at) of jobs that finished in the last 24 hours, "
            "by kind and outcome. A sliding window, not a counter: use histogram_quantile() on "
            "the buckets directly, not rate().",
            labels=["kind", "outcome"],
        )
        seen: dict[tuple[str, str], int] = {}
        for row in rows:
            seen[(row["kind"], row["state"])] = row["n"]
            if row["timed"]:
                cumulative = [
                    (floatToGoString(bound), float(row[f"le_{i}"]))
                    for i, bound in enumerate(DURATION_BUCKETS)
                ]
                durations.add_metric(
                    [row["kind"], row["state"]],
                    [*cumulative, ("+Inf", float(row["timed"]))],
                    _seconds(row["total"]),
                )
        for kind in SyncJob.Kind.values:
            for outcome in OUTCOMES:
                outcomes.add_metric([kind, outcome], seen.get((kind, outcome), 0))
        yield outcomes
        yield durations

    # --- connections ----------------------------------------------------------------------------
    def _connections(self, now: datetime) -> Generator[Metric, None, list[str]]:
        """Status counts and per-connection freshness; the generator returns the kinds seen."""
        by_status = {
            (row["kind"], row["status"]): row["n"]
            for row in Connection.objects.order_by()
            .values("kind", "status")
            .annotate(n=Count("id"))
        }
        kinds = sorted({kind for kind, _ in by_status})
        statuses = GaugeMetricFamily(
            "syncproject_connections",
            "Connections by provider kind and health status.",
            labels=["kind", "status"],
        )
        for kind in kinds:
            for status in Connection.Status.values:
                statuses.add_metric([kind, status], by_status.get((kind, status), 0))
        yield statuses

        age = GaugeMetricFamily(
            "syncproject_connection_last_success_age_seconds",
            "Seconds since the connection's last successful sync (absent if it never succeeded).",
            labels=CONNECTION_LABELS,
        )
        interval = GaugeMetricFamily(
            "syncproject_connection_expected_interval_seconds",
            "How often the connection's schedule runs, in seconds (absent for manual-only).",
            labels=CONNECTION_LABELS,
        )
        stale = GaugeMetricFamily(
            "syncproject_connection_stale",
            "1 when an enabled connection has had no successful sync for twice its schedule's "
            "interval (counted from creation if it never succeeded), else 0.",
            labels=CONNECTION_LABELS,
        )
        # Plain values, never model instances: config and secrets are not even read. Schedules
        # are shared by many connections, so each (schedule, zone) is parsed once per scrape.
        intervals: dict[tuple[str, str], timedelta | None] = {}
        rows = Connection.objects.order_by("id").values_list(
            "id", "kind", "name", "enabled", "schedule", "last_success_at", "stale_after",
            "organization__timezone",
        )  # fmt: skip
        for pk, kind, name, enabled, schedule, last_success, stale_after, zone in rows:
            labels = [str(pk), kind, name]
            if last_success is not None:
                age.add_metric(labels, max(0.0, (now - last_success).total_seconds()))
            key = (schedule, zone or settings.TIME_ZONE)
            if key not in intervals:
                intervals[key] = _typical_interval(schedule, ZoneInfo(key[1]), now)
            if intervals[key] is not None:
                interval.add_metric(labels, _seconds(intervals[key]))
            is_stale = enabled and stale_after is not None and stale_after < now
            stale.add_metric(labels, 1 if is_stale else 0)
        yield age
        yield interval
        yield stale
        return kinds

    # --- workers --------------------------------------------------------------------------------
    def _workers(self, now: datetime) -> Iterator[Metric]:
        status = worker_status(now)
        alive = GaugeMetricFamily(
            "syncproject_workers_alive",
            "1 when the newest proof of work (a cluster or worker heartbeat) is younger than "
            f"SYNC_HEARTBEAT_STALE_SECONDS ({settings.SYNC_HEARTBEAT_STALE_SECONDS}s), else 0.",
        )
        alive.add_metric([], 1 if status.alive else 0)
        yield alive
        newest = GaugeMetricFamily(
            "syncproject_workers_last_heartbeat_age_seconds",
            "Seconds since the newest cluster or worker heartbeat (absent if none).",
        )
        if status.age_seconds is not None:
            newest.add_metric([], max(0.0, status.age_seconds))
        yield newest
        each = GaugeMetricFamily(
            "syncproject_heartbeat_age_seconds",
            "Seconds since each process last wrote its heartbeat ('dispatcher', "
            "'cluster:host:pid' or 'worker:host:pid'; rows unseen for a day are pruned).",
            labels=["name"],
        )
        for name, seen_at in WorkerHeartbeat.objects.order_by("name").values_list(
            "name", "seen_at"
        ):
            each.add_metric([name], max(0.0, (now - seen_at).total_seconds()))
        yield each

    # --- rate limits ----------------------------------------------------------------------------
    def _rate_limits(self, now: datetime, kinds: Iterable[str]) -> Iterator[Metric]:
        # The engine logs every inline wait with data {"wait": seconds}; nothing else logs it.
        waits = {
            row["connection__kind"]: row
            for row in SyncLog.objects.filter(created_at__gte=now - WINDOW, data__has_key="wait")
            .order_by()
            .values("connection__kind")
            .annotate(n=Count("id"), total=Sum(Cast(KT("data__wait"), FloatField())))
        }
        retrying = dict(
            SyncJob.objects.filter(state=State.RETRYING, error_class="RateLimited")
            .order_by()
            .values_list("connection__kind")
            .annotate(n=Count("id"))
            .values_list("connection__kind", "n")
        )
        summary = SummaryMetricFamily(
            "syncproject_rate_limit_wait_seconds",
            "Waits inside a running job because the provider rate-limited us, in the last 24 "
            "hours, by connection kind: _count waits, _sum seconds waited.",
            labels=["connection_kind"],
        )
        jobs = GaugeMetricFamily(
            "syncproject_rate_limited_jobs",
            "Jobs now retrying later because the provider rate-limited them (too long to wait "
            "inline), by connection kind.",
            labels=["connection_kind"],
        )
        for kind in sorted({*kinds, *waits, *retrying}):
            row = waits.get(kind, {})
            summary.add_metric([kind], count_value=row.get("n", 0), sum_value=row.get("total") or 0)
            jobs.add_metric([kind], retrying.get(kind, 0))
        yield summary
        yield jobs


def _typical_interval(schedule: str, tz: ZoneInfo, now: datetime) -> timedelta | None:
    """The schedule's usual gap between runs; None for manual-only or an unreadable schedule
    (one bad row written around validation must not break the whole scrape)."""
    try:
        return parse_schedule(schedule).typical_interval(now, tz)
    except ValueError:  # InvalidSchedule and croniter's errors are ValueErrors
        return None


REGISTRY = CollectorRegistry(auto_describe=False)
REGISTRY.register(SyncCollector())  # no describe(): nothing is collected at registration


def render() -> bytes:
    """The metrics in Prometheus' text format (``CONTENT_TYPE_LATEST``)."""
    return generate_latest(REGISTRY)
