"""``/metrics``: who may read it, and the numbers it reports from real rows."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.db import DatabaseError, connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.parser import text_string_to_metric_families

from integrations.models import Connection
from syncqueue.models import SyncJob, SyncLog, WorkerHeartbeat

State, Kind = SyncJob.State, SyncJob.Kind
TOKEN = "metrics-token-7f3a"
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    """Every sample of a scrape, keyed by (sample name, labels)."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, metric: str, /, **labels: str) -> float:
    return samples[(metric, frozenset(labels.items()))]


def scrape(client: Any, **headers: str) -> Samples:
    response = client.get("/metrics", headers=headers)
    assert response.status_code == 200, response.content
    assert response["Content-Type"] == CONTENT_TYPE_LATEST
    return parse(response.content.decode())


def job(conn: Connection, kind: str, state: str, **fields: Any) -> SyncJob:
    return SyncJob.objects.create(
        connection=conn,
        kind=kind,
        state=state,
        dedupe_key=f"{kind}-{SyncJob.objects.count()}",
        run_after=timezone.now(),
        **fields,
    )


# --- who may read it ----------------------------------------------------------------------------
@pytest.mark.django_db
def test_anonymous_gets_401_without_any_metric(client):
    response = client.get("/metrics")
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == 'Bearer realm="metrics"'
    assert b"syncproject_" not in response.content


def test_a_signed_in_user_who_is_not_staff_gets_403(client, owner):
    client.force_login(owner)
    response = client.get("/metrics")
    assert response.status_code == 403 and b"syncproject_" not in response.content


def test_staff_read_the_metrics(client, staff):
    client.force_login(staff)
    assert value(scrape(client), "syncproject_workers_alive") == 0


@pytest.mark.django_db
def test_the_configured_bearer_token_reads_the_metrics(client, settings):
    settings.SYNC_METRICS_TOKEN = TOKEN
    assert value(scrape(client, Authorization=f"Bearer {TOKEN}"), "syncproject_workers_alive") == 0


@pytest.mark.django_db
@pytest.mark.parametrize(
    "configured,header",
    [
        (TOKEN, f"Bearer {TOKEN}x"),
        (TOKEN, "Bearer "),
        (TOKEN, f"Basic {TOKEN}"),  # the right secret in the wrong scheme
        (None, "Bearer None"),  # no token configured: no token is right
        (None, "Bearer "),
    ],
)
def test_a_wrong_or_unconfigured_token_gets_401(client, settings, configured, header):
    settings.SYNC_METRICS_TOKEN = configured
    response = client.get("/metrics", headers={"Authorization": header})
    assert response.status_code == 401 and b"syncproject_" not in response.content


def test_a_non_staff_user_with_a_wrong_token_gets_401(client, owner, settings):
    settings.SYNC_METRICS_TOKEN = TOKEN
    client.force_login(owner)
    response = client.get("/metrics", headers={"Authorization": "Bearer nope"})
    assert response.status_code == 401


def test_metrics_are_503_when_the_database_is_unreachable(client, staff, monkeypatch):
    from syncqueue import metrics

    client.force_login(staff)

    def broken() -> bytes:
        raise DatabaseError("connection refused")

    monkeypatch.setattr(metrics, "render", broken)
    assert client.get("/metrics").status_code == 503


# --- what it reports ----------------------------------------------------------------------------
def test_jobs_are_counted_by_state_and_kind(client, staff, make_connection):
    conn, other = make_connection(), make_connection(name="Other")
    job(conn, Kind.INCREMENTAL, State.QUEUED)
    job(conn, Kind.INCREMENTAL, State.QUEUED)
    job(other, Kind.MANUAL, State.RUNNING)
    job(conn, Kind.PUSH, State.RETRYING, error_class="Transient")
    client.force_login(staff)
    samples = scrape(client)
    assert value(samples, "syncproject_jobs", state="queued", kind="incremental") == 2
    assert value(samples, "syncproject_jobs", state="running", kind="manual") == 1
    assert value(samples, "syncproject_jobs", state="retrying", kind="push") == 1
    assert value(samples, "syncproject_jobs", state="failed", kind="initial") == 0  # zero-filled
    assert value(samples, "syncproject_connections", kind="fake", status="ok") == 2


def test_finished_jobs_of_the_last_day_give_outcomes_and_a_duration_histogram(
    client, staff, make_connection
):
    conn = make_connection()
    now = timezone.now()

    def finished(kind: str, state: str, seconds: float | None, ago: timedelta) -> None:
        end = now - ago
        start = end - timedelta(seconds=seconds) if seconds is not None else None
        job(conn, kind, state, started_at=start, finished_at=end)

    finished(Kind.INCREMENTAL, State.SUCCEEDED, 90, timedelta(minutes=5))
    finished(Kind.INCREMENTAL, State.SUCCEEDED, 3, timedelta(hours=2))
    finished(Kind.INCREMENTAL, State.SUCCEEDED, 40, timedelta(hours=30))  # outside the window
    finished(Kind.MANUAL, State.FAILED, 700, timedelta(minutes=1))
    finished(Kind.MANUAL, State.CANCELLED, None, timedelta(minutes=1))  # never started
    client.force_login(staff)
    samples = scrape(client)

    def outcome(kind: str, state: str) -> float:
        return value(samples, "syncproject_jobs_finished_24h", kind=kind, outcome=state)

    assert outcome("incremental", "succeeded") == 2
    assert outcome("manual", "failed") == 1 and outcome("manual", "cancelled") == 1
    assert outcome("full_resync", "failed") == 0

    def bucket(le: str, kind: str = "incremental", state: str = "succeeded") -> float:
        return value(
            samples, "syncproject_job_duration_seconds_bucket", kind=kind, outcome=state, le=le
        )

    assert bucket("1.0") == 0 and bucket("5.0") == 1 and bucket("60.0") == 1
    assert bucket("120.0") == 2 and bucket("+Inf") == 2
    labels = {"kind": "incremental", "outcome": "succeeded"}
    assert value(samples, "syncproject_job_duration_seconds_count", **labels) == 2
    assert value(samples, "syncproject_job_duration_seconds_sum", **labels) == pytest.approx(93)
    assert bucket("600.0", "manual", "failed") == 0 and bucket("1800.0", "manual", "failed") == 1
    # A job that never started has no duration: no histogram for it.
    with pytest.raises(KeyError):
        value(samples, "syncproject_job_duration_seconds_count", kind="manual", outcome="cancelled")


def test_connection_freshness_interval_and_staleness(client, staff, make_connection):
    now = timezone.now()
    late = make_connection(name="Sales inbox", schedule="every 5m")
    Connection.objects.filter(pk=late.pk).update(
        last_success_at=now - timedelta(seconds=600), stale_after=now - timedelta(seconds=1)
    )
    cron = make_connection(name="Support", schedule="*/15 * * * *")
    Connection.objects.filter(pk=cron.pk).update(
        last_success_at=now - timedelta(seconds=60), stale_after=now + timedelta(minutes=29)
    )
    manual = make_connection(name="By hand")
    Connection.objects.filter(pk=manual.pk).update(schedule="", stale_after=None)
    off = make_connection(name="Switched off", enabled=False)
    Connection.objects.filter(pk=off.pk).update(stale_after=now - timedelta(days=3))
    client.force_login(staff)
    samples = scrape(client)

    def metric(name: str, conn: Connection) -> float:
        return value(
            samples,
            f"syncproject_connection_{name}",
            connection_id=str(conn.pk),
            kind="fake",
            name=conn.name,
        )

    assert metric("last_success_age_seconds", late) == pytest.approx(600, abs=5)
    assert metric("expected_interval_seconds", late) == 300
    assert metric("stale", late) == 1
    assert metric("last_success_age_seconds", cron) == pytest.approx(60, abs=5)
    assert metric("expected_interval_seconds", cron) == 900
    assert metric("stale", cron) == 0
    assert metric("stale", manual) == 0 and metric("stale", off) == 0  # off is not "stale"
    with pytest.raises(KeyError):  # never succeeded / manual only: absent, not 0
        metric("last_success_age_seconds", manual)
    with pytest.raises(KeyError):
        metric("expected_interval_seconds", manual)


def test_no_connection_config_or_secret_is_exposed(client, staff, make_connection):
    make_connection(
        config={"total": 10, "batch": 5, "host": "imap.secret-host.example"},
        secrets={"password": "s3cret-fake-password"},
    )
    client.force_login(staff)
    body = client.get("/metrics").content.decode()
    assert "syncproject_connection_stale" in body
    for secret in ("s3cret-fake-password", "secret-host", "gAAAA"):  # gAAAA: a Fernet token
        assert secret not in body


def test_worker_heartbeats(client, staff):
    now = timezone.now()
    WorkerHeartbeat.objects.create(name="cluster:h1:7", seen_at=now - timedelta(seconds=30))
    WorkerHeartbeat.objects.create(name="worker:h1:42", seen_at=now - timedelta(seconds=1000))
    client.force_login(staff)
    samples = scrape(client)
    assert value(samples, "syncproject_workers_alive") == 1
    newest = value(samples, "syncproject_workers_last_heartbeat_age_seconds")
    assert newest == pytest.approx(30, abs=5)
    each = value(samples, "syncproject_heartbeat_age_seconds", name="worker:h1:42")
    assert each == pytest.approx(1000, abs=5)
    WorkerHeartbeat.objects.update(seen_at=now - timedelta(hours=1))
    assert value(scrape(client), "syncproject_workers_alive") == 0


def test_rate_limit_waits_and_rate_limited_jobs(client, staff, make_connection):
    conn = make_connection()
    running = job(conn, Kind.INCREMENTAL, State.RUNNING)
    job(conn, Kind.INCREMENTAL, State.RETRYING, error_class="RateLimited")
    job(conn, Kind.MANUAL, State.RETRYING, error_class="RateLimited")
    job(conn, Kind.PUSH, State.RETRYING, error_class="Transient")  # not a rate limit

    def log(wait: float | None, ago: timedelta = timedelta(0)) -> None:
        data = {"wait": wait} if wait is not None else {"created": 5}
        row = SyncLog.objects.create(
            job=running, connection=conn, level="info", message=f"waiting {wait}s", data=data
        )
        SyncLog.objects.filter(pk=row.pk).update(created_at=timezone.now() - ago)

    log(2.5)
    log(4)
    log(None)  # another log line
    log(30, ago=timedelta(hours=25))  # outside the window
    client.force_login(staff)
    samples = scrape(client)
    kind = {"connection_kind": "fake"}
    assert value(samples, "syncproject_rate_limit_wait_seconds_count", **kind) == 2
    assert value(samples, "syncproject_rate_limit_wait_seconds_sum", **kind) == pytest.approx(6.5)
    assert value(samples, "syncproject_rate_limited_jobs", **kind) == 2


def test_a_scrape_makes_the_same_number_of_queries_however_many_rows(
    client, staff, make_connection
):
    client.force_login(staff)

    def queries() -> int:
        with CaptureQueriesContext(connection) as ctx:
            scrape(client)
        return len(ctx.captured_queries)

    conn = make_connection(schedule="*/15 * * * *")
    job(conn, Kind.INCREMENTAL, State.QUEUED)
    before = queries()
    for n in range(5):
        more = make_connection(name=f"Extra {n}", schedule="*/15 * * * *")
        job(
            more,
            Kind.MANUAL,
            State.SUCCEEDED,
            started_at=timezone.now(),
            finished_at=timezone.now(),
        )
    assert queries() == before
