"""The database cache (rate-limit counters shared by every process): Django's semantics."""

from __future__ import annotations

import time

import pytest
from django.core.cache import cache
from django.db import connection as db
from django.test.utils import CaptureQueriesContext

from tests.support.threads import at_once

pytestmark = pytest.mark.django_db


def test_add_keeps_what_is_there_and_replaces_what_expired():
    assert cache.add("k", 1, timeout=60) is True
    assert cache.add("k", 2, timeout=60) is False
    assert cache.get("k") == 1
    assert cache.incr("k") == 2
    assert cache.add("short", "old", timeout=1) is True
    time.sleep(2.1)  # expiry has one-second steps
    assert cache.add("short", "new", timeout=60) is True
    assert cache.get("short") == "new"


def test_add_of_a_key_that_is_there_is_one_read():
    """No count of the table, no write transaction with a failing INSERT."""
    cache.add("window", 1, timeout=60)
    with CaptureQueriesContext(db) as queries:
        assert cache.add("window", 1, timeout=60) is False
    statements = [q["sql"] for q in queries.captured_queries]
    assert len(statements) == 1 and statements[0].startswith("SELECT"), statements


def test_incr_of_a_missing_or_expired_key_is_refused():
    with pytest.raises(ValueError):
        cache.incr("never-added")
    cache.add("brief", 1, timeout=1)
    time.sleep(2.1)  # expiry has one-second steps
    with pytest.raises(ValueError):
        cache.incr("brief")


def test_a_rate_limit_check_is_a_read_and_a_conditional_write_outside_any_transaction():
    """PostgreSQL: ``add`` then ``incr`` (what django-ratelimit does on every request) is two
    round trips — no BEGIN/COMMIT, no row lock, the write names what was read; a lone ``incr``
    reads first. (SQLite keeps its immediate transaction: a library call, no round trips to
    save.)"""
    if db.vendor != "postgresql":
        pytest.skip("PostgreSQL's round trips")
    cache.add("hits", 1, timeout=60)
    with CaptureQueriesContext(db) as queries:
        assert cache.add("hits", 1, timeout=60) is False
        assert cache.incr("hits") == 2
    statements = [q["sql"] for q in queries.captured_queries]
    assert len(statements) == 2, statements
    assert statements[0].startswith("SELECT") and "FOR UPDATE" not in statements[0]
    assert statements[1].startswith("UPDATE") and '"value" = ' in statements[1].split("WHERE")[1]
    with CaptureQueriesContext(db) as queries:
        assert cache.incr("hits") == 3
    assert [q["sql"].split()[0] for q in queries.captured_queries] == ["SELECT", "UPDATE"]
    assert cache.get("hits") == 3


def test_incr_after_add_counts_what_changed_since_and_refuses_what_expired_since():
    """The read ``add`` leaves for ``incr`` is a hint: a change by another process in between
    is counted on top of, and a counter that expired in between is not incremented."""
    from django.core.cache import caches

    elsewhere = caches.create_connection("default")  # another process's cache object
    cache.add("k", 1, timeout=60)
    assert cache.add("k", 1, timeout=60) is False
    elsewhere.set("k", 10, timeout=60)
    assert cache.incr("k") == 11
    cache.add("short", 1, timeout=1)
    assert cache.add("short", 1, timeout=60) is False
    time.sleep(2.1)  # expiry has one-second steps
    with pytest.raises(ValueError):
        cache.incr("short")


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("swap_attempts", [5, 0], ids=["compare-and-swap", "row-lock"])
def test_concurrent_increments_all_count(swap_attempts, monkeypatch):
    """Eight threads (each its own database connection, as web processes are) increment one
    counter 25 times at once: the counter ends at exactly 1 + 200 and no two increments saw the
    same number — with the compare-and-swap retries, and with only the locked fallback (the
    only path on SQLite)."""
    from syncproject.cache import AtomicDatabaseCache

    monkeypatch.setattr(AtomicDatabaseCache, "SWAP_ATTEMPTS", swap_attempts)
    cache.add("shared", 1, timeout=300)
    seen = [n for run in at_once(8, lambda: [cache.incr("shared") for _ in range(25)]) for n in run]
    assert cache.get("shared") == 201
    assert sorted(seen) == list(range(2, 202))


def test_an_increment_that_keeps_losing_the_race_takes_the_row_lock(monkeypatch):
    """PostgreSQL: another process changes the counter right after every unlocked read, so
    each compare-and-swap matches nothing; after ``SWAP_ATTEMPTS`` the increment reads under
    ``FOR UPDATE`` and counts — on top of every change the others made, none lost."""
    if db.vendor != "postgresql":
        pytest.skip("SQLite takes its immediate transaction at once")
    from django.core.cache import caches
    from django.core.cache.backends.db import DatabaseCache

    from syncproject.cache import AtomicDatabaseCache

    elsewhere = caches.create_connection("default")
    read = AtomicDatabaseCache._row
    raced = []

    def read_then_lose_the_race(self, cursor, key, *, lock):
        row = read(self, cursor, key, lock=lock)
        if not lock and self is not elsewhere:
            DatabaseCache.incr(elsewhere, "racy", 10)  # Django's own: a plain read and write
            raced.append(key)
        return row

    cache.add("racy", 1, timeout=60)
    monkeypatch.setattr(AtomicDatabaseCache, "_row", read_then_lose_the_race)
    with CaptureQueriesContext(db) as queries:
        assert cache.incr("racy") == 1 + 10 * AtomicDatabaseCache.SWAP_ATTEMPTS + 1
    assert len(raced) == AtomicDatabaseCache.SWAP_ATTEMPTS
    assert any("FOR UPDATE" in q["sql"] for q in queries.captured_queries)
    assert cache.get("racy") == 1 + 10 * AtomicDatabaseCache.SWAP_ATTEMPTS + 1
