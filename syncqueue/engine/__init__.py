"""The sync engine: enqueue, claim, run in slices, and decide outcomes by error class.

Its parts: :mod:`.enqueue`, :mod:`.claim`, :mod:`.run` (slices and commits), :mod:`.items`
(poison items), :mod:`.outcome` (how a slice ends; the retry policy is ``syncqueue.policy``)
and :mod:`.health` (the connection's). What people do to jobs (retry, cancel) is in
``syncqueue.control``, next to what they do to connections.

How work flows
--------------
``enqueue()`` writes a ``SyncJob`` and, in the same transaction, a django-q2 task carrying only
the job id (a *ticket*). The ORM broker stores tasks in the same database, so the ticket becomes
visible exactly when the job commits: there is no window in which a committed job has no ticket
and no ticket for a job that was rolled back.

A ticket means "there is work". The worker that receives it claims the most urgent runnable job
(highest priority, then oldest) with a conditional UPDATE, so:

- priority works although django-q2's queue is first-in first-out (a manual "Sync now" overtakes
  a backlog of scheduled syncs);
- a duplicate delivery (django-q2 is at-least-once) finds nothing left to claim and exits;
- the database refuses a second running job for a connection (a partial unique index), on SQLite
  and PostgreSQL alike, even with several clusters racing.

A claimed job runs for at most ``SYNC_SLICE_SECONDS`` (well under django-q2's ``timeout``). Each
batch from the connector is committed together with its cursor/checkpoint and a lease renewal,
so a killed worker loses at most the batch in flight. When the budget is spent the job goes back
to ``queued`` with a new ticket and the next slice continues from the checkpoint.

Failures are decided by class (``integrations.errors``): transient → backoff with jitter up to
``max_attempts``; rate-limited → wait ``retry_after`` without spending an attempt; auth → fail at
once and mark the connection ``auth_required``; permanent → fail; cursor reset → restart the
stream inside the same job. Unexpected exceptions are ``Internal`` and retried like transient
ones (bounded), because nothing must be lost to a one-off fault.
"""

from syncqueue.engine.claim import claim_next, requeue_due_retries, runnable_jobs, worker_id
from syncqueue.engine.enqueue import (
    STREAM_KEY,
    TICKET_FUNC,
    ConnectionDisabled,
    default_dedupe_key,
    enqueue,
    enqueue_notified,
    submit_ticket,
    submit_tickets,
)
from syncqueue.engine.health import record_connection_outcome
from syncqueue.engine.outcome import announce_finished, backoff_seconds
from syncqueue.engine.run import execute, process_ticket
from syncqueue.engine.state import InternalError

__all__ = [
    "STREAM_KEY",
    "TICKET_FUNC",
    "ConnectionDisabled",
    "InternalError",
    "announce_finished",
    "backoff_seconds",
    "claim_next",
    "default_dedupe_key",
    "enqueue",
    "enqueue_notified",
    "execute",
    "process_ticket",
    "record_connection_outcome",
    "requeue_due_retries",
    "runnable_jobs",
    "submit_ticket",
    "submit_tickets",
    "worker_id",
]
