"""Real qcluster processes: two clusters share one Zendesk account's export budget. (A worker
killed mid-export: the connector contract, tests/integrations/zendesk/test_contract.py.)"""

from __future__ import annotations

from contextlib import ExitStack

import pytest

from integrations.zendesk.models import Ticket
from syncqueue import engine
from syncqueue.models import SyncJob, SyncLog
from tests.support.cluster import FAST_CLUSTER, finished
from tests.support.processes import qcluster, wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.process]
State = SyncJob.State
CLUSTER = FAST_CLUSTER


def env(zendesk, test_ca, rate: str = "0/60") -> dict:
    return {
        **CLUSTER,
        "SYNC_CA_BUNDLE": test_ca.ca_file,
        "ZENDESK_BASE_URL": zendesk.base_url,
        "ZENDESK_EXPORT_RATE": rate,
    }


def test_two_clusters_share_one_rate_budget(make_zendesk_connection, zendesk, test_ca, acme):
    # The server allows 4 export requests per 1.5 s; the product is told 4 per 2 s (a margin
    # for requests in flight). Two connections to the same account, each on its own cluster.
    zendesk.rate = (4, 1.5)
    for i in range(24):
        zendesk.add_ticket(acme, f"T{i}")
    first = make_zendesk_connection(per_page=2)
    second = make_zendesk_connection(per_page=2)
    jobs = [engine.enqueue(c, SyncJob.Kind.INITIAL).pk for c in (first, second)]
    with ExitStack() as stack:
        for name in ("zendesk-a", "zendesk-b"):
            stack.enter_context(qcluster(name, **env(zendesk, test_ca, "4/2")))
        done = wait_for(lambda: finished(*jobs), 120, "both exports", every=0.5)

    assert all(job.state == State.SUCCEEDED for job in done), [j.error_message for j in done]
    assert acme.refused == 0  # never over the limit, though both ran at once
    assert acme.exports == 24  # 12 pages each
    a, b = done
    assert a.started_at < b.finished_at and b.started_at < a.finished_at  # they overlapped
    for conn in (first, second):
        assert Ticket.objects.filter(connection=conn).count() == 24
    assert SyncLog.objects.filter(job_id__in=jobs, message__contains="Rate limited").exists()


# A worker killed mid-export: the connector contract (tests/integrations/zendesk/test_contract.py).
