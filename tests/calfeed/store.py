"""Storing a feed's events: upsert by UID; events the completed pass did not see are
marked deleted (and come back if they reappear)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from integrations.base import Counts
from integrations.models import Connection
from tests.calfeed.ical import Event
from tests.calfeed.models import FeedEvent

FIELDS = ("summary", "starts", "ends", "sequence", "status")
CHUNK = 500


@dataclass(frozen=True)
class Retire:
    """The UIDs a whole pass over the feed saw; every other stored event is gone."""

    present: frozenset[str]


def store_events(connection: Connection, records: Sequence[Any]) -> Counts:
    counts = Counts()
    events = [r for r in records if isinstance(r, Event)]
    held = {
        row.uid: row
        for row in FeedEvent.objects.filter(connection=connection, uid__in=[e.uid for e in events])
    }
    for event in events:
        row = held.get(event.uid)
        values = {name: getattr(event, name) for name in FIELDS}
        if row is None:
            FeedEvent.objects.create(connection=connection, uid=event.uid, **values)
            counts.created += 1
        elif row.deleted or any(getattr(row, k) != v for k, v in values.items()):
            FeedEvent.objects.filter(pk=row.pk).update(deleted=False, **values)
            counts.updated += 1
        else:
            counts.unchanged += 1
    for record in records:
        if isinstance(record, Retire):
            live = FeedEvent.objects.filter(connection=connection, deleted=False)
            gone = [pk for pk, uid in live.values_list("pk", "uid") if uid not in record.present]
            for start in range(0, len(gone), CHUNK):  # within every database's parameter limit
                chunk = gone[start : start + CHUNK]
                counts.deleted += FeedEvent.objects.filter(pk__in=chunk).update(deleted=True)
    return counts
