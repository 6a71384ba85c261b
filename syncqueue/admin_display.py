"""Small HTML pieces shared by the admin pages: badges, progress bars, relative times."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.utils.html import format_html
from django.utils.safestring import SafeString

from syncproject import timewords
from syncproject.safetext import neutral as shown  # remote text, shown not obeyed

__all__ = ["badge", "progress_bar", "relative", "shown"]

BADGE_CLASSES = {
    "ok": "ok",
    "succeeded": "ok",
    "degraded": "warn",
    "retrying": "warn",
    "queued": "info",
    "running": "info",
    "auth_required": "bad",
    "failing": "bad",
    "failed": "bad",
    "disabled": "off",
    "cancelled": "off",
    "synced": "ok",
    "syncing": "info",
    "idle": "off",
}


def badge(value: str, label: str) -> SafeString:
    return format_html(
        '<span class="sync-badge sync-{}">{}</span>', BADGE_CLASSES.get(value, "off"), label
    )


def relative(moment: datetime | None, empty: str = "never") -> str:
    return timewords.relative(moment, empty)


def duration_words(job: Any) -> str:
    """How long a finished job took ("0.4 s", "3 min 20 s"); "running" or "—" otherwise."""
    duration = job.duration
    if duration is None:
        return "running" if job.state == "running" else "—"
    seconds = duration.total_seconds()
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {rest} s"
    return f"{minutes // 60} h {minutes % 60} min"


def progress_bar(done: int | None, total: int | None) -> SafeString | str:
    if done is None:
        return "—"
    if not total:
        return format_html('<span class="sync-count">{} done</span>', done)
    percent = min(100, int(100 * done / total))
    return format_html(
        '<div class="sync-progress" role="progressbar" aria-valuenow="{}" aria-valuemin="0" '
        'aria-valuemax="100" title="{} of {}"><div style="width:{}%"></div></div>'
        '<span class="sync-count">{} / {}</span>',
        percent,
        done,
        total,
        percent,
        done,
        total,
    )
