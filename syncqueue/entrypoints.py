"""What django-q2 runs: the ticket. Thin on purpose: it takes an id and calls the engine.

A ticket's function is named by its dotted path in every queued django-q2 task
(``engine.TICKET_FUNC``). After an upgrade that renames it, tickets queued before fail to load
and are acknowledged; their jobs stay queued and the next dispatcher pass gives them new
tickets (``dispatcher.top_up_tickets``), so nothing is lost.
"""

from __future__ import annotations


def run_sync_job(job_id: int | None = None) -> str:
    """A ticket: claim the most urgent runnable job (usually ``job_id``) and run one slice."""
    from syncqueue.engine import process_ticket

    return process_ticket(job_id)
