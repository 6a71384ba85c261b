"""A local Zimbra per test, a server connection to it, and people with the switch on."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from sandbox.tls import TestCA
from sandbox.zimbra import ADMIN_NAME, ADMIN_PASSWORD, FakeZimbra
from tests.support.servers import serving


@pytest.fixture
def zimbra(test_ca: TestCA, settings: Any) -> Iterator[FakeZimbra]:
    from integrations.zimbra import soap

    soap._tokens.clear()  # a fresh process as far as cached tokens go
    with serving(FakeZimbra(test_ca), settings) as server:
        yield server


@pytest.fixture
def zimbra_server(make_connection: Any, zimbra: FakeZimbra) -> Any:
    return make_connection(
        kind="zimbra",
        name="Company Zimbra",
        owner=None,
        config={
            "soap_url": zimbra.soap_url,
            "admin_url": zimbra.admin_url,
            "admin_name": ADMIN_NAME,
        },
        secrets={"admin_password": ADMIN_PASSWORD},
        schedule="",
    )


@pytest.fixture
def people(db: Any, zimbra: FakeZimbra) -> list[Any]:
    """Three people with Zimbra accounts and the switch on."""
    from django.contrib.auth import get_user_model

    from integrations.models import UserSwitch

    found = []
    for name in ("ann", "ben", "cat"):
        user = get_user_model().objects.create_user(name, f"{name}@corp.test")
        zimbra.add_account(f"{name}@corp.test")
        UserSwitch.objects.create(user=user, key="zimbra.tasks", enabled=True)
        found.append(user)
    return found
