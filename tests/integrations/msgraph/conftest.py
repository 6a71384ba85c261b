"""A local Graph + identity server per test, trusted through a private test CA."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from sandbox.graph import CLIENT_ID, CLIENT_SECRET, FakeGraph, Mailbox
from sandbox.tls import TestCA
from tests.support.servers import serving

MAILBOX = "megan@contoso.com"


@pytest.fixture
def graph(test_ca: TestCA, settings: Any) -> Iterator[FakeGraph]:
    with serving(FakeGraph(test_ca), settings) as server:
        yield server


@pytest.fixture
def mailbox(graph: FakeGraph) -> Mailbox:
    return graph.add_mailbox(MAILBOX, "Megan Bowen", folders=("Projects",))


@pytest.fixture
def make_graph_connection(make_connection: Callable[..., Any], graph: FakeGraph):
    def make(secret: str = CLIENT_SECRET, **config: Any) -> Any:
        settings = {
            "tenant_id": graph.tenant,
            "client_id": CLIENT_ID,
            "mailbox": MAILBOX,
            "authority_host": graph.url,
            "graph_url": graph.url,
            **config,
        }
        return make_connection(
            kind="msgraph",
            name="Megan's mailbox",
            config=settings,
            secrets={"client_secret": secret},
        )

    return make
