"""Shared fixtures: personas (owner, outsider, staff), connection factories, an in-process
worker loop for engine tests that do not need a real qcluster, and the test CA that local HTTPS
servers use."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import pytest
from django.contrib.auth import get_user_model

from sandbox.tls import TestCA, make_ca
from tests.support.processes import output_dir

os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")  # Playwright's loop vs. the ORM


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """PostgreSQL-only tests run in the PostgreSQL pass of the test command, never skipped."""
    from django.conf import settings

    if "sqlite" in settings.DATABASES["default"]["ENGINE"]:
        kept = [item for item in items if "postgres" not in item.keywords]
        config.hook.pytest_deselected(items=[i for i in items if i not in kept])
        items[:] = kept


@pytest.fixture(autouse=True)
def _fresh_cache(request: pytest.FixtureRequest) -> Any:
    """Rate-limit counters live in the database cache, a table Django's test flush does not
    empty: start every database test with an empty cache, so no test inherits another's."""
    uses_db = request.node.get_closest_marker("django_db") or {
        "db",
        "transactional_db",
        "live_server",
    } & set(request.fixturenames)
    if uses_db:
        from django.core.cache import cache

        request.getfixturevalue("django_db_setup")
        with request.getfixturevalue("django_db_blocker").unblock():
            cache.clear()
    yield


@pytest.fixture
def owner(db: Any) -> Any:
    return get_user_model().objects.create_user("olivia", "olivia@example.com", "pw-olivia-1")


@pytest.fixture
def outsider(db: Any) -> Any:
    return get_user_model().objects.create_user("oscar", "oscar@example.com", "pw-oscar-1")


@pytest.fixture
def staff(db: Any) -> Any:
    return get_user_model().objects.create_superuser("stella", "stella@example.com", "pw-stella-1")


@pytest.fixture
def make_connection(db: Any, owner: Any) -> Callable[..., Any]:
    """Create a connection of the test kind ('fake') unless told otherwise."""
    from integrations.models import Connection

    def make(**kwargs: Any) -> Connection:
        secrets = kwargs.pop("secrets", {"password": "s3cret-fake-password"})
        kwargs.setdefault("kind", "fake")
        kwargs.setdefault("name", "Fake account")
        kwargs.setdefault("owner", owner)
        kwargs.setdefault("config", {"total": 10, "batch": 5})
        conn = Connection(**kwargs)
        conn.set_secrets(secrets)
        conn.save()
        return conn

    return make


@pytest.fixture
def work() -> Callable[..., list[str]]:
    """Run tickets in this process like a worker would, until nothing is claimable."""
    from syncqueue.engine import process_ticket

    def run(limit: int = 200) -> list[str]:
        results: list[str] = []
        for _ in range(limit):
            outcome = process_ticket()
            if outcome == "nothing to claim":
                return results
            results.append(outcome)
        raise AssertionError(f"still claiming after {limit} slices: {results[-5:]}")

    return run


def tickets() -> list[dict[str, Any]]:
    """The django-q2 tasks waiting in the broker, decoded."""
    from django_q.models import OrmQ
    from django_q.signing import SignedPackage

    return [SignedPackage.loads(row.payload) for row in OrmQ.objects.order_by("id")]


@pytest.fixture(scope="session")
def test_ca() -> TestCA:
    """The private CA (and server certificate) every local HTTPS server of the suite uses;
    ``tests.support.servers.serving`` makes the code under test trust it."""
    return make_ca(output_dir() / "test-ca")


@pytest.fixture(scope="session")
def dovecot() -> Any:
    """A private Dovecot for the whole session (see sandbox/dovecot.py)."""
    from sandbox.dovecot import Dovecot

    server = Dovecot()
    server.start()
    yield server
    server.cleanup()


_accounts = iter(range(1, 1_000_000))


@pytest.fixture
def imap_user(dovecot: Any) -> str:
    """A fresh, empty mail account on the test Dovecot."""
    if not dovecot.is_running():  # a fault test may have left it down
        dovecot.start()
    name = f"u{next(_accounts)}p{os.getpid()}"
    dovecot.add_user(name)
    return name


@pytest.fixture
def make_imap_connection(make_connection: Callable[..., Any], dovecot: Any, imap_user: str):
    """An IMAP connection to ``imap_user`` (plain IMAP on loopback; all mail by default)."""

    def make(password: str | None = None, **config: Any) -> Any:
        settings = {**dovecot.connection_config(imap_user), **config}
        return make_connection(
            kind="imap",
            name="Mailbox",
            config=settings,
            secrets={"password": password or dovecot.users[imap_user]},
        )

    return make


CHROMIUM = "/usr/bin/chromium"


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args: dict[str, Any]) -> dict[str, Any]:
    """Debian's Chromium (Playwright never downloads a browser here)."""
    from pathlib import Path

    if not Path(CHROMIUM).exists():
        raise RuntimeError(
            "Chromium is not installed: run the test command as root (it "
            "installs the Debian package 'chromium')."
        )
    return {
        **browser_type_launch_args,
        "executable_path": CHROMIUM,
        "args": [
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
        ],
    }


@pytest.fixture(scope="session")
def browser_context_args(browser_context_args: dict[str, Any]) -> dict[str, Any]:
    return {**browser_context_args, "viewport": {"width": 1280, "height": 900}}


@pytest.fixture
def screenshot() -> Callable[..., str]:
    """Save a full-page screenshot under TEST_OUTPUT_DIR/screenshots; returns the path. With
    ``UPDATE_SCREENSHOTS=1`` the ones the README shows (``docs=True``) go to docs/screenshots."""
    import shutil

    from tests.support.processes import ROOT

    def take(page: Any, name: str, docs: bool = False) -> str:
        folder = output_dir() / "screenshots"
        folder.mkdir(parents=True, exist_ok=True)
        path = str(folder / f"{name}.png")
        page.screenshot(path=path, full_page=True)
        if docs and os.environ.get("UPDATE_SCREENSHOTS") == "1":
            shutil.copyfile(path, ROOT / "docs" / "screenshots" / f"{name}.png")
        return path

    return take
