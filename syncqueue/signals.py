"""Signals for code that reacts to job outcomes without the engine knowing about it.

``job_finished(sender=SyncJob, job=...)`` is sent after the transaction that finished a job
(succeeded, failed for good, or cancelled) has committed.

``dispatcher_pass(sender=None, now=...)`` is sent by every full dispatcher pass (one at a time
across clusters), for provider housekeeping such as renewing push subscriptions. A receiver that
raises is logged and does not stop the pass.
"""

from __future__ import annotations

from django.dispatch import Signal

job_finished = Signal()
dispatcher_pass = Signal()
