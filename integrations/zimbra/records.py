"""What the Zimbra connector's batches carry from the server to :mod:`.store`."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from integrations.base import ItemRef


@dataclass
class Pushed:
    assignment_id: int
    content_hash: str
    removed: bool = False
    ids: dict[str, str] | None = None
    progress: tuple[str, int] | None = None  # the status and percent complete sent
    account: str = ""  # the mailbox the ids belong to


@dataclass
class LeftMailbox:
    """Our copy was removed from a mailbox that is no longer the person's (their address
    changed): its ids are forgotten; the next create starts afresh in the new mailbox."""

    assignment_id: int


@dataclass
class Incoming:
    """Status and percent complete of an assignment's task as Zimbra has them."""

    assignment_id: int
    status: str | None  # ours ("inprogress"…); None when Zimbra's is not one we know
    percent: int
    changed_at: datetime  # Zimbra's md: when the task last changed there
    ms: str
    rev: str


@dataclass
class GoneThere:
    """One of our tasks was deleted in Zimbra while still assigned here."""

    assignment_id: int


@dataclass
class NotOurs:
    """The item id we hold for a copy names another task in Zimbra (its uid is not ours): a
    mailbox restored or moved to another server numbers its items afresh. Its status is not
    read; the next push finds our task by uid (or creates it) and keeps its ids."""

    assignment_id: int
    item_id: str
    account: str


@dataclass
class MovedServer:
    """The connection now reads another Zimbra server: these copies are pushed there (each
    push finds its task by our uid, or creates it)."""

    assignment_ids: list[int]


def assignment_ref(assignment_id: int) -> ItemRef:
    return ItemRef(f"zimbra:{assignment_id}", f"the Zimbra copy of assignment #{assignment_id}")
