"""The connector contract (tests/support/contract.py) for Zimbra's incoming direction: tasks
pushed to a person's Zimbra and completed there come back (docs/protocols.md)."""

from __future__ import annotations

from typing import Any

import pytest
from django.db import transaction

from integrations.zimbra.models import TaskCopy
from sandbox.zimbra import ADMIN_NAME
from tests.support.contract import ConnectorContract, Provider
from workspace import assignments
from workspace.models import Task

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def provider(zimbra: Any, test_ca: Any, zimbra_server: Any, people: Any, work: Any) -> Provider:
    ann = people[0]
    zimbra_server.config = {**zimbra_server.config, "incoming": True, "incoming_page": 20}
    zimbra_server.save()

    def seed(count: int) -> None:
        """``count`` tasks assigned to Ann, pushed, then completed by her in Zimbra."""
        with transaction.atomic():
            made = [
                assignments.assign(Task.objects.create(title=f"task {i}"), ann)
                for i in range(count)
            ]
        work()  # the pushes
        for assignment in TaskCopy.objects.filter(pk__in=[a.pk for a in made]):
            zimbra.edit_in_zimbra(ann.email, assignment.uid, status="COMP", percentComplete="100")

    def slow(seconds: float) -> None:
        zimbra.delay = seconds

    return Provider(
        connect=lambda: zimbra_server,
        seed=seed,
        stored=lambda conn: list(
            Task.objects.filter(status="completed").values_list("pk", flat=True)
        ),
        break_credentials=lambda conn: zimbra.change_admin_password(ADMIN_NAME, "changed"),
        forget_position=zimbra.expire_tombstones,
        throttle=lambda seconds: zimbra.throttle(seconds),
        disorder=None,
        slow=slow,
        cluster_env={"SYNC_CA_BUNDLE": test_ca.ca_file},
        kill_items=200,
    )


class TestZimbraContract(ConnectorContract):
    pass
