"""The connector contract (tests/support/contract.py) for Microsoft Graph mail, against the
local Graph server (docs/protocols.md)."""

from __future__ import annotations

from typing import Any

import pytest

from mail.models import MailMessage
from sandbox.graph import CLIENT_ID
from tests.support.contract import ConnectorContract, Provider

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def provider(graph: Any, test_ca: Any, mailbox: Any, make_graph_connection: Any) -> Provider:
    made: list[int] = [0]

    def seed(count: int) -> None:
        for i in range(count):
            graph.add_message(mailbox, subject=f"m{made[0] + i}")
        made[0] += count

    def break_credentials(conn: Any) -> None:
        graph.apps[CLIENT_ID].secret = "rotated-in-entra"  # the secret was replaced there
        graph.revoke_tokens()

    def disorder() -> None:
        graph.repeat = 0.5  # pages are shuffled anyway; now half the items come twice

    def slow(seconds: float) -> None:
        graph.latency = seconds

    return Provider(
        connect=lambda: make_graph_connection(page_size=10),
        seed=seed,
        stored=lambda conn: list(
            MailMessage.objects.filter(connection=conn, deleted=False).values_list(
                "remote_id", flat=True
            )
        ),
        break_credentials=break_credentials,
        forget_position=graph.forget_sync_state,
        throttle=lambda seconds: graph.throttle(seconds),
        disorder=disorder,
        slow=slow,
        cluster_env={"SYNC_CA_BUNDLE": test_ca.ca_file},
        kill_items=400,
    )


class TestGraphContract(ConnectorContract):
    pass
