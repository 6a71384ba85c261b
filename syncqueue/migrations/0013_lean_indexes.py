"""Fewer index writes per job: the foreign keys' own indexes go (the connection's is covered by
syncjob_connection_idx; requested_by gets a partial one over the few jobs a person asked for),
and syncjob_finished_idx covers finished jobs only.

The foreign-key indexes are dropped by name, not by AlterField: on PostgreSQL, AlterField's
db_index=False drops every single-column index introspection finds on the column, and took the
partial unique index one_running_job_per_connection with it. (The names are Django's, the same
on every installation: a hash of table and column.)"""

import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models

TABLE = "syncqueue_syncjob"
FK_INDEXES = [
    ("syncqueue_syncjob_connection_id_b1439557", "connection_id"),
    ("syncqueue_syncjob_requested_by_id_83ee6fb8", "requested_by_id"),
]


class Migration(migrations.Migration):
    dependencies = [
        ("integrations", "0007_admin_labels"),
        ("syncqueue", "0012_priority_label"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.RemoveIndex(
            model_name="syncjob",
            name="syncjob_finished_idx",
        ),
        migrations.AddIndex(
            model_name="syncjob",
            index=models.Index(
                condition=models.Q(("finished_at__isnull", False)),
                fields=["finished_at"],
                name="syncjob_finished_idx",
            ),
        ),
        migrations.AddIndex(
            model_name="syncjob",
            index=models.Index(
                condition=models.Q(("requested_by__isnull", False)),
                fields=["requested_by"],
                name="syncjob_requested_by_idx",
            ),
        ),
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AlterField(
                    model_name="syncjob",
                    name="connection",
                    field=models.ForeignKey(
                        db_index=False,
                        help_text="What is synced.",
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="jobs",
                        to="integrations.connection",
                    ),
                ),
                migrations.AlterField(
                    model_name="syncjob",
                    name="requested_by",
                    field=models.ForeignKey(
                        blank=True,
                        db_index=False,
                        help_text="Who asked for it; empty for scheduled jobs.",
                        null=True,
                        on_delete=django.db.models.deletion.SET_NULL,
                        related_name="+",
                        to=settings.AUTH_USER_MODEL,
                    ),
                ),
            ],
            database_operations=[
                migrations.RunSQL(
                    f"DROP INDEX IF EXISTS {name}",
                    f"CREATE INDEX IF NOT EXISTS {name} ON {TABLE} ({column})",
                )
                for name, column in FK_INDEXES
            ],
        ),
    ]
