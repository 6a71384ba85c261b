"""The mail store shared by the IMAP and Microsoft Graph connectors.

Every message is keyed by its provider's stable identity, so every write is an idempotent
upsert: IMAP ``(connection, folder, uidvalidity, uid)``; Graph's immutable id in ``remote_id``.
Messages removed on the server are marked ``deleted``, never destroyed here.
"""

from __future__ import annotations

from django.db import models
from django.db.models import Q

from integrations.models import Connection
from syncproject.safetext import neutral


class MailMessage(models.Model):
    """One message as seen in one folder of one connected mailbox."""

    connection = models.ForeignKey(
        Connection, on_delete=models.CASCADE, related_name="mail_messages"
    )
    folder = models.CharField(max_length=500, help_text="IMAP folder name or Graph folder id.")
    uidvalidity = models.BigIntegerField(null=True, blank=True, help_text="IMAP UIDVALIDITY.")
    uid = models.BigIntegerField(null=True, blank=True, help_text="IMAP UID in that folder.")
    remote_id = models.CharField(
        max_length=300, blank=True, help_text="Graph immutable id, or Gmail's X-GM-MSGID."
    )
    message_id = models.CharField(
        max_length=998, blank=True, help_text="Normalized Message-ID header."
    )
    fingerprint = models.CharField(
        max_length=64, help_text="Hash of Message-ID, date, sender, subject and size."
    )
    subject = models.TextField(blank=True)
    from_name = models.CharField(max_length=300, blank=True)
    from_address = models.CharField(max_length=320, blank=True)
    to = models.JSONField(default=list, blank=True, help_text="[{name, address}, ...]")
    cc = models.JSONField(default=list, blank=True, help_text="[{name, address}, ...]")
    sent_at = models.DateTimeField(null=True, blank=True, help_text="From the Date header.")
    received_at = models.DateTimeField(
        null=True, blank=True, help_text="When the server received it (INTERNALDATE)."
    )
    flags = models.JSONField(default=list, blank=True, help_text="IMAP flags, e.g. \\Seen.")
    labels = models.JSONField(default=list, blank=True, help_text="Gmail labels / categories.")
    size = models.PositiveIntegerField(default=0, help_text="Size on the server, in bytes.")
    snippet = models.CharField(max_length=300, blank=True)
    text_body = models.TextField(blank=True)
    html_body = models.TextField(blank=True)
    has_attachments = models.BooleanField(default=False)
    truncated = models.BooleanField(
        default=False, help_text="Something was cut to the size limits; see defects."
    )
    defects = models.JSONField(
        default=list, blank=True, help_text="What was wrong with the message and how it was read."
    )
    deleted = models.BooleanField(default=False, help_text="Removed on the server; kept here.")
    deleted_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-received_at", "-id"]
        constraints = [
            models.UniqueConstraint(
                fields=["connection", "folder", "uidvalidity", "uid"],
                condition=Q(uid__isnull=False),
                name="mail_imap_identity",
            ),
            models.UniqueConstraint(
                fields=["connection", "remote_id"],
                condition=~Q(remote_id=""),
                name="mail_remote_identity",
            ),
        ]
        # Few secondary indexes on purpose: each random-keyed one (Message-ID, sender,
        # fingerprint) made inserts into a large mailbox about 15 % slower. The identity
        # constraints above serve every lookup a sync does.
        indexes = [
            models.Index(fields=["connection", "-received_at"], name="mail_received_idx"),
        ]

    def __str__(self) -> str:
        return neutral(self.subject[:80]) or "(no subject)"  # remote text: shown, not obeyed


class MailAttachment(models.Model):
    """An attachment's metadata, and its content when it is within the size limit."""

    message = models.ForeignKey(MailMessage, on_delete=models.CASCADE, related_name="attachments")
    filename = models.CharField(max_length=500, blank=True)
    content_type = models.CharField(max_length=200, blank=True)
    size = models.PositiveIntegerField(default=0, help_text="Decoded size in bytes.")
    content_id = models.CharField(max_length=500, blank=True)
    inline = models.BooleanField(default=False)
    sha256 = models.CharField(max_length=64, blank=True)
    file = models.FileField(
        upload_to="attachments/",
        max_length=300,
        blank=True,
        help_text="Stored content; empty when over the size limit (see note).",
    )
    note = models.CharField(max_length=300, blank=True, help_text="Why content is missing.")

    class Meta:
        # the sweep asks which files rows still name (mail.attachment_files.sweep); an index of
        # its own (not db_index): added without rebuilding the table
        indexes = [models.Index(fields=["file"], name="mail_attachment_file_idx")]

    def __str__(self) -> str:
        return neutral(self.filename or self.content_type)


class MailSource(models.Model):
    """A message exactly as the server handed it over: the RFC 5322 bytes (IMAP), or the JSON
    of the Graph message. Kept for every message, however broken, so that nothing is lost when
    a field could not be read — and so a better parser can read it again later.

    A table of its own: the large bytes stay out of the rows that flag and folder updates
    rewrite, and commit together with the message.
    """

    class Format(models.TextChoices):
        RFC5322 = "rfc5322", "Internet message (RFC 5322)"
        GRAPH_JSON = "graph-json", "Microsoft Graph message (JSON)"

    message = models.OneToOneField(
        MailMessage, on_delete=models.CASCADE, primary_key=True, related_name="source"
    )
    format = models.CharField(max_length=20, choices=Format.choices, default=Format.RFC5322)
    size = models.PositiveIntegerField(help_text="Length of ``data`` in bytes.")
    # Last on purpose: SQLite keeps a zero-filled blob unexpanded only in a row's last column
    # (large sources are written piecewise into one; see mail.store).
    data = models.BinaryField(help_text="The bytes as received (the first bytes when truncated).")

    def __str__(self) -> str:
        return f"source of {self.message_id} ({self.size} bytes)"
