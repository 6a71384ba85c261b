"""A link Graph hands back (a next page, a delta link) is followed only to the Graph endpoint
the credentials were entered for: one pointing at another server fails the sync with a plain
message, and that server receives nothing — not even a connection, let alone the bearer token
(integrations/http.py ``HttpClient``, ``origin``). Also when the link is written to look like
ours: what counts is where the connection would go."""

from __future__ import annotations

import pytest

from syncqueue.models import SyncJob
from tests.support.jobs import sync_once
from tests.support.listener import Listener


@pytest.mark.parametrize(
    "disguise",
    [
        "https://127.0.0.1:{elsewhere}",  # plainly another server
        "https://127.0.0.1:{elsewhere}\\@127.0.0.1:{graph}",  # a backslash ends the host
        "https://127.0.0.1:{graph}@127.0.0.1:{elsewhere}",  # ours as a user name
    ],
)
def test_a_next_link_to_another_server_is_not_followed(
    make_graph_connection, graph, mailbox, work, disguise
):
    for number in range(12):
        graph.add_message(mailbox, subject=f"m{number}")
    conn = make_graph_connection(page_size=5)  # the first delta page has a next one
    with Listener() as elsewhere:
        graph.links_to = disguise.format(elsewhere=elsewhere.port, graph=graph.port)
        job = sync_once(conn, work)
    assert job.state == SyncJob.State.FAILED and job.error_class == "Permanent"
    assert f"link to another server (127.0.0.1:{elsewhere.port})" in job.error_message
    assert (elsewhere.connections, elsewhere.received) == (0, b"")
    graph.links_to = None
    assert sync_once(conn, work).state == SyncJob.State.SUCCEEDED
