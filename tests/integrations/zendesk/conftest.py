"""A local Zendesk per test (HTTPS, trusted through the test CA) and an organization's
connection to its 'acme' account."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from sandbox.tls import TestCA
from sandbox.zendesk import Account, FakeZendesk
from tests.support.servers import serving


@pytest.fixture
def zendesk(test_ca: TestCA, settings: Any) -> Iterator[FakeZendesk]:
    with serving(FakeZendesk(test_ca, rate=None), settings) as server:
        settings.ZENDESK_BASE_URL = server.base_url
        settings.ZENDESK_EXPORT_RATE = (0, 60.0)
        yield server


@pytest.fixture
def acme(zendesk: FakeZendesk) -> Account:
    return zendesk.add_account("acme", "admin@acme.test", "tok-acme")


@pytest.fixture
def organization(db: Any) -> Any:
    from workspace.models import Organization

    return Organization.objects.create(name="Acme", slug="acme", timezone="Europe/Paris")


@pytest.fixture
def make_zendesk_connection(make_connection: Callable[..., Any], organization: Any):
    def make(token: str = "tok-acme", oauth: str = "", **config: Any) -> Any:
        """An API token connection, or with ``oauth`` one with that OAuth token instead."""
        settings = {"subdomain": "acme", "email": "admin@acme.test", "per_page": 50, **config}
        return make_connection(
            kind="zendesk",
            name="Acme Zendesk",
            owner=None,
            organization=organization,
            config=settings,
            secrets={"oauth_token": oauth} if oauth else {"api_token": token},
        )

    return make
