"""Incoming (``config.incoming``, on the connection's schedule): changes made in Zimbra.

A ``SyncRequest`` per person's Tasks folder from the token kept in the connection's cursor
lists what changed; tasks whose ``ms`` differs from the one we stored are read with
``GetTask`` and their status and percent complete come back to the task (:mod:`.merge`,
stored by :mod:`.store`). A task deleted in Zimbra that is still assigned here is added again.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial
from typing import Any

from integrations.base import Batch, ItemRef, NoLongerThere, SyncContext, read_each
from integrations.errors import AuthFailed, Permanent, RateLimited, Transient
from integrations.models import Connection
from integrations.zimbra.config import ZimbraConfig
from integrations.zimbra.message import TRASH, changed_items, parse_task
from integrations.zimbra.models import TaskCopy
from integrations.zimbra.outbound import Watched, watched_copies
from integrations.zimbra.records import GoneThere, Incoming, NotOurs, assignment_ref
from integrations.zimbra.soap import MAIL, ItemGone, SyncTokenGone, ZimbraSoap


def _same(ref: ItemRef, _item: Any) -> ItemRef:
    return ref


def _parse(assignment_id: int, task: Any) -> Incoming:
    return parse_task(task, assignment_id)


def run(
    zimbra: ZimbraConfig, soap: ZimbraSoap, connection: Connection, ctx: SyncContext
) -> Iterator[Batch]:
    if not zimbra.incoming:
        yield Batch(final=True, note="Reading changes back from Zimbra is off for this server.")
        return
    if ctx.retry:
        yield from retry_skipped(ctx, soap)
    tokens: dict[str, str] = dict(ctx.cursor.get("tokens") or {})
    server = ctx.cursor.get("server", zimbra.soap_url)  # (positions kept before it was noted)
    if tokens and server != zimbra.soap_url:
        # A token is a change number of the server that gave it: another server (the
        # connection was pointed elsewhere) would take it and leave out its changes up to it.
        ctx.log(
            "info",
            f"This connection now reads {zimbra.soap_url} (it read {server}): every task list "
            "is read from the start.",
        )
        tokens = {}
    watched = watched_copies(connection)
    after = str(ctx.checkpoint.get("after", ""))
    skipped: list[str] = []
    for account in sorted(watched):
        if account <= after:
            continue  # read in an earlier slice of this job
        try:
            yield from read_folder(zimbra, ctx, soap, account, tokens, watched[account])
        except (AuthFailed, RateLimited):
            raise  # about the server, not one mailbox: the job waits or needs a person
        except (Permanent, Transient) as error:
            # e.g. no such account, or one mailbox in maintenance: the others go on, and this
            # one catches up from its token next time
            ctx.log("warning", f"Skipped {account}: {error.message}", code=error.code)
            skipped.append(account)
            yield Batch(checkpoint={"after": account})
    if watched and len(skipped) == len(watched):
        raise Transient("Zimbra could not be read for anyone's task list.")
    note = f"Read changes from {len(watched) - len(skipped)} Zimbra task list(s)"
    yield Batch(note=note + (f"; skipped {len(skipped)}." if skipped else "."), final=True)


def retry_skipped(ctx: SyncContext, soap: ZimbraSoap) -> Iterator[Batch]:
    """Read the tasks of skipped copies again; one no longer pushed is gone."""
    records: list[Any] = []
    for ref in ctx.retry:
        pk = ref.key.removeprefix("zimbra:")
        row = (
            TaskCopy.objects.select_related("assignment").filter(pk=int(pk)).first()
            if pk.isdigit()
            else None
        )
        if row is None or not row.active or not row.cal_item_id:
            records.append(NoLongerThere(ref))
            continue
        ctx.working_on = ref.label
        try:
            read = soap.call(row.account, "GetTask", id=row.cal_item_id, sync="1")
        except ItemGone:
            records.append(GoneThere(row.pk))
            continue
        found = read.find(f"{{{MAIL}}}task")
        if found is not None and found.get("uid") != row.uid:
            records.append(NotOurs(row.pk, row.cal_item_id, row.account))
        elif found is not None and found.get("l") == TRASH:
            records.append(GoneThere(row.pk))
        elif found is not None:
            records += read_each([found], partial(_same, ref), partial(_parse, row.pk))
    if records:
        yield Batch(records=records, note="skipped tasks read again")


def read_folder(
    zimbra: ZimbraConfig,
    ctx: SyncContext,
    soap: ZimbraSoap,
    account: str,
    tokens: dict[str, str],
    mine: dict[str, Watched],
) -> Iterator[Batch]:
    folder = zimbra.tasks_folder
    key = f"{account}/{folder}"
    while True:
        token = tokens.get(key)
        try:
            answer = soap.call(
                account, "Sync", l=folder, token=token, changeLimit=zimbra.incoming_page
            )
        except SyncTokenGone as gone:
            if token is None:
                raise Transient(f"Zimbra refused to list {account}'s tasks: {gone}") from None
            ctx.log(
                "warning",
                f"Zimbra no longer knows the sync position of {account}; reading the task "
                "list again.",
                detail=str(gone),
            )
            del tokens[key]
            continue
        records: list[Any] = []
        for item_id, ms in changed_items(answer):
            known = mine.get(item_id)
            if known is None or ms == known.ms:
                continue  # not one of ours, or our own push
            if len(records) >= zimbra.incoming_page:
                # A first read lists every task at once: commit what was read so far, so a
                # killed worker does not read it all again (the token moves on only after the
                # whole answer, below; reading an item twice changes nothing).
                yield Batch(records=records)
                records = []
            ctx.working_on = f"{account}'s task {item_id}"
            try:
                # sync="1": without it Zimbra leaves out md and ms (docs/protocols.md)
                read = soap.call(account, "GetTask", id=item_id, sync="1")
            except ItemGone:
                records.append(GoneThere(known.assignment_id))
                continue
            found = read.find(f"{{{MAIL}}}task")
            if found is not None and found.get("uid") != known.uid:
                records.append(NotOurs(known.assignment_id, item_id, account))
            elif found is not None and found.get("l") == TRASH:
                records.append(GoneThere(known.assignment_id))  # in the Trash
            elif found is not None:
                records += read_each(
                    [found],
                    partial(_same, assignment_ref(known.assignment_id)),
                    partial(_parse, known.assignment_id),
                )
        deleted = answer.find(f"{{{MAIL}}}deleted")
        for item_id in (deleted.get("ids", "") if deleted is not None else "").split(","):
            if item_id in mine:
                records.append(GoneThere(mine[item_id].assignment_id))
        tokens[key] = answer.get("token", "")
        more = answer.get("more") == "1"
        yield Batch(
            records=records,
            cursor={"tokens": dict(tokens), "server": zimbra.soap_url},
            checkpoint=None if more else {"after": account},
        )
        if not more:
            return
