"""The Zimbra connector: pushes one assignment's task into its person's Zimbra Tasks.

Create carries our own ``uid``, so a retry after a lost answer (or a killed worker) updates
the same Zimbra task. Modify sends the whole task with the last ``ms``/``rev``; when Zimbra
says the task changed meanwhile it is re-read and the modify retried; when the task is gone
there, it is created again. The ids Zimbra returns are stored in the engine's transaction
together with the "pushed" mark.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, cast

from django.utils import timezone

from integrations.base import Batch, CheckResult, Connector, Counts, PersonalSwitch, SyncContext
from integrations.zimbra.config import ZimbraConfig
from integrations.zimbra.soap import MAIL, ItemGone, OutOfDate, ZimbraSoap, element

STATUS = {
    "need": "NEED",
    "inprogress": "INPR",
    "waiting": "WAITING",
    "deferred": "DEFERRED",
    "completed": "COMP",
}
PRIORITY = {"high": "1", "normal": "5", "low": "9"}


@dataclass
class Pushed:
    assignment_id: int
    content_hash: str
    removed: bool = False
    ids: dict[str, str] | None = None


class ZimbraConnector(Connector):
    kind = "zimbra"
    label = "Zimbra server (tasks)"
    Config = ZimbraConfig
    secret_fields = ("admin_password",)
    personal_switches = (
        PersonalSwitch(
            key="zimbra.tasks",
            label="Add tasks assigned to me to my Zimbra task list",
            help="Your tasks appear in Zimbra's Tasks and stay up to date; turning this off "
            "stops updates (tasks already there stay).",
            value_label="Zimbra address (if not your email)",
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
        from workspace.tasks import content_hash, switch_of

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
        account = assignment.account or assignment.user.email
        if wanted == "absent":
            if assignment.inv_id:
                with contextlib.suppress(ItemGone):  # already gone in Zimbra: fine
                    soap.call(account, "CancelTask", id=assignment.inv_id, comp="0")
            yield Batch(records=[Pushed(assignment.pk, wanted, removed=True)], final=True)
            return
        if switch_of(assignment.user) is None:
            yield Batch(final=True, note=f"{assignment.user} turned Zimbra tasks off.")
            return
        if wanted == assignment.pushed_hash and assignment.inv_id:
            yield Batch(final=True, note="Zimbra already has this version.")
            return
        ids = self._upsert(soap, account, assignment, task)
        yield Batch(records=[Pushed(assignment.pk, wanted, ids=ids)], final=True)

    def _upsert(self, soap: ZimbraSoap, account: str, assignment: Any, task: Any) -> dict[str, str]:
        message = self._message(assignment, task)
        if not assignment.inv_id:
            return _ids(soap.call(account, "CreateTask", [message]))
        ms, rev = assignment.ms, assignment.rev
        for attempt in (1, 2):
            try:
                answer = soap.call(
                    account, "ModifyTask", [message], id=assignment.inv_id, comp="0", ms=ms, rev=rev
                )
                return _ids(answer)
            except ItemGone:
                # deleted in Zimbra: the person still has the task here, so create it again
                return _ids(soap.call(account, "CreateTask", [self._message(assignment, task)]))
            except OutOfDate:
                if attempt == 2:
                    raise
                current = soap.call(account, "GetTask", uid=assignment.uid)
                found = current.find(f"{{{MAIL}}}task")
                ms = found.get("ms", "") if found is not None else ""
                rev = found.get("rev", "") if found is not None else ""
                message = self._message(assignment, task)
        raise AssertionError("unreachable")  # pragma: no cover

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
                row.ms, row.rev = ids.get("ms", ""), ids.get("rev", "")
                row.state = Assignment.State.PUSHED
                if created:
                    counts.created += 1
                else:
                    counts.updated += 1
            row.pushed_hash, row.error, row.pushed_at = record.content_hash, "", timezone.now()
            row.save()
        return counts


def _ids(answer: Any) -> dict[str, str]:
    return {k: str(answer.get(k, "")) for k in ("calItemId", "invId", "ms", "rev")}
