"""Signals for code that reacts to job outcomes without the engine knowing about it.

``job_finished(sender=SyncJob, job=...)`` is sent after the transaction that finished a job
(succeeded, failed for good, or cancelled) has committed.
"""

from __future__ import annotations

from django.dispatch import Signal

job_finished = Signal()
