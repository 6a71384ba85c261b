"""The three-way merge of status and percent complete, without a database.

Both sides' values are compared with the ones both last agreed on (``TaskCopy.pushed_status``/
``pushed_percent``): a side that did not change since then gives way; when both changed, the
later change wins (Zimbra's ``md`` against the task's ``progress_changed_at``).
"""

from __future__ import annotations

from typing import Any

from integrations.zimbra.records import Incoming


def base_of(copy: Any) -> tuple[str, int] | None:
    """The status and percent complete both sides last agreed on (None: not known)."""
    if copy.pushed_status and copy.pushed_percent is not None:
        return (copy.pushed_status, copy.pushed_percent)
    return None


def theirs(remote: Incoming, task: Any) -> tuple[str, int]:
    return (remote.status or task.status, remote.percent)


def decide(remote: Incoming, task: Any, base: tuple[str, int] | None) -> str:
    """same | theirs (only Zimbra changed) | ours (only we did) | theirs-later | ours-later."""
    zimbra, ours = theirs(remote, task), task.progress()
    if zimbra == ours:
        return "same"
    if zimbra == base:
        return "ours"
    if ours == base:
        return "theirs"
    ours_at = task.progress_changed_at or task.updated_at
    return "theirs-later" if remote.changed_at > ours_at else "ours-later"


def describe(status: str | None, percent: int, labels: dict[str, str]) -> str:
    """'In progress, 40%' (``labels``: status value -> its label)."""
    return f"{labels.get(status, status) if status else 'an unknown status'}, {percent}%"


def kept_ours(task: Any, account: str, remote: Incoming, labels: dict[str, str]) -> str:
    return (
        f"“{task.title}”: our change ({describe(task.status, task.percent_complete, labels)}) "
        f"is later than {account}'s in Zimbra ({describe(remote.status, remote.percent, labels)})"
        "; kept ours and sent it to Zimbra."
    )
