"""django-q2 entry points. Thin on purpose: they take ids and call plain functions."""

from __future__ import annotations

from typing import Any


def run_sync_job(job_id: int | None = None) -> str:
    """A ticket: claim the most urgent runnable job (usually ``job_id``) and run one slice."""
    from syncqueue.engine import process_ticket

    return process_ticket(job_id)


def dispatch() -> dict[str, Any]:
    """The periodic dispatcher pass (scheduled every minute on migrate)."""
    from syncqueue.dispatcher import dispatch as run_dispatch

    return run_dispatch().as_dict()
