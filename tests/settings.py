"""Settings for the test suite: the product's settings plus a test-only connector and app.

The test database is a file (SQLite) or a named database (PostgreSQL, from DATABASE_URL) so that
real ``qcluster`` processes started by tests see the same data.
"""

from __future__ import annotations

import os
from pathlib import Path

# Test state (the SQLite test database, development keys) stays out of the real var/.
os.environ.setdefault("SYNC_VAR_DIR", str(Path(__file__).resolve().parent.parent / "var" / "test"))
# Every local test server listens on loopback; servers entered by ordinary users may point there
# only because the tests allow it (as an operator would allow an internal mail server).
os.environ.setdefault("SYNC_ALLOWED_PRIVATE_NETWORKS", "127.0.0.0/8,::1/128")
# Figures over history are counted live unless a count takes 100 ms twice running (10 ms in
# production): the tests' tiny tables count in a millisecond, but not always on a loaded
# machine, and a test that reads a figure must see the count it caused. The tests of the
# rollups set their own thresholds.
os.environ.setdefault("SYNC_LIVE_FIGURE_MS", "100")
# A fixed test key: on PostgreSQL (a shared database) there is no development key.
os.environ.setdefault("SYNC_ENCRYPTION_KEYS", "dGVzdC1vbmx5LWtleS1ub3QtZm9yLXByb2R1Y3Rpb24=")

from syncproject.settings import *  # noqa: F403
from syncproject.settings import DATABASES, INSTALLED_APPS, SYNC_EXTRA_CONNECTORS, VAR_DIR

INSTALLED_APPS = [*INSTALLED_APPS, "tests.support"]
SYNC_EXTRA_CONNECTORS = {**SYNC_EXTRA_CONNECTORS, "fake": "tests.support.connector.FakeConnector"}
INSTALLED_APPS += ["tests.calfeed"]  # a fifth provider: one package and these two lines
SYNC_EXTRA_CONNECTORS["calfeed"] = "tests.calfeed.connector.CalFeedConnector"
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
# alert mails without the start-up grace period (tests/syncqueue/test_notifications.py sets it)
SYNC_ALERT_GRACE_SECONDS = 0
if "sqlite" in DATABASES["default"]["ENGINE"]:
    DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / "test.sqlite3")}
