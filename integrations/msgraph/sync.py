"""The two Graph sync algorithms, as generators of batches (docs/protocols.md, Graph).

Mailbox delta (per folder): the first round pages through every message; each page is one
batch committed with the newest ``@odata.nextLink``, so a crash resumes from that page; the
final ``@odata.deltaLink`` is the folder's cursor for the next sync. ``@removed`` items are
marked deleted. When Graph has forgotten a stored position (410 ``SyncStateNotFound``) that
folder alone starts over; upserts by immutable id mean no duplicates, and messages the new
pass did not see are marked deleted at its end.

History search (a case's contact): ``$search`` answers at most 1,000 messages, so the search
runs over received-date windows, halving any window that hits the cap; the windows still to
do are the job's checkpoint.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.utils import timezone

from integrations.base import Batch, ItemRef, NoLongerThere, SyncContext, read_each
from integrations.errors import CursorReset, Permanent
from integrations.msgraph.client import MAILBOX_CONCURRENCY, GraphClient, ItemGone, NoContent
from mail.models import MailMessage, MailSource
from mail.parsing import (
    ParsedAttachment,
    ParsedMessage,
    html_to_text,
    make_storable,
    normalize_message_id,
)
from mail.store import FetchedMessage
from syncproject.safetext import storable

if TYPE_CHECKING:
    from integrations.msgraph.connector import GraphConnector

SELECT = ",".join(
    [
        "subject",
        "from",
        "sender",
        "toRecipients",
        "ccRecipients",
        "receivedDateTime",
        "sentDateTime",
        "internetMessageId",
        "isRead",
        "flag",
        "hasAttachments",
        "parentFolderId",
        "categories",
        "bodyPreview",
        "body",
    ]
)
SEARCH_CAP = 1000
REFERENCE_NOTE = "a link to a file stored elsewhere (reference attachment): no content"


@dataclass
class Removed:
    """A folder reports these messages gone (moved away or deleted)."""

    folder: str
    remote_ids: list[str]


@dataclass
class FullPassDone:
    """A full pass over ``folder`` ended: messages it did not see since ``started`` are gone."""

    folder: str
    started: str


@dataclass
class CaseLinks:
    """Messages found for a case's contact, to be linked to the case once each."""

    case_id: int
    contact_id: int


def message_ref(item: dict[str, Any]) -> ItemRef:
    """A Graph message's identity (its immutable id) and, in words, its subject."""
    subject = str(item.get("subject") or "")[:60]
    return ItemRef(f"graph:{item.get('id')}", f"message “{subject}” ({str(item.get('id'))[:16]}…)")


def _when(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def _address(item: dict[str, Any] | None) -> dict[str, str]:
    email = (item or {}).get("emailAddress") or {}
    return {
        "name": str(email.get("name") or "")[:300],
        "address": str(email.get("address") or "")[:320],
    }


KNOWN_FROM = {
    "folder": "parentFolderId",
    "seen": "isRead",
    "flagged": "flag",
    "labels": "categories",
}


def to_message(
    item: dict[str, Any], attachments: list[ParsedAttachment], folder: str = ""
) -> FetchedMessage:
    """A Graph message object as the mail store's record. A delta update carries at least the
    properties that changed, not all of them (docs/protocols.md, Graph): the record says which
    it has (``known``), so the others keep their stored values; a new message's folder is the
    one being synced (``folder``) when the item does not name it."""
    parsed = ParsedMessage()
    parsed.subject = str(item.get("subject") or "")
    sender = _address(item.get("from") or item.get("sender"))
    parsed.from_name, parsed.from_address = sender["name"], sender["address"]
    parsed.to = [_address(r) for r in item.get("toRecipients") or []]
    parsed.cc = [_address(r) for r in item.get("ccRecipients") or []]
    parsed.message_id = normalize_message_id(str(item.get("internetMessageId") or ""))[:998]
    if not parsed.message_id:
        parsed.defects.append("missing Message-ID header")
    parsed.date_header = str(item.get("sentDateTime") or "")
    parsed.sent_at = _when(item.get("sentDateTime"))
    body = item.get("body") or {}
    content = str(body.get("content") or "")
    limit = settings.MAIL_MAX_BODY_CHARS
    if len(content) > limit:
        parsed.truncated = True
        parsed.defects.append(f"body cut to {limit} characters (was {len(content)})")
        content = content[:limit]
    if str(body.get("contentType", "")).lower() == "html":
        parsed.html_body = content
    else:
        parsed.text_body = content
    preview = str(item.get("bodyPreview") or "") or html_to_text(parsed.html_body[:20_000])
    parsed.snippet = " ".join(preview.split())[:200]
    parsed.attachments = attachments
    for attachment in attachments:
        if attachment.note:
            if not attachment.note.startswith(REFERENCE_NOTE):  # a link is complete as it is
                parsed.truncated = True
            parsed.defects.append(f"{attachment.filename}: {attachment.note}")
    flags = ["\\Seen"] if item.get("isRead") else []
    if (item.get("flag") or {}).get("flagStatus") == "flagged":
        flags.append("\\Flagged")
    make_storable(parsed)  # JSON may carry NUL and lone surrogates (\u0000, \ud800)
    parsed.snippet = storable(parsed.snippet)
    known = frozenset(name for name, prop in KNOWN_FROM.items() if prop in item)
    return FetchedMessage(
        folder=str(item.get("parentFolderId") or folder),
        uid=None,
        uidvalidity=None,
        parsed=parsed,
        size=len(content.encode("utf-8", "replace")),
        received_at=_when(item.get("receivedDateTime")),
        flags=sorted(flags),
        labels=sorted(storable(c) for c in item.get("categories") or []),
        remote_id=str(item["id"]),
        raw=json.dumps(item, ensure_ascii=False).encode("utf-8", "surrogatepass"),
        raw_format=MailSource.Format.GRAPH_JSON,
        known=None if len(known) == len(KNOWN_FROM) else known,
    )


#: what a message's first sight must carry to be stored from it
_CONTENT = ("subject", "body", "receivedDateTime", "parentFolderId")


_CID = re.compile(r"""[\s"'(=]cid:""", re.IGNORECASE)  # src="cid:…", url(cid:…)


def _shows_inline(item: dict[str, Any]) -> bool:
    """Whether the body shows attached files (``cid:`` references): ``hasAttachments`` leaves
    inline attachments out, and Graph's advice is to look for them in the body."""
    content = str((item.get("body") or {}).get("content") or "")
    return _CID.search(content) is not None


def _partial(item: dict[str, Any]) -> bool:
    return any(prop not in item for prop in _CONTENT)


def _merged_copies(value: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A page's items, one per id: copies of the same message merged (a later copy's
    properties win); a removal replaces what came before it, and is replaced by what comes
    after it."""
    merged: dict[str, dict[str, Any]] = {}
    for item in value:
        key = str(item.get("id"))
        before = merged.get(key)
        if before is None or "@removed" in before or "@removed" in item:
            merged[key] = item
        else:
            merged[key] = {**before, **item}
    return list(merged.values())


class GraphSync:
    """Shared by both algorithms: message conversion with attachments, bounded parallelism."""

    def __init__(self, connector: GraphConnector, client: GraphClient, ctx: SyncContext):
        self.connector = connector
        self.client = client
        self.ctx = ctx
        self.config = connector.graph

    def _attachments(self, message_id: str) -> list[ParsedAttachment]:
        """The message's attachments: files with their content (``$value``), attached items
        as their MIME (``$value`` of an itemAttachment), and links to files stored elsewhere
        (``referenceAttachment``, whose ``$value`` Graph answers with 405) without content. An
        attachment whose content cannot be read is recorded with a note — never a failure of
        the whole mailbox."""
        limit = settings.MAIL_MAX_ATTACHMENT_BYTES
        entries: list[dict[str, Any]] = []
        listing = self.client.pages(
            f"messages/{message_id}/attachments",
            params={"$select": "id,name,contentType,size,isInline"},
        )
        try:
            for page in listing:  # in pages, like any collection (graph/paging)
                entries += page.get("value", [])
        except ItemGone:
            return []
        found = []
        for entry in entries:
            size = int(entry.get("size") or 0)
            kind = str(entry.get("@odata.type") or "#microsoft.graph.fileAttachment")
            data, note = None, ""
            if kind.endswith("referenceAttachment"):
                note = REFERENCE_NOTE
            elif size > limit:
                note = (
                    f"larger than the {limit // 1_000_000} MB attachment limit: content not stored"
                )
            else:
                try:
                    data = self.client.get_bytes(
                        f"messages/{message_id}/attachments/{entry['id']}/$value"
                    )
                except ItemGone:
                    note = "removed on the server before it could be read"
                except NoContent as refused:
                    note = f"Graph gives no content for it ({refused})"
            if kind.endswith("itemAttachment") and data is not None:
                entry = {**entry, "contentType": "message/rfc822"}
            found.append(
                ParsedAttachment(
                    filename=str(entry.get("name") or "")[:500],
                    content_type=str(entry.get("contentType") or "")[:200],
                    size=len(data) if data is not None else size,
                    content_id="",
                    inline=bool(entry.get("isInline")),
                    data=data,
                    note=note,
                )
            )
        return found

    def messages(self, items: list[dict[str, Any]], folder: str = "") -> list[Any]:
        """Convert items; attachments are fetched (up to 4 at a time, Graph's per-mailbox
        limit) only for messages not stored yet — a stored message keeps its attachments.

        An update carries at least the properties that changed, not all of them: one for a
        message we do not hold (its full copy comes later in the round, or never reached us)
        is read whole first, so no message is stored from a few properties. One that is gone
        meanwhile is left out (its removal comes with a later round)."""
        known = set(
            MailMessage.objects.filter(
                connection=self.connector.connection,
                remote_id__in=[i.get("id") for i in items if i.get("id")],
            )
            .order_by()
            .values_list("remote_id", flat=True)
        )
        whole = [
            self._whole(item) if item.get("id") and item["id"] not in known and _partial(item)
            else item
            for item in items
        ]  # fmt: skip
        items = [item for item in whole if item is not None]
        wanted = [
            i["id"]
            for i in items
            if i.get("id") and i["id"] not in known
            if i.get("hasAttachments") or _shows_inline(i)
        ]
        attachments: dict[str, list[ParsedAttachment]] = {}
        if wanted:
            with ThreadPoolExecutor(max_workers=MAILBOX_CONCURRENCY) as pool:
                for message_id, found in zip(
                    wanted, pool.map(self._attachments, wanted), strict=True
                ):
                    attachments[message_id] = found
        return read_each(
            items,
            lambda item: message_ref(item),
            lambda item: to_message(item, attachments.get(item.get("id"), []), folder),
        )

    def _whole(self, item: dict[str, Any]) -> dict[str, Any] | None:
        try:
            found: dict[str, Any] = self.client.get(
                f"messages/{item['id']}", params={"$select": SELECT}
            )
        except ItemGone:
            return None
        return {**item, **found}

    def retry_skipped(self) -> Iterator[Batch]:
        """Read skipped messages again by their immutable id; one that is gone is gone."""
        found, gone = [], []
        for ref in self.ctx.retry:
            if not ref.key.startswith("graph:"):
                continue
            self.ctx.working_on = ref.label
            try:
                found.append(
                    self.client.get(
                        f"messages/{ref.key[len('graph:') :]}", params={"$select": SELECT}
                    )
                )
            except ItemGone:
                gone.append(NoLongerThere(ref))
        if found or gone:
            yield Batch(records=[*self.messages(found), *gone], note="skipped messages read again")


def _folder_gone(folder_id: str, states: dict[str, Any], cursor: dict[str, Any]) -> Batch:
    """A folder deleted for good: its state is dropped, and the messages still filed there are
    marked deleted (kept here); delta will say nothing more about them."""
    name = states.pop(folder_id, {}).get("name", "")
    return Batch(
        records=[FullPassDone(folder_id, timezone.now().isoformat())],
        cursor=copy.deepcopy(cursor),
        note=f"{name}: no longer in the mailbox; its messages are marked deleted "
        "(they are kept here)",
    )


class MailboxDelta(GraphSync):
    def folders(self) -> list[dict[str, Any]]:
        """Every mail folder, child folders included (or the configured ones, by name)."""
        found: list[dict[str, Any]] = []
        self.existing: set[str] = set()  # every folder the mailbox has now, chosen or not
        todo = ["mailFolders"]
        while todo:
            for page in self.client.pages(todo.pop(), params={"$top": 100}):
                for folder in page.get("value", []):
                    if str(folder.get("@odata.type", "")).endswith("mailSearchFolder"):
                        # a view of messages that live in other folders: delta there would
                        # file them twice (docs/protocols.md, Graph folders)
                        continue
                    found.append(folder)
                    self.existing.add(str(folder.get("id")))
                    if folder.get("childFolderCount"):
                        todo.append(f"mailFolders/{folder['id']}/childFolders")
        if self.config.folders:
            wanted = {name.lower() for name in self.config.folders}
            chosen = [f for f in found if str(f.get("displayName", "")).lower() in wanted]
            missing = wanted - {str(f.get("displayName", "")).lower() for f in chosen}
            if missing:
                raise Permanent(
                    f"Mailbox {self.config.mailbox} has no folder named "
                    f"{', '.join(sorted(missing))}."
                )
            return chosen
        return found

    def run(self) -> Iterator[Batch]:
        if self.ctx.retry:
            yield from self.retry_skipped()
        cursor = copy.deepcopy(self.ctx.cursor)
        states: dict[str, dict[str, Any]] = cursor.setdefault("folders", {})
        folders = self.folders()
        self.synced: set[str] = {str(f["id"]) for f in folders}
        for gone in [folder_id for folder_id in states if folder_id not in self.existing]:
            # deleted for good (emptied out of Deleted Items, say): delta says nothing more
            # about its messages, so those still filed there are marked deleted (kept here)
            yield _folder_gone(gone, states, cursor)
        fresh = [f for f in folders if not states.get(f["id"], {}).get("delta")]
        total = None
        if fresh:
            total = self.ctx.progress_done + sum(int(f.get("totalItemCount") or 0) for f in fresh)
        done = self.ctx.progress_done
        restarted: set[str] = set()
        for index, folder in enumerate(folders):
            folder_id = folder["id"]
            state = states.setdefault(folder_id, {})
            state["name"] = folder.get("displayName", "")
            url = state.get("next") or state.get("delta")
            if url is None:
                state.setdefault("started", timezone.now().isoformat())
                url = f"mailFolders/{folder_id}/messages/delta"
            while url:
                self.ctx.working_on = f"folder {state['name']}"
                try:
                    page = self.client.get(
                        url,
                        params={"$select": SELECT} if "://" not in url else None,
                        page_size=self.config.page_size,
                    )
                except CursorReset as reset:
                    # Only this folder starts over; the others keep their positions. A pass
                    # that was itself a restart keeps its start: what it did not see since
                    # then is gone, however often Graph forgets the position meanwhile.
                    started = state.get("started") if state.get("reset") else None
                    state.clear()
                    state.update(
                        name=folder.get("displayName", ""),
                        reset=True,
                        started=started or timezone.now().isoformat(),
                    )
                    if folder_id in restarted:
                        # even the fresh pass's position was forgotten: hand the engine the
                        # positions to start again from (this folder's restart, everyone
                        # else's as they are), not nothing
                        raise CursorReset(reset.message, cursor=copy.deepcopy(cursor)) from reset
                    restarted.add(folder_id)
                    self.ctx.log(
                        "warning",
                        f"{state['name']}: {reset.message} Resyncing this folder in full.",
                    )
                    url = f"mailFolders/{folder_id}/messages/delta"
                    continue
                except ItemGone:
                    # deleted for good while this sync ran (after the folder list was read):
                    # as for a folder gone before the sync began, its messages are marked
                    # deleted (kept here), and the other folders go on
                    yield _folder_gone(folder_id, states, cursor)
                    break
                # Pages come in no guaranteed order and an item may come twice (even within a
                # page), an update with only the properties that changed: copies of an id in
                # a page are merged, and upserts by id make repeats harmless (docs/protocols.md,
                # Graph delta).
                items = _merged_copies(page.get("value", []))
                moved, removed = self.resolve_removed(
                    folder_id, [i["id"] for i in items if "@removed" in i and i.get("id")]
                )
                records: list[Any] = self.messages(
                    [i for i in items if "@removed" not in i] + moved, folder_id
                )
                if removed:
                    records.append(Removed(folder_id, removed))
                done += len(items)
                if total is not None:
                    done = min(done, total)  # repeats across pages are not new work
                state["next"] = page.get("@odata.nextLink")
                if "@odata.deltaLink" in page:
                    state["delta"] = page["@odata.deltaLink"]
                    state["next"] = None
                    if state.pop("reset", False):
                        # Only the whole completed pass tells what is gone: messages it did not
                        # see since it started. This batch's messages are seen too (apply
                        # touches them before retiring the rest).
                        records.append(FullPassDone(folder_id, state["started"]))
                    state.pop("started", None)
                last = index == len(folders) - 1 and state["next"] is None
                yield Batch(
                    records=records,
                    cursor=copy.deepcopy(cursor),
                    done=total if last and total is not None else done,
                    total=total,
                    final=last,
                )
                url = state["next"]

    def resolve_removed(
        self, folder_id: str, ids: list[str]
    ) -> tuple[list[dict[str, Any]], list[str]]:
        """A folder reports items gone: look each up by its immutable id, so a message moved
        to another synced folder is updated there at once rather than shown deleted until
        that folder's turn. One moved to a folder this connection does not sync (or a hidden
        one) has left the mirror, as an expunge from a synced IMAP folder has: it is gone
        here too — nothing would ever report it again. Returns (moved items, ids gone)."""

        def look(message_id: str) -> dict[str, Any] | None:
            try:
                return self.client.get(f"messages/{message_id}", params={"$select": SELECT})
            except ItemGone:
                return None

        moved, gone = [], []
        with ThreadPoolExecutor(max_workers=MAILBOX_CONCURRENCY) as pool:
            for message_id, item in zip(ids, pool.map(look, ids), strict=True):
                if item is None or item.get("parentFolderId") not in self.synced:
                    gone.append(message_id)
                elif item.get("parentFolderId") != folder_id:
                    moved.append(item)
                # else: still there (the report was replication lag): nothing to do
        return moved, gone


def _kql_day(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d")


ONE_DAY = timedelta(days=1)
ROLES = ("from", "to", "cc")


class HistorySearch(GraphSync):
    """All mail with a case contact, by ``$search``. KQL's ``received`` compares **dates**
    (docs/protocols.md, Graph search), and a search answers at most 1,000 messages, so the
    history is searched in windows of whole days, halving any window that hits the cap. A
    single day that still hits it is searched once per role (from, to, cc); if one role alone
    has more than 1,000 messages that day, at most 1,000 of them can be found, and the job's
    log says so, naming the day."""

    def run(self) -> Iterator[Batch]:
        from workspace.models import CaseContact

        payload = self.ctx.payload
        contact_id = payload.get("contact")
        contact = CaseContact.objects.filter(pk=contact_id).first() if contact_id else None
        if contact is None:
            return  # the contact was removed from the case meanwhile: nothing to do
        email = contact.email
        checkpoint = copy.deepcopy(self.ctx.checkpoint)
        if "windows" not in checkpoint:
            start = datetime.combine(self.config.history_start, datetime.min.time(), UTC)
            end = (timezone.now() + ONE_DAY).replace(hour=0, minute=0, second=0, microsecond=0)
            checkpoint = {"windows": [[start.isoformat(), end.isoformat()]], "found": 0}
        windows: list[list[str]] = checkpoint["windows"]
        while windows:
            start, end = (datetime.fromisoformat(w) for w in windows[-1])
            self.ctx.working_on = f"mail with {email} from {start:%Y-%m-%d} to {end:%Y-%m-%d}"
            items = self.search(f"participants:{email}", start, end)
            days = max(1, round((end - start) / ONE_DAY))
            if len(items) >= SEARCH_CAP and days > 1:
                middle = start + (days // 2) * ONE_DAY  # whole days: KQL has no times
                windows[-1:] = [
                    [middle.isoformat(), end.isoformat()],
                    [start.isoformat(), middle.isoformat()],
                ]
                continue
            if len(items) >= SEARCH_CAP:
                items = self.one_day_by_role(email, start, end)
            windows.pop()
            checkpoint["found"] += len(items)
            records: list[Any] = self.messages(items)
            records.append(CaseLinks(int(payload["case"]), contact.pk))
            yield Batch(
                records=records,
                checkpoint=copy.deepcopy(checkpoint),
                done=checkpoint["found"],
                final=not windows,
                progress=f"{email}: searched {start:%Y-%m-%d} to {end:%Y-%m-%d}",
            )

    def one_day_by_role(self, email: str, start: datetime, end: datetime) -> list[dict[str, Any]]:
        """One day with more than the cap: search sender, recipient and copy separately."""
        found: dict[str, dict[str, Any]] = {}
        for role in ROLES:
            items = self.search(f"{role}:{email}", start, end)
            if len(items) >= SEARCH_CAP:
                self.ctx.log(
                    "warning",
                    f"More than {SEARCH_CAP} messages with {email} as {role} received on "
                    f"{start:%Y-%m-%d}: Graph's search returns at most {SEARCH_CAP} per query, "
                    "so some of that day's messages may be missing from the case.",
                    day=f"{start:%Y-%m-%d}",
                    role=role,
                )
            for item in items:
                found[str(item.get("id"))] = item
        return list(found.values())

    def search(self, who: str, start: datetime, end: datetime) -> list[dict[str, Any]]:
        query = f'"{who} AND received>={_kql_day(start)} AND received<{_kql_day(end)}"'
        items: list[dict[str, Any]] = []
        params = {"$search": query, "$select": SELECT, "$top": 250}
        for page in self.client.pages("messages", params=params):
            items.extend(page.get("value", []))
            if len(items) >= SEARCH_CAP:
                break
        return items
