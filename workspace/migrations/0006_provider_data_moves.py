"""Provider data leaves the host app (table names kept):

- ``Ticket`` now belongs to the zendesk app (``integrations/zendesk/migrations/0001``: same
  table, ``workspace_ticket``); here it only leaves workspace's state.
- ``Assignment`` keeps who is assigned; Zimbra's copy state (uid, ids, pushed_*, state, error)
  moved to ``zimbra.TaskCopy``, whose migration copies it first (``run_before`` this one).
- ``Case.mailboxes`` offers the kinds whose connector ``searches_history`` (no provider named).
"""

import django.db.models.deletion
import workspace.models
from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('integrations', '0005_skipped_items'),
        ('workspace', '0005_task_progress_base'),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[migrations.DeleteModel(name="Ticket")],
            database_operations=[],  # the table stays: it is zendesk.Ticket's now
        ),
        migrations.RemoveField(
            model_name='assignment',
            name='account',
        ),
        migrations.RemoveField(
            model_name='assignment',
            name='cal_item_id',
        ),
        migrations.RemoveField(
            model_name='assignment',
            name='error',
        ),
        migrations.RemoveField(
            model_name='assignment',
            name='inv_id',
        ),
        migrations.RemoveField(
            model_name='assignment',
            name='ms',
        ),
        migrations.RemoveField(
            model_name='assignment',
            name='pushed_at',
        ),
        migrations.RemoveField(
            model_name='assignment',
            name='pushed_hash',
        ),
        migrations.RemoveField(
            model_name='assignment',
            name='pushed_percent',
        ),
        migrations.RemoveField(
            model_name='assignment',
            name='pushed_status',
        ),
        migrations.RemoveField(
            model_name='assignment',
            name='rev',
        ),
        migrations.RemoveField(
            model_name='assignment',
            name='state',
        ),
        migrations.RemoveField(
            model_name='assignment',
            name='uid',
        ),
        migrations.AlterField(
            model_name='case',
            name='mailboxes',
            field=models.ManyToManyField(blank=True, help_text='Other mailboxes to search as well (e.g. a shared mailbox).', limit_choices_to=workspace.models.history_mailboxes, related_name='+', to='integrations.connection'),
        ),
        migrations.AlterField(
            model_name='case',
            name='owner',
            field=models.ForeignKey(help_text="Their mailboxes that can search history are searched for the contacts' mail.", on_delete=django.db.models.deletion.CASCADE, related_name='cases', to=settings.AUTH_USER_MODEL),
        ),
        migrations.AlterField(
            model_name='task',
            name='progress_changed_at',
            field=models.DateTimeField(blank=True, help_text="When status or percent complete last changed (here, or in a connected task list: then that list's time). Decides which side wins when both changed.", null=True),
        ),
    ]
