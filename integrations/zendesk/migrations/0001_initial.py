"""Zendesk's tickets, created by workspace/migrations/0003 in ``workspace_ticket``, belong to
this app from now on: the model moves in Django's state only (the table, its indexes and its
rows stay as they are), and its content type follows, so permissions granted on it and the
admin's history keep working."""

import django.db.models.deletion
from django.db import migrations, models


def _move(apps, old: str, new: str) -> None:
    ContentType = apps.get_model("contenttypes", "ContentType")
    if not ContentType.objects.filter(app_label=new, model="ticket").exists():
        ContentType.objects.filter(app_label=old, model="ticket").update(app_label=new)


def move_content_type(apps, schema_editor):
    _move(apps, "workspace", "zendesk")


def move_content_type_back(apps, schema_editor):
    _move(apps, "zendesk", "workspace")


class Migration(migrations.Migration):

    initial = True

    dependencies = [
        ('contenttypes', '0002_remove_content_type_name'),
        ('integrations', '0005_skipped_items'),
        ('workspace', '0005_task_progress_base'),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.CreateModel(
                    name='Ticket',
                    fields=[
                        ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                        ('zendesk_id', models.BigIntegerField(help_text="The ticket's id in Zendesk.")),
                        ('subject', models.CharField(blank=True, max_length=500)),
                        ('description', models.TextField(blank=True)),
                        ('status', models.CharField(blank=True, db_index=True, max_length=20)),
                        ('priority', models.CharField(blank=True, max_length=20)),
                        ('type', models.CharField(blank=True, max_length=20)),
                        ('requester_id', models.BigIntegerField(blank=True, null=True)),
                        ('requester_name', models.CharField(blank=True, max_length=300)),
                        ('assignee_id', models.BigIntegerField(blank=True, null=True)),
                        ('assignee_name', models.CharField(blank=True, max_length=300)),
                        ('group_id', models.BigIntegerField(blank=True, null=True)),
                        ('brand_id', models.BigIntegerField(blank=True, null=True)),
                        ('external_id', models.CharField(blank=True, max_length=300)),
                        ('channel', models.CharField(blank=True, help_text='How it came in (via).', max_length=50)),
                        ('tags', models.JSONField(blank=True, default=list)),
                        ('custom_fields', models.JSONField(blank=True, default=list)),
                        ('created_at_remote', models.DateTimeField(blank=True, null=True, verbose_name='created')),
                        ('updated_at_remote', models.DateTimeField(blank=True, null=True, verbose_name='updated')),
                        ('due_at', models.DateTimeField(blank=True, null=True)),
                        ('generated_timestamp', models.BigIntegerField(default=0)),
                        ('deleted', models.BooleanField(default=False, help_text='Deleted in Zendesk (kept here).')),
                        ('raw', models.JSONField(default=dict, help_text='The ticket exactly as exported.')),
                        ('changed_at', models.DateTimeField(help_text='When a sync last created or changed it.')),
                        ('connection', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='tickets', to='integrations.connection')),
                        ('organization', models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.CASCADE, related_name='tickets', to='workspace.organization')),
                    ],
                    options={
                        'db_table': 'workspace_ticket',
                        'indexes': [models.Index(fields=['connection', 'changed_at'], name='ticket_changed_idx')],
                        'constraints': [models.UniqueConstraint(fields=('connection', 'zendesk_id'), name='one_row_per_ticket')],
                    },
                ),
            ],
            database_operations=[],  # created by workspace/migrations/0003_ticket.py
        ),
        migrations.RunPython(move_content_type, move_content_type_back),
    ]
