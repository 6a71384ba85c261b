"""Chaos: two real qclusters on PostgreSQL while workers and whole clusters are SIGKILLed at
random, Dovecot restarts and Zendesk throttles — mail and tickets keep changing meanwhile, and
two long syncs of the test connector (slow batches) keep workers busy so that kills land
mid-slice.
Afterwards every record is exactly right (0 lost, 0 duplicated), no job is stuck, and the time
from each kill of a busy worker to its job running again (the rescue latency) is printed.

Seeded (``CHAOS_SEED``), bounded (``CHAOS_SECONDS``, default 60), PostgreSQL pass only: the
product's shared-database set-up, where several clusters on several hosts are the norm.
"""

from __future__ import annotations

import os
import random
import signal
import statistics
import subprocess
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import TYPE_CHECKING, Any

import pytest

from integrations.models import Connection
from integrations.zendesk.models import Ticket
from mail.models import MailMessage
from sandbox.zendesk import FakeZendesk
from syncqueue import engine
from syncqueue.models import SyncJob, SyncLog
from tests.support.cluster import FAST_CLUSTER, roles
from tests.support.mailfactory import realistic
from tests.support.models import FakeRecord
from tests.support.processes import qcluster, wait_for
from workspace.models import Organization

if TYPE_CHECKING:  # at run time pytest would take the class TestCA for tests to collect
    from sandbox.tls import TestCA

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.process, pytest.mark.postgres]
State = SyncJob.State
SEED = int(os.environ.get("CHAOS_SEED", "17"))
SECONDS = float(os.environ.get("CHAOS_SECONDS", "60"))
MAILBOXES, MESSAGES = 2, 1500
DESKS, TICKETS = 2, 600
LONG, LONG_ITEMS = 2, 300  # test-connector syncs of about a minute: 150 batches of 0.4 s


class Clusters:
    """Two named qclusters that the test kills and restarts like a supervisor would."""

    def __init__(self, stack: ExitStack, env: dict[str, Any]) -> None:
        self.stack, self.env = stack, env
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.generation = 0

    def start(self, name: str) -> None:
        self.generation += 1
        self.procs[name] = self.stack.enter_context(
            qcluster(f"chaos-{name}-{self.generation}", **self.env)
        )

    def kill(self, name: str) -> None:
        os.killpg(self.procs[name].pid, signal.SIGKILL)
        self.procs[name].wait()

    def workers(self) -> list[tuple[str, int, bool]]:
        found = []
        for name, proc in self.procs.items():
            if proc.poll() is None:
                by_role = roles(proc.pid)
                found += [(name, pid, True) for pid in by_role.get("busy", [])]
                found += [(name, pid, False) for pid in by_role.get("idle", [])]
        return found


@contextmanager
def fake_zendesk(settings: Any, ca: TestCA) -> Iterator[FakeZendesk]:
    server = FakeZendesk(ca, rate=None).start()
    settings.SYNC_CA_BUNDLE = str(ca.ca_file)
    settings.ZENDESK_BASE_URL = server.base_url
    try:
        yield server
    finally:
        server.stop()


def test_chaos_loses_and_duplicates_nothing(dovecot, settings, test_ca) -> None:
    rng = random.Random(SEED)
    settings.SYNC_MAX_ATTEMPTS = 100  # kills count as attempts; these jobs must not give up
    org = Organization.objects.create(name="Chaos", slug="chaos")
    with ExitStack() as stack:
        zendesk = stack.enter_context(fake_zendesk(settings, test_ca))
        env = {
            **FAST_CLUSTER,
            "SYNC_WORKERS": 2,
            "SYNC_MAX_ATTEMPTS": 100,
            "SYNC_CA_BUNDLE": settings.SYNC_CA_BUNDLE,
            "ZENDESK_BASE_URL": zendesk.base_url,
            "ZENDESK_EXPORT_RATE": "0/60",
        }
        connections: list[Connection] = []
        mailboxes: dict[int, str] = {}
        for i in range(MAILBOXES):
            user = f"chaos{i}p{os.getpid()}x{SEED}"
            dovecot.add_user(user)
            dovecot.deliver_many(user, (realistic(n, rng) for n in range(MESSAGES)))
            conn = make(org, "imap", f"Mailbox {i}", dovecot.connection_config(user), dovecot, user)
            mailboxes[conn.pk] = user
            connections.append(conn)
        desks: dict[int, Any] = {}
        for i in range(DESKS):
            account = zendesk.add_account(f"desk{i}", f"admin@desk{i}.test", f"tok-{i}")
            for n in range(TICKETS):
                zendesk.add_ticket(account, f"Ticket {n}")
            conn = make(
                org,
                "zendesk",
                f"Desk {i}",
                {"subdomain": f"desk{i}", "email": f"admin@desk{i}.test", "per_page": 50},
                secrets={"api_token": f"tok-{i}"},
            )
            desks[conn.pk] = account
            connections.append(conn)

        long_syncs = []
        for i in range(LONG):
            conn = make(
                org,
                "fake",
                f"Long {i}",
                {"total": LONG_ITEMS, "batch": 2, "delay": 0.4},
                secrets={"password": "fake"},
            )
            long_syncs.append(conn)
            connections.append(conn)

        clusters = Clusters(stack, env)
        clusters.start("a")
        clusters.start("b")
        latencies: list[float] = []
        watching: list[tuple[int, str, float]] = []  # (job, killed worker id, when)
        kills = {"worker": 0, "cluster": 0}
        exits = 0  # clusters that exited by themselves (status 3: gave up healing)
        restart_at: dict[str, float] = {}
        start = time.monotonic()
        next_kill = start + rng.uniform(2, 5)
        next_change = start
        dovecot_restarted = throttled = False
        while time.monotonic() - start < SECONDS:
            now = time.monotonic()
            for name, proc in clusters.procs.items():
                if proc.poll() is not None and name not in restart_at:  # exited by itself
                    restart_at[name] = now + 1
                    exits += 1
            for name, when in list(restart_at.items()):
                if now >= when:
                    clusters.start(name)
                    del restart_at[name]
            if now >= next_change:  # the outside world keeps changing
                next_change = now + 2
                for user in mailboxes.values():
                    dovecot.deliver_many(
                        user, (realistic(rng.randrange(10**6), rng) for _ in range(5))
                    )
                for account in desks.values():
                    ids = rng.sample(sorted(account.tickets), 10)
                    for ticket_id in ids:
                        zendesk.update_ticket(account, ticket_id, subject=f"Edited {rng.random()}")
                    # created now: as the export sees it, a minute ago (sandbox/zendesk.py)
                    zendesk.add_ticket(
                        account, f"New {rng.random()}", generated=int(zendesk.clock()) - 61
                    )
                for conn in connections:
                    engine.enqueue(conn, SyncJob.Kind.MANUAL)  # deduplicated while one waits
            if not dovecot_restarted and now - start > SECONDS / 3:
                dovecot.restart()
                dovecot_restarted = True
            if not throttled and now - start > SECONDS / 2:
                zendesk.throttle(2, times=3)
                throttled = True
            if now >= next_kill and not restart_at:
                next_kill = now + rng.uniform(2, 5)
                if rng.random() < 0.25:
                    busy_clusters = {name for name, __, is_busy in clusters.workers() if is_busy}
                    name = rng.choice(sorted(busy_clusters or clusters.procs))
                    watching += running_on_cluster(clusters.procs[name].pid, now)
                    clusters.kill(name)
                    restart_at[name] = now + 1
                    kills["cluster"] += 1
                else:
                    candidates = clusters.workers()
                    busy_workers = [c for c in candidates if c[2]]
                    if busy_workers or candidates:
                        pid = rng.choice(busy_workers or candidates)[1]
                        watching += running_on_worker(pid, now)
                        os.kill(pid, signal.SIGKILL)
                        kills["worker"] += 1
            for item in list(watching):
                job_id, old_worker, killed_at = item
                job = SyncJob.objects.get(pk=job_id)
                moved_on = job.state == State.RUNNING and job.worker_id != old_worker
                if moved_on or job.state in SyncJob.FINISHED:
                    latencies.append(time.monotonic() - killed_at)
                    watching.remove(item)
            time.sleep(0.2)

        for name in list(restart_at):
            clusters.start(name)
        # Jobs killed near the end: keep measuring each until it runs again (not until the
        # drain below is over, which would count the drain as rescue latency).
        settle = time.monotonic() + 120
        while watching and time.monotonic() < settle:
            for item in list(watching):
                job = SyncJob.objects.get(pk=item[0])
                moved_on = job.state == State.RUNNING and job.worker_id != item[1]
                if moved_on or job.state in SyncJob.FINISHED:
                    latencies.append(time.monotonic() - item[2])
                    watching.remove(item)
            time.sleep(0.2)
        stuck = [
            (
                job.pk,
                job.state,
                job.worker_id,
                job.attempts,
                job.run_after,
                job.leased_until,
                list(SyncLog.objects.filter(job=job).values_list("message", flat=True)),
            )
            for job in SyncJob.objects.filter(pk__in=[item[0] for item in watching])
        ]
        assert not watching, f"killed jobs never ran again: {watching}: {stuck}"
        # Quiet: let what runs finish, then one last sync of each connection sees everything.
        wait_for(
            lambda: not SyncJob.objects.filter(state__in=SyncJob.ACTIVE).exists(),
            180,
            "the backlog to drain",
            every=0.5,
        )
        final = [engine.enqueue(conn, SyncJob.Kind.MANUAL).pk for conn in connections]
        wait_for(
            lambda: (
                SyncJob.objects.filter(pk__in=final, state__in=SyncJob.FINISHED).count()
                == len(final)
            ),
            120,
            "the final syncs",
            every=0.5,
        )

    jobs = SyncJob.objects.filter(connection__in=connections)
    rescues = {
        how: SyncLog.objects.filter(job__in=jobs, message__contains=text).count()
        for how, text in (("worker died", " died; resuming"), ("lease expired", "lease expired"))
    }
    summary = {
        "seed": SEED,
        "seconds": SECONDS,
        "kills": kills,
        "self_exits": exits,
        "rescues": rescues,
        "jobs": jobs.count(),
        "rescue_latency_s": {
            "n": len(latencies),
            "median": round(statistics.median(latencies), 1) if latencies else None,
            "max": round(max(latencies), 1) if latencies else None,
        },
    }
    print(f"\nchaos: {summary}")
    assert kills["worker"] + kills["cluster"] >= SECONDS / 6
    assert rescues["worker died"] >= 1  # busy workers were killed: their cluster handed back
    assert not jobs.filter(state__in=SyncJob.ACTIVE).exists(), "stuck jobs"
    for job in SyncJob.objects.filter(pk__in=final):
        assert job.state == State.SUCCEEDED, (job.connection.name, job.error_message)
    for conn_id, user in mailboxes.items():
        on_server = server_message_ids(dovecot, user)
        stored_mail = list(
            MailMessage.objects.filter(connection_id=conn_id, deleted=False).values_list(
                "message_id", flat=True
            )
        )
        assert len(stored_mail) == len(on_server), "lost or duplicated mail"
        assert sorted(stored_mail) == sorted(on_server)
    for conn in long_syncs:
        records = FakeRecord.objects.filter(connection=conn)
        assert sorted(records.values_list("key", flat=True)) == list(range(1, LONG_ITEMS + 1))
        assert set(records.values_list("writes", flat=True)) == {1}  # nothing written twice
    for conn_id, account in desks.items():
        stored_tickets = dict(
            Ticket.objects.filter(connection_id=conn_id).values_list("zendesk_id", "subject")
        )
        assert stored_tickets == {tid: t["subject"] for tid, t in account.tickets.items()}
    assert latencies  # every killed job ran again (checked above); how fast: bench/rescue.py


def running_on_worker(pid: int, now: float) -> list[tuple[int, str, float]]:
    return [
        (job_id, worker, now)
        for job_id, worker in SyncJob.objects.filter(
            state=State.RUNNING, worker_id__endswith=f":{pid}"
        ).values_list("pk", "worker_id")
    ]


def running_on_cluster(main_pid: int, now: float) -> list[tuple[int, str, float]]:
    found = []
    by_role = roles(main_pid)
    for pid in by_role.get("busy", []) + by_role.get("idle", []):
        found += running_on_worker(pid, now)
    return found


def server_message_ids(dovecot: Any, user: str) -> list[str]:
    from mail.parsing import normalize_message_id

    client = dovecot.client(user)
    try:
        client.select_folder("INBOX", readonly=True)
        data = client.fetch(client.search(["ALL"]), ["BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)]"])
    finally:
        client.logout()
    found = []
    for item in data.values():
        raw = item[b"BODY[HEADER.FIELDS (MESSAGE-ID)]"].decode(errors="replace")
        value = raw.partition(":")[2].strip()
        found.append(normalize_message_id(value))
    return found


def make(
    org: Organization,
    kind: str,
    name: str,
    config: dict[str, Any],
    dovecot: Any = None,
    user: str = "",
    secrets: dict[str, str] | None = None,
) -> Connection:
    conn = Connection(organization=org, kind=kind, name=name, config=config)
    conn.set_secrets(secrets or {"password": dovecot.users[user]})
    conn.save()
    return conn
