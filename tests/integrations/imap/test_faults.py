"""Faults survived with real processes: the IMAP server restarting mid-sync, and the worker
killed with SIGKILL mid-initial-sync. Afterwards the mirror equals the mailbox exactly."""

from __future__ import annotations

import os
import signal

import pytest

from mail.models import MailMessage
from syncqueue import dispatcher, engine
from syncqueue.models import SyncJob, SyncLog
from tests.support.mailfactory import message
from tests.support.processes import qcluster, wait_for

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.process]
State = SyncJob.State
CLUSTER = {
    "SYNC_TASK_TIMEOUT": 10,
    "SYNC_TASK_RETRY": 15,
    "SYNC_SLICE_SECONDS": 4,
    "SYNC_LEASE_SECONDS": 12,
    "SYNC_RETRY_BASE_SECONDS": 1,
    "SYNC_Q_POLL": 0.05,
}


def server_uids(dovecot, user: str) -> list[int]:
    client = dovecot.client(user)
    try:
        client.select_folder("INBOX", readonly=True)
        return sorted(client.search(["ALL"]))
    finally:
        client.logout()


def finished(job_id: int) -> SyncJob | None:
    dispatcher.dispatch()  # the every-minute schedule, run faster here
    return SyncJob.objects.filter(pk=job_id, state__in=SyncJob.FINISHED).first()


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
        final = wait_for(lambda: finished(job.pk), 120, "the retried sync", every=0.5)

    assert final.state == State.SUCCEEDED, final.error_message
    assert final.attempts >= 1 and final.error_class == "Transient"
    assert (final.progress_done, final.progress_total) == (2000, 2000)  # counted on after retry
    uids = list(MailMessage.objects.filter(connection=conn).values_list("uid", flat=True))
    assert sorted(uids) == server_uids(dovecot, imap_user)  # mirror == mailbox
    assert len(uids) == len(set(uids)) == 2000
    assert SyncLog.objects.filter(job=job, level="warning", message__contains="Transient").exists()


def test_killed_worker_resumes_the_initial_sync_from_its_checkpoint(
    make_imap_connection, dovecot, imap_user
):
    dovecot.deliver_many(imap_user, (message(subject=f"k{i}") for i in range(2000)))
    conn = make_imap_connection(batch_size=10)
    job = engine.enqueue(conn, SyncJob.Kind.INITIAL)
    with qcluster("imap-kill", **CLUSTER):
        running = wait_for(
            lambda: (
                SyncJob.objects.filter(pk=job.pk, state=State.RUNNING, progress_done__gte=300)
                .exclude(worker_id="")
                .first()
            ),
            60,
            "the sync to be under way",
            every=0.02,
        )
        os.kill(int(running.worker_id.rsplit(":", 1)[1]), signal.SIGKILL)
        committed = MailMessage.objects.filter(connection=conn).count()
        assert 300 <= committed < 2000
        final = wait_for(lambda: finished(job.pk), 120, "the rescued sync", every=0.5)

    assert final.state == State.SUCCEEDED, final.error_message
    assert final.attempts == 1
    # resumed from the checkpoint: nothing committed before the kill was fetched again
    assert (final.created_count, final.unchanged_count) == (2000, 0)
    assert (final.progress_done, final.progress_total) == (2000, 2000)
    uids = list(MailMessage.objects.filter(connection=conn).values_list("uid", flat=True))
    assert sorted(uids) == server_uids(dovecot, imap_user)
    assert len(uids) == len(set(uids)) == 2000
    assert SyncLog.objects.filter(job=job, message__contains="stopped responding").exists()
