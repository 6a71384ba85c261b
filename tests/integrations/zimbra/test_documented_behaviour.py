"""What Zimbra's SOAP server is documented (and written) to do, played by the local server —
docs/protocols.md, Zimbra — and what the connector makes of it."""

from __future__ import annotations

import time
from datetime import date

import pytest
from django.db import transaction

from integrations.zimbra.config import ZimbraConfig
from integrations.zimbra.message import build_task
from integrations.zimbra.models import TaskCopy
from integrations.zimbra.soap import ZimbraSoap
from sandbox.zimbra import ADMIN_NAME, ADMIN_PASSWORD, MAIL
from syncqueue import engine
from syncqueue.models import SyncJob
from workspace import assignments
from workspace.models import Task

pytestmark = pytest.mark.django_db(transaction=True)


def soap(zimbra) -> ZimbraSoap:
    config = ZimbraConfig(
        soap_url=zimbra.soap_url, admin_url=zimbra.admin_url, admin_name=ADMIN_NAME
    )
    return ZimbraSoap(config, {"admin_password": ADMIN_PASSWORD})


def test_get_task_returns_md_and_ms_only_on_sync_requests(zimbra):
    box = zimbra.add_account("ann@corp.test")
    task = box.add_foreign_task("uid-1")
    plain = soap(zimbra).call("ann@corp.test", "GetTask", id=str(task.cal_item_id))
    synced = soap(zimbra).call("ann@corp.test", "GetTask", id=str(task.cal_item_id), sync="1")
    item, item_sync = plain.find(f"{{{MAIL}}}task"), synced.find(f"{{{MAIL}}}task")
    assert item.get("ms") is None and item.get("md") is None and item.get("rev")
    assert item_sync.get("ms") and item_sync.get("md") and item_sync.get("rev")


def test_a_later_change_in_zimbra_wins_because_md_is_asked_for(zimbra, zimbra_server, people, work):
    """Without sync="1" Zimbra's change time read as 1970 and ours always won."""
    zimbra_server.config = {**zimbra_server.config, "incoming": True}
    zimbra_server.save()
    ann = people[0]
    with transaction.atomic():
        task = Task.objects.create(title="Report", due_date=date(2026, 12, 1))
        assignment = assignments.assign(task, ann)
    assignment = TaskCopy.objects.get(pk=assignment.pk)
    work()
    engine.enqueue(zimbra_server, SyncJob.Kind.MANUAL)
    work()
    with transaction.atomic():  # changed here first ...
        task.status, task.percent_complete = "inprogress", 30
        task.save()
    zimbra.edit_in_zimbra(
        ann.email, assignment.uid, at=time.time() + 5, status="COMP", percentComplete="100"
    )  # ... and later in Zimbra
    work()  # the push meets INVITE_OUT_OF_DATE, reads the task again and merges
    task.refresh_from_db()
    assert (task.status, task.percent_complete) == ("completed", 100)


def test_the_modify_conflict_check_needs_both_ms_and_rev(zimbra, zimbra_server, people, work):
    ann = people[0]
    with transaction.atomic():
        task = Task.objects.create(title="Report")
        assignment = assignments.assign(task, ann)
    assignment = TaskCopy.objects.get(pk=assignment.pk)
    work()
    assignment.refresh_from_db()
    zimbra.edit_in_zimbra(ann.email, assignment.uid, percentComplete="10")
    client = soap(zimbra)
    message = build_task(assignment.uid, task, zimbra_server.build_connector().zimbra.tasks_folder)
    from integrations.zimbra.soap import OutOfDate

    with pytest.raises(OutOfDate):  # both sent, one stale: refused
        client.call(
            ann.email,
            "ModifyTask",
            [message],
            id=assignment.inv_id,
            comp="0",
            ms=assignment.ms,
            rev=assignment.rev,
        )
    answer = client.call(
        ann.email, "ModifyTask", [message], id=assignment.inv_id, comp="0", ms=assignment.ms
    )  # only ms: Zimbra skips the check
    assert answer.get("calItemId") == assignment.cal_item_id


def test_missing_items_answer_no_such_item_and_calitem(zimbra):
    zimbra.add_account("ann@corp.test")
    from integrations.zimbra.soap import ItemGone

    for attrs in ({"id": "999"}, {"uid": "nope"}):
        with pytest.raises(ItemGone):
            soap(zimbra).call("ann@corp.test", "GetTask", **attrs)
    assert {"GetTaskRequest"} <= set(zimbra.operations)
