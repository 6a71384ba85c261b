"""The retry policy: what happens after an attempt fails, decided in one place, without a
database. The engine (a connector raised an error) and the dispatcher (a worker died, or its
lease expired) both ask :func:`after_failure`; connection health follows :func:`health_after`.

| error class          | outcome                                                            |
|----------------------|--------------------------------------------------------------------|
| RateLimited          | wait ``retry_after`` (plus up to 1 s) without spending an attempt  |
| Transient, Internal  | retry with exponential backoff and jitter, up to ``max_attempts``  |
| WorkerLost           | the first time: run again now from the checkpoint (the worker died,|
|                      | not the sync); again: backoff, like a transient error; up to       |
|                      | ``max_attempts`` (a job that kills its worker every time stops)     |
| anything else        | fail at once (AuthFailed, Permanent, an unhandled CursorReset)     |

Inside a slice two more decisions are made here: whether a short ``Retry-After`` is waited out
inline (:func:`wait_inline`) and how many cursor resets one slice may do
(:data:`MAX_RESETS_PER_SLICE`).

Every outcome carries the sentence people read after the cause ("Trying again in 2 minutes
(attempt 3 of 5).") — true for the state the job is left in: a job that failed for good never
says it will be retried.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

RETRYABLE = frozenset({"Transient", "Internal"})
WORKER_LOST = "WorkerLost"
MAX_RESETS_PER_SLICE = 2

State = Literal["queued", "retrying", "failed"]


@dataclass(frozen=True)
class Limits:
    """The numbers the policy works with (from settings; see :meth:`from_settings`)."""

    max_attempts: int
    base_seconds: float
    max_seconds: float
    failing_after: int = 3
    disable_after: int = 10
    inline_wait_max: float = 5.0

    @classmethod
    def from_settings(cls, max_attempts: int | None = None) -> Limits:
        from django.conf import settings

        return cls(
            max_attempts=max_attempts if max_attempts is not None else settings.SYNC_MAX_ATTEMPTS,
            base_seconds=settings.SYNC_RETRY_BASE_SECONDS,
            max_seconds=settings.SYNC_RETRY_MAX_SECONDS,
            failing_after=settings.SYNC_FAILING_AFTER,
            disable_after=settings.SYNC_DISABLE_AFTER,
            inline_wait_max=settings.SYNC_INLINE_WAIT_MAX,
        )


@dataclass(frozen=True)
class Outcome:
    state: State
    attempts: int  # the job's attempts after this failure
    wait: float  # seconds until it may run again (0: now, or never when failed)
    what_next: str  # appended to the cause in the job's error message
    job_failed: bool  # failed for good: counts towards the connection's failures


def backoff_seconds(
    failed_attempts: int, limits: Limits, rand: Callable[[], float] = random.random
) -> float:
    """Exponential backoff with 'equal jitter': half fixed, half random, capped."""
    delay = limits.base_seconds * 2 ** max(0, failed_attempts - 1)
    delay = min(delay, limits.max_seconds)
    return delay / 2 + rand() * delay / 2


def after_failure(
    error_class: str,
    attempts_so_far: int,
    limits: Limits,
    *,
    retry_after: float = 0.0,
    rand: Callable[[], float] = random.random,
) -> Outcome:
    """What happens to a job whose attempt failed with ``error_class`` (see the table)."""
    if error_class == "RateLimited":
        wait = max(0.0, retry_after) + rand()
        return Outcome(
            "retrying",
            attempts_so_far,
            wait,
            f"Resuming in {duration(wait)}, as the service asked.",
            job_failed=False,
        )
    attempts = attempts_so_far + 1
    if error_class == WORKER_LOST:
        if attempts >= limits.max_attempts:
            return Outcome(
                "failed",
                attempts,
                0.0,
                f"The worker running this sync stopped responding {attempts} times; an "
                "administrator should look at the logs.",
                job_failed=True,
            )
        if attempts == 1:
            return Outcome("queued", attempts, 0.0, "Resuming from the last checkpoint.", False)
        wait = backoff_seconds(attempts - 1, limits, rand)
        return Outcome(
            "retrying",
            attempts,
            wait,
            f"Resuming from the last checkpoint in {duration(wait)} (attempt {attempts + 1} "
            f"of {limits.max_attempts}).",
            job_failed=False,
        )
    if error_class in RETRYABLE:
        if attempts < limits.max_attempts:
            wait = backoff_seconds(attempts, limits, rand)
            return Outcome(
                "retrying",
                attempts,
                wait,
                f"Trying again in {duration(wait)} (attempt {attempts + 1} of "
                f"{limits.max_attempts}).",
                job_failed=False,
            )
        return Outcome(
            "failed",
            attempts,
            0.0,
            f"Stopped after {attempts} attempts; it is not tried again by itself.",
            job_failed=True,
        )
    return Outcome("failed", attempts, 0.0, "", job_failed=True)


def wait_inline(retry_after: float, time_left: float, limits: Limits) -> bool:
    """Whether a rate limit is waited out inside the running slice (short, and time left)."""
    return retry_after <= limits.inline_wait_max and retry_after < time_left


@dataclass(frozen=True)
class Health:
    status: str  # a Connection.Status value
    consecutive_failures: int
    disabled: bool  # turned off: too many failed jobs in a row


def health_after(
    status: str, consecutive_failures: int, error_class: str, job_failed: bool, limits: Limits
) -> Health | None:
    """A connection's health after a failed attempt (None: unchanged, as for a rate limit).

    A retried attempt marks it degraded; a failed job counts towards its failures: at
    ``failing_after`` it is failing, at ``disable_after`` it is turned off. Credentials that
    were refused mark it ``auth_required`` at once (its schedule pauses until someone fixes
    them) and never turn it off: what it waits for is new credentials, and saving them starts
    a sync only while it waits for them.
    """
    if error_class == "RateLimited":
        return None
    if error_class == "AuthFailed":
        status = "auth_required"
    elif status == "ok":
        status = "degraded"
    if not job_failed:
        return Health(status, consecutive_failures, disabled=False)
    failures = consecutive_failures + 1
    if failures >= limits.disable_after and status != "auth_required":
        return Health("disabled", failures, disabled=True)
    if failures >= limits.failing_after and status != "auth_required":
        status = "failing"
    return Health(status, failures, disabled=False)


def duration(seconds: float) -> str:
    """'40 seconds', '3 minutes', '1.5 hours'."""
    if seconds < 90:
        count = max(1, round(seconds))
        return f"{count} second{'' if count == 1 else 's'}"
    if seconds < 5400:
        return f"{round(seconds / 60)} minutes"
    return f"{seconds / 3600:.1f} hours"
