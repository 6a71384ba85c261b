"""The database cache's table (rate limits and other shared counters live there): created by a
migration so every install has it after ``migrate``, with no extra set-up command."""

from django.core.management import call_command
from django.db import migrations


def create_cache_table(apps, schema_editor):
    call_command("createcachetable", database=schema_editor.connection.alias, verbosity=0)


class Migration(migrations.Migration):
    dependencies = [("syncqueue", "0003_notifications")]

    operations = [migrations.RunPython(create_cache_table, migrations.RunPython.noop)]
