"""One contract every connector passes (in the spirit of allauth's ``OAuth2TestsMixin``).

A provider's test module subclasses ``ConnectorContract`` (its name starting with ``Test``)
and supplies one fixture, ``provider``, returning a ``Provider``: how to make a connection,
put items on its server, count what is stored, break the credentials, throttle, make the
server forget the sync position, and (where the protocol allows it) answer out of order. Every
connector then gets the same tests:

- ``check()`` succeeds;
- bad credentials → ``AuthFailed`` and the connection ``auth_required``;
- throttling → ``RateLimited`` with the server's delay, and no attempt spent;
- a lost sync position → a complete, correct resync (nothing lost, nothing twice);
- unordered, repeated or partial pages → each item stored once, right;
- a SIGKILLed worker in the middle of a sync → resumed from the checkpoint by a real qcluster,
  nothing lost or duplicated.

A new provider gets the whole list by inheriting it. A capability a protocol does not have
(IMAP servers do not throttle with a delay) is declared ``None`` and its test says so.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from integrations.errors import AuthFailed
from integrations.models import Connection
from syncqueue import engine
from syncqueue.models import SyncJob
from tests.support.cluster import FAST_CLUSTER, kill_worker_of, running_with, wait_finished
from tests.support.jobs import sync_once
from tests.support.processes import qcluster, wait_for


@dataclass
class Provider:
    """What the contract needs to know about one provider's server and connection."""

    connect: Callable[[], Connection]  # a connection with good credentials
    seed: Callable[[int], None]  # put this many (more) items on the server
    stored: Callable[[Connection], list[Any]]  # identities of the items stored locally
    break_credentials: Callable[[Connection], None]  # the server stops accepting them
    forget_position: Callable[[], None]  # the server forgets every stream position
    throttle: Callable[[float], None] | None = None  # next requests answered "slow down"
    disorder: Callable[[], None] | None = None  # pages unordered / repeated / partial
    slow: Callable[[float], None] = lambda seconds: None  # every answer takes this long
    cluster_env: dict[str, Any] = field(default_factory=dict)  # for qcluster processes
    kill_items: int = 600  # items for the kill test (enough for several batches)


def assert_mirror(provider: Provider, conn: Connection, count: int) -> None:
    found = provider.stored(conn)
    assert len(found) == len(set(found)) == count, (len(found), len(set(found)), count)


class ConnectorContract:
    """Subclass as ``TestXContract`` and supply the ``provider`` fixture."""

    def test_check_succeeds(self, provider: Provider) -> None:
        result = provider.connect().build_connector().check()
        assert result.message

    def test_bad_credentials_are_auth_failed_and_the_connection_needs_them(
        self, provider: Provider, work: Any
    ) -> None:
        provider.seed(3)
        conn = provider.connect()
        provider.break_credentials(conn)
        conn.refresh_from_db()
        with pytest.raises(AuthFailed):
            conn.build_connector().check()
        job = sync_once(conn, work)
        conn.refresh_from_db()
        assert (job.state, job.error_class, job.attempts) == ("failed", "AuthFailed", 1)
        assert conn.status == Connection.Status.AUTH_REQUIRED and conn.next_sync_at is None

    def test_throttling_waits_the_servers_delay_without_spending_an_attempt(
        self, provider: Provider, work: Any, settings: Any
    ) -> None:
        if provider.throttle is None:
            pytest.skip("this protocol has no documented throttling with a delay")
        settings.SYNC_INLINE_WAIT_MAX = 0  # do not wait inside the slice: show the retry
        provider.seed(5)
        conn = provider.connect()
        provider.throttle(7.5)
        job = engine.enqueue(conn, SyncJob.Kind.MANUAL)
        work()
        job.refresh_from_db()
        assert (job.state, job.error_class, job.attempts) == ("retrying", "RateLimited", 0)
        delay = (job.run_after - job.updated_at).total_seconds()
        assert 7.5 <= delay <= 9.0  # the server's delay (plus up to a second of jitter)
        assert "as the service asked" in job.error_message
        SyncJob.objects.filter(pk=job.pk).update(run_after=job.updated_at)  # time passes
        engine.requeue_due_retries(job.run_after)
        work()
        job.refresh_from_db()
        assert job.state == "succeeded" and job.attempts == 0
        assert_mirror(provider, conn, 5)

    def test_a_lost_sync_position_resyncs_completely(self, provider: Provider, work: Any) -> None:
        provider.seed(12)
        conn = provider.connect()
        assert sync_once(conn, work).state == "succeeded"
        provider.forget_position()
        provider.seed(3)
        job = sync_once(conn, work)
        assert job.state == "succeeded", (job.error_class, job.error_message)
        assert_mirror(provider, conn, 15)

    def test_unordered_and_repeated_pages_store_each_item_once(
        self, provider: Provider, work: Any
    ) -> None:
        if provider.disorder is None:
            pytest.skip("this protocol answers in a defined order")
        provider.disorder()
        provider.seed(40)
        conn = provider.connect()
        job = sync_once(conn, work, SyncJob.Kind.INITIAL)
        assert job.state == "succeeded", (job.error_class, job.error_message)
        assert_mirror(provider, conn, 40)
        provider.seed(10)
        assert sync_once(conn, work).state == "succeeded"
        assert_mirror(provider, conn, 50)

    @pytest.mark.process
    def test_a_killed_worker_resumes_from_the_checkpoint(self, provider: Provider) -> None:
        provider.seed(provider.kill_items)
        conn = provider.connect()
        provider.slow(0.02)
        job = engine.enqueue(conn, SyncJob.Kind.INITIAL)
        with qcluster(f"contract-{conn.kind}", **{**FAST_CLUSTER, **provider.cluster_env}):
            running = wait_for(
                lambda: running_with(job, provider.kill_items // 5),
                90,
                "the sync to be under way",
                every=0.02,
            )
            kill_worker_of(running)
            committed = len(provider.stored(conn))
            assert 0 < committed < provider.kill_items, (committed, running.progress_done)
            provider.slow(0)
            final = wait_finished(job)
        assert final.state == "succeeded", (final.error_class, final.error_message)
        assert final.attempts == 1  # the rescue spent one
        assert_mirror(provider, conn, provider.kill_items)
        # resumed from the checkpoint: what was committed before the kill was not written again
        assert final.created_count + final.updated_count <= provider.kill_items
