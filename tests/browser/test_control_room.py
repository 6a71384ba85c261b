"""The staff control room in a real browser (Debian's Chromium driven by Playwright), with a
real qcluster doing the work."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import Page, expect

from integrations.models import Connection
from syncqueue import engine
from syncqueue.models import SyncJob, WorkerHeartbeat
from tests.support.cluster import FAST_CLUSTER
from tests.support.processes import qcluster, wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.process]
WORKERS = {**FAST_CLUSTER, "SYNC_WORKERS": 2}


def log_in(page: Page, base: str) -> None:
    page.goto(f"{base}/admin/")
    page.fill("#id_username", "stella")
    page.fill("#id_password", "pw-stella-1")
    page.click("input[type=submit]")
    expect(page.locator("#user-tools")).to_contain_text("stella")


def test_banner_sync_now_and_retry_a_failed_group(
    live_server, page: Page, staff, make_connection, screenshot
):
    base = live_server.url
    inbox = make_connection(
        name="Sales inbox", config={"total": 30, "batch": 5, "delay": 0.1}, schedule="every 15m"
    )
    flaky = [
        make_connection(name=f"Flaky {i}", config={"faults": [{"at": 0, "error": "permanent"}]})
        for i in range(2)
    ]
    for conn in flaky:  # fail once each, before any worker runs
        engine.enqueue(conn, SyncJob.Kind.MANUAL)
        engine.process_ticket()
    WorkerHeartbeat.objects.all().delete()

    log_in(page, base)
    banner = page.locator("#worker-banner")
    expect(banner).to_contain_text("Background workers are not running")
    expect(banner).to_contain_text("manage.py qcluster")

    with qcluster("browser", **WORKERS):
        wait_for(lambda: WorkerHeartbeat.objects.exists(), 20, "the first worker heartbeat")
        page.goto(f"{base}/admin/integrations/connection/")
        expect(page.locator("#worker-banner")).to_have_count(0)

        # Sync now from the connection list
        page.locator(f"input[name=_selected_action][value='{inbox.pk}']").check()
        page.select_option("select[name=action]", "sync_now")
        page.click("button[name=index]")
        expect(page.locator("ul.messagelist")).to_contain_text("Queued a sync for 1 connection")
        screenshot(page, "admin-connections")
        job = SyncJob.objects.filter(connection=inbox).latest("id")
        page.goto(f"{base}/admin/syncqueue/syncjob/{job.pk}/change/")
        for _ in range(60):  # watch it finish
            if page.locator(".sync-badge.sync-ok").count():
                break
            page.wait_for_timeout(500)
            page.reload()
        expect(page.locator(".sync-badge").first).to_have_text("Succeeded")
        expect(page.locator("body")).to_contain_text("30 / 30")

        # the failures are grouped by cause; retry the group and see them succeed
        page.goto(f"{base}/admin/dashboard/")
        groups = page.locator("#failure-groups tbody tr")
        expect(groups).to_have_count(1)
        expect(groups.first).to_contain_text("The fake server says this is not allowed.")
        expect(page.locator("#outcomes-chart svg")).to_be_visible()
        screenshot(page, "admin-dashboard")
        groups.first.get_by_role("button", name="Retry this group").click()
        expect(page.locator("ul.messagelist")).to_contain_text("Queued 2 job(s)")
        wait_for(
            lambda: SyncJob.objects.filter(connection__in=flaky, state="succeeded").count() == 2,
            30,
            "the retried jobs",
        )
        page.reload()
        expect(page.locator("#failure-groups")).to_have_count(0)
        expect(page.locator("#queue-stats")).to_contain_text(re.compile(r"3\s+succeeded"))
        screenshot(page, "admin-dashboard-after-retry")
    assert Connection.objects.get(pk=inbox.pk).status == "ok"
