"""System checks that refuse a django-q2 configuration which breaks the engine's assumptions.

ids: syncqueue.E001-E010, W001-W004. Each message says what to change.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.checks import Error, Warning, register


def q_cluster_problems(q: dict[str, Any], slice_seconds: float, lease_seconds: int) -> list[Any]:
    """Check a Q_CLUSTER dict against the rules; returned as Django check messages."""
    errors: list[Any] = []
    timeout, retry = q.get("timeout"), q.get("retry", 60)
    if q.get("orm") != "default" and not q.get("redis"):
        errors.append(
            Error(
                "Q_CLUSTER must use the ORM broker on the default database ('orm': 'default', "
                "jobs and their tickets commit together) or Redis (SYNC_BROKER_URL): the "
                "dispatcher counts the waiting tickets only there.",
                id="syncqueue.E001",
            )
        )
    if not timeout or not retry or timeout >= retry:
        errors.append(
            Error(
                f"Q_CLUSTER timeout ({timeout}) must be set and below retry ({retry}); otherwise "
                "django-q2 redelivers a task while it is still running.",
                hint="Set SYNC_TASK_RETRY above SYNC_TASK_TIMEOUT (e.g. timeout + 120).",
                id="syncqueue.E002",
            )
        )
    if q.get("ack_failures") is not True:
        errors.append(
            Error(
                "Q_CLUSTER ack_failures must be True: the engine retries with "
                "backoff itself; django-q2's fixed-interval redelivery must not.",
                id="syncqueue.E003",
            )
        )
    if q.get("max_attempts") != 1:
        errors.append(
            Error(
                "Q_CLUSTER max_attempts must be 1 (retries belong to the engine).",
                id="syncqueue.E004",
            )
        )
    if q.get("catch_up", True) is not False:
        errors.append(
            Error(
                "Q_CLUSTER catch_up must be False: after downtime the dispatcher "
                "must run once, not once per missed minute.",
                id="syncqueue.E005",
            )
        )
    if q.get("save_limit", 250) not in (0, -1):
        errors.append(
            Error(
                "Q_CLUSTER save_limit must be 0 or -1: pruning on every save costs "
                "3-5x throughput and loses results on SQLite ('database is locked').",
                hint="Set SYNC_Q_SAVE_LIMIT=-1; history is pruned by the dispatcher.",
                id="syncqueue.E006",
            )
        )
    if timeout and slice_seconds > 0.8 * timeout:
        errors.append(
            Error(
                f"SYNC_SLICE_SECONDS ({slice_seconds}) must stay well under the task timeout "
                f"({timeout}); use at most 80% of it.",
                id="syncqueue.E007",
            )
        )
    errors += liveness_problems(
        lease_seconds,
        renew_seconds=settings.SYNC_LEASE_RENEW_SECONDS,
        rescue_interval=settings.SYNC_RESCUE_INTERVAL,
        beat_seconds=settings.SYNC_CLUSTER_BEAT_SECONDS,
        stale_seconds=settings.SYNC_HEARTBEAT_STALE_SECONDS,
        stall_seconds=settings.SYNC_STALL_SECONDS,
        watchdog_seconds=settings.SYNC_WATCHDOG_SECONDS,
    )
    if q.get("sync"):
        errors.append(
            Warning("Q_CLUSTER sync is on: tasks run inside the request.", id="syncqueue.W001")
        )
    return errors


def liveness_problems(
    lease_seconds: float,
    *,
    renew_seconds: float,
    rescue_interval: float,
    beat_seconds: float,
    stale_seconds: float,
    stall_seconds: float,
    watchdog_seconds: float,
) -> list[Any]:
    """Rules between lease, renewal, rescue, heartbeat, stall detection and the watchdog."""
    from syncqueue.lease import lock_wait

    errors: list[Any] = []
    # After the last good renewal the next two may each wait for a lock, and fail.
    needed = 3 * renew_seconds + 2 * lock_wait(renew_seconds)
    if lease_seconds < needed - 1e-6:
        errors.append(
            Error(
                f"SYNC_LEASE_SECONDS ({lease_seconds}) must be at least {needed:g}s: three "
                f"renewal intervals (SYNC_LEASE_RENEW_SECONDS, {renew_seconds}) and two lock "
                "waits, so that it survives two failed renewals; otherwise live jobs get "
                "rescued while they run.",
                id="syncqueue.E008",
            )
        )
    if stale_seconds < 3 * beat_seconds:
        errors.append(
            Error(
                f"SYNC_HEARTBEAT_STALE_SECONDS ({stale_seconds}) must be at least three times "
                f"SYNC_CLUSTER_BEAT_SECONDS ({beat_seconds}), or healthy workers look down.",
                id="syncqueue.E009",
            )
        )
    if watchdog_seconds < 3 * beat_seconds:
        errors.append(
            Error(
                f"SYNC_WATCHDOG_SECONDS ({watchdog_seconds}) must be at least three times "
                f"SYNC_CLUSTER_BEAT_SECONDS ({beat_seconds}), or the supervisor restarts "
                "healthy clusters.",
                id="syncqueue.E010",
            )
        )
    if stall_seconds >= watchdog_seconds:
        errors.append(
            Warning(
                f"SYNC_STALL_SECONDS ({stall_seconds}) is not below SYNC_WATCHDOG_SECONDS "
                f"({watchdog_seconds}): a stalled cluster is restarted by its supervisor "
                "(killing its running slices) before it can heal itself.",
                id="syncqueue.W003",
            )
        )
    if lease_seconds + rescue_interval > 90:
        errors.append(
            Warning(
                f"A dead worker's job waits up to SYNC_LEASE_SECONDS + SYNC_RESCUE_INTERVAL "
                f"({lease_seconds + rescue_interval:g}s) before it runs again; keep it under 90s.",
                id="syncqueue.W004",
            )
        )
    return errors


@register("syncproject")
def check_q_cluster(app_configs: Any = None, **kwargs: Any) -> list[Any]:
    problems = q_cluster_problems(
        settings.Q_CLUSTER, settings.SYNC_SLICE_SECONDS, settings.SYNC_LEASE_SECONDS
    )
    max_age = settings.DATABASES["default"].get("CONN_MAX_AGE", 0)
    if max_age is not None and max_age < 60:
        problems.append(
            Warning(
                f"CONN_MAX_AGE is {max_age}: django-q2's ORM broker then opens a new database "
                "connection for every enqueue (about 16x slower on PostgreSQL).",
                hint="Set DB_CONN_MAX_AGE=60 or more.",
                id="syncqueue.W002",
            )
        )
    return problems


@register("syncproject")
def check_shared_secret_key(app_configs: Any = None, **kwargs: Any) -> list[Any]:
    """On a shared database several hosts run workers: they must sign tasks with one key."""
    if getattr(settings, "SYNC_USING_DEV_SECRET_KEY", False) and settings.DATABASE_URL:
        return [
            Warning(
                "DJANGO_SECRET_KEY is not set, so this host signs django-q2 tasks with its own "
                "development key; workers on other hosts drop tasks they cannot verify.",
                hint="Set the same DJANGO_SECRET_KEY on every web and worker host.",
                id="syncqueue.W005",
            )
        ]
    return []
