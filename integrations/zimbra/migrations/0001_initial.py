"""Zimbra's copy of each assignment, split from ``workspace.Assignment``: the new table is
filled from the old columns before workspace/migrations/0006 drops them (``run_before``)."""

import django.db.models.deletion
from django.db import migrations, models


FIELDS = [
    "uid",
    "account",
    "cal_item_id",
    "inv_id",
    "ms",
    "rev",
    "pushed_hash",
    "pushed_status",
    "pushed_percent",
    "state",
    "error",
    "pushed_at",
]


def copy_from_assignments(apps, schema_editor):
    Assignment = apps.get_model("workspace", "Assignment")
    TaskCopy = apps.get_model("zimbra", "TaskCopy")
    rows = Assignment.objects.order_by("pk").values("pk", *FIELDS).iterator(chunk_size=2000)
    batch = []
    for row in rows:
        batch.append(TaskCopy(assignment_id=row.pop("pk"), **row))
        if len(batch) == 2000:
            TaskCopy.objects.bulk_create(batch)
            batch = []
    TaskCopy.objects.bulk_create(batch)


def copy_back_to_assignments(apps, schema_editor):
    Assignment = apps.get_model("workspace", "Assignment")
    TaskCopy = apps.get_model("zimbra", "TaskCopy")
    for copy in TaskCopy.objects.values("assignment_id", *FIELDS).iterator(chunk_size=2000):
        Assignment.objects.filter(pk=copy.pop("assignment_id")).update(**copy)


class Migration(migrations.Migration):

    initial = True

    run_before = [('workspace', '0006_provider_data_moves')]

    dependencies = [
        ('workspace', '0005_task_progress_base'),
    ]

    operations = [
        migrations.CreateModel(
            name='TaskCopy',
            fields=[
                ('assignment', models.OneToOneField(on_delete=django.db.models.deletion.CASCADE, primary_key=True, related_name='zimbra_copy', serialize=False, to='workspace.assignment')),
                ('uid', models.CharField(help_text='Our iCalendar UID in Zimbra.', max_length=200, unique=True)),
                ('account', models.CharField(blank=True, help_text='Zimbra address used.', max_length=320)),
                ('cal_item_id', models.CharField(blank=True, max_length=50)),
                ('inv_id', models.CharField(blank=True, max_length=50)),
                ('ms', models.CharField(blank=True, max_length=30)),
                ('rev', models.CharField(blank=True, max_length=30)),
                ('pushed_hash', models.CharField(blank=True, help_text='Of what was last sent.', max_length=64)),
                ('pushed_status', models.CharField(blank=True, help_text='Status last in step.', max_length=20)),
                ('pushed_percent', models.PositiveSmallIntegerField(blank=True, help_text='Percent complete last in step with Zimbra.', null=True)),
                ('state', models.CharField(choices=[('pending', 'Waiting to be pushed'), ('pushed', 'In Zimbra'), ('removed', 'Removed from Zimbra'), ('failed', 'Failed'), ('off', 'Not pushed (switch off)')], default='pending', max_length=10)),
                ('error', models.CharField(blank=True, max_length=500)),
                ('pushed_at', models.DateTimeField(blank=True, null=True)),
            ],
            options={
                'verbose_name': 'Zimbra task copy',
                'verbose_name_plural': 'Zimbra task copies',
            },
        ),
        migrations.RunPython(copy_from_assignments, copy_back_to_assignments),
    ]
