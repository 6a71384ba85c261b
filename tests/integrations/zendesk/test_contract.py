"""The connector contract (tests/support/contract.py) for Zendesk tickets, against the local
Zendesk (docs/protocols.md)."""

from __future__ import annotations

from typing import Any

import pytest

from integrations.zendesk.models import Ticket
from tests.support.contract import ConnectorContract, Provider

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def provider(zendesk: Any, test_ca: Any, acme: Any, make_zendesk_connection: Any) -> Provider:
    def seed(count: int) -> None:
        for i in range(count):
            zendesk.add_ticket(acme, f"ticket {i}")

    def break_credentials(conn: Any) -> None:
        acme.agents["admin@acme.test"].token = "regenerated"  # the API token was replaced

    def slow(seconds: float) -> None:
        zendesk.delay = seconds

    return Provider(
        connect=lambda: make_zendesk_connection(history_days=None, per_page=20),
        seed=seed,
        stored=lambda conn: list(
            Ticket.objects.filter(connection=conn, deleted=False).values_list(
                "zendesk_id", flat=True
            )
        ),
        break_credentials=break_credentials,
        forget_position=zendesk.forget_cursors,
        throttle=lambda seconds: zendesk.throttle(seconds),
        disorder=None,  # the export is ordered by generated_timestamp
        slow=slow,
        cluster_env={
            "SYNC_CA_BUNDLE": test_ca.ca_file,
            "ZENDESK_BASE_URL": zendesk.base_url,
            "ZENDESK_EXPORT_RATE": "0/60",
        },
        kill_items=600,
    )


class TestZendeskContract(ConnectorContract):
    pass
