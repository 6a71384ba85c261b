"""Signing in with real MSAL against the local identity server: one token per app per process,
renewed when Graph rejects it, and every credential problem explained to an administrator."""

from __future__ import annotations

import re

import pytest

from integrations.errors import AuthFailed, Permanent
from integrations.msgraph import auth
from sandbox.graph import CLIENT_ID

pytestmark = pytest.mark.django_db


def test_check_signs_in_and_reads_the_mailbox(make_graph_connection, graph, mailbox):
    conn = make_graph_connection()
    result = conn.build_connector().check()
    assert "Megan Bowen <megan@contoso.com>" in result.message
    assert result.details["folders"] == 4  # Inbox, Sent Items, Deleted Items, Projects
    conn.build_connector().check()
    assert graph.token_requests == 1  # the second check used MSAL's cached token
    assert not any(re.match(r"/v1\.0/me\b", target) for _, target in graph.requests)
    assert graph.without_immutable_ids == 0


def test_a_rejected_token_gets_one_fresh_token_and_one_retry(make_graph_connection, graph, mailbox):
    conn = make_graph_connection()
    conn.build_connector().check()
    graph.revoke_tokens()  # MSAL still holds the old token as valid
    conn.build_connector().check()
    assert graph.token_requests == 2


@pytest.mark.parametrize(
    ("change", "error", "message"),
    [
        ("wrong secret", AuthFailed, "rejected the app's credentials"),
        ("expired secret", AuthFailed, "client secret has expired"),
        ("unknown app", Permanent, "is not registered in tenant"),
        ("unknown tenant", Permanent, "was not found: check the tenant id"),
        ("no consent", Permanent, "admin consent for Mail.Read (Application) is missing"),
        ("unknown mailbox", Permanent, "was not found or has no Exchange Online mailbox"),
    ],
)
def test_each_credential_problem_has_its_own_message(
    make_graph_connection, graph, mailbox, change, error, message
) -> None:
    kwargs: dict = {}
    if change == "wrong secret":
        kwargs["secret"] = "not-the-secret"
    elif change == "expired secret":
        graph.apps[CLIENT_ID].secret_expired = True
    elif change == "unknown app":
        kwargs["client_id"] = "00000000-0000-0000-0000-000000000000"
    elif change == "unknown tenant":
        kwargs["tenant_id"] = "11111111-2222-3333-4444-555555555555"
    elif change == "no consent":
        graph.apps[CLIENT_ID].consented = False
    elif change == "unknown mailbox":
        kwargs["mailbox"] = "nobody@contoso.com"
    auth._apps.clear()  # a fresh process: MSAL would otherwise answer from its token cache
    conn = make_graph_connection(**kwargs)
    with pytest.raises(error, match=message.replace("(", r"\(").replace(")", r"\)")) as caught:
        conn.build_connector().check()
    assert "not-the-secret" not in str(caught.value.detail)


def test_app_only_tokens_cannot_use_me(make_graph_connection, graph, mailbox):
    from integrations.msgraph.client import GraphClient

    conn = make_graph_connection()
    client = GraphClient(conn.build_connector().graph, conn.get_secrets())
    with pytest.raises(Permanent, match="HTTP 400"):
        client.get(f"{graph.url}/v1.0/me/messages")
