"""The demo (``make demo``) end to end: its local servers and data, a real qcluster syncing them,
and the three pages a newcomer looks at — taken as the README's screenshots."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from integrations.models import Connection
from integrations.zendesk.models import Ticket
from integrations.zimbra.models import TaskCopy
from sandbox.demo import PASSWORD, Demo
from tests.support.cluster import FAST_CLUSTER
from tests.support.processes import output_dir, qcluster, wait_for
from workspace.models import Case, Task

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.process]
WORKERS = {**FAST_CLUSTER, "SYNC_WORKERS": 2}


@pytest.fixture
def demo(settings: Any) -> Iterator[tuple[Demo, dict[str, str]]]:
    running = Demo(output_dir() / "demo")
    try:
        environment = running.start()
        for name, value in environment.items():
            setattr(settings, name, value)
        yield running, environment
    finally:
        running.stop()


def log_in(page: Page, base: str, user: str, password: str) -> None:
    page.goto(f"{base}/accounts/login/")
    page.fill("#id_username", user)
    page.fill("#id_password", password)
    page.get_by_role("button", name="Sign in").click()


def test_the_demo_fills_dashboard_settings_and_case_pages(
    live_server, page: Page, staff, demo, screenshot
):
    running, environment = demo
    seeded = running.seed()
    base = live_server.url
    broken = Connection.objects.get(name__contains="wrong secret")
    healthy = Connection.objects.exclude(pk=broken.pk)

    with qcluster("demo", **WORKERS, **environment):
        wait_for(
            lambda: healthy.filter(last_success_at__isnull=True).count() == 0,
            90,
            "every demo connection's first sync",
        )
        wait_for(
            lambda: Case.objects.get(pk=seeded["case"]).sync_state == "synced",
            60,
            "the case's history search",
        )
        broken.refresh_from_db()
        assert broken.status == Connection.Status.AUTH_REQUIRED
        assert Ticket.objects.count() == 40
        copies = TaskCopy.objects.filter(assignment__task__in=Task.objects.all())
        # each task's push is a job of its own, which may still wait behind the first syncs
        wait_for(
            lambda: copies.exists() and set(copies.values_list("state", flat=True)) == {"pushed"},
            60,
            "the demo's tasks pushed to Zimbra",
        )

        log_in(page, base, "stella", "pw-stella-1")
        page.goto(f"{base}/admin/dashboard/")
        expect(page.locator("body")).to_contain_text("need new credentials")
        screenshot(page, "demo-dashboard", docs=True)

        page.goto(f"{base}/admin/workspace/case/{seeded['case']}/change/")
        expect(page.locator("body")).to_contain_text("Synced")
        screenshot(page, "demo-case", docs=True)

        page.context.clear_cookies()
        log_in(page, base, "alice", PASSWORD)
        page.goto(f"{base}/settings/sync/")
        expect(page.get_by_text("Alice's Microsoft 365 mailbox")).to_be_visible()
        screenshot(page, "demo-settings", docs=True)

    assert not any(s.errors for s in (running.graph, running.zendesk, running.zimbra))
