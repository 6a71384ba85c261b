"""The SQLite backend queues writers on a file lock held for exactly a transaction."""

from __future__ import annotations

import fcntl
import os
import threading
import time

import pytest

from syncproject.sqlite.base import DatabaseWrapper


@pytest.fixture
def wrapper(tmp_path, django_db_blocker):
    """Connections of our backend to a scratch file (not the test database)."""
    settings = {
        "NAME": str(tmp_path / "db.sqlite3"),
        "ENGINE": "syncproject.sqlite",
        "OPTIONS": {"transaction_mode": "IMMEDIATE", "timeout": 5},
        "ATOMIC_REQUESTS": False,
        "AUTOCOMMIT": True,
        "CONN_MAX_AGE": 0,
        "CONN_HEALTH_CHECKS": False,
        "TIME_ZONE": None,
        "USER": "",
        "PASSWORD": "",
        "HOST": "",
        "PORT": "",
        "TEST": {},
    }
    made = []

    def make() -> DatabaseWrapper:
        db = DatabaseWrapper(settings, alias=f"lock{len(made)}")
        made.append(db)
        return db

    with django_db_blocker.unblock():
        yield make, settings["NAME"] + ".writer-lock"
        for db in made:
            if db._thread_ident == threading.get_ident():  # others closed in their thread
                db.close()


def lock_is_free(path: str) -> bool:
    fd = os.open(path, os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    finally:
        os.close(fd)
    return True


def test_lock_is_held_for_a_transaction_and_released_at_commit_and_rollback(wrapper):
    make, path = wrapper
    db = make()
    db.set_autocommit(False, force_begin_transaction_with_broken_autocommit=True)
    with db.cursor() as cursor:
        cursor.execute("CREATE TABLE t (x INTEGER)")
    assert not lock_is_free(path)
    db.commit()
    db.set_autocommit(True)
    assert lock_is_free(path)
    db.set_autocommit(False, force_begin_transaction_with_broken_autocommit=True)
    assert not lock_is_free(path)
    db.rollback()
    db.set_autocommit(True)
    assert lock_is_free(path)


def test_a_second_writer_waits_its_turn_instead_of_failing(wrapper) -> None:
    make, _ = wrapper
    first = make()
    first.set_autocommit(False, force_begin_transaction_with_broken_autocommit=True)
    with first.cursor() as cursor:
        cursor.execute("CREATE TABLE t (x INTEGER)")
    started = threading.Event()
    order: list[str] = []

    def other() -> None:
        second = make()  # a connection belongs to the thread that made it
        started.set()
        second.set_autocommit(False, force_begin_transaction_with_broken_autocommit=True)
        order.append("second began")
        second.commit()
        second.set_autocommit(True)
        second.close()

    thread = threading.Thread(target=other)
    thread.start()
    started.wait()
    time.sleep(0.2)
    order.append("first commits")
    first.commit()
    first.set_autocommit(True)
    thread.join(5)
    assert order == ["first commits", "second began"]


def test_checkpoints_run_beside_the_writers_not_in_their_commits(wrapper) -> None:
    """A large commit does not copy the write-ahead log into the database itself (its own
    automatic checkpoint waits for a much larger log); this process's checkpoint thread does,
    right after, without anyone else asking."""
    from syncproject.sqlite.base import CHECKPOINT_EVERY_S, WAL_BACKSTOP_PAGES

    make, lock = wrapper
    path = lock.removesuffix(".writer-lock")
    db = make()
    with db.cursor() as cursor:
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA wal_autocheckpoint")
        assert cursor.fetchone()[0] == WAL_BACKSTOP_PAGES
        cursor.execute("CREATE TABLE blobs (data BLOB)")
    db.set_autocommit(False, force_begin_transaction_with_broken_autocommit=True)
    with db.cursor() as cursor:
        cursor.execute("INSERT INTO blobs VALUES (?)", [os.urandom(100_000)])
    db.commit()  # a small commit: left in the log, as SQLite itself would
    time.sleep(CHECKPOINT_EVERY_S + 0.3)
    assert os.path.getsize(path) < 100_000  # not copied into the database
    db.set_autocommit(False, force_begin_transaction_with_broken_autocommit=True)
    with db.cursor() as cursor:
        cursor.executemany("INSERT INTO blobs VALUES (?)", [(os.urandom(100_000),)] * 80)
    db.commit()  # 8 MB: past the default checkpoint threshold of 1,000 pages
    db.set_autocommit(True)
    deadline = time.monotonic() + 10
    while os.path.getsize(path) < 8_000_000 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert os.path.getsize(path) >= 8_000_000  # copied into the database file


def test_a_fork_waits_for_a_checkpoint_in_progress(tmp_path) -> None:
    """A process never forks while its checkpoint thread is inside SQLite (the child would
    inherit SQLite's mutexes held by a thread it does not have)."""
    from syncproject.sqlite import base

    forked = threading.Event()
    statuses: list[int] = []
    base._checkpointer(str(tmp_path / "parent.sqlite3"))  # the parent has a checkpointer

    def fork() -> None:
        pid = os.fork()
        if pid == 0:  # the parent's checkpointers are not the child's (their threads are gone)
            os._exit(0 if not base._checkpointers else 3)
        forked.set()
        statuses.append(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))

    with base._no_fork:  # as the checkpoint thread holds it while it checkpoints
        thread = threading.Thread(target=fork)
        thread.start()
        assert not forked.wait(0.3)
    assert forked.wait(10)
    thread.join()
    assert statuses == [0]


def test_the_log_is_measured_without_ever_closing_sqlite_s_shared_memory_file(tmp_path) -> None:
    """How much of the log is not yet copied is read from the -shm file through one
    descriptor that stays open: closing a descriptor of that file would drop this process's
    POSIX locks on it, SQLite's included (https://www.sqlite.org/howtocorrupt.html, 2.2)."""
    import sqlite3

    from syncproject.sqlite.base import _SharedMemoryHeader, checkpoint

    path = str(tmp_path / "log.sqlite3")
    con = sqlite3.connect(path, isolation_level=None)
    try:
        con.execute("PRAGMA journal_mode=WAL")
        con.execute("PRAGMA wal_autocheckpoint=0")
        con.execute("CREATE TABLE blobs (data BLOB)")
        con.execute("INSERT INTO blobs VALUES (randomblob(400000))")
        header = _SharedMemoryHeader(path)
        before = header.pending_frames()
        descriptor = header.fd
        assert before is not None and before > 90 and descriptor is not None
        con.execute("INSERT INTO blobs VALUES (randomblob(400000))")
        assert (header.pending_frames() or 0) > before + 90
        checkpoint(path)
        assert header.pending_frames() == 0
        assert header.fd == descriptor  # the same descriptor throughout, never closed
        os.fstat(descriptor)
    finally:
        con.close()
