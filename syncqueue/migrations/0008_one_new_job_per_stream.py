"""One never-started job per connection and stream, so enqueue can rely on the database.

Enqueue already serialised per connection, so duplicates are not expected; any that exist
(from hand-made rows) are cancelled first, keeping the oldest, which would have run first."""

from typing import Any

from django.db import migrations, models
from django.db.models import Count, Min
from django.utils import timezone


def cancel_duplicates(apps: Any, schema_editor: Any) -> None:
    SyncJob = apps.get_model("syncqueue", "SyncJob")
    new = SyncJob.objects.filter(state="queued", slices=0)
    groups = (
        new.values("connection_id", "dedupe_key")
        .annotate(n=Count("id"), first=Min("id"))
        .filter(n__gt=1)
    )
    for group in groups:
        new.filter(connection_id=group["connection_id"], dedupe_key=group["dedupe_key"]).exclude(
            id=group["first"]
        ).update(
            state="cancelled",
            finished_at=timezone.now(),
            error_message="Merged into an identical waiting job.",
        )


class Migration(migrations.Migration):
    dependencies = [
        ("integrations", "0005_skipped_items"),
        ("syncqueue", "0007_running_index_hot"),
    ]

    operations = [
        migrations.RunPython(cancel_duplicates, migrations.RunPython.noop),
        migrations.AddConstraint(
            model_name="syncjob",
            constraint=models.UniqueConstraint(
                condition=models.Q(("slices", 0), ("state", "queued")),
                fields=("connection", "dedupe_key"),
                name="one_new_job_per_stream",
            ),
        ),
    ]
