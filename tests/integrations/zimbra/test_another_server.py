"""The Zimbra connection pointed at another server, or a mailbox restored from a backup.

Zimbra numbers items per mailbox, from 257, so the item ids a copy holds name *another* task
in the new (or restored) mailbox: someone's own task. Reading it back would give our task that
task's status, and cancelling by the stored id would throw the person's own task into the
Trash. A move forgets the ids and pushes every copy to the new server; a task read by id must
carry our uid; cancels find our task by uid; another server's task lists are read from the
start (a sync token is a change number of the server that gave it).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from django.db import transaction

from integrations.zimbra.models import TaskCopy
from sandbox.zimbra import ADMIN_PASSWORD, FakeZimbra
from syncqueue.models import SyncLog
from tests.integrations.zimbra.test_incoming import assign, new_task, read_back
from tests.support.servers import serving
from workspace import assignments

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def other(test_ca: Any, settings: Any) -> Iterator[FakeZimbra]:
    """The server that replaced the first one: ann's mailbox there holds a task of her own,
    numbered as our copy is numbered on the first server."""
    with serving(FakeZimbra(test_ca), settings) as server:
        box = server.add_account("ann@corp.test")
        box.add_foreign_task("anns-own-dentist", name="Dentist")
        for percent in ("20", "40", "60", "80"):  # (change numbers past the first server's)
            server.edit_in_zimbra("ann@corp.test", "anns-own-dentist", percentComplete=percent)
        server.edit_in_zimbra(
            "ann@corp.test", "anns-own-dentist", status="COMP", percentComplete="100"
        )
        yield server


def move(connection: Any, to: FakeZimbra) -> None:
    connection.config = {**connection.config, "soap_url": to.soap_url, "admin_url": to.admin_url}
    connection.set_secrets({"admin_password": ADMIN_PASSWORD})  # entered again, as forms ask
    connection.save()


def pushed_copy(zimbra: FakeZimbra, server: Any, person: Any, work: Any) -> TaskCopy:
    """A task of ``person`` pushed to ``zimbra``, with reading back on."""
    server.config = {**server.config, "incoming": True}
    server.save()
    (copy,) = assign(new_task(), person)
    work()
    copy.refresh_from_db()
    assert copy.state == TaskCopy.State.PUSHED
    assert copy.cal_item_id == "257"  # the first item of a mailbox: the Dentist's number there
    return copy


def read_back_nothing_of_hers(server: Any, work: Any, copy: TaskCopy) -> list[str]:
    """A read-back that succeeds and leaves our task as it was (nothing taken from the
    Dentist's task); what it logged."""
    job = read_back(server, work)
    copy.task.refresh_from_db()
    assert (copy.task.status, copy.task.percent_complete) == ("need", 0)
    return list(SyncLog.objects.filter(job=job).values_list("message", flat=True))


def test_pointed_at_another_server_every_task_is_pushed_there_and_nothing_taken_from_hers(
    zimbra, other, zimbra_server, people, work
):
    ann = people[0]
    copy = pushed_copy(zimbra, zimbra_server, ann, work)
    read_back(zimbra_server, work)  # its token is the first server's change number
    move(zimbra_server, other)
    work()  # the move's job: every copy pushed to the new server

    box = other.mailboxes["ann@corp.test"]
    assert box.tasks[copy.uid].comp["name"] == copy.task.title  # created there, under our uid
    dentist = box.tasks["anns-own-dentist"]
    assert (dentist.folder, dentist.comp["status"], box.modifies) == ("15", "COMP", 0)
    copy.refresh_from_db()
    assert copy.cal_item_id == str(box.tasks[copy.uid].cal_item_id) != "257"

    messages = read_back_nothing_of_hers(zimbra_server, work, copy)
    assert any("now reads" in m and "read from the start" in m for m in messages), messages
    zimbra_server.refresh_from_db()
    assert zimbra_server.cursor["server"] == other.soap_url

    # from now on the changes read back are those of the task that is ours
    other.edit_in_zimbra("ann@corp.test", copy.uid, status="INPR", percentComplete="40")
    read_back(zimbra_server, work)
    copy.task.refresh_from_db()
    assert (copy.task.status, copy.task.percent_complete) == ("inprogress", 40)
    assert box.tasks["anns-own-dentist"].comp["status"] == "COMP"


def test_a_restored_mailbox_whose_numbers_name_her_own_task_gives_it_nothing(
    zimbra, zimbra_server, people, work
):
    """Same server, ann's mailbox restored from a backup taken before our task: her own task
    now has the number our copy holds. Its status is not taken, and ours is created again."""
    ann = people[0]
    copy = pushed_copy(zimbra, zimbra_server, ann, work)
    read_back(zimbra_server, work)
    box = zimbra.mailboxes["ann@corp.test"]
    box.add_foreign_task("anns-own-dentist", name="Dentist")
    zimbra.edit_in_zimbra("ann@corp.test", "anns-own-dentist", status="COMP", percentComplete="100")
    zimbra.restore_from_backup("ann@corp.test", keep=["anns-own-dentist"])
    assert box.tasks["anns-own-dentist"].cal_item_id == 257

    messages = read_back_nothing_of_hers(zimbra_server, work, copy)
    assert any("Item 257 in ann@corp.test's Zimbra is not" in m for m in messages), messages
    assert box.tasks["anns-own-dentist"].comp["status"] == "COMP"
    assert box.tasks[copy.uid].cal_item_id != 257  # ours, created again under our uid
    copy.refresh_from_db()
    assert copy.cal_item_id == str(box.tasks[copy.uid].cal_item_id)


def test_unassigning_after_the_move_leaves_someone_elses_task_alone(
    zimbra, other, zimbra_server, people, work
):
    ann = people[0]
    copy = pushed_copy(zimbra, zimbra_server, ann, work)
    move(zimbra_server, other)
    with transaction.atomic():
        assignments.unassign(copy.task, ann)
    work()
    dentist = other.mailboxes["ann@corp.test"].tasks["anns-own-dentist"]
    assert (dentist.folder, dentist.comp["status"]) == ("15", "COMP")
    ours = other.mailboxes["ann@corp.test"].tasks.get(copy.uid)
    assert ours is None or ours.folder == "3"  # never there, or pushed by the move and removed
    copy.refresh_from_db()
    assert copy.state == TaskCopy.State.REMOVED


def test_a_copy_that_is_there_is_still_cancelled(zimbra, zimbra_server, people, work):
    """The cancel finds the task by uid first: on the same server it still goes."""
    ann = people[0]
    (copy,) = assign(new_task(), ann)
    work()
    with transaction.atomic():
        assignments.unassign(copy.task, ann)
    work()
    assert zimbra.mailboxes["ann@corp.test"].tasks[copy.uid].folder == "3"  # in the Trash
