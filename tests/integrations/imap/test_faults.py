"""Faults survived with real processes: the IMAP server restarting mid-sync. Afterwards the
mirror equals the mailbox exactly. (A worker killed mid-sync: the connector contract,
tests/integrations/imap/test_contract.py.)"""

from __future__ import annotations

import pytest

from mail.models import MailMessage
from syncqueue import engine
from syncqueue.models import SyncJob, SyncLog
from tests.support.cluster import FAST_CLUSTER, wait_finished
from tests.support.mailfactory import message
from tests.support.processes import qcluster, wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.process]
State = SyncJob.State
CLUSTER = FAST_CLUSTER


def server_uids(dovecot, user: str) -> list[int]:
    client = dovecot.client(user)
    try:
        client.select_folder("INBOX", readonly=True)
        return sorted(client.search(["ALL"]))
    finally:
        client.logout()


def test_server_restart_mid_sync_is_retried_and_finishes(make_imap_connection, dovecot, imap_user):
    dovecot.deliver_many(imap_user, (message(subject=f"m{i}") for i in range(2000)))
    conn = make_imap_connection(batch_size=10)
    job = engine.enqueue(conn, SyncJob.Kind.INITIAL)
    with qcluster("imap-restart", **CLUSTER):
        wait_for(
            lambda: SyncJob.objects.filter(pk=job.pk, progress_done__gte=200).exists(),
            60,
            "the sync to be under way",
            every=0.02,
        )
        dovecot.kill()  # the server goes away mid-sync, connections and all
        wait_for(
            lambda: SyncJob.objects.filter(pk=job.pk, state=State.RETRYING).exists(),
            30,
            "the job to notice the server is gone",
        )
        dovecot.start()
        final = wait_finished(job)

    assert final.state == State.SUCCEEDED, final.error_message
    assert final.attempts >= 1 and final.error_class == "Transient"
    assert (final.progress_done, final.progress_total) == (2000, 2000)  # counted on after retry
    uids = list(MailMessage.objects.filter(connection=conn).values_list("uid", flat=True))
    assert sorted(uids) == server_uids(dovecot, imap_user)  # mirror == mailbox
    assert len(uids) == len(set(uids)) == 2000
    assert SyncLog.objects.filter(job=job, level="warning", message__contains="Transient").exists()


# A worker killed mid-sync: the connector contract (tests/integrations/imap/test_contract.py).
