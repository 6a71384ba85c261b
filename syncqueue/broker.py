"""Where tickets travel: django-q2's ORM broker (the default: a ticket commits with its job) or
Redis (``SYNC_BROKER_URL``), for installations past what one database's queue table carries.

Tickets are only hints either way — the database's jobs are the truth — so a broker that can
lose a ticket (Redis hands each to one worker with BLPOP and forgets it; a worker killed right
after takes it along) costs a delay, never a job: the dispatcher counts the tickets waiting in
whichever broker is configured and issues the missing ones (``dispatcher.top_up_tickets``).
"""

from __future__ import annotations

import time
from datetime import timedelta

from django.db import close_old_connections, connection
from django.utils import timezone
from django_q.brokers import get_broker
from django_q.conf import Conf
from django_q.models import OrmQ


def tickets_commit_with_jobs() -> bool:
    """True for the ORM broker: a ticket written in the job's transaction commits with it.
    Other brokers receive it at once, so tickets are sent after the commit instead (else a
    worker could take the ticket before the job is visible)."""
    return bool(Conf.ORM) and not Conf.BROKER_CLASS


def waiting_tickets() -> int:
    """Tickets not yet taken by a worker."""
    if tickets_commit_with_jobs():
        # a taken ORM ticket is locked into the future
        return OrmQ.objects.filter(key=Conf.CLUSTER_NAME, lock__lte=timezone.now()).count()
    return int(get_broker().queue_size() or 0)


def absorb_ticket() -> None:
    """Withdraw one waiting ticket: the caller is about to run a job whose own ticket would
    otherwise find nothing to do (a ticket runs further jobs while its budget lasts). Only the
    ORM broker can withdraw a ticket, and only our tickets use its queue; a ticket another
    pusher is taking right now is skipped (``SKIP LOCKED``; a taken one is locked into the
    future). A Redis ticket stays and costs one empty task."""
    if not tickets_commit_with_jobs():
        return
    table = OrmQ._meta.db_table
    skip_locked = " FOR UPDATE SKIP LOCKED" if connection.vendor == "postgresql" else ""
    with connection.cursor() as cursor:
        cursor.execute(
            f"DELETE FROM {table} WHERE id = (SELECT id FROM {table} WHERE key = %s"  # noqa: S608
            f" AND lock <= %s ORDER BY id LIMIT 1{skip_locked})",
            [Conf.CLUSTER_NAME, connection.ops.adapt_datetimefield_value(timezone.now())],
        )


def take_tickets(limit: int) -> list[tuple[int, str]] | None:
    """The ORM broker's dequeue in one statement: up to ``limit`` waiting tickets, locked until
    django-q2's ``retry`` (so a ticket whose worker died is handed out again), oldest first.

    django-q2's own dequeue reads the tickets, then updates them one by one; here one
    ``UPDATE … RETURNING`` does both (``SKIP LOCKED`` on PostgreSQL lets clusters pass each
    other). Like django-q2's, it sleeps ``poll`` seconds and returns None when nothing waits."""
    close_old_connections()  # as django-q2's broker does outside a transaction
    now = timezone.now()
    table = OrmQ._meta.db_table
    skip_locked = " FOR UPDATE SKIP LOCKED" if connection.vendor == "postgresql" else ""
    adapt = connection.ops.adapt_datetimefield_value
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {table} SET lock = %s WHERE lock < %s AND id IN ("  # noqa: S608
            f"SELECT id FROM {table} WHERE key = %s AND lock < %s ORDER BY id LIMIT %s"
            f"{skip_locked}) RETURNING id, payload",
            [
                adapt(now + timedelta(seconds=Conf.RETRY)),
                adapt(now),
                Conf.CLUSTER_NAME,
                adapt(now),
                limit,
            ],
        )
        taken = [(int(pk), str(payload)) for pk, payload in cursor.fetchall()]
    if taken:
        return sorted(taken)
    time.sleep(Conf.POLL)
    return None


def ack_ticket(ticket_id: int) -> None:
    """The ORM broker's acknowledgement in one statement (django-q2's ``QuerySet.delete`` sends
    BEGIN, DELETE, COMMIT)."""
    close_old_connections()  # as django-q2's broker does outside a transaction
    with connection.cursor() as cursor:
        cursor.execute(f"DELETE FROM {OrmQ._meta.db_table} WHERE id = %s", [ticket_id])  # noqa: S608


def describe() -> str:
    return "database (django-q2 ORM broker)" if tickets_commit_with_jobs() else "Redis"
