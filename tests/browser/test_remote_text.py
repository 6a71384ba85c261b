"""Text that came from someone else's mail is shown neutralised: a subject with U+202E (which
would make "‮fdp.exe" read as "exe.pdf") appears with a visible [U+202E] marker in the admin
and on the owner's settings page — and is stored as it came."""

from __future__ import annotations

import pytest
from django.utils import timezone
from playwright.sync_api import Page, expect

from mail.models import MailMessage
from syncqueue.models import SkippedItem, WorkerHeartbeat

pytestmark = pytest.mark.django_db(transaction=True)
TRICK = "Invoice \u202efdp.exe"


def sign_in(page: Page, base: str, user: str, password: str, path: str) -> None:
    page.goto(f"{base}{path}")
    page.fill("#id_username", user)
    page.fill("#id_password", password)
    page.locator("[type=submit]").click()


def test_a_control_character_subject_is_shown_neutralised(
    live_server, page: Page, owner, staff, make_connection, screenshot
):
    conn = make_connection(
        kind="imap", name="Work mail", config={"host": "imap.example.com", "username": "olivia"}
    )
    MailMessage.objects.create(
        connection=conn,
        folder="INBOX",
        uidvalidity=1,
        uid=1,
        subject=TRICK,
        from_name="Evil \u202eCorp",
        from_address="x@example.com",
        fingerprint="f",
    )
    SkippedItem.objects.create(
        connection=conn,
        key="graph:1",
        label=f"message “{TRICK}”",
        error_class="DataError",
        message="value too long",
        last_tried_at=timezone.now(),
    )
    type(conn).objects.filter(pk=conn.pk).update(skipped_items=1)
    WorkerHeartbeat.objects.create(name="cluster:test:1", seen_at=timezone.now())  # workers up
    base = live_server.url

    sign_in(page, base, "stella", "pw-stella-1", "/admin/mail/mailmessage/")
    cell = page.locator("td.field-subject_shown, th.field-subject_shown").first
    expect(cell).to_have_text("Invoice [U+202E]fdp.exe")
    assert "\u202e" not in page.content()
    screenshot(page, "admin-neutralised-subject")
    page.goto(f"{base}/admin/syncqueue/skippeditem/")
    expect(page.locator("body")).to_contain_text("message “Invoice [U+202E]fdp.exe”")
    assert "\u202e" not in page.content()

    page.context.clear_cookies()
    sign_in(page, base, "olivia", "pw-olivia-1", "/settings/sync/")
    notice = page.locator(f"#connection-{conn.pk} [data-field=notice-message]")
    expect(notice).to_contain_text("Invoice [U+202E]fdp.exe")
    assert "\u202e" not in page.content()
    screenshot(page, "settings-neutralised-subject")
    assert MailMessage.objects.get(connection=conn).subject == TRICK  # stored as it came
