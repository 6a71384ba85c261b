"""A worker killed with SIGKILL in the middle of pushing: every task still reaches Zimbra
exactly once."""

from __future__ import annotations

import pytest
from django.db import transaction

from integrations.zimbra.models import TaskCopy
from syncqueue.models import SyncJob
from tests.support.cluster import FAST_CLUSTER, finished, kill_worker_of
from tests.support.processes import qcluster, wait_for
from workspace import assignments
from workspace.models import Task

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.process]
State = SyncJob.State


def test_killed_worker_mid_push_creates_no_duplicates(zimbra, test_ca, zimbra_server, people):
    zimbra.delay = 0.03
    with transaction.atomic():
        for i in range(20):
            task = Task.objects.create(title=f"Task {i}")
            for person in people:
                assignments.assign(task, person)
    env = {**FAST_CLUSTER, "SYNC_CA_BUNDLE": test_ca.ca_file}
    with qcluster("zimbra-kill", **env):
        running = wait_for(
            lambda: (
                SyncJob.objects.filter(kind="push", state=State.RUNNING)
                .exclude(worker_id="")
                .first()
                if SyncJob.objects.filter(kind="push", state=State.SUCCEEDED).count() >= 10
                else None
            ),
            60,
            "pushes to be under way",
            every=0.01,
        )
        kill_worker_of(running)
        pushes = SyncJob.objects.filter(kind="push").values_list("pk", flat=True)
        wait_for(lambda: finished(*pushes.all()), 120, "every push to finish", every=0.5)

    assert not SyncJob.objects.filter(kind="push", state=State.FAILED).exists()
    assert TaskCopy.objects.filter(state=TaskCopy.State.PUSHED).count() == 60
    for person in people:
        box = zimbra.mailboxes[person.email]
        assert len(box.tasks) == 20  # one Zimbra task per assignment, none twice
        uids = set(TaskCopy.objects.filter(assignment__user=person).values_list("uid", flat=True))
        assert set(box.tasks) == uids
