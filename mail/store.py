"""Writing fetched mail into the store: idempotent upserts keyed by the provider's identity.

Called by connectors' ``apply()`` inside the engine's transaction, so a batch and its cursor
commit together. A message fetched twice (a retry after a crash) is recognised by its identity
and counted as unchanged, never stored twice.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from functools import partial
from typing import Any

from django.core.files.storage import default_storage
from django.db import connection as db
from django.db import models
from django.db.models import Q, QuerySet
from django.utils import timezone

from integrations.base import Counts
from integrations.models import Connection
from mail import attachment_files
from mail.models import MailAttachment, MailMessage, MailSource
from mail.parsing import ParsedMessage, parse_message


@dataclass
class FetchedMessage:
    """A message read from a server, with its identity there."""

    folder: str
    uid: int | None
    uidvalidity: int | None
    parsed: ParsedMessage
    size: int
    received_at: datetime | None = None
    flags: list[str] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)
    remote_id: str = ""
    raw: bytes = b""  # as the server handed it over (kept in MailSource)
    raw_format: str = MailSource.Format.RFC5322
    #: which of "folder", "seen", "flagged", "labels" the server actually sent; None = all.
    #: A Graph delta update carries only what changed: the others keep their stored values.
    known: frozenset[str] | None = None

    def has(self, name: str) -> bool:
        return self.known is None or name in self.known

    @property
    def key(self) -> tuple[str, int | None, int | None]:
        return (self.folder, self.uidvalidity, self.uid)


@dataclass
class FlagChange:
    """New flags (and labels) of a message we already hold."""

    folder: str
    uidvalidity: int
    uid: int
    flags: list[str]
    labels: list[str] | None = None


def _held(connection: Connection, *args: Any, **filters: Any) -> QuerySet[MailMessage]:
    """Stored messages of ``connection`` matching ``filters``, *unordered*.

    The model's default ordering (newest first) would make SQLite walk every message of the
    connection by date instead of using the identity index when the lookup is a long ``IN``
    list — a full scan per batch that made large initial syncs slow down as they grew.
    """
    return MailMessage.objects.filter(*args, connection=connection, **filters).order_by()


def _constant(value: Any, _ignored: Any) -> Any:
    return value


def _json(value: Any) -> str:
    return "[]" if value == [] else json.dumps(value)  # most lists (flags, cc) are empty


class _RowInserter:
    """``executemany`` INSERT of new rows of ``model``, built from the model's own field list.

    The mail store's hottest writes: ``bulk_create`` spent about 0.2 ms per message compiling
    SQL for 27 columns, ten times the database's own time (and 0.08 ms per attachment row).
    Columns and value conversions come from ``model._meta`` (JSON as text, datetimes as the
    backend wants them, ``auto_now`` fields set to now), so the statement follows the model.
    Rows are dicts by attribute name (``message_id`` for a foreign key); a missing key is NULL.
    """

    def __init__(self, model: type[models.Model]) -> None:
        self.fields = [f for f in model._meta.concrete_fields if not f.primary_key]
        columns = ", ".join(db.ops.quote_name(f.column) for f in self.fields)
        marks = ", ".join(["%s"] * len(self.fields))
        table = db.ops.quote_name(model._meta.db_table)
        self.sql = f"INSERT INTO {table} ({columns}) VALUES ({marks})"  # noqa: S608

    def __call__(self, rows: list[dict[str, Any]]) -> None:
        ops = db.ops
        now = ops.adapt_datetimefield_value(timezone.now())
        converters: list[tuple[str, Callable[[Any], Any] | None]] = []
        for model_field in self.fields:
            name = model_field.attname
            if isinstance(model_field, models.DateTimeField) and (
                model_field.auto_now or model_field.auto_now_add
            ):
                converters.append((name, partial(_constant, now)))
            elif isinstance(model_field, models.DateTimeField):
                converters.append((name, ops.adapt_datetimefield_value))
            elif isinstance(model_field, models.JSONField):
                converters.append((name, _json))
            else:
                converters.append((name, None))
        params = [
            [row.get(name) if conv is None else conv(row.get(name)) for name, conv in converters]
            for row in rows
        ]
        with db.cursor() as cursor:
            cursor.executemany(self.sql, params)


_insert_rows = _RowInserter(MailMessage)
_insert_attachments = _RowInserter(MailAttachment)


BLOB_CHUNK = 1_000_000  # SQLite: sources larger than this are written in pieces


def _insert_sources(connection: Connection, items: Sequence[FetchedMessage]) -> None:
    """Each new message's raw bytes, in one ``executemany``: every row finds its message by
    the identity it was just inserted with (no separate id lookup).

    On SQLite a large source is inserted as a zero-filled blob and then written in pieces
    through SQLite's incremental blob I/O: binding a 25 MB value would make SQLite copy it
    twice in memory (the bound value, then the record), three times the message's size in a
    worker that holds it already.
    """
    source = db.ops.quote_name(MailSource._meta.db_table)
    message = db.ops.quote_name(MailMessage._meta.db_table)
    piecewise = db.vendor == "sqlite"
    value = "CASE WHEN %s THEN zeroblob(%s) ELSE %s END" if piecewise else "%s"
    head = (
        f"INSERT INTO {source} (message_id, format, data, size) "  # noqa: S608
        f"SELECT id, %s, {value}, %s FROM {message} WHERE connection_id = %s AND "
    )

    def data(item: FetchedMessage) -> tuple[Any, ...]:
        if not piecewise:
            return (item.raw_format, item.raw, len(item.raw))
        big = len(item.raw) > BLOB_CHUNK
        return (item.raw_format, big, len(item.raw), b"" if big else item.raw, len(item.raw))

    imap = [i for i in items if i.uid is not None]
    remote = [i for i in items if i.uid is None and i.remote_id]
    with db.cursor() as cursor:
        if imap:
            cursor.executemany(
                head + "folder = %s AND uidvalidity = %s AND uid = %s",
                [(*data(i), connection.pk, i.folder, i.uidvalidity, i.uid) for i in imap],
            )
        if remote:
            cursor.executemany(
                head + "remote_id = %s", [(*data(i), connection.pk, i.remote_id) for i in remote]
            )
    if piecewise:
        _write_blobs(connection, [i for i in items if len(i.raw) > BLOB_CHUNK])


def _write_blobs(connection: Connection, items: Sequence[FetchedMessage]) -> None:
    """Fill the zero blobs ``_insert_sources`` made for large sources (SQLite), a piece at a
    time. SQLite addresses a blob by rowid, which is not the message id here (a BIGINT
    primary key is no rowid alias), so it is looked up."""
    if not items:
        return
    ids = _ids_of(connection, items)
    table = MailSource._meta.db_table
    for item in items:
        pk = ids.get(item.key if item.uid is not None else item.remote_id)
        if pk is None:
            continue
        with db.cursor() as cursor:
            cursor.execute(
                f"SELECT rowid FROM {db.ops.quote_name(table)} WHERE message_id = %s",  # noqa: S608
                [pk],
            )
            rowid = cursor.fetchone()[0]
        with db.connection.blobopen(table, "data", rowid) as blob:
            view = memoryview(item.raw)
            for start in range(0, len(view), BLOB_CHUNK):
                blob.write(view[start : start + BLOB_CHUNK])


def _new_row(connection: Connection, item: FetchedMessage) -> dict[str, Any]:
    p = item.parsed
    return {
        "connection_id": connection.pk,
        "folder": item.folder,
        "uidvalidity": item.uidvalidity,
        "uid": item.uid,
        "remote_id": item.remote_id,
        "message_id": p.message_id,
        "fingerprint": p.fingerprint(item.size),
        "subject": p.subject,
        "from_name": p.from_name,
        "from_address": p.from_address,
        "to": p.to,
        "cc": p.cc,
        "sent_at": p.sent_at,
        "received_at": item.received_at or p.sent_at,
        "flags": item.flags,
        "labels": item.labels,
        "size": item.size,
        "snippet": p.snippet,
        "text_body": p.text_body,
        "html_body": p.html_body,
        "has_attachments": bool(p.attachments),
        "truncated": p.truncated,
        "defects": p.defects,
        "deleted": False,
        "deleted_at": None,
    }


def _ids_of(connection: Connection, items: Sequence[FetchedMessage]) -> dict[Any, int]:
    """Primary keys of freshly inserted messages, by identity (one indexed query per kind)."""
    found: dict[Any, int] = {}
    imap = [i for i in items if i.uid is not None]
    keys = {(i.folder, i.uidvalidity) for i in imap}
    for folder, uidvalidity in keys:
        uids = [i.uid for i in imap if (i.folder, i.uidvalidity) == (folder, uidvalidity)]
        for uid, pk in _held(
            connection, folder=folder, uidvalidity=uidvalidity, uid__in=uids
        ).values_list("uid", "id"):
            found[(folder, uidvalidity, uid)] = pk
    remote = [i.remote_id for i in items if i.uid is None and i.remote_id]
    if remote:
        for remote_id, pk in _held(connection, remote_id__in=remote).values_list("remote_id", "id"):
            found[remote_id] = pk
    return found


def save_attachments(rows: Iterable[tuple[int, ParsedMessage]]) -> None:
    """Attachment metadata (and content within the limit) for messages by primary key."""
    attachments = []
    helper_wrote = False
    for message_id, parsed in rows:
        for a in parsed.attachments:
            if a.stored is not None:  # written by the parse helper
                name, digest = a.stored
                helper_wrote = True
            elif a.data is not None:
                name, digest = attachment_files.keep(default_storage, a.data)
            else:  # over the size limit: metadata and a note only
                name, digest = "", ""
            attachments.append(
                {
                    "message_id": message_id,
                    "filename": a.filename,
                    "content_type": a.content_type,
                    "size": a.size,
                    "content_id": a.content_id,
                    "inline": a.inline,
                    "sha256": digest,
                    "file": name,
                    "note": a.note,
                }
            )
    if attachments:
        attachment_files.flush(default_storage, helper_wrote)  # the files first, on disk
        _insert_attachments(attachments)


def insert_messages(connection: Connection, items: Sequence[FetchedMessage]) -> None:
    """Insert new messages and their attachments."""
    if not items:
        return
    _insert_rows([_new_row(connection, item) for item in items])
    _insert_sources(connection, items)
    with_files = [i for i in items if i.parsed.attachments]
    for item in with_files:
        if any(
            a.stored is not None and not attachment_files.present(default_storage, a.stored, a.size)
            for a in item.parsed.attachments
        ):
            # the parse helper's file is not there (any more): read the attachments again
            item.parsed.attachments = parse_message(item.raw).attachments
    if with_files:
        ids = _ids_of(connection, with_files)
        save_attachments(
            (ids[i.key if i.uid is not None else i.remote_id], i.parsed) for i in with_files
        )


def upsert_messages(
    connection: Connection,
    items: Sequence[FetchedMessage],
    relink: dict[str, int] | None = None,
) -> Counts:
    """Store IMAP messages by ``(folder, uidvalidity, uid)``.

    ``relink`` maps a folder to its *previous* UIDVALIDITY: a message that is new under the
    current UIDVALIDITY but matches a row of the previous one by fingerprint is that row, moved
    to its new identity (no duplicate after a UIDVALIDITY change).
    """
    counts = Counts()
    by_folder: dict[tuple[str, int | None], list[FetchedMessage]] = defaultdict(list)
    for item in items:
        by_folder[(item.folder, item.uidvalidity)].append(item)
    to_create: list[FetchedMessage] = []
    to_update: list[MailMessage] = []
    for (folder, uidvalidity), group in by_folder.items():
        existing = {
            row.uid: row
            for row in _held(
                connection, folder=folder, uidvalidity=uidvalidity, uid__in=[i.uid for i in group]
            ).only("id", "uid", "flags", "labels", "deleted")
        }
        old = (relink or {}).get(folder)
        movable: dict[str, list[MailMessage]] = defaultdict(list)
        if old is not None:
            prints = [i.parsed.fingerprint(i.size) for i in group if i.uid not in existing]
            for held in _held(
                connection, folder=folder, uidvalidity=old, fingerprint__in=prints
            ).only("id", "fingerprint", "flags", "labels", "deleted"):
                movable[held.fingerprint].append(held)
        for item in group:
            row = existing.get(item.uid)
            if row is None and old is not None:
                candidates = movable.get(item.parsed.fingerprint(item.size))
                if candidates:
                    row = candidates.pop()
                    row.uidvalidity, row.uid = item.uidvalidity, item.uid
                    row.flags, row.labels, row.deleted, row.deleted_at = (
                        item.flags,
                        item.labels,
                        False,
                        None,
                    )
                    to_update.append(row)
                    counts.updated += 1
                    continue
            if row is None:
                to_create.append(item)
                counts.created += 1
            elif row.flags != item.flags or row.labels != item.labels or row.deleted:
                row.flags, row.labels, row.deleted, row.deleted_at = (
                    item.flags,
                    item.labels,
                    False,
                    None,
                )
                to_update.append(row)
                counts.updated += 1
            else:
                counts.unchanged += 1  # already stored (e.g. re-fetched after a crash)
    if to_update:
        MailMessage.objects.bulk_update(
            to_update,
            ["uidvalidity", "uid", "flags", "labels", "deleted", "deleted_at"],
            batch_size=500,
        )
    insert_messages(connection, to_create)
    return counts


def apply_flag_changes(connection: Connection, changes: Sequence[FlagChange]) -> int:
    """Update flags/labels of held messages; returns how many actually changed."""
    if not changes:
        return 0
    wanted = {(c.folder, c.uidvalidity, c.uid): c for c in changes}
    query = Q()
    for folder, uidvalidity in {(c.folder, c.uidvalidity) for c in changes}:
        uids = [c.uid for c in changes if (c.folder, c.uidvalidity) == (folder, uidvalidity)]
        query |= Q(folder=folder, uidvalidity=uidvalidity, uid__in=uids)
    changed = []
    for row in _held(connection, query).only(
        "id", "folder", "uidvalidity", "uid", "flags", "labels"
    ):
        change = wanted[(row.folder, row.uidvalidity, row.uid)]  # type: ignore[index]  # filtered on all three
        labels = row.labels if change.labels is None else change.labels
        if row.flags != change.flags or row.labels != labels:
            row.flags, row.labels = change.flags, labels
            changed.append(row)
    MailMessage.objects.bulk_update(changed, ["flags", "labels"], batch_size=500)
    return len(changed)


def mark_deleted(connection: Connection, keys: Sequence[tuple[str, int, int]]) -> int:
    """Mark messages gone from the server as deleted (kept, not destroyed)."""
    now = timezone.now()
    total = 0
    for folder, uidvalidity in {(f, v) for f, v, _ in keys}:
        uids = [u for f, v, u in keys if (f, v) == (folder, uidvalidity)]
        for start in range(0, len(uids), 500):
            total += MailMessage.objects.filter(
                connection=connection,
                folder=folder,
                uidvalidity=uidvalidity,
                uid__in=uids[start : start + 500],
                deleted=False,
            ).update(deleted=True, deleted_at=now)
    return total


def retire_old_uidvalidity(
    connection: Connection, folder: str, uidvalidity: int, since: date | None = None
) -> int:
    """After a folder was re-read under a new UIDVALIDITY, rows left under ``uidvalidity``
    were not found again: they are gone from the server. With ``since`` (the re-read asked
    for mail from that day on), only rows received from the day after are: IMAP compares
    dates in the server's time zone, so a row of the days around ``since`` may not have been
    looked for, and an older one certainly was not. A row left alone is never deleted wrongly."""
    rows = MailMessage.objects.filter(
        connection=connection, folder=folder, uidvalidity=uidvalidity, deleted=False
    )
    if since is not None:
        start = datetime.combine(since + timedelta(days=1), time.min, tzinfo=UTC)
        rows = rows.filter(received_at__gte=start)
    return rows.update(deleted=True, deleted_at=timezone.now())


def count_held_from(connection: Connection, folder: str, uidvalidity: int, uid: int) -> int:
    """How many messages we hold (not deleted) in a folder from ``uid`` on."""
    return _held(
        connection, folder=folder, uidvalidity=uidvalidity, uid__gte=uid, deleted=False
    ).count()


def known_uids(connection: Connection, folder: str, uidvalidity: int) -> set[int]:
    """UIDs we hold (not deleted) for a folder, for expunge detection."""
    held = _held(connection, folder=folder, uidvalidity=uidvalidity, deleted=False)
    return {uid for uid in held.values_list("uid", flat=True) if uid is not None}


def upsert_remote(
    connection: Connection, items: Sequence[FetchedMessage], *, touch: bool = False
) -> tuple[Counts, dict[str, int]]:
    """Store messages identified by ``remote_id`` (Graph's immutable id).

    A message seen again (in another folder after a move, or with new flags) is the same row,
    updated. Content is kept from the first sight: received mail does not change. With
    ``touch`` every row seen is marked as seen now, for ``retire_unseen`` after a full pass.
    Returns the counts and the primary key of every item, by remote id.
    """
    counts = Counts()
    by_id = {item.remote_id: item for item in items if item.remote_id}
    existing = {
        row.remote_id: row
        for row in _held(connection, remote_id__in=list(by_id)).only(
            "id", "remote_id", "folder", "flags", "labels", "deleted"
        )
    }
    changed, seen, new = [], [], []
    for remote_id, item in by_id.items():
        row = existing.get(remote_id)
        if row is None:
            new.append(item)
            counts.created += 1
            continue
        seen.append(row.pk)
        folder = item.folder if item.has("folder") else row.folder
        flags = _merged_flags(row.flags, item)
        labels = item.labels if item.has("labels") else row.labels
        if (row.folder, row.flags, row.labels, row.deleted) != (folder, flags, labels, False):
            row.folder, row.flags, row.labels = folder, flags, labels
            row.deleted, row.deleted_at = False, None
            changed.append(row)
            counts.updated += 1
        else:
            counts.unchanged += 1
    MailMessage.objects.bulk_update(
        changed, ["folder", "flags", "labels", "deleted", "deleted_at"], batch_size=500
    )
    if touch and seen:
        MailMessage.objects.filter(pk__in=seen).update(updated_at=timezone.now())
    insert_messages(connection, new)
    ids = {rid: row.pk for rid, row in existing.items()}
    if new:
        ids.update(_ids_of(connection, new))
    return counts, ids


def _merged_flags(stored: list[str], item: FetchedMessage) -> list[str]:
    """The flags after an update that may name only some of them (\\Seen, \\Flagged)."""
    if item.known is None:
        return item.flags
    flags = set(stored)
    for name, flag in (("seen", "\\Seen"), ("flagged", "\\Flagged")):
        if item.has(name):
            flags.discard(flag)
            if flag in item.flags:
                flags.add(flag)
    return sorted(flags)


def mark_removed(connection: Connection, folder: str, remote_ids: Sequence[str]) -> int:
    """A folder reports these messages gone. One that now lives in another folder was moved,
    not deleted, so only rows still in ``folder`` are marked deleted."""
    if not remote_ids:
        return 0
    return _held(connection, folder=folder, remote_id__in=list(remote_ids), deleted=False).update(
        deleted=True, deleted_at=timezone.now()
    )


def retire_unseen(connection: Connection, folder: str, since: datetime) -> int:
    """After a full pass over a folder (its sync position was lost), messages of that folder
    the pass did not see are gone from the server."""
    return _held(connection, folder=folder, deleted=False, updated_at__lt=since).update(
        deleted=True, deleted_at=timezone.now()
    )


def mail_stats(connection: Connection) -> dict[str, Any]:
    """Messages and folders held for a mailbox connection (the admin's "Synced data")."""
    from django.db.models import Count, Q

    held = MailMessage.objects.filter(connection=connection).aggregate(
        live=Count("id", filter=Q(deleted=False)),
        gone=Count("id", filter=Q(deleted=True)),
        in_folders=Count("folder", distinct=True, filter=Q(deleted=False)),
    )
    return {
        "Messages": held["live"],
        "Folders": held["in_folders"],
        "Deleted on the server (kept here)": held["gone"],
    }
