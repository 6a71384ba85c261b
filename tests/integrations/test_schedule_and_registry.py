"""Schedules (cron, intervals, invalid input) and the connector registry/config validation."""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from django.core.exceptions import ValidationError

from integrations.errors import ConfigError
from integrations.registry import UnknownConnectorKind, get_connector_class
from integrations.schedule import InvalidSchedule, parse_schedule
from workspace.models import Organization

UTC = ZoneInfo("UTC")


@pytest.mark.parametrize(
    "text,problem",
    [
        ("*/15 * * *", "5 fields"),
        ("61 * * * *", "not a valid cron expression"),
        ("every 0m", "at least one minute"),
        ("sometimes", "not a valid schedule"),
        ("* * * * * *", "5 fields"),
        # these parsed, then failed every use with an OverflowError or CroniterBadDateError
        ("every 99999999999d", "at most ten years"),
        ("every 3651d", "at most ten years"),
        ("0 0 30 2 *", "never runs"),
        ("0 0 31 4,6 *", "never runs"),
    ],
)
def test_invalid_schedules_are_refused_with_the_reason(text, problem):
    with pytest.raises(InvalidSchedule, match=problem):
        parse_schedule(text)


def test_cron_next_run_is_in_the_given_time_zone():
    schedule = parse_schedule("0 9 * * *")
    now = datetime(2026, 1, 5, 7, 0, tzinfo=UTC)  # 08:00 in Berlin
    nxt = schedule.next_after(now, ZoneInfo("Europe/Berlin"))
    assert nxt.astimezone(UTC) == datetime(2026, 1, 5, 8, 0, tzinfo=UTC)
    assert schedule.typical_interval(now, UTC) == timedelta(days=1)


def test_intervals_and_manual():
    every = parse_schedule("every 2h")
    assert every.interval == timedelta(hours=2)
    assert every.describe() == "every 2 hours"
    assert parse_schedule("").is_manual
    assert parse_schedule("").next_after(datetime.now(UTC), UTC) is None
    assert parse_schedule("@hourly").is_cron


def test_connection_rejects_an_invalid_schedule_and_config(make_connection):
    conn = make_connection()
    conn.schedule = "*/15 * *"
    with pytest.raises(ValidationError) as info:
        conn.full_clean()
    assert "schedule" in info.value.message_dict
    conn.schedule = "*/15 * * * *"
    conn.config = {"total": "many", "colour": "red"}
    with pytest.raises(ValidationError) as info:
        conn.full_clean()
    message = " ".join(info.value.message_dict["config"])
    assert "total" in message and "colour" in message


def test_unknown_kind_is_a_permanent_error_naming_the_kinds():
    with pytest.raises(UnknownConnectorKind, match=r"known kinds: .*fake"):
        get_connector_class("telex")


def test_config_errors_are_permanent():
    with pytest.raises(ConfigError, match="batch"):
        get_connector_class("fake").validate_config({"batch": "five"})


def test_organization_time_zone_drives_cron(make_connection):
    org = Organization.objects.create(name="Acme", slug="acme", timezone="America/New_York")
    conn = make_connection(organization=org, schedule="0 9 * * *")
    assert conn.tz == ZoneInfo("America/New_York")
    nxt = conn.compute_next_sync()
    assert nxt.astimezone(conn.tz).hour == 9


def test_organization_time_zone_is_validated(db):
    org = Organization(name="X", slug="x", timezone="Mars/Olympus")
    with pytest.raises(ValidationError, match="not a known time zone"):
        org.full_clean()
