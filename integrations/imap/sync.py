"""The IMAP sync algorithm (docs/protocols.md, IMAP), as a generator of batches.

Per folder the cursor keeps ``uidvalidity``, ``last_uid`` (highest UID fully committed),
``uidnext``/``messages``/``highestmodseq`` (the last STATUS seen) and ``initial_done``:

1. A STATUS probe skips folders where nothing changed (the common no-op sync costs one round
   trip per folder).
2. A changed UIDVALIDITY starts that folder over; rows under the old value are re-linked by
   content fingerprint as they are met again, the rest marked deleted at the end — no duplicates.
3. New mail: UIDs from SEARCH (never FETCH ranges: imapclient 4 rejects them), above
   ``last_uid``, fetched with ``BODY.PEEK[]`` on an EXAMINEd folder (nothing is ever marked read)
   in chunks; each chunk is one batch that advances ``last_uid``.
4. Flags: with QRESYNC (RFC 7162) the EXAMINE itself carries the stored UIDVALIDITY and
   HIGHESTMODSEQ and the server answers with the messages changed since (``FETCH``); with
   CONDSTORE only, ``SEARCH MODSEQ`` since the stored HIGHESTMODSEQ; otherwise the newest
   ``flag_window`` messages are re-checked.
5. Expunges: with QRESYNC, the same EXAMINE's ``VANISHED (EARLIER)`` list; otherwise, only when
   the message count does not add up, a UID SEARCH ALL is diffed against what we hold. Either
   way those messages are marked deleted (kept). Neither side walks the whole folder unless the
   server lacks QRESYNC and something was expunged.

Gmail (X-GM-EXT-1): only "All Mail" is synced, with labels and X-GM-MSGID, instead of one copy
per label.
"""

from __future__ import annotations

import bisect
import copy
import imaplib
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.utils import timezone
from imapclient import IMAPClient
from imapclient.exceptions import IMAPClientError
from imapclient.imapclient import ALL as SPECIAL_ALL
from imapclient.response_parser import parse_fetch_response

from integrations.base import Batch, ItemRef, NoLongerThere, SyncContext, read_each
from integrations.imap import fetchparse
from integrations.imap.client import FolderMissing
from mail import parse_helper
from mail.parsing import ParsedMessage, parse_message
from mail.store import FetchedMessage, FlagChange, count_held_from, known_uids

if TYPE_CHECKING:
    from integrations.imap.connector import ImapConnector

FETCH_BYTES = 8_000_000  # message bytes per body FETCH: bounds memory whatever the batch size
BATCH_BYTES = 16_000_000  # message bytes per committed batch (one larger message: alone)
META_UIDS = 1000  # messages per metadata FETCH (flags, date, size: about 100 bytes each)
FETCH_MAX_BYTES = 32_000_000  # what a body FETCH may answer even if every size was wrong
BODY_SLACK = 4096  # a body FETCH reads this much past the largest size announced in it
SMALL_BYTES = 64_000  # messages up to this size share body FETCHes; larger ones have theirs
#: a VANISHED answer naming more UIDs than this is not expanded: the UID SEARCH ALL diff decides
MAX_VANISHED = 200_000


# uid, FETCH data (flags, date, size), message bytes (None: the server sent none), full size
# when cut to the limit
_Raw = tuple[int, dict[bytes, Any], bytes | None, int | None]


class NoBodySent(Exception):
    """The server answered for a message without its content (its record becomes a skipped
    item, read again at the next sync)."""


@dataclass
class RetireFolder:
    """Rows of ``folder`` still under an old UIDVALIDITY were not found again: mark deleted —
    those the re-read certainly looked for (received from the day after ``since``, an ISO
    date; None: all). An older row that came with new mail (a message moved in keeps its
    date) is left as it is: the re-read did not look for it."""

    folder: str
    uidvalidity: int
    since: str | None = None


@dataclass
class _Plan:
    name: str
    status: dict[str, int]
    state: dict[str, Any]
    new_uids: list[int]
    highestmodseq: int | None
    incremental: bool
    arrived: int = 0
    #: new messages an earlier slice of this sync already fetched (the count check's due)
    carried: int = 0
    flag_uids: list[int] = field(default_factory=list)
    #: QRESYNC: UIDs expunged since the stored HIGHESTMODSEQ, and FETCH data of the messages
    #: whose flags changed since (None: the server did not say; ask it the other way)
    vanished: list[int] | None = None
    changed: dict[int, dict[bytes, Any]] | None = None


def _decode(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _flags(values: Any) -> list[str]:
    """Persistent flags, sorted. ``\\Recent`` is per-session (it differs between two sessions
    looking at the same message), so keeping it would report changes that never happened."""
    return sorted(flag for flag in map(_decode, values or ()) if flag.lower() != "\\recent")


def message_ref(folder: str, uidvalidity: int | None, uid: int | None) -> ItemRef:
    """A message's identity: ``imap:UIDVALIDITY:UID:folder`` (the folder last: it may hold any
    character), and in words ``INBOX UID 4711``."""
    return ItemRef(f"imap:{uidvalidity}:{uid}:{folder}", f"{folder} UID {uid}")


def parse_ref(key: str) -> tuple[str, int, int] | None:
    """(folder, UIDVALIDITY, UID) from a ``message_ref`` key; None for other keys."""
    kind, _, rest = key.partition(":")
    uidvalidity, _, rest = rest.partition(":")
    uid, _, folder = rest.partition(":")
    if kind != "imap" or not uidvalidity.isdigit() or not uid.isdigit():
        return None
    return folder, int(uidvalidity), int(uid)


def _uid_set(lines: list[Any]) -> list[int] | None:
    """The UIDs of ``VANISHED (EARLIER) 41,43:116`` answers; None when they name more than
    ``MAX_VANISHED`` (or cannot be read): then the caller diffs the folder instead."""
    uids: list[int] = []
    for line in lines:
        text = bytes(line).decode("ascii", "replace").strip()
        if text.upper().startswith("(EARLIER)"):
            text = text[len("(EARLIER)") :].strip()
        for part in filter(None, text.split(",")):
            low, _, high = part.partition(":")
            try:
                first, last = sorted((int(low), int(high or low)))
            except ValueError:
                return None
            if len(uids) + last - first + 1 > MAX_VANISHED:
                return None
            uids.extend(range(first, last + 1))
    return uids


def _size(data: dict[bytes, Any]) -> int:
    """RFC822.SIZE from FETCH data; 0 when the server left it out or sent nonsense."""
    try:
        return max(0, int(data.get(b"RFC822.SIZE", 0) or 0))
    except (TypeError, ValueError):
        return 0


def _body_item(cap: int) -> bytes:
    """A body read up to ``cap`` bytes, and one more: whether there was more is then known."""
    return f"BODY.PEEK[]<0.{cap + 1}>".encode()


def _body(answer: dict[bytes, Any] | None) -> bytes | None:
    """The message text of one FETCH answer (``BODY[]<0>``, or ``BODY[]`` from a server that
    names it so); None when there is none (no answer, no body item, NIL)."""
    if answer is None:
        return None
    value = answer.pop(b"BODY[]<0>", None)
    if value is None:
        value = answer.pop(b"BODY[]", None)
    if isinstance(value, str):
        value = value.encode("utf-8", "surrogateescape")
    return value if isinstance(value, bytes) else None


def _body_rounds(uids: list[int], meta: dict[int, Any]) -> list[tuple[list[int], int]]:
    """``uids`` (in order) cut into body FETCHes by the sizes in ``meta``, each with how much
    of each message it asks for (its cap: ``BODY_SLACK`` over the largest size announced in
    it, at most the message limit). A message without a size (the server left RFC822.SIZE
    out, or said 0) is planned as one of ``SMALL_BYTES``: most mail is, and a longer one is
    fetched again on its own, as one announced too small is (counting it as the limit put it
    in a FETCH of its own: a round trip per message).

    Messages up to ``SMALL_BYTES`` and larger ones go into FETCHes of their own kind, each in
    UID order, so a few large messages do not make every FETCH of small ones wide. A FETCH
    holds as many messages as fit ``FETCH_BYTES`` by their sizes, and no more than fit
    ``FETCH_MAX_BYTES`` at its cap each: its answer stays within that however wrong the
    announced sizes are (a body longer than its cap is fetched again, on its own). Read in
    UID order, at most one FETCH of each kind is open at a time.
    """
    limit = settings.MAIL_MAX_MESSAGE_BYTES
    rounds: list[tuple[list[int], int]] = []
    open_round: dict[bool, tuple[list[int], int, int]] = {}  # kind: (uids, bytes, cap)
    for uid in uids:
        size = min(_size(meta[uid]) or SMALL_BYTES, limit)
        kind = size <= SMALL_BYTES
        each, weight, cap = open_round.get(kind, ([], 0, 0))
        wider = min(limit, max(cap, size + BODY_SLACK))
        if each and (weight + size > FETCH_BYTES or (len(each) + 1) * wider > FETCH_MAX_BYTES):
            rounds.append((each, cap))
            each, weight, wider = [], 0, min(limit, size + BODY_SLACK)
        each.append(uid)
        open_round[kind] = (each, weight + size, wider)
    rounds.extend((each, cap) for each, _, cap in open_round.values() if each)
    # numbered in the order their first messages come, as the reading meets them
    return sorted(rounds, key=lambda found: found[0][0])


def _chunks(items: list[int], size: int) -> Iterator[list[int]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class MailboxSync:
    """One run of the algorithm over an open session; yields batches for the engine."""

    def __init__(self, connector: ImapConnector, client: IMAPClient, ctx: SyncContext):
        self.connector = connector
        self.config = connector.config
        self.client = client
        self.ctx = ctx
        self.cursor = copy.deepcopy(ctx.cursor)
        self.folders: dict[str, dict[str, Any]] = self.cursor.setdefault("folders", {})
        caps = set(client.capabilities())
        self.gmail = b"X-GM-EXT-1" in caps
        self.condstore = b"CONDSTORE" in caps and b"ENABLE" in caps
        self.qresync = False
        if b"QRESYNC" in caps and b"ENABLE" in caps and not self.gmail:
            # QRESYNC implies CONDSTORE (RFC 7162 3.2.3); must happen before any SELECT
            self.qresync = b"QRESYNC" in {bytes(c).upper() for c in client.enable("QRESYNC")}
            self.condstore = self.condstore or self.qresync
        if self.condstore and not self.qresync:
            client.enable("CONDSTORE")
        self.done = ctx.progress_done
        self.selected: tuple[str, dict[Any, Any]] | None = None  # folder, EXAMINE's answer

    # --- folders ---------------------------------------------------------------------------
    def folder_names(self) -> list[str]:
        """The folders to sync; ``self.listed`` says whether they are the server's whole list
        (then a folder we hold that is not in it is gone from the server)."""
        self.listed = False
        if self.gmail:
            all_mail = self.client.find_special_folder(SPECIAL_ALL)
            if all_mail:
                return [all_mail]
        if self.config.all_folders:
            self.listed = True
            return [
                name
                for flags, _, name in self.client.list_folders()
                if not {b"\\Noselect", b"\\NonExistent"} & set(flags)
            ]
        return list(self.config.folders)

    def examine(self, name: str) -> dict[Any, Any]:
        """EXAMINE ``name`` (read-only) unless it is the folder already selected. Opening a
        mailbox is what a server pays for (Dovecot reads the folder's index and UID list: it
        grows with the folder), so a sync opens each changed folder once."""
        if self.selected is None or self.selected[0] != name:
            self.selected = None  # a failed EXAMINE leaves no folder selected
            state = self.folders.get(name) or {}
            validity, modseq = state.get("uidvalidity"), state.get("highestmodseq")
            if self.qresync and state.get("initial_done") and validity and modseq:
                answer = self._examine_qresync(name, int(validity), int(modseq))
            else:
                answer = self.client.select_folder(name, readonly=True)
            self.selected = (name, answer)
        return self.selected[1]

    def _examine_qresync(self, name: str, uidvalidity: int, modseq: int) -> dict[Any, Any]:
        """``EXAMINE name (QRESYNC (uidvalidity modseq))`` (RFC 7162 3.2.5): the answer also
        says which UIDs were expunged since ``modseq`` (``VANISHED (EARLIER)``) and sends the
        flags of every message changed since (``FETCH``). imapclient has no call for it, so it
        is sent like its ``select_folder`` sends EXAMINE, through imaplib. Added to the usual
        answer: ``"vanished"`` (UIDs, or None when too many to list) and ``"changed"``."""
        imap = self.client._imap
        imap.untagged_responses = {}  # as imaplib's select(): only this command's answers
        imap.is_readonly = True
        folder = self.client._normalise_folder(name)
        typ, data = imap._simple_command(
            "EXAMINE", folder, f"(QRESYNC ({uidvalidity} {modseq}))".encode()
        )
        if typ != "OK":
            imap.state = "AUTH"
            raise IMAPClientError(f"EXAMINE command error: {typ} {data!r}")
        imap.state = "SELECTED"
        untagged = imap.untagged_responses
        vanished, fetched = untagged.pop("VANISHED", []), untagged.pop("FETCH", [])
        answer: dict[Any, Any] = self.client._process_select_response(untagged)
        # Without HIGHESTMODSEQ (a folder answered with NOMODSEQ) the answer says nothing
        # about what changed: the slower questions are asked instead (RFC 7162 3.1.2.2).
        if int(answer.get(b"UIDVALIDITY", -1)) == uidvalidity and b"HIGHESTMODSEQ" in answer:
            answer["vanished"] = _uid_set(vanished)
            answer["changed"] = parse_fetch_response(fetched, uid_is_key=True) if fetched else {}
        return answer

    def status_of_selected(self, name: str) -> dict[str, int] | None:
        """The STATUS items from an EXAMINE of ``name`` (EXISTS is MESSAGES)."""
        try:
            answer = self.examine(name)
        except IMAPClientError:
            return None  # STATUS says what is wrong (FolderMissing)
        try:
            found = {
                "uidvalidity": int(answer[b"UIDVALIDITY"]),
                "uidnext": int(answer[b"UIDNEXT"]),
                "messages": int(answer[b"EXISTS"]),
            }
        except (KeyError, TypeError, ValueError):
            return None  # a server that leaves one out: ask STATUS instead
        if self.condstore:
            if b"HIGHESTMODSEQ" not in answer:
                return None
            found["highestmodseq"] = int(answer[b"HIGHESTMODSEQ"])
        return found

    def status(self, name: str) -> dict[str, int]:
        items = [b"UIDVALIDITY", b"UIDNEXT", b"MESSAGES"]
        if self.condstore:
            items.append(b"HIGHESTMODSEQ")
        try:
            raw = self.client.folder_status(name, items)
        except imaplib.IMAP4.abort:
            raise  # the session broke: not a missing folder (the error seam says what it is)
        except IMAPClientError as exc:
            raise FolderMissing(
                f"The folder {name!r} does not exist on the mail server. Check the folder list.",
                detail=str(exc)[:300],
            ) from exc
        return {_decode(k).lower(): int(v) for k, v in raw.items()}

    def unchanged(self, state: dict[str, Any] | None, status: dict[str, int]) -> bool:
        """Nothing to do in a folder: same UIDVALIDITY, UIDNEXT, message count and (CONDSTORE)
        HIGHESTMODSEQ. Without a mod-sequence, equal counts say nothing about flags: a folder
        whose flags are re-checked (``flag_window``) is never skipped."""
        if not state or not state.get("initial_done"):
            return False
        if "highestmodseq" not in status and self.config.flag_window:
            return False
        return all(state.get(key) == value for key, value in status.items())

    # --- planning ----------------------------------------------------------------------------
    def plan(self, name: str, status: dict[str, int]) -> _Plan:
        selected = self.examine(name)  # EXAMINE: read-only
        uidvalidity = int(selected[b"UIDVALIDITY"])
        hms = selected.get(b"HIGHESTMODSEQ")
        state = self.folders.get(name)
        if state is not None and state.get("gone"):
            # back after it was retired: read it again as far back as it was read before (a
            # new UIDVALIDITY re-links by content; the same one finds the rows by identity)
            back = {"since": state.get("since")}
            if state.get("uidvalidity") not in (None, uidvalidity):
                back["relink_from"] = state["uidvalidity"]
            state = back
        elif state is not None and state.get("uidvalidity") != uidvalidity:
            self.ctx.log(
                "warning",
                f"{name}: UIDVALIDITY changed from {state.get('uidvalidity')} to {uidvalidity}; "
                "reading the folder again and re-linking the messages already stored.",
            )
            # read again as far back as the first sync did, so every message held can be
            # found and re-linked (a window worked out today would miss the older ones)
            state = {"relink_from": state.get("uidvalidity"), "since": state.get("since")}
        if state is None:
            state = {}
        if "uidvalidity" not in state:
            since = None
            if self.config.history_days:
                since = (timezone.now() - timedelta(days=self.config.history_days)).date()
            state.update(uidvalidity=uidvalidity, last_uid=0, initial_done=False)
            if "since" not in state:
                state["since"] = since.isoformat() if since else None
        self.folders[name] = state
        last_uid = int(state["last_uid"])
        incremental = bool(state.get("initial_done"))
        if not incremental and hms is not None:
            # A first sync may take many slices; whatever changes in the messages it has
            # stored meanwhile is after this point, and the first incremental sync asks for
            # everything since it: the folder's mod-sequence (and, for the count that tells
            # a server without QRESYNC whether anything was expunged, its message count) is
            # the first slice's.
            state.setdefault("start_modseq", int(hms))
        if not incremental and "messages" in status:
            state.setdefault("start_messages", int(status["messages"]))
            state.setdefault("start_uidnext", int(status.get("uidnext", 0)))
        if incremental:
            found = self.client.search(["UID", f"{last_uid + 1}:*"])
        elif state.get("since"):
            found = self.client.search(["SINCE", date.fromisoformat(state["since"])])
        else:
            found = self.client.search(["ALL"])
        # "N:*" always matches the highest UID, even when it is below N: drop what we have.
        new_uids = sorted(uid for uid in found if uid > last_uid)
        return _Plan(
            name=name,
            status=status,
            state=state,
            new_uids=new_uids,
            highestmodseq=int(hms) if hms is not None else None,
            incremental=incremental,
            arrived=len(new_uids),
            carried=int(state.get("fetched", 0)) if incremental else 0,
            vanished=selected.get("vanished") if incremental else None,
            changed=selected.get("changed") if incremental else None,
        )

    # --- fetching ----------------------------------------------------------------------------
    def _fetch_items(self) -> list[bytes]:
        items = [b"FLAGS", b"INTERNALDATE", b"RFC822.SIZE"]
        if self.gmail:
            items += [b"X-GM-MSGID", b"X-GM-LABELS"]
        return items

    def fetch(self, plan: _Plan, uids: list[int]) -> list[Any]:
        """Fetch and parse ``uids`` (see ``fetch_groups``), all at once."""
        return self.parse(plan, self.fetch_raw(uids))

    def parse(self, plan: _Plan, raw: list[_Raw]) -> list[Any]:
        """Records for fetched messages; one that cannot be turned into a record (an answer
        shape nobody expected) becomes an ``Unreadable`` record, not a stopped sync."""
        uidvalidity = int(plan.state["uidvalidity"])
        return read_each(
            raw,
            lambda entry: message_ref(plan.name, uidvalidity, entry[0]),
            lambda entry: self._message(plan, *entry),
        )

    def parsed_groups(self, plan: _Plan) -> Iterator[tuple[list[Any], int]]:
        """Every new message of ``plan`` as records, group by group (see ``fetch_groups``),
        with the highest UID each group accounts for.

        A large fetch (``MAIL_PARSE_HELPER_FROM``) is parsed in a helper process
        (``mail.parse_helper``), one group ahead: group N+1 is fetched and sent to the helper
        before group N is handed to the engine, so the helper parses it while the engine
        stores N. Only the parsing moves; the records are the same either way, and groups
        still reach the engine one at a time, in UID order.
        """
        helper = parse_helper.shared() if parse_helper.wanted(len(plan.new_uids)) else None
        if helper is None:
            for group, upto, _ in self._groups(plan):
                yield self.parse(plan, group), upto
            return
        pending: tuple[list[_Raw], int, str, parse_helper.Ticket | None] | None = None
        try:
            for group, upto, where in self._groups(plan):
                # fetched N+1 while the helper parsed N; now: N's records, N+1 to the helper,
                # and N to the engine to store while the helper parses N+1
                records = self._records(plan, helper, *pending) if pending else None
                helper = parse_helper.shared() if helper else None  # None once it stopped
                # (a message without content is not parsed: it becomes a skipped item)
                items = [(raw or b"", cut) for _, _, raw, cut in group]
                ticket = parse_helper.submit(helper, items)
                del items
                pending = (group, upto, where, ticket)
                del group
                if records is not None:
                    yield records
                del records
            if pending is not None:
                yield self._records(plan, helper, *pending)
        finally:
            if helper is not None and helper.outstanding is not None:
                # stopped early (the slice ended, or an error): take back the batch left with
                # the helper, so it holds no parsed mail until this worker's next large fetch
                parse_helper.collect(helper, helper.outstanding, helper.outstanding.size)

    def _groups(self, plan: _Plan) -> Iterator[tuple[list[_Raw], int, str]]:
        """``fetch_groups`` over the plan's UIDs in chunks of ``batch_size``, each group with
        where it was read (for messages about a failure while it is stored)."""
        for chunk in _chunks(plan.new_uids, self.config.batch_size):
            where = f"{plan.name} UIDs {chunk[0]} to {chunk[-1]}"
            self.ctx.working_on = where  # while fetching
            for group, upto in self.fetch_groups(chunk):
                yield group, upto, where

    def _records(
        self,
        plan: _Plan,
        helper: parse_helper.ParseHelper | None,
        group: list[_Raw],
        upto: int,
        where: str,
        ticket: parse_helper.Ticket | None,
    ) -> tuple[list[Any], int]:
        self.ctx.working_on = where  # what the engine is about to store
        if ticket is None:
            return self.parse(plan, group), upto
        parsed = parse_helper.collect(helper, ticket, len(group))
        uidvalidity = int(plan.state["uidvalidity"])

        def record(pair: tuple[_Raw, ParsedMessage | None]) -> FetchedMessage:
            (uid, meta, raw, cut_at), answer = pair
            return self._message(plan, uid, meta, raw, cut_at, parsed=answer)

        return read_each(
            zip(group, parsed, strict=True),
            lambda pair: message_ref(plan.name, uidvalidity, pair[0][0]),
            record,
        ), upto

    def fetch_raw(self, uids: list[int]) -> list[_Raw]:
        return [message for group, _ in self.fetch_groups(uids) for message in group]

    def fetch_groups(self, uids: list[int]) -> Iterator[tuple[list[_Raw], int]]:
        """Fetch ``uids`` with bounded memory; network only. Yields groups of messages in UID
        order, each holding at most about ``BATCH_BYTES`` (a larger message is a group of its
        own), with the highest UID the group accounts for (expunged UIDs are skipped).

        For up to ``META_UIDS`` messages at a time, one FETCH asks for the metadata (flags,
        date, RFC822.SIZE: a short answer), and the sizes then plan the body FETCHes
        (``_body_rounds``): as many messages per FETCH as fit ``FETCH_BYTES``, each read up to
        a little more than the largest size announced in its FETCH. So every message crosses
        the wire once, in about as many round trips as its bytes need (asking for a first
        slice of every message and again for the larger ones sent their first bytes twice and
        cost a round trip each: on a server 30 ms away, 10 s per 10,000 messages of ordinary
        mail). A single message is asked for whole with its metadata.

        A body longer than its FETCH asked for (the server announced a size too small) is
        fetched again on its own, up to ``MAIL_MAX_MESSAGE_BYTES``; one longer than that is
        kept from its first bytes and marked truncated. A message whose body does not come
        even then is handed on without one (raw None): it becomes a skipped item, read again
        later, never a message passed over in silence.
        """
        limit = settings.MAIL_MAX_MESSAGE_BYTES
        group: list[_Raw] = []
        weight = 0
        upto = 0
        for chunk in _chunks(uids, META_UIDS):
            # one message (new mail, as IDLE announces it): its body in the same round trip
            single = len(chunk) == 1
            items = [*self._fetch_items(), *([_body_item(limit)] if single else [])]
            meta = fetchparse.fetch(self.client, chunk, items)
            present = [uid for uid in chunk if uid in meta]
            rounds = [(chunk, limit)] if single else _body_rounds(present, meta)
            round_of = {uid: number for number, (each, _) in enumerate(rounds) for uid in each}
            left = {number: len(each) for number, (each, _) in enumerate(rounds)}
            # the answers of the rounds being read: at most one of each size class at a time
            bodies: dict[int, dict[int, Any]] = {0: dict(meta)} if single else {}
            for uid in chunk:
                upto = uid
                data = meta.pop(uid, None)
                if data is None:
                    continue  # expunged between SEARCH and FETCH
                number = round_of[uid]
                each, cap = rounds[number]
                if number not in bodies:
                    bodies[number] = fetchparse.fetch(self.client, each, [_body_item(cap)])
                raw = _body(bodies[number].pop(uid, None))
                left[number] -= 1
                if not left[number]:
                    del bodies[number]
                if raw is None or (len(raw) > cap and cap < limit):
                    # no body in the answer, or more than the size announced: on its own
                    lone = fetchparse.fetch(self.client, [uid], [_body_item(limit)])
                    raw = _body(lone.get(uid))
                    del lone
                size = _size(data)
                cut_at = None
                if raw is not None and len(raw) > limit:
                    cut_at, raw = max(size, len(raw)), raw[:limit]
                length = len(raw) if raw is not None else 0
                if group and weight + length > BATCH_BYTES:
                    yield group, group[-1][0]
                    group, weight = [], 0
                group.append((uid, data, raw, cut_at))
                weight += length
                if weight >= BATCH_BYTES:
                    yield group, uid
                    group, weight = [], 0
            del bodies, meta
        if group or uids:
            yield group, upto

    def _message(
        self,
        plan: _Plan,
        uid: int,
        meta: dict[bytes, Any],
        raw: bytes | None,
        cut_at: int | None,
        parsed: ParsedMessage | None = None,
    ) -> FetchedMessage:
        """``parsed``: what the parse helper made of ``raw``, if it did."""
        if raw is None:
            raise NoBodySent(
                "The server listed this message but sent no content for it; it is read "
                "again at the next sync."
            )
        labels = [_decode(label) for label in meta.get(b"X-GM-LABELS", ())]
        return FetchedMessage(
            folder=plan.name,
            uidvalidity=int(plan.state["uidvalidity"]),
            uid=uid,
            parsed=parsed if parsed is not None else parse_message(raw, cut_at=cut_at),
            size=_size(meta) or len(raw),
            received_at=meta.get(b"INTERNALDATE"),
            flags=_flags(meta.get(b"FLAGS")),
            labels=sorted(labels),
            remote_id=str(meta[b"X-GM-MSGID"]) if b"X-GM-MSGID" in meta else "",
            raw=raw,
        )

    # --- changes to what we hold ---------------------------------------------------------------
    def flag_changes(self, plan: _Plan, held_up_to: int) -> list[FlagChange]:
        state = plan.state
        old_hms = state.get("highestmodseq")
        if plan.changed is not None:  # QRESYNC: the EXAMINE said which messages changed
            return [
                FlagChange(
                    folder=plan.name,
                    uidvalidity=int(state["uidvalidity"]),
                    uid=uid,
                    flags=_flags(data.get(b"FLAGS")),
                    labels=None,
                )
                for uid, data in sorted(plan.changed.items())
                if isinstance(uid, int) and uid <= held_up_to and b"FLAGS" in data
            ]
        if self.condstore and plan.highestmodseq is not None and old_hms is not None:
            if plan.highestmodseq <= old_hms:
                return []
            uids = [u for u in self.client.search(["MODSEQ", str(old_hms + 1)]) if u <= held_up_to]
        elif self.config.flag_window:
            held = sorted(
                uid
                for uid in known_uids(
                    self.connector.connection, plan.name, int(state["uidvalidity"])
                )
                if uid <= held_up_to  # mail fetched in this run has fresh flags already
            )
            uids = held[-self.config.flag_window :]
        else:
            return []
        changes: list[FlagChange] = []
        items = [b"FLAGS"] + ([b"X-GM-LABELS"] if self.gmail else [])
        for chunk in _chunks(uids, 1000):
            # answers without a UID (unsolicited flag changes) are left out, not filed by
            # their sequence number under another message (fetchparse.parse_fetch)
            for uid, data in fetchparse.fetch(self.client, chunk, items, strict=False).items():
                labels = data.get(b"X-GM-LABELS")
                changes.append(
                    FlagChange(
                        folder=plan.name,
                        uidvalidity=int(state["uidvalidity"]),
                        uid=uid,
                        flags=_flags(data.get(b"FLAGS")),
                        labels=sorted(_decode(x) for x in labels) if labels is not None else None,
                    )
                )
        return changes

    def expunged(self, plan: _Plan) -> list[tuple[str, int, int]]:
        state = plan.state
        if plan.vanished is not None:  # QRESYNC: the EXAMINE said which UIDs were expunged
            uidvalidity = int(state["uidvalidity"])
            return [(plan.name, uidvalidity, uid) for uid in plan.vanished]
        expected = int(state.get("messages", 0)) + plan.carried + plan.arrived
        if plan.status.get("messages") == expected:
            return []  # nothing disappeared: the count adds up
        present = set(self.client.search(["ALL"]))
        uidvalidity = int(state["uidvalidity"])
        held = known_uids(self.connector.connection, plan.name, uidvalidity)
        return [(plan.name, uidvalidity, uid) for uid in sorted(held - present)]

    def accounted(self, plan: _Plan) -> int | None:
        """The folder's message count as of this sync, for the next one's check ("the count
        adds up: nothing was expunged"): the count the server gave — at the start of a first
        sync, which may take many slices — plus the messages that arrived after it and were
        fetched all the same (their UIDs are at or above that moment's UIDNEXT). Counting
        only the server's figure would let a later expunge cancel such an arrival out."""
        state = plan.state
        if "start_messages" in state:
            count, uidnext = int(state.pop("start_messages")), int(state.pop("start_uidnext", 0))
            late = count_held_from(
                self.connector.connection, plan.name, int(state["uidvalidity"]), uidnext
            )
            return count + late
        if "messages" not in plan.status:
            return None
        then = plan.status.get("uidnext")
        late = sum(1 for uid in plan.new_uids if then is not None and uid >= then)
        return int(plan.status["messages"]) + late

    # --- skipped items ------------------------------------------------------------------------
    def retry_skipped(self) -> Iterator[Batch]:
        """Read the skipped messages again (before anything new), folder by folder. One whose
        folder has a new UIDVALIDITY, or that was expunged, is gone: the folder's resync takes
        care of the rest."""
        wanted: dict[tuple[str, int], list[tuple[int, ItemRef]]] = {}
        for ref in self.ctx.retry:
            found = parse_ref(ref.key)
            if found is not None:
                folder, uidvalidity, uid = found
                wanted.setdefault((folder, uidvalidity), []).append((uid, ref))
        for (folder, uidvalidity), entries in wanted.items():
            self.ctx.working_on = f"{folder} (skipped messages read again)"
            try:
                selected = self.examine(folder)
            except IMAPClientError:
                yield Batch(records=[NoLongerThere(ref) for _, ref in entries])
                continue
            if int(selected[b"UIDVALIDITY"]) != uidvalidity:
                yield Batch(records=[NoLongerThere(ref) for _, ref in entries])
                continue
            plan = _Plan(folder, {}, {"uidvalidity": uidvalidity}, [], None, True)
            raw = self.fetch_raw(sorted(uid for uid, _ in entries))
            present = {entry[0] for entry in raw}
            records = self.parse(plan, raw)
            records += [NoLongerThere(ref) for uid, ref in entries if uid not in present]
            yield Batch(records=records, note=f"{folder}: {len(raw)} skipped message(s) read again")

    # --- the run -------------------------------------------------------------------------------
    def run(self) -> Iterator[Batch]:
        if self.ctx.retry:
            yield from self.retry_skipped()
        changed = []
        missing: list[str] = []
        names = self.folder_names()
        if self.listed:
            yield from self.retire_gone_folders(names)
        for name in names:
            # One folder (the common case): its EXAMINE answers what STATUS would, so the
            # folder is opened once whether or not anything changed. Several: STATUS each,
            # then open only the changed ones.
            try:
                status = (len(names) == 1 and self.status_of_selected(name)) or self.status(name)
            except FolderMissing:
                if not self.listed:  # a listed one deleted meanwhile: gone at the next LIST
                    missing.append(name)
                continue
            if not self.unchanged(self.folders.get(name), status):
                changed.append((name, status))
        plans = [self.plan(name, status) for name, status in changed]
        total = self.done + sum(len(p.new_uids) for p in plans)
        for index, plan in enumerate(plans):
            last_folder = index == len(plans) - 1 and not missing
            yield from self.run_folder(plan, total, last_folder)
        if missing:
            # the other folders are synced (and committed); the connection still needs a
            # corrected folder list, and says so
            others = " The other folders were synced." if len(missing) < len(names) else ""
            quoted = ", ".join(repr(name) for name in missing)
            raise FolderMissing(
                f"The folder {quoted} does not exist on the mail server.{others} "
                "Check the folder list.",
            )

    def retire_gone_folders(self, names: list[str]) -> Iterator[Batch]:
        """Folders we hold that the server no longer lists (deleted, or renamed: the new name
        is read as a new folder): their messages are marked deleted, kept here. What the
        folder was read from is kept (a stub marked ``gone``): should it come back (a rename
        undone, a LIST that left it out once), it is read again as far back as before, so
        its messages are found again and un-deleted, not duplicated and not lost."""
        listed = set(names)
        gone = [
            held for held, state in self.folders.items()
            if held not in listed and not state.get("gone")
        ]  # fmt: skip
        for name in gone:
            state = self.folders[name]
            self.folders[name] = {
                "gone": True,
                "uidvalidity": state.get("uidvalidity"),
                "since": state.get("since"),
            }
            records = []
            if state.get("uidvalidity") is not None:
                records.append(RetireFolder(name, int(state["uidvalidity"])))
            yield Batch(
                records=records,
                cursor=copy.deepcopy(self.cursor),
                note=f"{name}: no longer on the mail server; its messages are marked deleted "
                "(they are kept here)",
            )

    def run_folder(self, plan: _Plan, total: int, last_folder: bool) -> Iterator[Batch]:
        state = plan.state
        held_up_to = int(state["last_uid"])
        self.examine(plan.name)
        counted = 0
        for messages, upto in self.parsed_groups(plan):
            state["last_uid"] = upto
            done_here = bisect.bisect_right(plan.new_uids, upto) - counted
            counted += done_here
            self.done += done_here
            if plan.incremental:
                state["fetched"] = int(state.get("fetched", 0)) + done_here
            defects = sum(1 for m in messages if isinstance(m, FetchedMessage) and m.parsed.defects)
            yield Batch(
                records=messages,
                cursor=copy.deepcopy(self.cursor),
                done=self.done,
                total=total,
                progress=f"{plan.name}: up to UID {upto:,}",
                note=f"{plan.name}: {defects} message(s) up to UID {upto} had defects "
                "(stored as well as possible)"
                if defects
                else "",
            )
            del messages
        records: list[Any] = []
        deleted: list[tuple[str, int, int]] = []
        if plan.incremental:
            records.extend(self.flag_changes(plan, held_up_to))
            deleted = self.expunged(plan)
        relink_from = state.pop("relink_from", None)
        if relink_from is not None:
            records.append(RetireFolder(plan.name, int(relink_from), state.get("since")))
        if not plan.incremental and state.get("since") and plan.status.get("uidnext"):
            # A first sync within a window read every message of the window below UIDNEXT
            # (its SEARCH SINCE came after the count); the rest there is older mail, which
            # the next sync must not take for new mail because its UID is higher.
            state["last_uid"] = max(int(state["last_uid"]), int(plan.status["uidnext"]) - 1)
        state.update(
            uidnext=plan.status.get("uidnext"),
            messages=self.accounted(plan),
            initial_done=True,
        )
        state.pop("fetched", None)
        start = state.pop("start_modseq", None)
        modseq = start if start is not None else plan.highestmodseq
        if modseq is None:
            state.pop("highestmodseq", None)  # never ask "changed since" an old answer's value
        else:
            state["highestmodseq"] = modseq
        yield Batch(
            records=records,
            deleted=deleted,
            cursor=copy.deepcopy(self.cursor),
            done=self.done,
            total=total,
            final=last_folder,
        )
