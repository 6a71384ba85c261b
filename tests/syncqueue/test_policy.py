"""The retry policy (syncqueue/policy.py): one pure function decides for the engine and for
the rescue of a lost worker. No database."""

from __future__ import annotations

import pytest

from syncqueue import policy

LIMITS = policy.Limits(max_attempts=5, base_seconds=30, max_seconds=3600)
HALF = lambda: 0.5  # noqa: E731  (jitter in the middle)


def test_a_rate_limit_waits_as_asked_and_spends_no_attempt():
    outcome = policy.after_failure("RateLimited", 2, LIMITS, retry_after=120, rand=HALF)
    assert (outcome.state, outcome.attempts, outcome.wait) == ("retrying", 2, 120.5)
    assert outcome.what_next == "Resuming in 2 minutes, as the service asked."
    assert not outcome.job_failed


@pytest.mark.parametrize("error_class", ["Transient", "Internal"])
def test_transient_errors_back_off_exponentially_then_stop(error_class):
    waits = [policy.after_failure(error_class, n, LIMITS, rand=HALF).wait for n in range(4)]
    assert waits == [22.5, 45.0, 90.0, 180.0]  # 30 s doubling, half fixed and half random
    fourth = policy.after_failure(error_class, 3, LIMITS, rand=HALF)
    assert fourth.what_next == "Trying again in 3 minutes (attempt 5 of 5)."
    last = policy.after_failure(error_class, 4, LIMITS)
    assert (last.state, last.attempts, last.job_failed) == ("failed", 5, True)
    assert last.what_next == "Stopped after 5 attempts; it is not tried again by itself."


def test_backoff_is_capped():
    assert policy.backoff_seconds(30, LIMITS, rand=lambda: 1.0) == 3600


@pytest.mark.parametrize("error_class", ["AuthFailed", "Permanent", "CursorReset"])
def test_other_errors_fail_at_once_and_promise_nothing(error_class):
    outcome = policy.after_failure(error_class, 0, LIMITS)
    assert (outcome.state, outcome.attempts, outcome.what_next) == ("failed", 1, "")


def test_a_lost_worker_resumes_at_once_then_backs_off_then_stops():
    first = policy.after_failure(policy.WORKER_LOST, 0, LIMITS, rand=HALF)
    assert (first.state, first.wait, first.attempts) == ("queued", 0.0, 1)
    assert first.what_next == "Resuming from the last checkpoint."
    again = policy.after_failure(policy.WORKER_LOST, 1, LIMITS, rand=HALF)
    assert (again.state, again.wait) == ("retrying", 22.5)  # a second loss: like a transient
    last = policy.after_failure(policy.WORKER_LOST, 4, LIMITS)
    assert last.state == "failed" and last.job_failed
    assert "stopped responding 5 times" in last.what_next


def test_a_short_rate_limit_is_waited_out_inline_only_with_time_left():
    assert policy.wait_inline(3, time_left=60, limits=LIMITS)
    assert not policy.wait_inline(6, time_left=60, limits=LIMITS)  # above inline_wait_max
    assert not policy.wait_inline(3, time_left=2, limits=LIMITS)  # past the slice budget


def test_connection_health_degrades_fails_and_turns_off():
    assert policy.health_after("ok", 0, "RateLimited", False, LIMITS) is None
    assert policy.health_after("ok", 0, "Transient", False, LIMITS) == policy.Health(
        "degraded", 0, disabled=False
    )
    assert policy.health_after("degraded", 2, "Transient", True, LIMITS).status == "failing"
    assert policy.health_after("ok", 0, "AuthFailed", True, LIMITS).status == "auth_required"
    auth = policy.health_after("auth_required", 5, "AuthFailed", True, LIMITS)
    assert auth.status == "auth_required"  # not "failing": a person must act either way
    assert policy.health_after("failing", 9, "Permanent", True, LIMITS) == policy.Health(
        "disabled", 10, disabled=True
    )
    # refused credentials at the limit: waiting for new ones, not turned off (saving them
    # starts a sync only while the connection waits for them)
    assert policy.health_after("failing", 9, "AuthFailed", True, LIMITS) == policy.Health(
        "auth_required", 10, disabled=False
    )


def test_durations_read_naturally():
    assert [policy.duration(s) for s in (0.2, 45, 150, 7200)] == [
        "1 second",
        "45 seconds",
        "2 minutes",
        "2.0 hours",
    ]
