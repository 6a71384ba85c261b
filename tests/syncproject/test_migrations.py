"""Migrations carry an existing installation's data forward: a database at the schema of the
release before the provider apps owned their models (workspace held Zendesk's tickets and
Zimbra's copy state) is filled with data, then migrated to now."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

pytestmark = pytest.mark.django_db(transaction=True)

BEFORE = [
    ("workspace", "0005_task_progress_base"),
    ("integrations", "0005_skipped_items"),
    ("zendesk", None),
    ("zimbra", None),
]


def migrate(targets: list[tuple[str, str | None]]) -> MigrationExecutor:
    executor = MigrationExecutor(connection)
    executor.loader.build_graph()
    executor.migrate(targets)
    return MigrationExecutor(connection)


def test_an_old_schema_with_data_migrates_forward():
    # the models as those applied migrations define them
    old = migrate(BEFORE)._create_project_state(with_applied_migrations=True).apps
    try:
        User = old.get_model("auth", "User")
        ContentType = old.get_model("contenttypes", "ContentType")
        Organization = old.get_model("workspace", "Organization")
        Connection = old.get_model("integrations", "Connection")
        Task = old.get_model("workspace", "Task")
        Assignment = old.get_model("workspace", "Assignment")
        Ticket = old.get_model("workspace", "Ticket")

        ann = User.objects.create(username="ann", email="ann@corp.test")
        org = Organization.objects.create(name="Acme", slug="acme")
        desk = Connection.objects.create(kind="zendesk", name="Desk", organization=org)
        task = Task.objects.create(title="Call the supplier", status="inprogress")
        pushed_at = datetime(2026, 11, 1, 9, 30, tzinfo=UTC)
        kept = Assignment.objects.create(
            task=task,
            user=ann,
            uid="syncproject-task-1-abc",
            account="ann@corp.test",
            cal_item_id="257",
            inv_id="257-256",
            ms="12",
            rev="11",
            pushed_hash="f" * 64,
            pushed_status="inprogress",
            pushed_percent=40,
            state="pushed",
            pushed_at=pushed_at,
        )
        gone = Assignment.objects.create(
            task=None, user=ann, active=False, uid="syncproject-task-0-def", state="removed"
        )
        Ticket.objects.create(
            connection=desk,
            organization=org,
            zendesk_id=4711,
            subject="Printer on fire",
            changed_at=pushed_at,
        )
        ContentType.objects.get_or_create(app_label="workspace", model="ticket")
    finally:
        migrate(MigrationExecutor(connection).loader.graph.leaf_nodes())

    from django.contrib.contenttypes.models import ContentType as CurrentContentType

    from integrations.zendesk.models import Ticket as MovedTicket
    from integrations.zimbra.models import TaskCopy
    from workspace.models import Assignment as HostAssignment

    copy = TaskCopy.objects.get(pk=kept.pk)
    assert (copy.uid, copy.account, copy.cal_item_id, copy.inv_id) == (
        "syncproject-task-1-abc",
        "ann@corp.test",
        "257",
        "257-256",
    )
    assert (copy.ms, copy.rev, copy.pushed_status, copy.pushed_percent) == (
        "12",
        "11",
        "inprogress",
        40,
    )
    assert (copy.state, copy.pushed_at, copy.pushed_hash) == ("pushed", pushed_at, "f" * 64)
    assert copy.task.title == "Call the supplier" and copy.user.username == "ann"
    assert TaskCopy.objects.get(pk=gone.pk).state == "removed"
    assert HostAssignment.objects.filter(user__username="ann").count() == 2
    ticket = MovedTicket.objects.get(zendesk_id=4711)
    assert ticket.subject == "Printer on fire" and ticket.organization.slug == "acme"
    assert CurrentContentType.objects.get_for_model(MovedTicket).app_label == "zendesk"
    assert not CurrentContentType.objects.filter(app_label="workspace", model="ticket").exists()
