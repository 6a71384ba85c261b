"""The database cache (rate-limit counters shared by every process): Django's semantics."""

from __future__ import annotations

import time

import pytest
from django.core.cache import cache
from django.db import connection as db
from django.test.utils import CaptureQueriesContext

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
