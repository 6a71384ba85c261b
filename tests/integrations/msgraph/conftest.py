"""A local Graph + identity server per test, trusted through a private test CA."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from sandbox.graph import CLIENT_ID, CLIENT_SECRET, FakeGraph, Mailbox
from sandbox.tls import TestCA, make_ca
from tests.support.processes import output_dir

MAILBOX = "megan@contoso.com"


@pytest.fixture(scope="session")
def graph_ca() -> TestCA:
    return make_ca(output_dir() / "test-ca")


@pytest.fixture
def graph(graph_ca: TestCA, settings: Any) -> Iterator[FakeGraph]:
    settings.SYNC_CA_BUNDLE = str(graph_ca.ca_file)
    server = FakeGraph(graph_ca).start()
    yield server
    server.stop()
    assert not server.errors, server.errors


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
