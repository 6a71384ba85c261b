"""The three-way merge of status and percent complete (integrations/zimbra/merge.py): pure
rules, no database."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest

from integrations.zimbra import merge
from integrations.zimbra.records import Incoming

T0 = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)


def task(status: str, percent: int, changed: datetime = T0) -> SimpleNamespace:
    return SimpleNamespace(
        status=status,
        percent_complete=percent,
        progress_changed_at=changed,
        updated_at=changed,
        title="Report",
        progress=lambda: (status, percent),
    )


def remote(status: str | None, percent: int, changed: datetime = T0) -> Incoming:
    return Incoming(1, status, percent, changed, ms="5", rev="4")


BASE = ("inprogress", 40)


@pytest.mark.parametrize(
    "ours,theirs,expected",
    [
        (("inprogress", 40), ("inprogress", 40), "same"),
        (("inprogress", 40), ("completed", 100), "theirs"),  # only Zimbra moved
        (("completed", 100), ("inprogress", 40), "ours"),  # only we moved
    ],
)
def test_the_side_that_did_not_change_gives_way(ours, theirs, expected):
    assert merge.decide(remote(*theirs), task(*ours), BASE) == expected


def test_when_both_changed_the_later_change_wins():
    ours = task("waiting", 50, changed=T0)
    assert merge.decide(remote("completed", 100, T0 + timedelta(seconds=1)), ours, BASE) == (
        "theirs-later"
    )
    assert merge.decide(remote("completed", 100, T0 - timedelta(seconds=1)), ours, BASE) == (
        "ours-later"
    )


def test_an_unknown_remote_status_keeps_ours_and_takes_the_percent():
    assert merge.theirs(remote(None, 70), task("waiting", 50)) == ("waiting", 70)


def test_no_agreed_base_means_both_changed():
    assert merge.base_of(SimpleNamespace(pushed_status="", pushed_percent=None)) is None
    decision = merge.decide(remote("completed", 100, T0 + timedelta(1)), task("waiting", 50), None)
    assert decision == "theirs-later"
    labels = {"waiting": "Waiting", "completed": "Completed"}
    assert merge.describe("waiting", 50, labels) == "Waiting, 50%"
    assert merge.describe(None, 5, labels) == "an unknown status, 5%"
