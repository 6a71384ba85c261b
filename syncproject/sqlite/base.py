"""SQLite backend whose writers wait in a queue instead of sleeping and retrying.

SQLite allows one writer at a time. With Django's ``transaction_mode = "IMMEDIATE"`` every
transaction takes the write lock when it begins; a connection that finds it taken is handled by
SQLite's busy handler, which sleeps in growing steps (1, 2, 5, ... 100 ms) and polls again. With
many writers — web threads, worker processes — the lock is often free while waiters sleep, and
latencies grow long tails (a "Sync now" burst from 20 clients had a p99 over a second).

Here each connection first takes an exclusive ``flock`` on a file next to the database, then
begins its transaction, and releases the lock at commit or rollback. The kernel wakes the next
waiter the moment the lock is released, in every process, so writers run back to back. Each
connection opens the lock file itself: ``flock`` locks belong to an open file description, so
threads exclude each other as well as processes. Statements outside a transaction are not
affected (SQLite's own locking and busy timeout still apply).

Checkpoints run beside the writers, not inside their commits. By default the commit that
takes the write-ahead log past 1,000 pages copies the log into the database file and syncs
it, while it still holds the write lock: a mail import committing 10 MB batches paid about
40 ms per commit for that (0.9 s of a 5 s first sync of 10,000 messages), and every other
writer waited behind it. Here a commit wakes a thread of its process that runs a PASSIVE
checkpoint on a connection of its own, which neither waits for nor blocks readers and
writers, while the worker goes on with its next batch (SQLite releases the GIL), once the log
holds 1,000 pages not yet copied, as SQLite's own checkpoint would. The writers'
own automatic checkpoint stays as a backstop, at ``WAL_BACKSTOP_PAGES``, so the log stays
bounded even in a process that never commits through a transaction.
"""

from __future__ import annotations

import fcntl
import logging
import os
import sqlite3
import struct
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

from django.conf import settings
from django.db import Error
from django.db.backends.sqlite3 import base

logger = logging.getLogger(__name__)

WAL_BACKSTOP_PAGES = 16_384  # 64 MiB of 4 KiB pages: writers checkpoint only past this
WAL_SIZE_LIMIT = 32 * 1024 * 1024  # bytes the log keeps on disk after it starts over
CHECKPOINT_FROM_FRAMES = 1000  # pages not yet copied: SQLite's own wal_autocheckpoint default
CHECKPOINT_EVERY_S = 0.2  # at most this often per process (each one syncs the files)


class _Checkpointer:
    """A daemon thread that checkpoints one database file when a commit wakes it and the log
    holds ``CHECKPOINT_FROM_FRAMES`` pages not yet copied: as often as SQLite's automatic
    checkpoint would, so small commits cost no more syncs than before."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.wake = threading.Event()
        self.failed = False
        self.shm = _SharedMemoryHeader(path)
        self.thread = threading.Thread(target=self._run, name="sqlite-checkpoint", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while True:
            self.wake.wait()
            self.wake.clear()
            try:
                pending = self.shm.pending_frames()
                if pending is None or pending < CHECKPOINT_FROM_FRAMES:
                    continue
                with _no_fork:  # a fork waits until SQLite's locks are released (see below)
                    checkpoint(self.path)
                self.failed = False
            except Exception as exc:  # never let the thread die; the writers' backstop still
                log = logger.debug if self.failed else logger.warning  # bounds the log
                log(
                    "Background checkpoint of %s failed (%s: %s); writers checkpoint "
                    "themselves past %d pages.",
                    self.path,
                    type(exc).__name__,
                    exc,
                    WAL_BACKSTOP_PAGES,
                )
                self.failed = True
            time.sleep(CHECKPOINT_EVERY_S)


class _SharedMemoryHeader:
    """Reads how many pages of a database's write-ahead log are not yet copied into it:
    ``mxFrame`` minus ``nBackfill`` in the WAL-index header at the start of the ``-shm`` file
    (bytes 16 and 96, native byte order; https://www.sqlite.org/walformat.html). Read without
    SQLite's locks, so a hint.

    The file is opened once and **never closed while SQLite uses it**: closing any descriptor
    of a file drops every POSIX lock the process holds on it, SQLite's included, and another
    process could then take the shared memory for unused and reset it under this process's
    connections (https://www.sqlite.org/howtocorrupt.html, 2.2; the full test suite died of
    SIGBUS that way when the header was read with open() and close()). A descriptor is
    closed only once the path names another file: SQLite removes its shared-memory file only
    when no connection uses it any more.
    """

    def __init__(self, path: str) -> None:
        self.path = f"{path}-shm"
        self.fd: int | None = None
        self.inode: int | None = None

    def pending_frames(self) -> int | None:
        try:
            inode = os.stat(self.path).st_ino  # noqa: PTH116  # no descriptor opened
        except OSError:
            return None  # no WAL, or no connection open
        if self.fd is None or inode != self.inode:
            try:
                fd = os.open(self.path, os.O_RDONLY)
            except OSError:
                return None
            if self.fd is not None:
                os.close(self.fd)  # a file SQLite no longer uses (see above)
            self.fd, self.inode = fd, os.fstat(fd).st_ino
        head = os.pread(self.fd, 100, 0)
        if len(head) < 100:
            return None
        (frames,) = struct.unpack_from("=I", head, 16)
        (copied,) = struct.unpack_from("=I", head, 96)
        return max(0, frames - copied)


def checkpoint(path: str) -> tuple[int, int, int] | None:
    """One PASSIVE checkpoint of ``path`` on a short-lived connection (opened here so that no
    connection outlives a fork): copies what the log holds that no reader still needs.
    Returns SQLite's (busy, log frames, checkpointed frames)."""
    # mode=rw: never create a database that was removed meanwhile
    uri = f"file:{quote(str(Path(path).absolute()))}?mode=rw"
    con = sqlite3.connect(uri, timeout=0, isolation_level=None, uri=True)
    try:
        row = con.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
    finally:
        con.close()
    return tuple(row) if row else None


_checkpointers: dict[tuple[int, str], _Checkpointer] = {}
_checkpointers_lock = threading.Lock()

# A process that forks (django-q2's sentinel starting a worker, a pre-forking web server) must
# not do so while its checkpoint thread is inside SQLite: the child would inherit SQLite's
# process-wide mutexes held by a thread that does not exist there, and could hang on its first
# connection. The fork waits for a checkpoint in progress; the child starts its own thread.
_no_fork = threading.Lock()


def _fresh_lock_in_child() -> None:
    global _no_fork, _checkpointers_lock
    _no_fork = threading.Lock()
    _checkpointers_lock = threading.Lock()  # in case a thread of the parent held it
    # the parent's threads do not exist here (and a later process may get the parent's pid);
    # their descriptors are plain ints, never closed by dropping them
    _checkpointers.clear()


os.register_at_fork(
    before=lambda: _no_fork.acquire(),
    after_in_parent=lambda: _no_fork.release(),
    after_in_child=_fresh_lock_in_child,
)


def _checkpointer(path: str) -> _Checkpointer:
    """This process's checkpointer for ``path`` (a forked child starts its own)."""
    key = (os.getpid(), path)
    found = _checkpointers.get(key)
    if found is None or not found.thread.is_alive():
        with _checkpointers_lock:
            found = _checkpointers.get(key)
            if found is None or not found.thread.is_alive():
                found = _checkpointers[key] = _Checkpointer(path)
    return found


@contextmanager
def batch_writes(connection: Any) -> Iterator[None]:
    """Around one large write transaction (a sync's batch) on SQLite: a page cache of
    ``SQLITE_BATCH_CACHE_MB`` (or ``SQLITE_CACHE_MB``, if larger), then back to the default.

    With the 2 MB cache every connection has, a 16 MB batch of mail overflowed the cache
    while it was written: SQLite then wrote pages of it to the log before the commit, copied
    each page it spilled into a statement journal (a temporary file: about 20 KB per
    message), and at commit read back every frame after the first one it had written twice,
    to recompute the log's checksums. A first sync of 10,000 messages spent about 8 % of its
    time on that (docs/deployment.md, "Sizing, as measured"). The cache stays bounded: a
    larger transaction spills past it, as before. Nothing for other databases."""
    if connection.vendor != "sqlite" or settings.SQLITE_BATCH_CACHE_MB <= settings.SQLITE_CACHE_MB:
        yield
        return
    try:
        with connection.cursor() as cursor:
            cursor.execute(f"PRAGMA cache_size=-{settings.SQLITE_BATCH_CACHE_MB * 1024}")
        yield
    finally:
        try:
            with connection.cursor() as cursor:
                cursor.execute(f"PRAGMA cache_size=-{settings.SQLITE_CACHE_MB * 1024}")
        except Error:  # not restored: a new connection starts with the default
            logger.debug("could not restore the page cache size", exc_info=True)
            connection.close()


class DatabaseWrapper(base.DatabaseWrapper):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._writer_fd: int | None = None
        self._writer_locked = False

    def _lock_path(self) -> str | None:
        name = str(self.settings_dict["NAME"])
        if name == ":memory:" or name.startswith("file:"):
            return None
        return f"{name}.writer-lock"

    def _acquire_writer(self) -> None:
        path = self._lock_path()
        if path is None or self._writer_locked:
            return
        if self._writer_fd is None:
            self._writer_fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(self._writer_fd, fcntl.LOCK_EX)
        self._writer_locked = True

    def _release_writer(self) -> None:
        if self._writer_locked and self._writer_fd is not None:
            fcntl.flock(self._writer_fd, fcntl.LOCK_UN)
            self._writer_locked = False

    def _start_transaction_under_autocommit(self) -> None:
        self._acquire_writer()
        try:
            super()._start_transaction_under_autocommit()  # type: ignore[misc]  # private in Django, absent from the stubs
        except BaseException:
            self._release_writer()
            raise

    def get_new_connection(self, conn_params: dict[str, Any]) -> Any:
        conn = super().get_new_connection(conn_params)
        if self._lock_path() is not None:
            conn.execute(f"PRAGMA wal_autocheckpoint={WAL_BACKSTOP_PAGES}")
            # a log that grew during a long import is cut back when it next starts over (not
            # to nothing: re-growing it for every batch would cost more than it saves)
            conn.execute(f"PRAGMA journal_size_limit={WAL_SIZE_LIMIT}")
        return conn

    def _commit(self) -> None:
        try:
            super()._commit()  # type: ignore[misc]  # private in Django, absent from the stubs
        finally:
            self._release_writer()
        if self._lock_path() is not None:
            try:
                _checkpointer(str(self.settings_dict["NAME"])).wake.set()
            except RuntimeError:  # no thread to be had: the backstop checkpoint still runs
                logger.debug("no checkpoint thread", exc_info=True)

    def _rollback(self) -> None:
        try:
            super()._rollback()  # type: ignore[misc]  # private in Django, absent from the stubs
        finally:
            self._release_writer()

    def _close(self) -> None:
        try:
            super()._close()  # type: ignore[misc]  # private in Django, absent from the stubs
        finally:
            self._release_writer()
            if self._writer_fd is not None:
                os.close(self._writer_fd)
                self._writer_fd = None
