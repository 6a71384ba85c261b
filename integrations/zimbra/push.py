"""Outbound: one assignment's task into its person's Zimbra Tasks.

Create carries our own ``uid``, so a retry after a lost answer (or a killed worker) updates
the same Zimbra task. A modify replaces the whole task in Zimbra, so it starts from a read of
Zimbra's copy: what the person set there that we do not own (a reminder, a location) is sent
back, a change made there since our last write is merged (a later one is kept when reading
back is on), and that read's ``ms``/``rev`` guard the modify; when Zimbra says the task
changed after the read, it is read again and the modify retried once; when the task is gone
there, it is created again. The ids Zimbra returns are stored by :mod:`.store` in the
engine's transaction together with the "pushed" mark.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from integrations.base import Batch, SyncContext
from integrations.errors import Permanent, Transient
from integrations.zimbra import merge
from integrations.zimbra.config import ZimbraConfig
from integrations.zimbra.message import TRASH, build_task, ids_of, parse_task
from integrations.zimbra.models import TaskCopy
from integrations.zimbra.outbound import content_hash, switch_of, zimbra_address
from integrations.zimbra.records import LeftMailbox, MovedServer, Pushed
from integrations.zimbra.soap import MAIL, InTrash, ItemGone, OutOfDate, ZimbraSoap, element
from workspace.models import Task

LABELS = dict(Task.Status.choices)


def run(zimbra: ZimbraConfig, soap: ZimbraSoap, ctx: SyncContext) -> Iterator[Batch]:
    if ctx.payload.get("moved_server"):
        held = list(TaskCopy.objects.exclude(inv_id="").values_list("pk", flat=True))
        note = f"This connection reads another Zimbra server: {len(held)} task(s) pushed there."
        yield Batch(records=[MovedServer(held)], final=True, note=note)
        return
    copy = (
        TaskCopy.objects.select_related("assignment__task", "assignment__user")
        .filter(pk=ctx.payload.get("assignment"))
        .first()
    )
    if copy is None:
        yield Batch(final=True, note="The assignment no longer exists; nothing to push.")
        return
    task = copy.task
    wanted = content_hash(task, copy.active)
    records: list[Any] = []
    target = zimbra_address(copy.user)
    held_at = copy.account or copy.user.email
    if (copy.inv_id or copy.cal_item_id) and held_at.lower() != target.lower():
        leave(ctx, soap, held_at, copy)
        records.append(LeftMailbox(copy.pk))
    account = target
    if wanted == "absent":
        if copy.inv_id:
            cancel(soap, account, copy.uid)
        yield Batch(records=[*records, Pushed(copy.pk, wanted, removed=True)], final=True)
        return
    if switch_of(copy.user) is None:
        yield Batch(records=records, final=True, note=f"{copy.user} turned Zimbra tasks off.")
        return
    if wanted == copy.pushed_hash and copy.inv_id:
        yield Batch(final=True, note="Zimbra already has this version.")
        return
    ids = upsert(zimbra, ctx, soap, account, copy, task, records)
    wanted = content_hash(task, copy.active)  # Zimbra's later status may have won
    pushed = Pushed(copy.pk, wanted, ids=ids, progress=task.progress(), account=account)
    yield Batch(records=[*records, pushed], final=True)


def leave(ctx: SyncContext, soap: ZimbraSoap, held_at: str, copy: TaskCopy) -> None:
    """Remove our copy from the mailbox it was pushed to before the person's address
    changed, and forget its ids (they are numbers in *that* mailbox). A mailbox that cannot be
    reached any more (no such account, no access) is forgotten without the cancel."""
    try:
        if copy.inv_id:
            cancel(soap, held_at, copy.uid)
    except Permanent as problem:  # (a Transient one is retried: nothing left behind)
        ctx.log(
            "warning",
            f"Could not remove “{copy.task}” from {held_at} ({problem.message}); "
            "its copy there is forgotten.",
            assignment=copy.pk,
        )
    copy.inv_id = copy.cal_item_id = copy.ms = copy.rev = ""
    copy.pushed_hash = ""
    ctx.log(
        "info",
        f"{copy.user}'s Zimbra address changed: “{copy.task}” moves from "
        f"{held_at} to their new mailbox.",
        assignment=copy.pk,
    )


def held_task(soap: ZimbraSoap, account: str, uid: str, content: bool = False) -> Any:
    """The task ``account``'s mailbox holds under our ``uid`` (with ``md`` and ``ms``: a sync
    request; with ``content``, the parts of its message, to find attached files), or None."""
    extra: dict[str, Any] = {"includeContent": "1"} if content else {}
    try:
        answer = soap.call(account, "GetTask", uid=uid, sync="1", **extra)
    except ItemGone:
        return None
    return answer.find(f"{{{MAIL}}}task")


def invite_id(found: Any) -> str:
    """``calItemId-invId`` of a GetTask answer's task ("" without an invite)."""
    invite = found.find(f"{{{MAIL}}}inv")
    if invite is None or not invite.get("id") or not found.get("id"):
        return ""
    return f"{found.get('id')}-{invite.get('id')}"


def cancel(soap: ZimbraSoap, account: str, uid: str) -> None:
    """Remove our task from ``account``'s Tasks, found by our uid: the ids we stored name an
    item in the mailbox they came from, and on a server that replaced it (or a mailbox restored
    from a backup) the same number may be someone's own task (docs/protocols.md)."""
    found = held_task(soap, account, uid)
    if found is None or found.get("l") == TRASH or not invite_id(found):
        return  # already gone, or in the Trash: removed as the web client removes it
    with contextlib.suppress(ItemGone):  # removed meanwhile (or put in the Trash): fine
        soap.call(account, "CancelTask", id=invite_id(found), comp="0")


def upsert(
    zimbra: ZimbraConfig,
    ctx: SyncContext,
    soap: ZimbraSoap,
    account: str,
    copy: TaskCopy,
    task: Any,
    records: list[Any],
) -> dict[str, str]:
    """Create or modify the task in Zimbra; a later change made there (incoming on) is kept,
    and the record that brings it back to the task is added to ``records``."""

    def create(*, check: bool = True) -> dict[str, str]:
        """CreateTask. Zimbra answers one it ignored (it holds a newer version under our uid)
        without ids: ``check`` makes that an error, never a push recorded without ids."""
        message = build_task(copy.uid, task, zimbra.tasks_folder)
        ids = ids_of(soap.call(account, "CreateTask", [message]))
        if check and not ids["invId"]:
            raise Transient(
                "Zimbra did not take the task and holds another version of it; the push will "
                "be tried again."
            )
        return ids

    def purge(cal_item_id: str) -> None:
        with contextlib.suppress(ItemGone):
            soap.call(account, "ItemAction", [element("action", op="delete", id=cal_item_id)])

    def reconcile(found: Any) -> None:
        """Zimbra's version of the task (``found``) changed since we last wrote it: with
        reading back on, a later change made there is kept in what we send."""
        if not zimbra.incoming:
            return  # push only: this application's version is the one
        remote = parse_task(found, copy.pk)
        decision = merge.decide(remote, task, merge.base_of(copy))
        if decision in ("theirs", "theirs-later"):
            records.append(remote)  # Zimbra's change stays in what we send
            task.status, task.percent_complete = merge.theirs(remote, task)
        elif decision == "ours-later":
            ctx.log("info", merge.kept_ours(task, account, remote, LABELS), assignment=copy.pk)

    def held() -> Any:
        return held_task(soap, account, copy.uid, content=True)

    inv_id, cal_item_id, ms = copy.inv_id, copy.cal_item_id, copy.ms
    if not inv_id:
        ids = create(check=False)
        if ids["invId"]:
            return ids
        # Zimbra holds a newer version of a task under our uid — a create whose answer was
        # lost and that someone edited since, or one left in the Trash — and ignored this
        # one without a word (docs/protocols.md, Zimbra). Find it and carry on from there.
        found = held()
        if found is None or found.find(f"{{{MAIL}}}inv") is None:
            raise Transient("Zimbra neither took the task nor showed the one it has.")
        ms = ""  # not written by us: whatever it says is someone's change
    else:
        # A modify replaces the whole task, so it starts from Zimbra's copy: what the person
        # set there that we do not own (a reminder, say) is sent back (docs/protocols.md).
        found = held()
    for attempt in (1, 2):
        if found is None:
            return create()  # deleted in Zimbra: the person still has the task here
        if found.get("l") == TRASH:
            # deleted in the web client (moved to the Trash), still assigned here: empty that
            # copy out of the Trash, then create the task again under our uid
            purge(found.get("id", ""))
            return create()
        if found.get("ms", "") != ms:
            reconcile(found)  # changed there since we last wrote it
        ms, rev = found.get("ms", ""), found.get("rev", "")
        cal_item_id = found.get("id", "") or cal_item_id
        inv_id = invite_id(found) or inv_id
        try:
            answer = soap.call(
                account,
                "ModifyTask",
                [build_task(copy.uid, task, zimbra.tasks_folder, held=found)],
                id=inv_id,
                comp="0",
                ms=ms,
                rev=rev,
            )
            return ids_of(answer)
        except InTrash:
            purge(cal_item_id)  # moved to the Trash since we read it
            return create()
        except ItemGone:
            return create()  # deleted in Zimbra meanwhile: the person still has the task
        except OutOfDate as conflict:
            if attempt == 2:
                raise Transient(
                    "The task kept changing in Zimbra while it was being updated; the update "
                    "will be tried again.",
                    detail=str(conflict)[:300],
                ) from conflict
            found = held()  # changed between our read and our modify: read it again
    raise AssertionError("unreachable")  # pragma: no cover
