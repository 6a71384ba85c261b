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
"""

from __future__ import annotations

import fcntl
import os
from typing import Any

from django.db.backends.sqlite3 import base


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

    def _commit(self) -> None:
        try:
            super()._commit()  # type: ignore[misc]  # private in Django, absent from the stubs
        finally:
            self._release_writer()

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
