"""The staff control room through the Django test client: actions, permissions, the admin log,
the worker banner and the failure dashboard."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.admin.models import LogEntry
from django.contrib.auth.models import Permission
from django.db import connection as db
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from integrations.models import Connection
from syncqueue import engine
from syncqueue.models import SyncJob, SyncLog, WorkerHeartbeat
from tests.support.admin_forms import connection_form

pytestmark = pytest.mark.django_db
Kind, State = SyncJob.Kind, SyncJob.State
CONNECTIONS = reverse("admin:integrations_connection_changelist")
JOBS = reverse("admin:syncqueue_syncjob_changelist")
DASHBOARD = reverse("admin:sync_dashboard")


@pytest.fixture
def admin_client_for(client, staff):
    client.force_login(staff)
    return client


@pytest.fixture
def viewer(django_user_model):
    """Staff who may look but not act (view permissions only)."""
    user = django_user_model.objects.create_user(
        "vera", "vera@example.com", "pw-vera-1", is_staff=True
    )
    user.user_permissions.set(
        Permission.objects.filter(codename__in=["view_connection", "view_syncjob", "view_synclog"])
    )
    return user


def act(client, url, action, ids, **extra):
    return client.post(
        url, {"action": action, "_selected_action": [str(i) for i in ids], **extra}, follow=True
    )


def alive() -> None:
    WorkerHeartbeat.objects.update_or_create(
        name="cluster:test:1", defaults={"seen_at": timezone.now()}
    )


def test_non_staff_and_anonymous_have_no_access(client, owner):
    assert client.get(CONNECTIONS).status_code == 302
    client.force_login(owner)
    response = client.get(CONNECTIONS)
    assert response.status_code == 302 and "/login/" in response["Location"]
    assert client.get(DASHBOARD).status_code == 302


def test_connection_list_runs_a_fixed_number_of_queries(admin_client_for, make_connection):
    alive()

    def queries(total: int) -> int:
        for i in range(total):
            conn = make_connection(name=f"c{total}-{i}", last_error="boom")
            engine.enqueue(conn, Kind.MANUAL)
            engine.claim_next("w")  # a running job with progress on each
        with CaptureQueriesContext(db) as ctx:
            assert admin_client_for.get(CONNECTIONS).status_code == 200
        return len(ctx.captured_queries)

    assert queries(3) == queries(30)


def test_list_shows_health_columns_and_search_by_host(admin_client_for, make_connection):
    alive()
    make_connection(
        name="Sales inbox", kind="imap", config={"host": "imap.sales.example", "username": "s"}
    )
    make_connection(name="Other")
    Connection.objects.filter(name="Other").update(
        status="auth_required", last_error="Password rejected"
    )
    page = admin_client_for.get(CONNECTIONS).content.decode()
    assert "Auth required" in page and "Password rejected" in page and "never" in page
    found = admin_client_for.get(CONNECTIONS, {"q": "sales.example"}).content.decode()
    assert "Sales inbox" in found and "Other" not in found


def test_filters_stale_error_kind(admin_client_for, make_connection):
    alive()
    stale = make_connection(name="Stale one", schedule="every 15m")
    Connection.objects.filter(pk=stale.pk).update(stale_after=timezone.now() - timedelta(hours=1))
    make_connection(name="Fresh one", schedule="every 15m")
    page = admin_client_for.get(CONNECTIONS, {"stale": "yes"}).content.decode()
    assert "Stale one" in page and "Fresh one" not in page
    Connection.objects.filter(pk=stale.pk).update(last_error="x")
    page = admin_client_for.get(CONNECTIONS, {"has_error": "yes"}).content.decode()
    assert "Stale one" in page and "Fresh one" not in page
    assert "Fresh one" in admin_client_for.get(CONNECTIONS, {"kind": "fake"}).content.decode()


def test_sync_now_queues_and_is_logged(admin_client_for, make_connection, staff):
    conn = make_connection()
    response = act(admin_client_for, CONNECTIONS, "sync_now", [conn.pk])
    assert "Queued a sync for 1 connection" in response.content.decode()
    job = SyncJob.objects.get(connection=conn)
    assert job.kind == Kind.MANUAL and job.requested_by == staff
    entry = LogEntry.objects.get(object_id=str(conn.pk))
    assert entry.user == staff and f"job {job.pk}" in entry.get_change_message()


def test_full_resync_asks_first(admin_client_for, make_connection):
    conn = make_connection()
    page = act(admin_client_for, CONNECTIONS, "full_resync", [conn.pk]).content.decode()
    assert "are you sure" in page.lower() and not SyncJob.objects.exists()
    act(admin_client_for, CONNECTIONS, "full_resync", [conn.pk], confirm="yes")
    assert SyncJob.objects.get(connection=conn).kind == Kind.FULL_RESYNC


def test_test_connection_reports_success_and_failure(admin_client_for, make_connection):
    good = make_connection(name="Good")
    bad = make_connection(name="Bad", config={"check_error": "auth"})
    page = act(admin_client_for, CONNECTIONS, "test_connection", [good.pk, bad.pk])
    text = page.content.decode()
    assert "Good: Reached the fake server" in text
    assert "Bad: AuthFailed: The fake server rejected the password." in text
    assert LogEntry.objects.count() == 2


def test_disable_with_reason_then_enable(admin_client_for, make_connection):
    conn = make_connection(schedule="every 15m")
    waiting = engine.enqueue(conn, Kind.MANUAL)
    page = act(admin_client_for, CONNECTIONS, "disable", [conn.pk]).content.decode()
    assert "reason" in page.lower()
    act(admin_client_for, CONNECTIONS, "disable", [conn.pk], reason="Mailbox moved to M365")
    conn.refresh_from_db()
    waiting.refresh_from_db()
    assert not conn.enabled and conn.status == "disabled" and conn.next_sync_at is None
    assert conn.disabled_reason == "Mailbox moved to M365"
    assert waiting.state == State.CANCELLED
    act(admin_client_for, CONNECTIONS, "enable", [conn.pk])
    conn.refresh_from_db()
    assert conn.enabled and conn.status == "ok" and conn.next_sync_at is not None
    assert LogEntry.objects.filter(object_id=str(conn.pk)).count() == 2


def test_viewer_without_change_permission_cannot_act(client, viewer, make_connection):
    client.force_login(viewer)
    conn = make_connection()
    assert client.get(CONNECTIONS).status_code == 200
    response = act(client, CONNECTIONS, "sync_now", [conn.pk])
    assert not SyncJob.objects.exists()
    assert response.status_code in (200, 403)
    failed = SyncJob.objects.create(
        connection=conn,
        kind=Kind.MANUAL,
        dedupe_key="sync",
        state=State.FAILED,
        run_after=timezone.now(),
    )
    act(client, JOBS, "retry_jobs", [failed.pk])
    failed.refresh_from_db()
    assert failed.state == State.FAILED
    assert client.get(DASHBOARD).status_code == 200
    page = client.get(DASHBOARD).content.decode()
    assert "Retry this group" not in page


def test_secrets_are_never_shown_and_only_replaced(admin_client_for, make_connection):
    conn = make_connection(secrets={"password": "do-not-show-me-1234"})
    url = reverse("admin:integrations_connection_change", args=[conn.pk])
    page = admin_client_for.get(url).content.decode()
    assert "do-not-show-me-1234" not in page and conn.secret not in page
    assert "Replace password" in page and "Stored, encrypted" in page
    form = connection_form(conn, name="Renamed", cfg_total="3", secret_password="")
    response = admin_client_for.post(url, form)
    assert response.status_code == 302, response.content.decode()[:2000]
    conn.refresh_from_db()
    assert conn.name == "Renamed" and conn.get_secrets() == {"password": "do-not-show-me-1234"}
    assert conn.config["total"] == 3
    admin_client_for.post(url, {**form, "secret_password": "new-one-5678"})
    conn.refresh_from_db()
    assert conn.get_secrets() == {"password": "new-one-5678"}


def test_a_bad_setting_is_refused_on_its_own_field(admin_client_for, make_connection):
    conn = make_connection()
    url = reverse("admin:integrations_connection_change", args=[conn.pk])
    response = admin_client_for.post(url, connection_form(conn, cfg_total="lots"))
    errors = response.context["adminform"].form.errors
    assert list(errors) == ["cfg_total"] and "whole number" in errors["cfg_total"][0]


def test_adding_a_connection_is_two_steps_with_the_providers_own_fields(admin_client_for, owner):
    add = reverse("admin:integrations_connection_add")
    chooser = admin_client_for.get(add).content.decode()
    assert f"{add}?kind=imap" in chooser and f"{add}?kind=zendesk" in chooser
    imap = admin_client_for.get(f"{add}?kind=imap").content.decode()
    assert 'name="cfg_host"' in imap and 'name="secret_password"' in imap
    assert 'name="config"' not in imap and "api_token" not in imap  # no JSON, no foreign fields
    assert "Test connection" in imap
    response = admin_client_for.post(
        f"{add}?kind=fake",
        {
            "name": "New",
            "owner": owner.pk,
            "cfg_total": "7",
            "enabled": "on",
            "schedule": "every 30m",
            "scheduled": "on",
            "secret_password": "pw",
        },
    )
    assert response.status_code == 302, response.context["adminform"].form.errors
    conn = Connection.objects.get(name="New")
    assert conn.kind == "fake" and conn.config["total"] == 7
    assert conn.get_secrets() == {"password": "pw"} and conn.next_sync_at is not None
    assert SyncJob.objects.get(connection=conn).kind == Kind.INITIAL


def test_test_connection_runs_before_saving(admin_client_for, owner, make_connection):
    test_new = reverse("admin:integrations_connection_test_new") + "?kind=fake"
    form = {"name": "Trial", "owner": owner.pk, "cfg_total": "4", "secret_password": "pw"}
    bad = admin_client_for.post(
        test_new, {**form, "cfg_check_error": "auth"}, HTTP_X_REQUESTED_WITH="fetch"
    ).json()
    assert bad == {
        "ok": False,
        "message": "Connection test failed (AuthFailed): The fake server rejected the password.",
    }
    good = admin_client_for.post(test_new, form, HTTP_X_REQUESTED_WITH="fetch").json()
    assert good["ok"] and "4 items" in good["message"] and "not saved yet" in good["message"]
    page = admin_client_for.post(test_new, form).content.decode()  # without JavaScript
    assert "Connection test passed" in page and "Go back to the form" in page
    assert not Connection.objects.exists()  # nothing was saved
    conn = make_connection(name="Stored")
    test_it = reverse("admin:integrations_connection_test", args=[conn.pk])
    answer = admin_client_for.post(test_it, connection_form(conn), HTTP_X_REQUESTED_WITH="fetch")
    assert answer.json()["ok"]


def test_job_retry_and_cancel_actions(admin_client_for, make_connection, staff):
    conn = make_connection(name="a")
    failed = SyncJob.objects.create(
        connection=conn,
        kind=Kind.MANUAL,
        dedupe_key="sync",
        state=State.FAILED,
        run_after=timezone.now(),
        checkpoint={"pos": 5},
    )
    act(admin_client_for, JOBS, "retry_jobs", [failed.pk])
    failed.refresh_from_db()
    assert failed.state == State.QUEUED and failed.checkpoint == {"pos": 5}
    running = engine.enqueue(make_connection(name="b"), Kind.MANUAL)
    engine.claim_next("w")
    page = act(admin_client_for, JOBS, "cancel_jobs", [failed.pk, running.pk]).content.decode()
    assert "Cancelled 1 waiting" in page and "1 running job(s) will stop" in page
    running.refresh_from_db()
    assert running.cancel_requested
    assert LogEntry.objects.filter(user=staff).count() == 3


def test_job_detail_shows_progress_error_and_logs(admin_client_for, make_connection, work):
    conn = make_connection(
        config={"total": 10, "batch": 5, "faults": [{"at": 5, "error": "permanent"}]}
    )
    job = engine.enqueue(conn, Kind.MANUAL)
    work()
    page = admin_client_for.get(reverse("admin:syncqueue_syncjob_change", args=[job.pk]))
    text = page.content.decode()
    assert "The fake server says this is not allowed." in text and "Permanent" in text
    assert "5 / 10" in text  # progress
    assert "Save" not in text or 'name="_save"' not in text
    assert admin_client_for.get(JOBS, {"state__exact": "failed"}).status_code == 200


def test_log_list_pages_cheaply(admin_client_for, make_connection):
    conn = make_connection()
    job = engine.enqueue(conn, Kind.MANUAL)
    SyncLog.objects.bulk_create(
        [SyncLog(job=job, connection=conn, message=f"line {i}") for i in range(250)]
    )
    page = admin_client_for.get(reverse("admin:syncqueue_synclog_changelist"), {"p": 1})
    assert page.status_code == 200 and "line 249" in page.content.decode()


def test_worker_banner_on_every_admin_page_until_workers_run(admin_client_for):
    for url in (reverse("admin:index"), CONNECTIONS, JOBS, DASHBOARD):
        text = admin_client_for.get(url).content.decode()
        assert 'id="worker-banner"' in text and "manage.py qcluster" in text
    alive()
    assert 'id="worker-banner"' not in admin_client_for.get(CONNECTIONS).content.decode()


def test_dashboard_numbers_alerts_groups_chart(
    admin_client_for, make_connection, work, settings, django_user_model
):
    settings.SYNC_ALERT_FAILURES_24H = 1
    alive()
    conns = [
        make_connection(name=f"m{i}", config={"faults": [{"at": 0, "error": "permanent"}]})
        for i in range(2)
    ]
    for conn in conns:
        engine.enqueue(conn, Kind.MANUAL)
    ok = make_connection(name="fine")
    engine.enqueue(ok, Kind.MANUAL)
    work()
    Connection.objects.filter(pk=ok.pk).update(status="auth_required")
    page = admin_client_for.get(DASHBOARD).content.decode()
    assert "2 jobs failed in the last 24 hours" in page
    assert "1 connection(s) need new credentials" in page
    assert "<svg" in page and "1 succeeded, 2 failed" in page
    assert page.count("Retry this group") == 1  # both failures share one cause
    refused = make_connection(name="refused", config={"faults": [{"at": 0, "error": "auth"}]})
    engine.enqueue(refused, Kind.MANUAL)
    work()
    page = admin_client_for.get(DASHBOARD).content.decode()
    # a retry can only fail the same way until the credentials are fixed: no button for that
    assert page.count("Retry this group") == 1 and "New credentials first" in page
    assert "m0" in page and "m1" in page
    index = admin_client_for.get(reverse("admin:index")).content.decode()
    assert "Failure dashboard" in index and "need new credentials" in index
    # staff who may not see the dashboard do not read its alerts on the front page either
    bare = django_user_model.objects.create_user("bea", "bea@example.com", "pw", is_staff=True)
    admin_client_for.force_login(bare)
    index = admin_client_for.get(reverse("admin:index")).content.decode()
    assert "need new credentials" not in index and "jobs failed" not in index


def test_dashboard_lists_clusters_heals_and_alerts_on_a_lost_one(admin_client_for):
    now = timezone.now()
    heal = {
        "at": now.timestamp() - 120,
        "reason": "task_queue._rlock left taken by dead process 41",
    }
    WorkerHeartbeat.objects.create(
        name="cluster:w1:10",
        seen_at=now,
        info={"workers": 2, "busy": 1, "generation": 1, "heals": [heal]},
    )
    WorkerHeartbeat.objects.create(
        name="cluster:w2:20", seen_at=now - timedelta(minutes=5), info={"workers": 2}
    )
    WorkerHeartbeat.objects.create(
        name="cluster:w3:30", seen_at=now - timedelta(minutes=5), info={"stopped": True}
    )
    page = admin_client_for.get(DASHBOARD).content.decode()
    assert "1 of 2" in page and "1 time; last 2 minutes ago: task_queue._rlock" in page
    assert "1 worker cluster(s) stopped proving they work without shutting down: w2:20" in page
    assert "stopped cleanly" in page and "w3:30 (" not in page


def test_retry_this_group(admin_client_for, make_connection, work, staff):
    from syncqueue.dashboard import failure_groups

    for i in range(3):
        engine.enqueue(
            make_connection(name=f"g{i}", config={"faults": [{"at": 0, "error": "permanent"}]}),
            Kind.MANUAL,
        )
    work()
    [group] = failure_groups()
    assert group.count == 3 and len(group.connections) == 3
    response = admin_client_for.post(
        reverse("admin:sync_retry_group"), {"group": group.key}, follow=True
    )
    assert "Queued 3 job(s)" in response.content.decode()
    assert SyncJob.objects.filter(state=State.QUEUED).count() == 3
    assert LogEntry.objects.filter(user=staff).count() == 3
    work()  # the fault fired once per connection: now they succeed
    assert SyncJob.objects.filter(state=State.SUCCEEDED).count() == 3


def test_a_group_retried_from_cached_figures_is_not_retried_twice_nor_called_off(
    admin_client_for, make_connection, work, settings
):
    """The groups may be served from the dispatcher's last count (SYNC_LIVE_FIGURE_MS): a
    retry counts them again, and a second click on a group whose jobs are queued already
    says so, instead of calling them "turned off"."""
    from django.core.cache import cache

    from syncqueue import stats
    from syncqueue.dashboard import failure_groups

    for i in range(2):
        engine.enqueue(
            make_connection(name=f"g{i}", config={"faults": [{"at": 0, "error": "permanent"}]}),
            Kind.MANUAL,
        )
    work()
    settings.SYNC_LIVE_FIGURE_MS = 1  # as if every figure were expensive (see _expensive)
    for name in stats.ROLLUPS:
        cache.delete(stats._key(name))
    key = stats._key("failure-groups")
    [group] = failure_groups()
    cache.set(key, {**cache.get(key), "cost": 1.0, "prior": 1.0})  # slow twice running
    url = reverse("admin:sync_retry_group")
    first = admin_client_for.post(url, {"group": group.key}, follow=True).content.decode()
    assert "Queued 2 job(s)" in first
    assert failure_groups() == []  # counted again: the group is gone from the page
    cache.set(key, {"value": [group], "cost": 1.0, "prior": 1.0, "at": __import__("time").time()})
    again = admin_client_for.post(url, {"group": group.key}, follow=True).content.decode()
    assert "Nothing to retry: that group" in again
    assert "turned off" not in again
    assert SyncJob.objects.filter(state=State.QUEUED).count() == 2


def test_a_failure_group_names_its_newest_connections_and_counts_the_rest(
    admin_client_for, make_connection
):
    from syncqueue.dashboard import SHOWN_CONNECTIONS, failure_groups

    now = timezone.now()
    total = SHOWN_CONNECTIONS + 3
    for i in range(total):
        SyncJob.objects.create(
            connection=make_connection(name=f"many{i:02}"),
            kind=Kind.MANUAL,
            dedupe_key="sync",
            state=State.FAILED,
            error_class="Permanent",
            error_message=f"Mailbox {i} is gone",
            run_after=now,
            finished_at=now - timedelta(minutes=total - i),  # many12 failed last
        )
    [group] = failure_groups()
    assert group.count == total and group.connection_count == total
    shown = list(group.connections.values())
    assert shown == [f"many{i:02}" for i in range(total - 1, total - 1 - SHOWN_CONNECTIONS, -1)]
    page = admin_client_for.get(DASHBOARD).content.decode()
    table = page.split('id="failure-groups"')[1].split("</table>")[0]
    assert f"{total} connections in all" in table
    assert "many12" in table and "many00" not in table


def test_a_failure_group_shows_a_real_message_and_skips_connections_needing_credentials(
    admin_client_for, make_connection, work
):
    from syncqueue.dashboard import failure_groups

    conns = [
        make_connection(name=f"c{i}", config={"faults": [{"at": 0, "error": "permanent"}]})
        for i in range(2)
    ]
    for conn in conns:
        engine.enqueue(conn, Kind.MANUAL)
    work()
    real = SyncJob.objects.filter(state=State.FAILED).latest("pk").error_message
    [group] = failure_groups()
    assert group.example == real
    page = admin_client_for.get(DASHBOARD).content.decode()
    assert f">{real}</td>" in page  # people read a real message, the grouping key is a tooltip
    Connection.objects.filter(pk=conns[0].pk).update(
        stale_after=timezone.now() - timedelta(minutes=3)
    )
    page = admin_client_for.get(DASHBOARD).content.decode()
    for table in ("failure-groups", "failing", "stalest"):  # the provider in words, not its code
        rows = page.split(f'id="{table}"')[1].split("</table>")[0]
        assert "<th>Provider</th>" in rows and "<td>Fake</td>" in rows, table
        assert "<td>fake</td>" not in rows, table
    assert "<th>Stale</th>" in page and "<strong>for 3\xa0minutes</strong>" in page

    Connection.objects.filter(pk=conns[0].pk).update(status="auth_required")
    response = admin_client_for.post(
        reverse("admin:sync_retry_group"), {"group": group.key}, follow=True
    )
    text = response.content.decode()
    assert "Queued 1 job(s)" in text
    assert "1 not retried: their connection needs new credentials first (c0)" in text
    assert SyncJob.objects.filter(state=State.QUEUED).count() == 1


def test_the_connection_page_says_what_was_synced_where_it_is_and_its_history(
    admin_client_for, make_connection, work
):
    conn = make_connection(name="History", config={"total": 12, "batch": 5})
    engine.enqueue(conn, Kind.INITIAL)
    work()
    failing = make_connection(name="Broken", config={"faults": [{"at": 0, "error": "permanent"}]})
    engine.enqueue(failing, Kind.MANUAL)
    work()
    page = admin_client_for.get(
        reverse("admin:integrations_connection_change", args=[conn.pk])
    ).content.decode()
    assert "Items: 12" in page  # synced data in the provider's terms
    assert "<div>Items: up to 12</div>" in page  # the position in words, not JSON
    assert 'class="sync-timeline"' in page and "12 new" in page and "Initial sync" in page
    broken = admin_client_for.get(
        reverse("admin:integrations_connection_change", args=[failing.pk])
    ).content.decode()
    assert "Permanent" in broken and "Not synced yet" in broken


def test_heartbeats_say_alive_or_gone_and_what_runs_now(admin_client_for, make_connection):
    conn = make_connection(name="Busy one")
    job = engine.enqueue(conn, Kind.MANUAL)
    SyncJob.objects.filter(pk=job.pk).update(state=State.RUNNING, worker_id="w1:101")
    WorkerHeartbeat.objects.create(
        name="cluster:w1:100", seen_at=timezone.now(), info={"worker_ids": ["w1:101"]}
    )
    WorkerHeartbeat.objects.create(
        name="cluster:w2:200", seen_at=timezone.now() - timedelta(hours=2), info={}
    )
    page = admin_client_for.get(
        reverse("admin:syncqueue_workerheartbeat_changelist")
    ).content.decode()
    assert "alive" in page and "gone" in page
    assert f"Busy one (job {job.pk})" in page
