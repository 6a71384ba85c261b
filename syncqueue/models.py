"""Sync jobs, their logs, and the worker heartbeat. These tables are the source of truth about
work; django-q2 only carries "there is work" signals (tickets) to the workers."""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.db import models
from django.db.models import Q

from integrations.models import Connection
from syncproject.safetext import neutral


class SyncJob(models.Model):
    """One unit of requested work for one connection."""

    class State(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Running"
        RETRYING = "retrying", "Retrying"
        SUCCEEDED = "succeeded", "Succeeded"
        FAILED = "failed", "Failed"
        CANCELLED = "cancelled", "Cancelled"

    class Kind(models.TextChoices):
        INITIAL = "initial", "Initial sync"
        INCREMENTAL = "incremental", "Scheduled sync"
        MANUAL = "manual", "Sync now"
        FULL_RESYNC = "full_resync", "Full resync"
        PUSH = "push", "Push"
        HISTORICAL = "historical", "History sync"
        NOTIFIED = "notified", "Change notification"

    class Priority(models.IntegerChoices):
        BACKGROUND = 0, "Background"
        SCHEDULED = 10, "Scheduled"
        PUSH = 20, "High"  # pushes and change notifications: before the scheduled syncs
        MANUAL = 30, "Manual"

    WAITING = (State.QUEUED, State.RETRYING)
    ACTIVE = (State.QUEUED, State.RETRYING, State.RUNNING)
    FINISHED = (State.SUCCEEDED, State.FAILED, State.CANCELLED)

    # No index of its own: syncjob_connection_idx (connection, -id) serves every lookup by
    # connection, the cascade delete included; a second one cost each insert and claim a write.
    connection = models.ForeignKey(
        Connection,
        on_delete=models.CASCADE,
        related_name="jobs",
        db_index=False,
        help_text="What is synced.",
    )
    kind = models.CharField(max_length=20, choices=Kind.choices, help_text="What was asked for.")
    dedupe_key = models.CharField(
        max_length=200,
        help_text="Requests with the same key on the same connection share one waiting job.",
    )
    priority = models.SmallIntegerField(
        choices=Priority.choices,
        default=Priority.SCHEDULED,
        help_text="Higher runs first; a manual 'Sync now' outranks scheduled syncs.",
    )
    state = models.CharField(
        max_length=20, choices=State.choices, default=State.QUEUED, help_text="Where the job is."
    )
    attempts = models.PositiveSmallIntegerField(
        default=0,
        help_text="Failed attempts so far. Slices and rate-limit waits do not count.",
    )
    max_attempts = models.PositiveSmallIntegerField(
        default=5, help_text="After this many failed attempts the job is marked failed."
    )
    run_after = models.DateTimeField(
        help_text="Not started before this time. A retrying job returns to the queue then."
    )
    leased_until = models.DateTimeField(
        null=True, blank=True, help_text="A running job not renewed by then is rescued."
    )
    worker_id = models.CharField(max_length=200, blank=True, help_text="host:pid running it.")
    slices = models.PositiveIntegerField(
        default=0, help_text="Time-boxed runs so far; long syncs continue over several slices."
    )
    cancel_requested = models.BooleanField(
        default=False, help_text="Stop at the next batch boundary."
    )
    progress_done = models.PositiveIntegerField(default=0, help_text="Items processed.")
    position = models.CharField(
        max_length=200,
        blank=True,
        help_text="Where the sync is now, in the provider's words (e.g. 'INBOX: up to UID "
        "43,300'); progress lives here, the log keeps events.",
    )
    progress_total = models.PositiveIntegerField(
        null=True, blank=True, help_text="Items expected, when known."
    )
    created_count = models.PositiveIntegerField(default=0)
    updated_count = models.PositiveIntegerField(default=0)
    deleted_count = models.PositiveIntegerField(default=0)
    unchanged_count = models.PositiveIntegerField(
        default=0, help_text="Items seen again exactly as stored: nothing to write."
    )
    skipped_items = models.PositiveIntegerField(
        default=0,
        help_text="Items this job could not store (each listed under Skipped items); the rest "
        "of the sync went on.",
    )
    error_class = models.CharField(
        max_length=50,
        blank=True,
        help_text="Transient, RateLimited, AuthFailed, Permanent, CursorReset or Internal.",
    )
    error_message = models.CharField(
        max_length=500, blank=True, help_text="Plain-language message, safe to show the owner."
    )
    error_detail = models.TextField(
        blank=True, help_text="For staff: error code, provider reply, traceback (no secrets)."
    )
    payload = models.JSONField(
        default=dict, blank=True, help_text="Non-secret parameters: ids only, never credentials."
    )
    checkpoint = models.JSONField(
        default=dict, blank=True, help_text="This job's own progress (e.g. a history search)."
    )
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        db_index=False,  # syncjob_requested_by_idx, over the few jobs a person asked for
        help_text="Who asked for it; empty for scheduled jobs.",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True, help_text="First slice start.")
    finished_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-id"]
        constraints = [
            # At most one running job per connection, enforced by the database itself so two
            # clusters racing on PostgreSQL (or SQLite) cannot both run one connection.
            models.UniqueConstraint(
                fields=["connection"],
                condition=Q(state="running"),
                name="one_running_job_per_connection",
            ),
            # At most one never-started job per connection and stream: what lets enqueue be
            # one INSERT … ON CONFLICT DO NOTHING on PostgreSQL instead of lock, read, write.
            # A job that has run a slice (slices > 0) and waits again is not covered: a push
            # job may wait behind a running push of the same connection.
            models.UniqueConstraint(
                fields=["connection", "dedupe_key"],
                condition=Q(state="queued", slices=0),
                name="one_new_job_per_stream",
            ),
        ]
        indexes = [
            # Claim order: the most urgent queued job first.
            models.Index(
                fields=["-priority", "run_after", "id"],
                condition=Q(state="queued"),
                name="syncjob_claim_idx",
            ),
            # Each state-specific index is partial with an equality condition, so SQLite's
            # planner (no statistics by default) never prefers a generic state index and sorts.
            # Running jobs (few) by id, not by lease: a lease renewal or a batch commit then
            # changes no indexed column, so PostgreSQL can update the row in place (HOT)
            # instead of adding an entry to every index each time.
            models.Index(
                fields=["id"], condition=Q(state="running"), name="syncjob_running_id_idx"
            ),
            models.Index(
                fields=["run_after"], condition=Q(state="retrying"), name="syncjob_retrying_idx"
            ),
            models.Index(fields=["connection", "-id"], name="syncjob_connection_idx"),
            # Finished jobs only: every query on finished_at is a range (retention, the
            # dashboard), and queued and running jobs then cost this index nothing.
            models.Index(
                fields=["finished_at"],
                condition=Q(finished_at__isnull=False),
                name="syncjob_finished_idx",
            ),
            # Deleting a user sets requested_by to NULL on their jobs; most jobs have none.
            models.Index(
                fields=["requested_by"],
                condition=Q(requested_by__isnull=False),
                name="syncjob_requested_by_idx",
            ),
            # "Does this connection have work waiting or running?" (the dispatcher, per batch of
            # due connections): only unfinished jobs, a few among millions of finished ones.
            models.Index(
                fields=["connection"],
                condition=Q(state__in=["queued", "retrying", "running"]),
                name="syncjob_active_idx",
            ),
            # The dashboard's failures of the week: a few among millions of finished jobs.
            models.Index(
                fields=["finished_at"], condition=Q(state="failed"), name="syncjob_failed_idx"
            ),
        ]

    def __str__(self) -> str:
        return f"#{self.pk} {self.get_kind_display()} of {self.connection.name} ({self.state})"

    @property
    def is_finished(self) -> bool:
        return self.state in self.FINISHED

    @property
    def duration(self) -> timedelta | None:
        if self.started_at and self.finished_at:
            return self.finished_at - self.started_at
        return None

    @property
    def progress_percent(self) -> int | None:
        if self.state == self.State.SUCCEEDED:
            return 100
        if not self.progress_total:
            return None
        return min(100, int(100 * self.progress_done / self.progress_total))


class SyncLog(models.Model):
    """What happened during a job. Written by the engine, read-only everywhere."""

    class Level(models.TextChoices):
        INFO = "info", "Info"
        WARNING = "warning", "Warning"
        ERROR = "error", "Error"

    job = models.ForeignKey(SyncJob, on_delete=models.CASCADE, related_name="logs")
    connection = models.ForeignKey(
        Connection, on_delete=models.CASCADE, related_name="sync_logs", db_index=False
    )
    level = models.CharField(max_length=10, choices=Level.choices, default=Level.INFO)
    message = models.TextField()
    data = models.JSONField(default=dict, blank=True, help_text="Counts and other figures.")
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-id"]
        indexes = [models.Index(fields=["connection", "-id"], name="synclog_connection_idx")]

    def __str__(self) -> str:
        return f"[{self.level}] {self.message[:80]}"


class WorkerHeartbeat(models.Model):
    """Last sign of life of a worker process or of the dispatcher, for liveness reporting."""

    name = models.CharField(max_length=200, primary_key=True, help_text="'dispatcher' or host:pid")
    seen_at = models.DateTimeField(help_text="Last heartbeat.")
    info = models.JSONField(default=dict, blank=True)

    def __str__(self) -> str:
        return f"{self.name} @ {self.seen_at:%Y-%m-%d %H:%M:%S}"


class EngineLock(models.Model):
    """A named, expiring lock taken with a conditional UPDATE (one dispatcher pass at a time)."""

    name = models.CharField(max_length=100, primary_key=True)
    holder = models.CharField(max_length=200, blank=True)
    locked_until = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"{self.name} held by {self.holder or 'nobody'} until {self.locked_until}"


class RateBudget(models.Model):
    """Requests granted recently under a provider's rate limit, shared by every worker of every
    cluster (e.g. a provider's 10 export requests per minute per account)."""

    key = models.CharField(max_length=200, primary_key=True)
    grants = models.JSONField(default=list, help_text="Unix times of the recent grants.")

    def __str__(self) -> str:
        return f"{self.key}: {len(self.grants)} recent request(s)"


class AlertState(models.Model):
    """A dashboard alert as last seen by ``syncqueue.notifications``, and what staff were last
    told about it. Mail goes out when ``active`` differs from ``notified_active``, at most once
    per alert per ``SYNC_NOTIFY_MIN_INTERVAL``."""

    key = models.CharField(max_length=50, primary_key=True, help_text="The alert, e.g. 'backlog'.")
    active = models.BooleanField(default=False, help_text="The alert was on at the last check.")
    message = models.CharField(max_length=500, blank=True, help_text="Its text when it started.")
    started_at = models.DateTimeField(
        null=True, blank=True, help_text="When it started (kept while staff think it is on)."
    )
    cleared_at = models.DateTimeField(null=True, blank=True, help_text="When it last cleared.")
    notified_active = models.BooleanField(
        default=False, help_text="What the last mail to staff said: on (true) or cleared (false)."
    )
    notified_at = models.DateTimeField(
        null=True, blank=True, help_text="When staff were last mailed about it."
    )

    def __str__(self) -> str:
        return f"{self.key}: {'on' if self.active else 'clear'}"


class ConnectionNotice(models.Model):
    """The last mail about a connection's trouble (re-authentication needed, turned off by the
    engine), so its owner is mailed at most once per ``SYNC_NOTIFY_MIN_INTERVAL``."""

    class Problem(models.TextChoices):
        AUTH_REQUIRED = "auth_required", "Needs new credentials"
        DISABLED = "disabled", "Turned off after repeated failures"

    connection = models.OneToOneField(
        Connection, on_delete=models.CASCADE, primary_key=True, related_name="+"
    )
    problem = models.CharField(
        max_length=20, choices=Problem.choices, help_text="The latest trouble to report."
    )
    pending = models.BooleanField(
        default=False, help_text="Not mailed yet (held back by the rate limit, or a mail failed)."
    )
    notified_at = models.DateTimeField(
        null=True, blank=True, help_text="When the last mail about this connection went out."
    )

    def __str__(self) -> str:
        return f"connection {self.connection_id}: {self.problem}"


class SkippedItem(models.Model):
    """One remote item (a message, a ticket, a task) a sync could not store or read, while the
    rest of the sync went on — the poison item that must not stop everything.

    ``key`` identifies the item to the connector so a later sync can read it again (folder,
    UIDVALIDITY and UID; a message id; a ticket id). Every sync of the connection retries the
    open ones (a bounded number at a time); when a retry stores the item, or the item is gone
    from the server, it is resolved. Staff see the error class and traceback.
    """

    class State(models.TextChoices):
        OPEN = "open", "Not stored"
        RESOLVED = "resolved", "Stored later"
        GONE = "gone", "Gone from the server"

    connection = models.ForeignKey(
        Connection, on_delete=models.CASCADE, related_name="skipped_items_list"
    )
    job = models.ForeignKey(
        SyncJob,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text="The job that last tried it.",
    )
    key = models.CharField(max_length=500, help_text="How the connector finds the item again.")
    label = models.CharField(max_length=500, help_text="The item in words, e.g. 'INBOX UID 4711'.")
    state = models.CharField(max_length=10, choices=State.choices, default=State.OPEN)
    error_class = models.CharField(max_length=100, help_text="The exception, e.g. DataError.")
    message = models.CharField(max_length=500, blank=True, help_text="What went wrong, briefly.")
    detail = models.TextField(blank=True, help_text="Traceback, for staff (no secrets).")
    attempts = models.PositiveIntegerField(default=1, help_text="Times it failed.")
    first_seen_at = models.DateTimeField(auto_now_add=True)
    last_tried_at = models.DateTimeField(help_text="When it last failed.")
    resolved_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-last_tried_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["connection", "key"],
                condition=Q(state="open"),
                name="one_open_skip_per_item",
            )
        ]
        indexes = [
            models.Index(
                fields=["connection", "last_tried_at"],
                condition=Q(state="open"),
                name="skippeditem_open_idx",
            )
        ]

    def __str__(self) -> str:
        return f"{neutral(self.label)} ({self.get_state_display()})"
