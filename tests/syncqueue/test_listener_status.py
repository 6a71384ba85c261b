"""The IMAP listener's liveness, shown like the workers' but never taken for them."""

from __future__ import annotations

from datetime import timedelta
from io import StringIO
from typing import Any

import pytest
from django.core.management import call_command
from django.utils import timezone

from syncqueue import heartbeat
from syncqueue.dashboard import alerts
from syncqueue.models import WorkerHeartbeat

pytestmark = pytest.mark.django_db


def beat(name: str, age: float = 0, **info: Any) -> None:
    WorkerHeartbeat.objects.create(
        name=name, seen_at=timezone.now() - timedelta(seconds=age), info=info
    )


def test_a_listener_heartbeat_does_not_make_workers_look_alive() -> None:
    beat("listener:host:1", watched=3, idling=3)
    assert not heartbeat.worker_status().alive
    status = heartbeat.listener_status()
    assert status.alive and status.watched == 3
    assert "watches 3 folder(s), 3 in IDLE" in status.message


def test_a_stale_or_stopped_listener_is_not_running() -> None:
    assert "No IMAP listener has run" in heartbeat.listener_status().message
    beat("listener:host:1", age=3600, watched=3, idling=3)
    beat("listener:host:2", watched=0, stopped=True)
    status = heartbeat.listener_status()
    assert not status.alive
    assert "is not running" in status.message and "sync_listen" in status.message


def test_surfaces_say_when_imap_mail_only_arrives_on_schedule(
    make_connection: Any, client: Any, staff: Any
) -> None:
    beat("cluster:test:1")  # workers and dispatcher alive: only the listener is missing
    beat("dispatcher")
    make_connection(kind="imap", config={"host": "127.0.0.1", "username": "u", "security": "none"})
    assert "listener" in [a.key for a in alerts()]
    out = StringIO()
    call_command("sync_doctor", stdout=out)
    assert "WARN listener: No IMAP listener has run" in out.getvalue()
    client.force_login(staff)
    body = client.get("/healthz").json()
    assert body["status"] == "ok"  # push is an addition: polling carries on without it
    assert body["listener"]["alive"] is False

    beat("listener:host:1", watched=1, idling=1)
    assert "listener" not in [a.key for a in alerts()]
    out = StringIO()
    call_command("sync_doctor", stdout=out)
    assert "OK   listener: The IMAP listener watches 1 folder(s)" in out.getvalue()
    assert client.get("/healthz").json()["listener"]["idling"] == 1
