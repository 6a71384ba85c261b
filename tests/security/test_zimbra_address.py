"""A person's Zimbra mailbox is theirs: nobody can point their task switch at someone else's
address, and a changed address moves the copies (cancelled in the old mailbox, created afresh in
the new one) instead of carrying item ids that mean something else there.

The pushes run in a real qcluster: what lands in which mailbox is the point."""

from __future__ import annotations

import json
import re

import pytest
from django.core import mail
from django.db import transaction
from django.urls import reverse

from integrations.models import UserSwitch
from integrations.zimbra.models import TaskCopy
from syncqueue import dispatcher
from syncqueue.models import SyncJob
from tests.support.cluster import FAST_CLUSTER
from tests.support.processes import qcluster, wait_for
from workspace import assignments
from workspace.models import Task

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.process]

CLUSTER = FAST_CLUSTER


def pushes_done() -> bool:
    dispatcher.dispatch()
    return not SyncJob.objects.filter(kind="push").exclude(state__in=SyncJob.FINISHED).exists()


@pytest.fixture
def mallory(django_user_model, zimbra):
    zimbra.add_account("mallory@corp.test")
    zimbra.add_account("mallory.work@corp.test")
    return django_user_model.objects.create_user("mallory", "mallory@corp.test", "pw-mallory-1")


def save_switch(client, address: str) -> None:
    client.post(
        "/settings/sync/switches/",
        {"switch-zimbra.tasks": "on", "value-zimbra.tasks": address},
    )


def test_an_address_is_not_taken_as_typed(
    client, mallory, people, zimbra, test_ca, zimbra_server, settings
):
    ann = people[0]
    client.force_login(mallory)
    save_switch(client, ann.email)  # someone else's mailbox
    switch = UserSwitch.objects.get(user=mallory, key="zimbra.tasks")
    assert switch.enabled and switch.value == "" and not switch.value_confirmed
    assert [m.to for m in mail.outbox] == [[ann.email]]  # the link goes to that mailbox only
    assert "mallory" in mail.outbox[0].body and "ignore this mail" in mail.outbox[0].body

    created = client.post(
        "/api/tasks", json.dumps({"title": "Planted?"}), content_type="application/json"
    ).json()
    client.post(
        f"/api/tasks/{created['id']}/assign",
        json.dumps({"user": mallory.pk}),
        content_type="application/json",
    )
    with qcluster("zimbra-address", SYNC_CA_BUNDLE=test_ca.ca_file, **CLUSTER):
        wait_for(pushes_done, 60, "the push to finish", every=0.3)
    assert not zimbra.mailboxes[ann.email].tasks  # nothing planted in Ann's mailbox
    assert [t.comp["name"] for t in zimbra.mailboxes["mallory@corp.test"].tasks.values()] == [
        "Planted?"
    ]

    # The link works only for the person who asked, signed in.
    link = re.search(r"https?://\S+", mail.outbox[0].body).group(0)
    path = link.split("://", 1)[1].split("/", 1)[1]
    client.force_login(ann)
    assert client.get(f"/{path}").status_code == 404
    assert client.post(f"/{path}").status_code == 404
    assert not UserSwitch.objects.get(user=mallory).value_confirmed


def test_confirming_ones_own_other_address_moves_the_tasks(
    client, mallory, zimbra, test_ca, zimbra_server
):
    UserSwitch.objects.create(user=mallory, key="zimbra.tasks", enabled=True)
    with transaction.atomic():
        task = Task.objects.create(title="Quarterly report")
        assignment = assignments.assign(task, mallory)
    assignment = TaskCopy.objects.get(pk=assignment.pk)
    old_box, new_box = (
        zimbra.mailboxes["mallory@corp.test"],
        zimbra.mailboxes["mallory.work@corp.test"],
    )
    with qcluster("zimbra-address-move", SYNC_CA_BUNDLE=test_ca.ca_file, **CLUSTER):
        wait_for(pushes_done, 60, "the first push", every=0.3)
        assignment.refresh_from_db()
        first_ids = (assignment.cal_item_id, assignment.inv_id)
        assert assignment.uid in old_box.tasks

        new_box.add_foreign_task("someone-elses-task")  # item 257 of *that* mailbox
        client.force_login(mallory)
        save_switch(client, "mallory.work@corp.test")
        link = re.search(r"https?://\S+", mail.outbox[-1].body).group(0)
        path = "/" + link.split("://", 1)[1].split("/", 1)[1]
        assert "Use" in client.get(path).content.decode()
        client.post(path)
        assert UserSwitch.objects.get(user=mallory).value_confirmed
        wait_for(pushes_done, 60, "the move", every=0.3)

    assignment.refresh_from_db()
    assert assignment.uid not in old_box.live and old_box.cancels == 1
    assert assignment.account == "mallory.work@corp.test"
    assert new_box.tasks[assignment.uid].comp["name"] == "Quarterly report"
    assert (assignment.cal_item_id, assignment.inv_id) == (
        str(new_box.tasks[assignment.uid].cal_item_id),
        new_box.tasks[assignment.uid].inv_id,
    )
    assert first_ids[0] != assignment.cal_item_id  # not the old mailbox's number
    assert new_box.tasks["someone-elses-task"].comp.get("name") == "untouched"


def test_staff_set_an_address_in_the_admin_and_the_copy_moves(
    client, staff, people, zimbra, test_ca, zimbra_server
):
    ben = people[1]
    zimbra.add_account("ben.new@corp.test")
    with transaction.atomic():
        task = Task.objects.create(title="Fix the printer")
        assignments.assign(task, ben)
    with qcluster("zimbra-address-staff", SYNC_CA_BUNDLE=test_ca.ca_file, **CLUSTER):
        wait_for(pushes_done, 60, "the first push", every=0.3)
        switch = UserSwitch.objects.get(user=ben, key="zimbra.tasks")
        client.force_login(staff)
        url = reverse("admin:integrations_userswitch_change", args=[switch.pk])
        response = client.post(
            url,
            {"user": ben.pk, "key": "zimbra.tasks", "enabled": "on", "value": "ben.new@corp.test"},
        )
        assert response.status_code == 302
        wait_for(pushes_done, 60, "the move", every=0.3)
    assignment = TaskCopy.objects.get(assignment__user=ben)
    assert assignment.account == "ben.new@corp.test" and assignment.state == "pushed"
    assert not zimbra.mailboxes[ben.email].live
    assert assignment.uid in zimbra.mailboxes["ben.new@corp.test"].tasks
