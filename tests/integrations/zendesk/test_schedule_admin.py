"""Zendesk connections in the control room: the organization's cron schedule in words and in
its time zone, start / stop / trigger / re-time, and the ticket figures."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from django.utils import timezone

from syncqueue import dispatcher
from syncqueue.models import SyncJob

pytestmark = pytest.mark.django_db(transaction=True)


def test_default_schedule_is_every_15_minutes_in_the_organizations_time_zone(
    make_zendesk_connection,
):
    conn = make_zendesk_connection()
    assert conn.schedule == "*/15 * * * *"
    assert conn.tz.key == "Europe/Paris"
    local = timezone.localtime(conn.next_sync_at, conn.tz)
    assert local.minute % 15 == 0 and local.second == 0
    conn.schedule = "0 9 * * 1-5"
    conn.save()
    nxt = timezone.localtime(conn.compute_next_sync(), conn.tz)
    assert (nxt.hour, nxt.minute) == (9, 0) and nxt.weekday() < 5  # 09:00 in Paris


def test_admin_shows_schedule_in_words_and_ticket_figures(
    make_zendesk_connection, zendesk, acme, work, client, staff
):
    for i in range(3):
        zendesk.add_ticket(acme, f"T{i}")
    conn = make_zendesk_connection()
    client.force_login(staff)
    client.post(
        "/admin/integrations/connection/",
        {"action": "sync_now", "_selected_action": [conn.pk]},
    )
    work()
    page = client.get(f"/admin/integrations/connection/{conn.pk}/change/").content.decode()
    assert "Every 15 minutes (Europe/Paris)" in page
    assert "Tickets: 3" in page and "Changed today: 3" in page
    assert "tok-acme" not in page

    client.post(
        "/admin/integrations/connection/",
        {"action": "stop_schedule", "_selected_action": [conn.pk]},
    )
    conn.refresh_from_db()
    assert not conn.scheduled and conn.next_sync_at is None
    listing = client.get("/admin/integrations/connection/").content.decode()
    assert "stopped (runs only when triggered)" in listing
    # nothing runs while stopped, however long we wait
    type(conn).objects.filter(pk=conn.pk).update(last_success_at=datetime(2020, 1, 1, tzinfo=UTC))
    dispatcher.dispatch()
    assert not SyncJob.objects.filter(connection=conn, state=SyncJob.State.QUEUED).exists()

    client.post(
        "/admin/integrations/connection/",
        {"action": "start_schedule", "_selected_action": [conn.pk]},
    )
    conn.refresh_from_db()
    assert conn.scheduled and conn.next_sync_at is not None


def test_schedule_through_the_json_api(make_zendesk_connection, client, staff):
    conn = make_zendesk_connection()
    client.force_login(staff)
    url = f"/api/connections/{conn.pk}/schedule"

    def post(body: dict) -> tuple[int, dict]:
        response = client.post(url, json.dumps(body), content_type="application/json")
        return response.status_code, response.json()

    status, body = post({"action": "update-interval", "interval": "*/5 * * * *"})
    assert status == 200, body
    conn.refresh_from_db()
    assert conn.schedule == "*/5 * * * *"
    status, body = post({"action": "update-interval", "interval": "every tuesday"})
    assert status == 400 and "not a valid" in json.dumps(body)
    assert post({"action": "stop"})[0] == 200
    status, body = post({"action": "trigger"})
    assert status in (200, 202) and SyncJob.objects.filter(connection=conn).count() == 1
