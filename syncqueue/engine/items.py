"""Poison items: a batch that cannot be stored is stored item by item; the items that fail
become ``SkippedItem`` rows, retried by later syncs, while the sync goes on."""

from __future__ import annotations

import hashlib
import logging
import traceback
from dataclasses import replace

from django.db import InterfaceError, OperationalError, transaction
from django.db.models import F
from django.utils import timezone
from django_q.exceptions import TimeoutException

from integrations.base import (
    Batch,
    Connector,
    Counts,
    ItemRef,
    NoLongerThere,
    Unreadable,
)
from integrations.errors import (
    SyncError,
)
from integrations.models import Connection
from syncproject.safetext import storable
from syncqueue.engine.outcome import _scrub
from syncqueue.engine.state import InternalError, _Run
from syncqueue.models import SkippedItem, SyncJob

log = logging.getLogger("syncqueue.engine")

State = SyncJob.State
Kind = SyncJob.Kind
Priority = SyncJob.Priority


# Failures that are about the connection or the database, not about one item: they stop the
# slice and are decided by class, as before.
_NOT_ABOUT_ONE_ITEM = (SyncError, OperationalError, InterfaceError, TimeoutException)


_LOGGED_SKIPS_PER_SLICE = 20


SYSTEMIC_AFTER = 10  # items in a batch that all failing alike means "not the items"


class StoreItemByItem(Exception):  # a signal to _commit, not an error
    """The whole batch could not be stored: ``_commit`` rolls its transaction back and stores
    the batch again item by item. Carries what went wrong with the whole batch."""

    def __init__(self, whole: Exception) -> None:
        super().__init__(str(whole))
        self.whole = whole


def _store(run: _Run, connector: Connector, batch: Batch, whole: Exception | None = None) -> Counts:
    """Write a batch's records (inside ``_commit``'s transaction).

    When that fails for a reason that is not about the connection — a bug, a constraint, a
    shape nobody expected — ``StoreItemByItem`` makes ``_commit`` roll the transaction back
    and call this again with ``whole``, the failure: the batch is then stored item by item
    (``connector.items``), each in its own savepoint, and the items that fail are listed as
    skipped items with what went wrong: one poison item must not stop the sync, and the
    checkpoint still moves on. Records the connector could not even read (``Unreadable``) are
    listed the same way.

    The whole batch is written without a savepoint of its own. On SQLite, a savepoint around
    a batch larger than the page cache made SQLite copy every page it spilled into the
    savepoint's journal (a temporary file) as well: a first mail sync spent about 5 % of its
    time on that, before batches got a page cache they fit in (``batch_writes``). A failed
    batch costs a rolled-back transaction instead, which is rare.
    """
    special = (Unreadable, NoLongerThere)
    for record in batch.records:
        if isinstance(record, Unreadable):
            _skip(run, record.ref, record.error_class, record.message, record.detail)
        elif isinstance(record, NoLongerThere):
            _settle(run, [record.ref.key], SkippedItem.State.GONE)
    if any(isinstance(r, special) for r in batch.records):
        batch = replace(batch, records=[r for r in batch.records if not isinstance(r, special)])
    if not (batch.records or batch.deleted):
        return Counts()
    if whole is None:
        try:
            counts = connector.apply(batch, run.log)
        except _NOT_ABOUT_ONE_ITEM:
            raise
        except Exception as exc:
            raise StoreItemByItem(exc) from exc
    else:
        counts = Counts()
        stored = []
        failures: list[tuple[ItemRef, str, str, str]] = []
        parts = connector.items(batch)
        for part in parts:
            mark = len(run.logs)
            try:
                with transaction.atomic():
                    counts += connector.apply(part, run.log)
            except _NOT_ABOUT_ONE_ITEM:
                raise
            except Exception as exc:
                del run.logs[mark:]
                ref = connector.describe(part) or _unknown_item(part)
                failures.append((ref, type(exc).__name__, str(exc), traceback.format_exc()))
            else:
                stored.append(part)
        if len(parts) >= SYSTEMIC_AFTER and len(failures) == len(parts):
            kinds = {error for _, error, _, _ in failures}
            if len(kinds) == 1:
                # Every one of many items failed the same way: that is our bug or our
                # database, not the items. Skipping them all would report a sync that stored
                # nothing as a success; the job fails and says why instead.
                raise InternalError(
                    f"Every item of a batch of {len(parts)} failed to be stored the same way "
                    f"({failures[0][1]}: {failures[0][2][:200]}); nothing was skipped.",
                    detail=failures[0][3],
                ) from whole
        for ref, error, message, detail in failures:
            _skip(run, ref, error, message, detail)
        if run.connection.skipped_items > 0:
            _settle(run, _keys(connector, stored), SkippedItem.State.RESOLVED)
        return counts
    if run.connection.skipped_items > 0:
        _settle(run, _keys(connector, connector.items(batch)), SkippedItem.State.RESOLVED)
    return counts


def _keys(connector: Connector, parts: list[Batch]) -> list[str]:
    refs = (connector.describe(part) for part in parts)
    return [ref.key for ref in refs if ref is not None]


def _unknown_item(part: Batch) -> ItemRef:
    record = (list(part.records) + list(part.deleted) or [None])[0]
    kind = type(record).__name__
    return ItemRef(f"{kind}:{hashlib.sha256(repr(record).encode()).hexdigest()[:20]}", f"a {kind}")


def _skip(run: _Run, ref: ItemRef, error_class: str, message: str, detail: str) -> None:
    """List one item as skipped (or count another failure of an open one)."""
    now = timezone.now()
    message, detail = storable(_scrub(run, message))[:500], storable(_scrub(run, detail))
    ref = ItemRef(storable(ref.key), storable(ref.label))
    found = SkippedItem.objects.filter(
        connection_id=run.connection.pk, key=ref.key[:500], state=SkippedItem.State.OPEN
    ).update(
        job_id=run.job.pk,
        error_class=error_class[:100],
        message=message,
        detail=detail,
        attempts=F("attempts") + 1,
        last_tried_at=now,
    )
    if not found:
        SkippedItem.objects.create(
            connection_id=run.connection.pk,
            job_id=run.job.pk,
            key=ref.key[:500],
            label=ref.label[:500],
            error_class=error_class[:100],
            message=message,
            detail=detail,
            last_tried_at=now,
        )
        _recount_skipped(run)
    run.skipped += 1
    if run.skipped <= _LOGGED_SKIPS_PER_SLICE:
        run.log(
            "warning",
            f"Skipped {ref.label}: {error_class}: {message[:200]}. The sync goes on; the item is "
            "tried again at the next sync.",
            item=ref.key[:200],
        )


def _settle(run: _Run, keys: list[str], state: str) -> None:
    """Skipped items stored after all (or gone from the server) are no longer open."""
    if not keys:
        return
    keys = [storable(key)[:500] for key in keys]  # as ``_skip`` stored them
    settled = SkippedItem.objects.filter(
        connection_id=run.connection.pk, state=SkippedItem.State.OPEN, key__in=keys
    ).update(state=state, resolved_at=timezone.now())
    if settled:
        run.log("info", f"{settled} skipped item(s) {'stored' if state == 'resolved' else 'gone'}.")
        _recount_skipped(run)


def _recount_skipped(run: _Run) -> None:
    count = SkippedItem.objects.filter(
        connection_id=run.connection.pk, state=SkippedItem.State.OPEN
    ).count()
    Connection.objects.filter(pk=run.connection.pk).update(skipped_items=count)
    run.connection.skipped_items = count
