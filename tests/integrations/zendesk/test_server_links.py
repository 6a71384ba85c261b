"""Requests carrying this account's credentials go to its Zendesk server only. The sync builds
its export requests from the cursor, never from the ``after_url`` a page hands back; should any
code follow such a link, one pointing at another server (a hostile or compromised answer) is
refused with a plain message before anything is sent (integrations/http.py ``HttpClient``,
``origin``) — the API token never leaves for it."""

from __future__ import annotations

import pytest

from integrations.errors import Permanent
from integrations.http import HttpClient
from integrations.zendesk.client import ZendeskClient
from sandbox.http import LocalServer, Request, Response
from syncqueue.models import SyncJob
from tests.support.jobs import sync_once
from tests.support.listener import Listener


def test_the_sync_follows_no_link_the_server_hands_back(
    make_zendesk_connection, zendesk, acme, work
):
    for number in range(5):
        zendesk.add_ticket(acme, f"T{number}")
    conn = make_zendesk_connection(per_page=2)  # pages with a next one
    with Listener() as elsewhere:
        zendesk.links_to = f"https://127.0.0.1:{elsewhere.port}"
        job = sync_once(conn, work, SyncJob.Kind.INITIAL)
        with pytest.raises(Permanent, match="link to another server") as refused:
            connector = conn.build_connector()
            ZendeskClient(connector.zendesk, connector.secrets).get(
                f"{zendesk.links_to}/acme/api/v2/tickets.json"
            )
    assert job.state == SyncJob.State.SUCCEEDED, job.error_message
    assert "tok-acme" not in str(refused.value) + refused.value.detail
    assert (elsewhere.connections, elsewhere.received) == (0, b"")


class Redirecting(LocalServer):
    """Answers every request with a redirect to ``to``."""

    def __init__(self, to: str) -> None:
        super().__init__()
        self.to = to

    def handle(self, request: Request) -> Response:
        return Response(302, b"", headers={"Location": self.to + request.target})


def test_a_redirect_to_another_server_is_not_followed():
    """requests follows redirects to any host (it drops the Authorization header then, but
    nothing else it may carry): each hop is checked as the first request is."""
    with Listener() as elsewhere, Redirecting(f"http://127.0.0.1:{elsewhere.port}") as server:
        client = HttpClient(what="Zendesk", headers={"X-Secret": "s3cret"}, origin=server.url)
        with pytest.raises(Permanent, match="link to another server"):
            client.request("GET", f"{server.url}/api/v2/tickets.json")
    assert (elsewhere.connections, elsewhere.received) == (0, b"")
