"""Fixtures of the security suite: the provider servers' fixtures (imported from their test
packages so there is one definition), a staff member without model permissions, and clients
for each persona."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client

from tests.integrations.msgraph.conftest import graph, mailbox, make_graph_connection
from tests.integrations.zendesk.conftest import (
    acme,
    make_zendesk_connection,
    organization,
    zendesk,
)
from tests.integrations.zimbra.conftest import people, zimbra, zimbra_server

__all__ = [
    "acme",
    "graph",
    "mailbox",
    "make_graph_connection",
    "make_zendesk_connection",
    "organization",
    "people",
    "zendesk",
    "zimbra",
    "zimbra_server",
]


@pytest.fixture
def bare_staff(django_user_model: Any) -> Any:
    """Staff (may open the admin) without a single model permission."""
    return django_user_model.objects.create_user(
        "bart", "bart@example.com", "pw-bart-1", is_staff=True
    )


@pytest.fixture
def as_user() -> Any:
    def make(user: Any, csrf: bool = False) -> Client:
        client = Client(enforce_csrf_checks=csrf)
        if user is not None:
            client.force_login(user)
        return client

    return make
