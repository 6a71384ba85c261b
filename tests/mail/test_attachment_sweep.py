"""Attachment files that no row names any more are removed, a day after they were last written
or reused (mail/attachment_files.py ``sweep``); files rows name, young files and anything that
is not ours are left alone. Real files in the test storage, real rows."""

from __future__ import annotations

import ctypes
import errno
import hashlib
import os
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from django.core.files.storage import default_storage
from django.utils import timezone

from mail import attachment_files
from mail.models import MailAttachment
from mail.parsing import parse_message
from mail.store import FetchedMessage, upsert_messages
from syncqueue import dispatcher
from tests.support.mailfactory import message

pytestmark = pytest.mark.django_db(transaction=True)
DAY = timedelta(days=1)


def stored_with(conn, uid: int, data: bytes) -> str:
    """A message of ``conn`` with ``data`` attached; the attachment's file name."""
    raw = message(subject=f"m{uid}", attachments=[("a.bin", "application/octet-stream", data)])
    item = FetchedMessage(
        folder="INBOX", uidvalidity=1, uid=uid, parsed=parse_message(raw), size=len(raw), raw=raw
    )
    upsert_messages(conn, [item])
    return MailAttachment.objects.get(message__connection=conn, message__uid=uid).file.name


def age(name: str, by: timedelta, now: datetime) -> Path:
    path = Path(default_storage.path(name))
    stamp = (now - by).timestamp()
    os.utime(path, (stamp, stamp))
    return path


def prefix_of(name: str) -> str:
    return name.split("/")[1]


def test_files_no_row_names_go_after_a_day_and_nothing_else(make_connection):
    now = timezone.now()
    imap = {"host": "imap.example.com", "username": "u"}
    keep_conn = make_connection(kind="imap", name="stays", config=imap)
    gone_conn = make_connection(kind="imap", name="removed", config=imap)
    shared = b"shared logo " * 300
    named = stored_with(keep_conn, 1, shared)
    assert stored_with(gone_conn, 1, shared) == named  # one file for both
    orphan = stored_with(gone_conn, 2, b"only in the removed connection " * 300)
    young = stored_with(gone_conn, 3, b"written an hour ago " * 300)
    gone_conn.delete()  # its messages and attachment rows go; the files stay, for now
    paths = {name: age(name, 2 * DAY, now) for name in (named, orphan)}
    paths[young] = age(young, timedelta(hours=1), now)
    digest = hashlib.sha256(b"x").hexdigest()
    stray = Path(default_storage.path(f"attachments/{prefix_of(orphan)}"))
    left_over = stray / f".{digest}.0a1b2c3d.part"  # a write cut short
    foreign = stray / "notes.txt"  # not a name keep() gives
    nfs = stray / ".nfs00000000000a1b2c00000001"  # an NFS client's open-but-deleted file
    for path in (left_over, foreign, nfs):
        path.write_bytes(b"?")
        os.utime(path, ((now - 2 * DAY).timestamp(),) * 2)

    removed = sum(attachment_files.sweep(now, prefix) for prefix in {prefix_of(n) for n in paths})

    assert not paths[orphan].exists() and not left_over.exists()
    assert paths[named].exists() and paths[young].exists() and foreign.exists() and nfs.exists()
    assert removed == 2
    assert MailAttachment.objects.get(file=named).file.read() == shared
    foreign.unlink()
    nfs.unlink()


def test_a_file_reused_by_new_mail_is_renewed_and_kept(make_connection):
    """A body whose messages are gone but which new mail brings again (the same logo) is
    marked as used when it is reused, so the sweep does not take it from under the row that
    is about to name it."""
    now = timezone.now()
    data = b"logo again " * 300
    name, _ = attachment_files.keep(default_storage, data)
    path = age(name, 2 * DAY, now)  # no row names it: an orphan, two days old
    attachment_files._verified.clear()
    assert attachment_files.keep(default_storage, data)[0] == name  # reused, not rewritten
    assert path.stat().st_mtime > (now - timedelta(minutes=5)).timestamp()
    assert attachment_files.sweep(now, prefix_of(name)) == 0
    assert path.read_bytes() == data
    default_storage.delete(name)


def test_a_file_swept_while_being_reused_is_written_again():
    """The sweep removed an old file after this process had checked it, before it was marked
    as used: renewing it fails, and the file is written again."""
    data = b"swept meanwhile " * 300
    name, _ = attachment_files.keep(default_storage, data)
    path = age(name, 2 * DAY, timezone.now())
    assert attachment_files._holds(path, data)  # checked (and remembered) as two days old
    path.unlink()  # the sweep's turn
    assert attachment_files._refreshed(path) is False
    assert attachment_files.keep(default_storage, data)[0] == name
    assert path.read_bytes() == data
    default_storage.delete(name)


def test_the_dispatcher_sweeps_every_directory_in_turn(make_connection):
    """One directory per sweep, the next one each time (a counter in the shared cache): after
    256 sweeps every directory has had its turn, whatever the dispatcher's rhythm."""
    from django.core.cache import cache

    data = b"left behind " * 300
    name, _ = attachment_files.keep(default_storage, data)
    path = age(name, 3 * DAY, timezone.now())
    cache.set(attachment_files._TURN_KEY, int(prefix_of(name), 16) - 2, None)
    assert attachment_files.sweep(timezone.now()) == 0  # the directory before its own
    assert path.exists()
    dispatcher.dispatch(timezone.now())  # its turn
    assert not path.exists()
    seen = {attachment_files._next_prefix() for _ in range(256)}
    assert len(seen) == 256


def test_a_reuse_at_the_moment_of_deletion_keeps_the_file():
    """The sweep sets a file aside before it deletes it. A reuse that renewed the file just
    before that is seen, and the file put back; a reuse just after finds no file and writes
    it again. Either way the row about to name it finds its file."""
    now = timezone.now()
    cutoff = (now - attachment_files.SWEEP_GRACE).timestamp()
    data = b"reused at the last moment " * 300
    name, _ = attachment_files.keep(default_storage, data)
    path = age(name, 2 * DAY, now)
    aside = path.with_name(f".{path.name}.sweep")

    assert attachment_files.keep(default_storage, data)[0] == name  # renewed: now recent
    path.rename(aside)  # the sweep, which looked before the renewal, sets it aside
    assert attachment_files._settle(aside, path, cutoff) == 0
    assert path.read_bytes() == data and not aside.exists()

    age(name, 2 * DAY, now)
    assert attachment_files._holds(path, data)  # a reuse checks it (two days old) ...
    path.rename(aside)  # ... the sweep sets it aside ...
    assert attachment_files.keep(default_storage, data)[0] == name  # ... the reuse writes it
    assert attachment_files._settle(aside, path, cutoff) == 1  # the old copy goes
    assert path.read_bytes() == data and not aside.exists()
    default_storage.delete(name)


def test_files_a_stopped_sweep_set_aside_are_settled_by_the_next():
    """A sweep killed between setting a file aside and deleting it leaves ``.<digest>.sweep``:
    the next sweep of that directory deletes it, or puts it back if it was reused."""
    now = timezone.now()
    old_data, reused_data = b"set aside, then killed " * 300, b"set aside, but reused " * 300
    old_name, _ = attachment_files.keep(default_storage, old_data)
    reused_name, _ = attachment_files.keep(default_storage, reused_data)
    asides = {}
    for name, by in ((old_name, 2 * DAY), (reused_name, timedelta(minutes=1))):
        path = age(name, by, now)
        asides[name] = path.with_name(f".{path.name}.sweep")
        path.rename(asides[name])

    for prefix in {prefix_of(old_name), prefix_of(reused_name)}:
        attachment_files.sweep(now, prefix)

    assert not asides[old_name].exists() and not default_storage.exists(old_name)
    assert not asides[reused_name].exists()
    assert default_storage.open(reused_name).read() == reused_data
    default_storage.delete(reused_name)


def test_new_files_are_flushed_to_disk_before_the_rows_that_name_them(make_connection, monkeypatch):
    """A power cut after the rows' commit must not leave a row naming an empty or missing
    file: the file system is flushed (syncfs) after the files are written and before the
    attachment rows are inserted — once per batch, for a reused file too (another process may
    have written it and not flushed it yet)."""
    from django.db.backends.utils import CursorWrapper

    conn = make_connection(kind="imap", name="durable", config={"host": "h", "username": "u"})
    events: list[str] = []
    real_syncfs, real_executemany = attachment_files._syncfs, CursorWrapper.executemany

    def syncfs(fd: int) -> int:
        events.append("flush " + os.readlink(f"/proc/self/fd/{fd}"))
        return real_syncfs(fd) if real_syncfs is not None else 0

    def executemany(self: Any, sql: str, params: Any) -> Any:
        if "mail_mailattachment" in sql:
            events.append("rows")
        return real_executemany(self, sql, params)

    monkeypatch.setattr(attachment_files, "_syncfs", syncfs)
    monkeypatch.setattr(CursorWrapper, "executemany", executemany)
    flushed = f"flush {default_storage.path('attachments')}"
    stored_with(conn, 1, b"kept through a power cut " * 100)
    assert events == [flushed, "rows"]

    events.clear()
    stored_with(conn, 2, b"kept through a power cut " * 100)  # the same bytes: reused as is
    assert events == [flushed, "rows"]

    def failing(fd: int) -> int:  # the disk reports a failed write-back
        ctypes.set_errno(errno.EIO)
        return -1

    monkeypatch.setattr(attachment_files, "_syncfs", failing)
    with pytest.raises(OSError, match="flushing the attachment files failed"):
        stored_with(conn, 3, b"never named by a row " * 100)
    assert not MailAttachment.objects.filter(message__uid=3).exists()
