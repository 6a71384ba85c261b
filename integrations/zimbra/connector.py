"""The Zimbra connector: pushes one assignment's task into its person's Zimbra Tasks.

Create carries our own ``uid``, so a retry after a lost answer (or a killed worker) updates
the same Zimbra task. Modify sends the whole task with the last ``ms``/``rev``; when Zimbra
says the task changed meanwhile it is re-read and the modify retried; when the task is gone
there, it is created again. The ids Zimbra returns are stored in the engine's transaction
together with the "pushed" mark.

Incoming (``config.incoming``, on the connection's schedule): a ``SyncRequest`` per person's
Tasks folder from the token kept in the connection's cursor lists what changed; tasks whose
``ms`` differs from the one we stored are read with ``GetTask`` and their status and percent
complete come back to the task. It is a three-way merge against the values both sides last
agreed on (``Assignment.pushed_status``/``pushed_percent``): a side that did not change since
then gives way; when both changed, the later change wins (Zimbra's ``md`` against the task's
``progress_changed_at``) and the losing value is written to the job's log. A task deleted in
Zimbra that is still assigned here is added again.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NamedTuple, cast

from django.utils import timezone
from lxml import etree

from integrations.base import (
    Batch,
    CheckResult,
    Connector,
    Counts,
    ItemRef,
    NoLongerThere,
    PersonalSwitch,
    SyncContext,
    read_each,
)
from integrations.errors import AuthFailed, Permanent, RateLimited, Transient
from integrations.zimbra.config import ZimbraConfig
from integrations.zimbra.soap import (
    MAIL,
    InTrash,
    ItemGone,
    OutOfDate,
    SyncTokenGone,
    ZimbraSoap,
    element,
)

STATUS = {
    "need": "NEED",
    "inprogress": "INPR",
    "waiting": "WAITING",
    "deferred": "DEFERRED",
    "completed": "COMP",
}
FROM_STATUS = {zimbra: ours for ours, zimbra in STATUS.items()}
PRIORITY = {"high": "1", "normal": "5", "low": "9"}
TRASH = "3"  # Zimbra's Trash folder: a task deleted in the web client moves there


@dataclass
class Pushed:
    assignment_id: int
    content_hash: str
    removed: bool = False
    ids: dict[str, str] | None = None
    progress: tuple[str, int] | None = None  # the status and percent complete sent
    account: str = ""  # the mailbox the ids belong to


@dataclass
class LeftMailbox:
    """Our copy was removed from a mailbox that is no longer the person's (their address
    changed): its ids are forgotten; the next create starts afresh in the new mailbox."""

    assignment_id: int


@dataclass
class Incoming:
    """Status and percent complete of an assignment's task as Zimbra has them."""

    assignment_id: int
    status: str | None  # ours ("inprogress"…); None when Zimbra's is not one we know
    percent: int
    changed_at: datetime  # Zimbra's md: when the task last changed there
    ms: str
    rev: str
    job_id: int | None = None


@dataclass
class GoneThere:
    """One of our tasks was deleted in Zimbra while still assigned here."""

    assignment_id: int
    job_id: int | None = None


class Watched(NamedTuple):
    assignment_id: int
    ms: str


class ZimbraConnector(Connector):
    kind = "zimbra"
    label = "Zimbra server (tasks)"
    Config = ZimbraConfig
    secret_fields = ("admin_password",)
    destination_fields = ("soap_url", "admin_url")
    personal_switches = (
        PersonalSwitch(
            key="zimbra.tasks",
            label="Add tasks assigned to me to my Zimbra task list",
            help="Your tasks appear in Zimbra's Tasks and stay up to date; turning this off "
            "stops updates (tasks already there stay).",
            value_label="Zimbra address (if not your email)",
            value_is_confirmed_address=True,
        ),
    )

    @property
    def zimbra(self) -> ZimbraConfig:
        return cast(ZimbraConfig, self.config)

    def check(self) -> CheckResult:
        soap = ZimbraSoap(self.zimbra, self.secrets)
        soap.admin_token(fresh=True)
        return CheckResult(f"Signed in to Zimbra as {self.zimbra.admin_name}.")

    def push(self, ctx: SyncContext) -> Iterator[Batch]:
        from workspace.models import Assignment
        from workspace.tasks import content_hash, switch_of, zimbra_address

        assignment = (
            Assignment.objects.select_related("task", "user")
            .filter(pk=ctx.payload.get("assignment"))
            .first()
        )
        if assignment is None:
            yield Batch(final=True, note="The assignment no longer exists; nothing to push.")
            return
        task = assignment.task
        wanted = content_hash(task, assignment.active)
        soap = ZimbraSoap(self.zimbra, self.secrets)
        records: list[Any] = []
        target = zimbra_address(assignment.user)
        held_at = assignment.account or assignment.user.email
        if (assignment.inv_id or assignment.cal_item_id) and held_at.lower() != target.lower():
            self._leave(ctx, soap, held_at, assignment)
            records.append(LeftMailbox(assignment.pk))
        account = target
        if wanted == "absent":
            if assignment.inv_id:
                with contextlib.suppress(ItemGone):  # already gone in Zimbra: fine
                    soap.call(account, "CancelTask", id=assignment.inv_id, comp="0")
            yield Batch(records=[*records, Pushed(assignment.pk, wanted, removed=True)], final=True)
            return
        if switch_of(assignment.user) is None:
            yield Batch(
                records=records, final=True, note=f"{assignment.user} turned Zimbra tasks off."
            )
            return
        if wanted == assignment.pushed_hash and assignment.inv_id:
            yield Batch(final=True, note="Zimbra already has this version.")
            return
        ids = self._upsert(ctx, soap, account, assignment, task, records)
        wanted = content_hash(task, assignment.active)  # Zimbra's later status may have won
        pushed = Pushed(assignment.pk, wanted, ids=ids, progress=task.progress(), account=account)
        yield Batch(records=[*records, pushed], final=True)

    def _leave(self, ctx: SyncContext, soap: ZimbraSoap, held_at: str, assignment: Any) -> None:
        """Remove our copy from the mailbox it was pushed to before the person's address
        changed, and forget its ids (they are numbers in *that* mailbox). A mailbox that cannot
        be reached any more (no such account, no access) is forgotten without the cancel."""
        try:
            if assignment.inv_id:
                soap.call(held_at, "CancelTask", id=assignment.inv_id, comp="0")
        except ItemGone:
            pass
        except Permanent as problem:  # (a Transient one is retried: nothing left behind)
            ctx.log(
                "warning",
                f"Could not remove “{assignment.task}” from {held_at} ({problem.message}); "
                "its copy there is forgotten.",
                assignment=assignment.pk,
            )
        assignment.inv_id = assignment.cal_item_id = assignment.ms = assignment.rev = ""
        assignment.pushed_hash = ""
        ctx.log(
            "info",
            f"{assignment.user}'s Zimbra address changed: “{assignment.task}” moves from "
            f"{held_at} to their new mailbox.",
            assignment=assignment.pk,
        )

    def _upsert(
        self,
        ctx: SyncContext,
        soap: ZimbraSoap,
        account: str,
        assignment: Any,
        task: Any,
        records: list[Any],
    ) -> dict[str, str]:
        """Create or modify the task in Zimbra; a later change made there (incoming on) is
        kept, and the record that brings it back to the task is added to ``records``."""
        if not assignment.inv_id:
            return _ids(soap.call(account, "CreateTask", [self._message(assignment, task)]))
        ms, rev = assignment.ms, assignment.rev
        for attempt in (1, 2):
            try:
                answer = soap.call(
                    account,
                    "ModifyTask",
                    [self._message(assignment, task)],
                    id=assignment.inv_id,
                    comp="0",
                    ms=ms,
                    rev=rev,
                )
                return _ids(answer)
            except InTrash:
                # deleted in the web client (moved to the Trash), still assigned here: empty
                # that copy out of the Trash, then create the task again under our uid
                with contextlib.suppress(ItemGone):
                    soap.call(
                        account,
                        "ItemAction",
                        [element("action", op="delete", id=assignment.cal_item_id)],
                    )
                return _ids(soap.call(account, "CreateTask", [self._message(assignment, task)]))
            except ItemGone:
                # deleted in Zimbra: the person still has the task here, so create it again
                return _ids(soap.call(account, "CreateTask", [self._message(assignment, task)]))
            except OutOfDate:
                if attempt == 2:
                    raise
                # md and ms come back only on a sync request (docs/protocols.md, Zimbra)
                found = soap.call(account, "GetTask", uid=assignment.uid, sync="1").find(
                    f"{{{MAIL}}}task"
                )
                if found is None:
                    raise Transient("Zimbra said the task changed but returned no task.") from None
                ms, rev = found.get("ms", ""), found.get("rev", "")
                if not self.zimbra.incoming:
                    continue  # push only: this application's version is the one
                remote = _incoming(found, assignment.pk, ctx.job_id)
                decision = _decide(remote, task, _base(assignment))
                if decision in ("theirs", "theirs-later"):
                    records.append(remote)  # Zimbra's change stays in what we send
                    task.status, task.percent_complete = _theirs(remote, task)
                elif decision == "ours-later":
                    ctx.log("info", _kept_ours(task, account, remote), assignment=assignment.pk)
        raise AssertionError("unreachable")  # pragma: no cover

    # --- incoming: changes made in Zimbra --------------------------------------------------------
    def sync(self, ctx: SyncContext) -> Iterator[Batch]:
        from workspace.tasks import watched_assignments

        if not self.zimbra.incoming:
            yield Batch(final=True, note="Reading changes back from Zimbra is off for this server.")
            return
        soap = ZimbraSoap(self.zimbra, self.secrets)
        if ctx.retry:
            yield from self._retry_skipped(ctx, soap)
        tokens: dict[str, str] = dict(ctx.cursor.get("tokens") or {})
        watched = watched_assignments(self.connection)
        after = str(ctx.checkpoint.get("after", ""))
        skipped: list[str] = []
        for account in sorted(watched):
            if account <= after:
                continue  # read in an earlier slice of this job
            try:
                yield from self._read_folder(ctx, soap, account, tokens, watched[account])
            except (AuthFailed, RateLimited):
                raise  # about the server, not one mailbox: the job waits or needs a person
            except (Permanent, Transient) as error:
                # e.g. no such account, or one mailbox in maintenance: the others go on, and
                # this one catches up from its token next time
                ctx.log("warning", f"Skipped {account}: {error.message}", code=error.code)
                skipped.append(account)
                yield Batch(checkpoint={"after": account})
        if watched and len(skipped) == len(watched):
            raise Transient("Zimbra could not be read for anyone's task list.")
        note = f"Read changes from {len(watched) - len(skipped)} Zimbra task list(s)"
        yield Batch(note=note + (f"; skipped {len(skipped)}." if skipped else "."), final=True)

    def _retry_skipped(self, ctx: SyncContext, soap: ZimbraSoap) -> Iterator[Batch]:
        """Read the tasks of skipped assignments again; one no longer pushed is gone."""
        from workspace.models import Assignment

        records: list[Any] = []
        for ref in ctx.retry:
            pk = ref.key.removeprefix("zimbra:")
            row = Assignment.objects.filter(pk=int(pk)).first() if pk.isdigit() else None
            if row is None or not row.active or not row.cal_item_id:
                records.append(NoLongerThere(ref))
                continue
            ctx.working_on = ref.label
            try:
                read = soap.call(row.account, "GetTask", id=row.cal_item_id, sync="1")
            except ItemGone:
                records.append(GoneThere(row.pk, ctx.job_id))
                continue
            found = read.find(f"{{{MAIL}}}task")
            if found is not None and found.get("l") == TRASH:
                records.append(GoneThere(row.pk, ctx.job_id))
            elif found is not None:
                records += read_each(
                    [found],
                    lambda _, ref=ref: ref,
                    lambda task, pk=row.pk: _incoming(task, pk, ctx.job_id),
                )
        if records:
            yield Batch(records=records, note="skipped tasks read again")

    def describe(self, batch: Batch) -> ItemRef | None:
        for record in batch.records:
            if isinstance(record, Incoming | GoneThere | Pushed | LeftMailbox):
                return assignment_ref(record.assignment_id)
        return None

    def _read_folder(
        self,
        ctx: SyncContext,
        soap: ZimbraSoap,
        account: str,
        tokens: dict[str, str],
        mine: dict[str, Watched],
    ) -> Iterator[Batch]:
        folder = self.zimbra.tasks_folder
        key = f"{account}/{folder}"
        while True:
            token = tokens.get(key)
            try:
                answer = soap.call(
                    account, "Sync", l=folder, token=token, changeLimit=self.zimbra.incoming_page
                )
            except SyncTokenGone as gone:
                if token is None:
                    raise Transient(f"Zimbra refused to list {account}'s tasks: {gone}") from None
                ctx.log(
                    "warning",
                    f"Zimbra no longer knows the sync position of {account}; reading the "
                    "task list again.",
                    detail=str(gone),
                )
                del tokens[key]
                continue
            records: list[Any] = []
            for item_id, ms in _changed_items(answer):
                known = mine.get(item_id)
                if known is None or ms == known.ms:
                    continue  # not one of ours, or our own push
                if len(records) >= self.zimbra.incoming_page:
                    # A first read lists every task at once: commit what was read so far, so a
                    # killed worker does not read it all again (the token moves on only after
                    # the whole answer, below; reading an item twice changes nothing).
                    yield Batch(records=records)
                    records = []
                ctx.working_on = f"{account}'s task {item_id}"
                try:
                    # sync="1": without it Zimbra leaves out md and ms (docs/protocols.md)
                    read = soap.call(account, "GetTask", id=item_id, sync="1")
                except ItemGone:
                    records.append(GoneThere(known.assignment_id, ctx.job_id))
                    continue
                found = read.find(f"{{{MAIL}}}task")
                if found is not None and found.get("l") == TRASH:
                    records.append(GoneThere(known.assignment_id, ctx.job_id))  # in the Trash
                elif found is not None:
                    records += read_each(
                        [found],
                        lambda _, known=known: assignment_ref(known.assignment_id),
                        lambda task, known=known: _incoming(task, known.assignment_id, ctx.job_id),
                    )
            deleted = answer.find(f"{{{MAIL}}}deleted")
            for item_id in (deleted.get("ids", "") if deleted is not None else "").split(","):
                if item_id in mine:
                    records.append(GoneThere(mine[item_id].assignment_id, ctx.job_id))
            tokens[key] = answer.get("token", "")
            more = answer.get("more") == "1"
            yield Batch(
                records=records,
                cursor={"tokens": dict(tokens)},
                checkpoint=None if more else {"after": account},
            )
            if not more:
                return

    def _message(self, assignment: Any, task: Any) -> Any:
        m = element("m", l=self.zimbra.tasks_folder)
        inv = element("inv")
        comp = element(
            "comp",
            name=task.title,
            uid=assignment.uid,
            status=STATUS.get(task.status, "NEED"),
            priority=PRIORITY.get(task.priority, "5"),
            percentComplete=task.percent_complete,
            allDay="1",
        )
        if task.due_date:
            comp.append(element("e", d=task.due_date.strftime("%Y%m%d")))
        comp.append(element("desc", task.description))
        inv.append(comp)
        m.append(inv)
        m.append(element("su", task.title))
        mp = element("mp", ct="text/plain")
        mp.append(element("content", task.description))
        m.append(mp)
        return m

    def apply(self, batch: Batch) -> Counts:
        from workspace.models import Assignment

        counts = Counts()
        for record in batch.records:
            if isinstance(record, Incoming):
                self._apply_incoming(record, counts)
                continue
            if isinstance(record, GoneThere):
                self._apply_gone(record, counts)
                continue
            if isinstance(record, LeftMailbox):
                Assignment.objects.filter(pk=record.assignment_id).update(
                    cal_item_id="", inv_id="", ms="", rev="", pushed_hash=""
                )
                continue
            if not isinstance(record, Pushed):
                continue
            row = Assignment.objects.select_for_update().get(pk=record.assignment_id)
            if record.removed:
                row.state, row.cal_item_id, row.inv_id, row.ms, row.rev = "removed", "", "", "", ""
                counts.deleted += 1
            else:
                created = not row.inv_id
                ids = record.ids or {}
                row.cal_item_id = ids.get("calItemId", row.cal_item_id)
                row.inv_id = ids.get("invId", row.inv_id)
                row.account = record.account or row.account
                row.ms, row.rev = ids.get("ms", ""), ids.get("rev", "")
                if record.progress is not None:
                    row.pushed_status, row.pushed_percent = record.progress
                row.state = Assignment.State.PUSHED
                if created:
                    counts.created += 1
                else:
                    counts.updated += 1
            row.pushed_hash, row.error, row.pushed_at = record.content_hash, "", timezone.now()
            row.save()
        return counts

    def _apply_incoming(self, record: Incoming, counts: Counts) -> None:
        """Three-way merge of status and percent complete; see the module docstring."""
        from workspace.models import Assignment, Task
        from workspace.tasks import content_hash, push_later

        row = Assignment.objects.select_for_update().filter(pk=record.assignment_id).first()
        if row is None or not row.active or row.task_id is None:
            counts.unchanged += 1
            return
        task = Task.objects.select_for_update().get(pk=row.task_id)
        decision = _decide(record, task, _base(row))
        row.ms, row.rev = record.ms, record.rev
        fields = ["ms", "rev"]
        message = ""
        if decision == "same":
            row.pushed_status, row.pushed_percent = task.progress()
            fields += ["pushed_status", "pushed_percent"]
            counts.unchanged += 1
        elif decision in ("theirs", "theirs-later"):
            theirs = _theirs(record, task)
            message = f"“{task.title}”: took {_describe(*theirs)} from {row.account}'s Zimbra"
            if decision == "theirs-later":
                message += f" (changed there after ours; replaced {_describe(*task.progress())})"
            in_step = row.pushed_hash == content_hash(task, True)  # no other change waits
            # Zimbra's time is the change's time: a later change elsewhere still wins over it
            Task.objects.filter(pk=task.pk).update(
                status=theirs[0],
                percent_complete=theirs[1],
                progress_changed_at=record.changed_at,
                updated_at=timezone.now(),
            )
            task.refresh_from_db()
            row.pushed_status, row.pushed_percent = theirs
            fields += ["pushed_status", "pushed_percent"]
            others = task.assignments.filter(active=True).exclude(pk=row.pk)
            follow = list(others.values_list("pk", flat=True))  # the other copies follow
            if in_step:
                row.pushed_hash = content_hash(task, True)  # Zimbra already has all of it
                fields.append("pushed_hash")
            else:
                follow.append(row.pk)  # our other changes still have to reach this copy
            push_later(follow)
            counts.updated += 1
        else:
            if decision == "ours-later":
                message = _kept_ours(task, row.account, record)
            row.pushed_hash = ""  # Zimbra no longer has our version: send it again
            fields.append("pushed_hash")
            push_later([row.pk])
            counts.unchanged += 1
        row.save(update_fields=fields)
        self._log(record.job_id, message, assignment=row.pk, zimbra_md=record.changed_at)

    def _apply_gone(self, record: GoneThere, counts: Counts) -> None:
        from workspace.models import Assignment
        from workspace.tasks import push_later

        row = Assignment.objects.select_for_update().filter(pk=record.assignment_id).first()
        if row is None or not row.active or row.task_id is None:
            return
        row.pushed_hash = ""
        row.save(update_fields=["pushed_hash"])
        push_later([row.pk])  # the modify finds it gone and creates it again
        counts.unchanged += 1
        self._log(
            record.job_id,
            f"“{row.task}” was deleted in {row.account}'s Zimbra but is still assigned here; "
            "adding it again.",
            assignment=row.pk,
        )

    def _log(self, job_id: int | None, message: str, **data: Any) -> None:
        from syncqueue.models import SyncLog

        if message and job_id:
            SyncLog.objects.create(
                job_id=job_id,
                connection_id=self.connection.pk,
                level=SyncLog.Level.INFO,
                message=message,
                data={k: v.isoformat() if isinstance(v, datetime) else v for k, v in data.items()},
            )


def assignment_ref(assignment_id: int) -> ItemRef:
    return ItemRef(f"zimbra:{assignment_id}", f"the Zimbra copy of assignment #{assignment_id}")


def _incoming(found: etree._Element, assignment_id: int, job_id: int | None) -> Incoming:
    comp = found.find(f"{{{MAIL}}}inv/{{{MAIL}}}comp")
    attrs = comp.attrib if comp is not None else {}
    try:
        percent = max(0, min(100, int(attrs.get("percentComplete") or 0)))
    except ValueError:
        percent = 0
    return Incoming(
        assignment_id=assignment_id,
        status=FROM_STATUS.get(str(attrs.get("status") or "").upper()),
        percent=percent,
        changed_at=datetime.fromtimestamp(int(found.get("md") or 0), tz=UTC),
        ms=found.get("ms", ""),
        rev=found.get("rev", ""),
        job_id=job_id,
    )


def _describe(status: str | None, percent: int) -> str:
    from workspace.models import Task

    return f"{Task.Status(status).label if status else 'an unknown status'}, {percent}%"


def _kept_ours(task: Any, account: str, remote: Incoming) -> str:
    return (
        f"“{task.title}”: our change ({_describe(task.status, task.percent_complete)}) is later "
        f"than {account}'s in Zimbra ({_describe(remote.status, remote.percent)}); kept ours "
        "and sent it to Zimbra."
    )


def _changed_items(answer: etree._Element) -> Iterator[tuple[str, str | None]]:
    """(item id, ms) of the tasks a SyncResponse lists. A delta lists ``<task id ms …/>``; a
    first sync (no token) lists the folder's ids only (``<folder><task ids="257,258"/>``), so
    their ``ms`` is unknown (None) and each is read."""
    for item in answer.iter(f"{{{MAIL}}}task"):
        if item.get("ids") is not None:
            for item_id in item.get("ids", "").split(","):
                if item_id:
                    yield item_id, None
        elif item.get("id"):
            yield item.get("id", ""), item.get("ms")


def _base(assignment: Any) -> tuple[str, int] | None:
    """The status and percent complete both sides last agreed on (None: not known)."""
    if assignment.pushed_status and assignment.pushed_percent is not None:
        return (assignment.pushed_status, assignment.pushed_percent)
    return None


def _theirs(remote: Incoming, task: Any) -> tuple[str, int]:
    return (remote.status or task.status, remote.percent)


def _decide(remote: Incoming, task: Any, base: tuple[str, int] | None) -> str:
    """same | theirs (only Zimbra changed) | ours (only we did) | theirs-later | ours-later."""
    theirs, ours = _theirs(remote, task), task.progress()
    if theirs == ours:
        return "same"
    if theirs == base:
        return "ours"
    if ours == base:
        return "theirs"
    ours_at = task.progress_changed_at or task.updated_at
    return "theirs-later" if remote.changed_at > ours_at else "ours-later"


def _ids(answer: Any) -> dict[str, str]:
    return {k: str(answer.get(k, "")) for k in ("calItemId", "invId", "ms", "rev")}
