"""Connection schedules: a cron expression, a fixed interval, or nothing (manual only).

Accepted text:
- ``""`` — no schedule; the connection syncs only when asked.
- a five-field cron expression such as ``*/15 * * * *`` or an alias such as ``@hourly``,
  evaluated in the connection's time zone (its organization's, else ``TIME_ZONE``);
- ``every <n><unit>`` with unit ``m`` (minutes), ``h`` (hours) or ``d`` (days), e.g.
  ``every 30m``. Intervals are at least one minute.

The next run is always computed from *now*, so a window missed while workers were down is run
once, not replayed once per missed window.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from cron_descriptor import get_description
from croniter import CroniterBadCronError, CroniterBadDateError, croniter
from django.core.exceptions import ValidationError

_INTERVAL = re.compile(r"^every\s+(\d+)\s*([mhd])$", re.IGNORECASE)
_UNITS = {"m": "minutes", "h": "hours", "d": "days"}
_ALIASES = {"@hourly", "@daily", "@midnight", "@weekly", "@monthly", "@yearly", "@annually"}


#: the longest "every …" interval: a longer one is a typo, and soon runs past the last date
#: Python knows (year 9999)
MAX_INTERVAL = timedelta(days=3650)


class InvalidSchedule(ValueError):
    """The schedule text is neither a cron expression nor an interval."""


@dataclass(frozen=True)
class Schedule:
    """A parsed schedule; build it with ``parse_schedule``."""

    text: str
    interval: timedelta | None = None  # set for "every ..." schedules

    @property
    def is_manual(self) -> bool:
        return not self.text

    @property
    def is_cron(self) -> bool:
        return bool(self.text) and self.interval is None

    def next_after(self, now: datetime, tz: ZoneInfo) -> datetime | None:
        """The first run time strictly after ``now`` (None for manual schedules)."""
        if self.is_manual:
            return None
        if self.interval is not None:
            return now + self.interval
        return croniter(self.text, now.astimezone(tz)).get_next(datetime)

    def typical_interval(self, now: datetime, tz: ZoneInfo) -> timedelta | None:
        """Roughly how often it runs: the gap between the next two cron runs, or the interval."""
        if self.is_manual:
            return None
        if self.interval is not None:
            return self.interval
        it = croniter(self.text, now.astimezone(tz))
        first = it.get_next(datetime)
        return it.get_next(datetime) - first

    def describe(self) -> str:
        """Human wording, e.g. 'every 30 minutes' or 'cron */15 * * * *'."""
        if self.is_manual:
            return "manual only"
        if self.interval is not None:
            minutes = int(self.interval.total_seconds() // 60)
            for size, word in ((1440, "day"), (60, "hour"), (1, "minute")):
                if minutes % size == 0:
                    count = minutes // size
                    return f"every {word}" if count == 1 else f"every {count} {word}s"
        return describe_cron(self.text)


def describe_cron(expression: str) -> str:
    """Describe a cron expression in words, e.g. 'Every 15 minutes'."""
    try:
        return get_description(expression)
    except Exception:  # a description is cosmetic; never fail a page over it
        return f"cron {expression}"


def parse_schedule(text: str) -> Schedule:
    """Parse schedule text; raises ``InvalidSchedule`` with a message naming the problem."""
    text = (text or "").strip()
    if not text:
        return Schedule(text="")
    match = _INTERVAL.match(text)
    if match:
        count, unit = int(match.group(1)), match.group(2).lower()
        try:
            interval = timedelta(**{_UNITS[unit]: count})
        except OverflowError:
            interval = MAX_INTERVAL * 2
        if interval < timedelta(minutes=1):
            raise InvalidSchedule("An interval must be at least one minute.")
        if interval > MAX_INTERVAL:
            raise InvalidSchedule("An interval must be at most ten years (every 3650d).")
        return Schedule(text=f"every {count}{unit}", interval=interval)
    if text.lower() in _ALIASES:
        return Schedule(text=text.lower())
    fields = text.split()
    if len(fields) != 5:
        raise InvalidSchedule(
            f"{text!r} is not a valid schedule: a cron expression has 5 fields "
            "(minute hour day-of-month month day-of-week), e.g. '*/15 * * * *'; "
            "or use an interval such as 'every 30m'."
        )
    try:
        runs = croniter(text, datetime(2000, 1, 1, tzinfo=UTC))
        # two runs, as typical_interval asks for: "0 0 30 2 *" (February 30th) parses but
        # never comes, and would fail every later use of the schedule instead of here
        runs.get_next(datetime), runs.get_next(datetime)
    except CroniterBadDateError:
        raise InvalidSchedule(f"{text!r} never runs: no date matches it.") from None
    except (CroniterBadCronError, ValueError, KeyError) as exc:
        raise InvalidSchedule(f"{text!r} is not a valid cron expression: {exc}.") from None
    return Schedule(text=" ".join(fields))


def validate_schedule(text: str) -> None:
    """Django field validator wrapping ``parse_schedule``."""
    try:
        parse_schedule(text)
    except InvalidSchedule as exc:
        raise ValidationError(str(exc)) from None
