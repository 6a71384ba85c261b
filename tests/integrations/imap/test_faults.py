"""Faults survived with real processes: the IMAP server restarting mid-sync. Afterwards the
mirror equals the mailbox exactly. (A worker killed mid-sync: the connector contract,
tests/integrations/imap/test_contract.py.)"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from mail.models import MailMessage
from syncqueue import engine
from syncqueue.models import SyncJob, SyncLog
from tests.support.cluster import FAST_CLUSTER, running_with, wait_finished, worker_pid
from tests.support.mailfactory import message
from tests.support.processes import descendants, qcluster, wait_for

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


def helpers_of(worker: int) -> list[int]:
    """The parse helpers (mail/parse_helper.py) a worker process has started."""
    found = []
    for pid in descendants(worker):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"mail.parse_helper" in argv:
            found.append(pid)
    return found


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return False


def test_a_worker_killed_mid_import_takes_its_parse_helper_along(
    make_imap_connection, dovecot, imap_user
):
    """A large first sync in a real qcluster parses in a helper process beside the worker. The
    worker killed with SIGKILL (as django-q2's timeout does) takes the helper with it; the job
    is rescued and the mirror is exact: nothing lost, nothing twice."""
    dovecot.deliver_many(imap_user, (message(subject=f"m{i}") for i in range(3000)))
    conn = make_imap_connection(batch_size=50)
    job = engine.enqueue(conn, SyncJob.Kind.INITIAL)
    with qcluster("imap-helper-kill", MAIL_PARSE_HELPER_FROM=1000, **CLUSTER):
        running = wait_for(lambda: running_with(job, 300), 60, "the import to be under way")
        worker = worker_pid(running)
        helpers = wait_for(lambda: helpers_of(worker), 10, "the worker's parse helper")
        os.kill(worker, signal.SIGKILL)
        wait_for(lambda: not any(alive(pid) for pid in helpers), 10, "the helper to die too")
        final = wait_finished(job)

    assert final.state == State.SUCCEEDED, final.error_message
    uids = list(MailMessage.objects.filter(connection=conn).values_list("uid", flat=True))
    assert sorted(uids) == server_uids(dovecot, imap_user)
    assert len(uids) == len(set(uids)) == 3000
