"""The users' settings page in a real browser, against the test Dovecot and a real qcluster."""

from __future__ import annotations

import pytest
from playwright.sync_api import Page, expect

from integrations.models import Connection
from syncqueue import dispatcher
from syncqueue.models import SyncJob
from tests.support.cluster import FAST_CLUSTER
from tests.support.mailfactory import message
from tests.support.processes import qcluster, wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.process]
WORKERS = {**FAST_CLUSTER, "SYNC_WORKERS": 2}


def test_connect_a_mailbox_watch_it_sync_and_turn_it_off(
    live_server, page: Page, browser, owner, dovecot, imap_user, screenshot
):
    dovecot.deliver_many(imap_user, (message(subject=f"Invoice {i}") for i in range(400)))
    base = live_server.url
    page.goto(f"{base}/settings/sync/")
    page.fill("#id_username", "olivia")
    page.fill("#id_password", "pw-olivia-1")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="Your syncs")).to_be_visible()

    with qcluster("settings", **WORKERS):
        page.get_by_role("link", name="Connect a new IMAP mailbox").click()
        page.get_by_label("Name", exact=True).fill("Work mail")
        page.get_by_label("Mail server").fill("127.0.0.1")
        page.get_by_label("Encryption").select_option("none")
        page.get_by_label("Port").fill(str(dovecot.port))
        page.get_by_label("User name").fill(imap_user)
        page.get_by_label("Password").fill("not-my-password")
        page.get_by_label("Mail to bring in first").select_option("all")
        page.get_by_role("button", name="Test and save").click()
        expect(page.locator("#form-error")).to_contain_text(
            "Connection test failed: The mail server rejected the username or password."
        )
        expect(page.get_by_label("Password")).to_have_value("")  # never echoed back
        screenshot(page, "settings-wrong-password")
        page.get_by_label("Password").fill(dovecot.users[imap_user])
        page.get_by_role("button", name="Test and save").click()
        expect(page.locator(".messages")).to_contain_text("Connection test passed")

        conn = Connection.objects.get(name="Work mail")
        card = page.locator(f"#connection-{conn.pk}")
        expect(card.locator("[data-field=job-label]")).to_have_text("Succeeded", timeout=30_000)
        expect(card.locator("progress")).to_have_attribute("value", "400")
        expect(card.locator("[data-field=count]")).to_contain_text("400 of 400 items")
        expect(card.locator("[data-field=last-success]")).not_to_have_text("not yet")
        screenshot(page, "settings-synced")

        dovecot.deliver(imap_user, [message(subject="One more")])
        card.get_by_role("button", name="Sync now").click()  # answered in place, no reload
        wait_for(
            lambda: SyncJob.objects.filter(
                connection=conn, kind="manual", state="succeeded"
            ).exists(),
            30,
            "Sync now",
        )
        expect(card.locator("[data-field=count]")).to_contain_text("1 of 1 item", timeout=10_000)

        card.get_by_label("Sync this account").uncheck()  # saves on change
        expect(page.locator(".messages")).to_contain_text("nothing syncs until you turn it on")
        card = page.locator(f"#connection-{conn.pk}")
        expect(card.locator("[data-field=next-sync]")).to_have_text("off")
        expect(card.get_by_role("button", name="Sync now")).to_be_disabled()
        conn.refresh_from_db()
        assert not conn.enabled and conn.next_sync_at is None
        before = SyncJob.objects.count()
        dispatcher.dispatch()
        assert SyncJob.objects.count() == before  # scheduled syncs have stopped
        screenshot(page, "settings-turned-off")

    phone = browser.new_context(viewport={"width": 390, "height": 844})
    phone.add_cookies(page.context.cookies())
    small = phone.new_page()
    small.goto(f"{base}/settings/sync/")
    expect(small.get_by_role("heading", name="Your syncs")).to_be_visible()
    screenshot(small, "settings-phone")
    phone.close()
