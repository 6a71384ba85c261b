"""Workers with django-q2's Redis broker (SYNC_BROKER_URL), for installations past what one
database's queue table carries: a real redis-server and a real qcluster. Tickets are only
hints there — Redis hands each to one worker and forgets it — so lost tickets are re-issued
by the dispatcher from the jobs in the database, and nothing runs twice."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from django_q.conf import Conf
from django_q.models import OrmQ

from syncqueue import broker, engine
from syncqueue.models import SyncJob
from tests.support.cluster import FAST_CLUSTER
from tests.support.models import FakeRecord, RunSpan
from tests.support.processes import qcluster, wait_for
from tests.support.redis_server import redis_server

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.process]


@pytest.fixture
def redis_url(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    with redis_server() as url:
        # this process as a web server configured with SYNC_BROKER_URL sees it (django-q2
        # reads its configuration once, at import)
        monkeypatch.setattr(Conf, "ORM", None)
        monkeypatch.setattr(Conf, "REDIS", url)
        yield url


def test_jobs_run_once_through_redis_and_lost_tickets_are_reissued(
    redis_url: str, make_connection: Any
) -> None:
    import redis

    client = redis.from_url(redis_url)
    queue = f"django_q:{Conf.CLUSTER_NAME}:q"
    conns = [
        make_connection(name=f"r{i}", config={"total": 12, "batch": 4, "track_runs": True})
        for i in range(10)
    ]
    jobs = [engine.enqueue(conn, SyncJob.Kind.MANUAL) for conn in conns]
    assert client.llen(queue) == 10 and not OrmQ.objects.exists()  # the tickets are in Redis
    assert broker.waiting_tickets() == 10
    client.delete(queue)  # every ticket lost (a Redis restart without persistence)
    late = make_connection(name="late", config={"total": 12, "batch": 4, "track_runs": True})

    env = {**FAST_CLUSTER, "SYNC_WORKERS": 2, "SYNC_BROKER_URL": redis_url}
    with qcluster("redis", **env):
        jobs.append(engine.enqueue(late, SyncJob.Kind.MANUAL))  # its ticket is not lost
        ids = [job.pk for job in jobs]
        wait_for(
            lambda: SyncJob.objects.filter(pk__in=ids, state="succeeded").count() == len(ids),
            90,
            "every job to succeed, the lost tickets re-issued by the dispatcher",
            every=0.3,
        )
    assert SyncJob.objects.filter(pk__in=ids).exclude(state="succeeded").count() == 0
    # nothing ran twice: one run per job, every record written once
    assert sorted(RunSpan.objects.values_list("job_id", flat=True)) == sorted(ids)
    assert FakeRecord.objects.count() == 12 * len(ids)
    assert set(FakeRecord.objects.values_list("writes", flat=True)) == {1}
