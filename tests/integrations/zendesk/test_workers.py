"""Real qcluster processes: two clusters share one Zendesk account's export budget, and a
worker killed mid-export resumes from the committed cursor without duplicates."""

from __future__ import annotations

import os
import signal
from contextlib import ExitStack

import pytest

from syncqueue import dispatcher, engine
from syncqueue.models import SyncJob, SyncLog
from tests.support.processes import qcluster, wait_for
from workspace.models import Ticket

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.process]
State = SyncJob.State
CLUSTER = {
    "SYNC_WORKERS": 1,
    "SYNC_TASK_TIMEOUT": 10,
    "SYNC_TASK_RETRY": 15,
    "SYNC_SLICE_SECONDS": 4,
    "SYNC_LEASE_SECONDS": 12,
    "SYNC_RETRY_BASE_SECONDS": 1,
    "SYNC_Q_POLL": 0.05,
}


def env(zendesk, zendesk_ca, rate: str = "0/60") -> dict:
    return {
        **CLUSTER,
        "SYNC_CA_BUNDLE": zendesk_ca.ca_file,
        "ZENDESK_BASE_URL": zendesk.base_url,
        "ZENDESK_EXPORT_RATE": rate,
    }


def finished(*job_ids: int) -> list[SyncJob] | None:
    dispatcher.dispatch()
    jobs = list(SyncJob.objects.filter(pk__in=job_ids, state__in=SyncJob.FINISHED))
    return jobs if len(jobs) == len(job_ids) else None


def test_two_clusters_share_one_rate_budget(make_zendesk_connection, zendesk, zendesk_ca, acme):
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
            stack.enter_context(qcluster(name, **env(zendesk, zendesk_ca, "4/2")))
        done = wait_for(lambda: finished(*jobs), 120, "both exports", every=0.5)

    assert all(job.state == State.SUCCEEDED for job in done), [j.error_message for j in done]
    assert acme.refused == 0  # never over the limit, though both ran at once
    assert acme.exports == 24  # 12 pages each
    a, b = done
    assert a.started_at < b.finished_at and b.started_at < a.finished_at  # they overlapped
    for conn in (first, second):
        assert Ticket.objects.filter(connection=conn).count() == 24
    assert SyncLog.objects.filter(job_id__in=jobs, message__contains="Rate limited").exists()


def test_killed_worker_resumes_the_export_from_its_cursor(
    make_zendesk_connection, zendesk, zendesk_ca, acme
):
    ids = {zendesk.add_ticket(acme, f"T{i}") for i in range(400)}
    zendesk.delay = 0.05
    conn = make_zendesk_connection(per_page=5)
    job = engine.enqueue(conn, SyncJob.Kind.INITIAL)
    with qcluster("zendesk-kill", **env(zendesk, zendesk_ca)):
        running = wait_for(
            lambda: (
                SyncJob.objects.filter(pk=job.pk, state=State.RUNNING, progress_done__gte=100)
                .exclude(worker_id="")
                .first()
            ),
            60,
            "the export to be under way",
            every=0.02,
        )
        os.kill(int(running.worker_id.rsplit(":", 1)[1]), signal.SIGKILL)
        assert 100 <= Ticket.objects.filter(connection=conn).count() < 400
        final = wait_for(lambda: finished(job.pk), 120, "the rescued export", every=0.5)[0]

    assert final.state == State.SUCCEEDED, final.error_message
    assert final.attempts == 1
    assert (final.created_count, final.unchanged_count) == (400, 0)  # resumed, nothing re-read
    stored = list(Ticket.objects.filter(connection=conn).values_list("zendesk_id", flat=True))
    assert sorted(stored) == sorted(ids)
