"""Where tickets travel: django-q2's ORM broker (the default: a ticket commits with its job) or
Redis (``SYNC_BROKER_URL``), for installations past what one database's queue table carries.

Tickets are only hints either way — the database's jobs are the truth — so a broker that can
lose a ticket (Redis hands each to one worker with BLPOP and forgets it; a worker killed right
after takes it along) costs a delay, never a job: the dispatcher counts the tickets waiting in
whichever broker is configured and issues the missing ones (``dispatcher.top_up_tickets``).
"""

from __future__ import annotations

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


def describe() -> str:
    return "database (django-q2 ORM broker)" if tickets_commit_with_jobs() else "Redis"
