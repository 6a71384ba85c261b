"""Reading the answer to the initial sync's FETCH quickly, with imapclient as the judge.

imapclient reads a FETCH answer with a general IMAP lexer written in Python, one character at
a time; for a mailbox's worth of messages that is about a fifth of the whole initial sync (the
message texts come as literals, which imaplib has already cut out, but every line around them
goes through the lexer). The answers to the sync's own FETCHes have two plain shapes, the
metadata::

    * 12 FETCH (UID 5031 MODSEQ (7) FLAGS (\\Seen $Forwarded) INTERNALDATE
      "24-Feb-2011 19:30:36 +0000" RFC822.SIZE 5870)

and the bodies (any of the items above may come before the body, asked for or not)::

    * 12 FETCH (UID 5031 MODSEQ (7) BODY[]<0> {5870}
    <5870 bytes>
    )

``parse_fetch`` reads these shapes with one regular expression per message and produces exactly
what imapclient's ``parse_fetch_response`` produces (the same keys, upper-cased, the same
values and types; ``tests/integrations/imap/test_fetchparse.py`` checks this on generated
answers). Anything else — another item, a quoted or NIL body, a flag that is not a plain atom,
an unsolicited FETCH without a UID, a line split differently — makes it hand the *whole* answer
to imapclient, so an unusual server costs speed, never correctness.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from imapclient import IMAPClient
from imapclient.exceptions import ProtocolError
from imapclient.response_parser import _convert_INTERNALDATE, parse_fetch_response

# A number as imapclient's lexer turns it into an int: no leading zero (it keeps "0123" as
# bytes). UIDs are turned into ints whatever they look like. Longer than 18 digits: left to
# imapclient (Python refuses to convert over 4,300 digits, and imapclient says so its own way).
# The body's name must follow a space: "UID 5BODY[]" is one word to the lexer.
_NUMBER = rb"(0|[1-9][0-9]{0,17})"
# one item of the head, then a space or the end (the body's name and literal come last)
_ITEM = re.compile(
    rb"(?:UID ([0-9]{1,18})|RFC822\.SIZE " + _NUMBER + rb"|MODSEQ \(" + _NUMBER + rb"\)"
    rb"|FLAGS \(([^\x00-\x20()\"{}\[\]%*]+(?: [^\x00-\x20()\"{}\[\]%*]+)*)?\)"
    rb"|INTERNALDATE \"([0-9A-Za-z :+-]*)\")(?: |$)",
    re.IGNORECASE,
)
# an answer without a literal (the metadata FETCH): ``12 (UID 5031 FLAGS (\\Seen) ...)``
_LINE = re.compile(rb"([0-9]{1,18}) \((.*)\)", re.DOTALL)
_HEAD = re.compile(
    rb"([0-9]{1,18}) \((?:(.*?) )?(BODY\[[0-9A-Z.]*\](?:<[0-9]{1,18}>)?) \{([0-9]{1,18})\}",
    re.IGNORECASE,
)


class _Unusual(Exception):
    """This answer is not of the plain shape: imapclient reads it."""


def _message(
    head: bytes, literal: bytes | None, normalise_times: bool
) -> tuple[int, dict[bytes, Any]]:
    """One message's FETCH data: ``head`` and its body ``literal``, or (``literal`` None) a
    line of items only."""
    if literal is None:
        match = _LINE.fullmatch(head)
        if match is None:
            raise _Unusual
        items = match.group(2)
    else:
        match = _HEAD.fullmatch(head)
        if match is None or int(match.group(4)) != len(literal):
            raise _Unusual
        items = match.group(2) or b""
    data: dict[bytes, Any] = {b"SEQ": int(match.group(1))}
    uid = None
    position = 0
    while position < len(items):
        item = _ITEM.match(items, position)
        if item is None:
            raise _Unusual
        number, size, modseq, flags, date = item.groups()
        if number is not None:
            uid = int(number)
        elif size is not None:
            data[b"RFC822.SIZE"] = int(size)
        elif modseq is not None:
            data[b"MODSEQ"] = (int(modseq),)
        elif date is not None:
            data[b"INTERNALDATE"] = _convert_INTERNALDATE(date, normalise_times)
        else:
            names = tuple(flags.split(b" ")) if flags else ()
            # the lexer would turn these into None or a number
            if any(name == b"NIL" or name.isdigit() for name in names):
                raise _Unusual
            data[b"FLAGS"] = names
        position = item.end()
    if uid is None:
        raise _Unusual
    if literal is not None:
        data[match.group(3).upper()] = literal
    return uid, data


def fast_parse(data: Sequence[Any], normalise_times: bool = True) -> dict[int, Any] | None:
    """The answer read by the fast path, or None when it is not of the plain shape."""
    parsed: dict[int, dict[bytes, Any]] = {}
    try:
        index = 0
        while index < len(data):
            part = data[index]
            if isinstance(part, bytes):  # items only
                uid, values = _message(part, None, normalise_times)
                index += 1
            else:
                rest = data[index + 1] if index + 1 < len(data) else None
                if not (isinstance(part, tuple) and len(part) == 2 and rest == b")"):
                    raise _Unusual
                head, literal = part
                if not (isinstance(head, bytes) and isinstance(literal, bytes)):
                    raise _Unusual
                uid, values = _message(head, literal, normalise_times)
                index += 2
            if uid in parsed:
                raise _Unusual  # imapclient merges repeats; leave that to it
            parsed[uid] = values
    except _Unusual:
        return None
    return parsed


def parse_fetch(data: Sequence[Any], normalise_times: bool = True) -> dict[int, Any]:
    """What ``imapclient.response_parser.parse_fetch_response(data, normalise_times, True)``
    returns for the raw FETCH lines ``data`` as imaplib collected them — except for answers
    that carry no UID, which are left out (counted in ``left_out`` of the result).

    imapclient keys such an answer by its sequence number, so it would be taken for the
    message whose UID happens to be that number: an unsolicited flag change (``* 5 FETCH
    (FLAGS (\\Seen))``, which a server without QRESYNC may send in the middle of our FETCH,
    RFC 3501 §7.4.2) gave its flags to UID 5, and a server that leaves UID out of a UID FETCH
    answer (against §6.4.8) had its messages filed under the wrong UIDs. So each answer is
    read on its own (by sequence number only within itself: numbers can shift in the middle
    of a UID FETCH, §7.4.1) and filed by the UID it carries; answers for the same UID merge,
    in order, as imapclient's do."""
    parsed = fast_parse(data, normalise_times)
    if parsed is not None:
        return parsed
    found = Answers()
    for response in _responses(data):
        for values in parse_fetch_response(response, normalise_times, False).values():
            uid = values.pop(b"UID", None)
            if uid is None:
                found.left_out += 1
            else:
                found.setdefault(uid, {}).update(values)
    return found


class Answers(dict[int, Any]):
    """``parse_fetch``'s reading: by UID, and how many answers came without one."""

    left_out = 0


def _responses(data: Sequence[Any]) -> list[list[Any]]:
    """imaplib's FETCH lines cut into one list per answer. An answer starts with its sequence
    number (``b"5 (FLAGS ...)"``, or a literal's head ``b"5 (UID 9 BODY[] {n}"``); what
    continues one after a literal starts with a space or ``)`` (RFC 3501 §9: a literal is
    followed by SP or ")"), never with a digit."""
    responses: list[list[Any]] = []
    for part in data:
        head = part[0] if isinstance(part, tuple) and part else part
        if not responses or (isinstance(head, bytes) and head[:1].isdigit()):
            responses.append([part])
        else:
            responses[-1].append(part)
    return responses


def uid_set(uids: Sequence[int]) -> str:
    """``uids`` as an IMAP sequence set, runs of consecutive UIDs as ranges (``1:1000,1002``):
    a thousand UIDs need not make a line some servers refuse as too long. A range holds only
    UIDs asked for (an expunged one in it is simply not answered)."""
    parts: list[str] = []
    start = previous = None
    for uid in uids:
        if previous is not None and uid == previous + 1:
            previous = uid
            continue
        if start is not None:
            parts.append(f"{start}:{previous}" if previous != start else str(start))
        start = previous = uid
    if start is not None:
        parts.append(f"{start}:{previous}" if previous != start else str(start))
    return ",".join(parts)


def fetch(
    client: IMAPClient, uids: Sequence[int], items: Sequence[bytes], *, strict: bool = True
) -> dict[int, Any]:
    """``client.fetch(uids, items)`` for a client in UID mode, with UIDs as ints and items as
    bytes — the sync's own calls; answers for other messages dropped, read by ``parse_fetch``,
    sent the way imapclient's own ``fetch`` sends them (no modifiers). ``strict``: messages
    asked for that are missing where answers came without a UID are an error (see below);
    otherwise they are simply not in the result (flag updates: nothing is lost by that)."""
    if not client.use_uid:
        raise ValueError("fetchparse.fetch needs a client in UID mode")
    if not uids:
        return {}
    imap = client._imap
    tag = imap._command("UID", "FETCH", uid_set(uids), b"(" + b" ".join(items).upper() + b")")
    typ, data = imap._command_complete("FETCH", tag)
    client._checkok("fetch", typ, data)
    typ, data = imap._untagged_response(typ, data, "FETCH")
    response = parse_fetch(data, client.normalise_times)
    answered = {uid: response[uid] for uid in uids if uid in response}
    left_out = getattr(response, "left_out", 0)
    if strict and left_out and len(answered) < len(uids):
        # messages asked for are missing and answers came without their UIDs: most likely
        # they are those (a server against RFC 3501 6.4.8). Not taken for expunged messages,
        # which the sync would pass over: an error, so the fetch is tried again later.
        raise ProtocolError(
            f"The server answered a UID FETCH without the UIDs ({left_out} "
            f"message(s)); {len(uids) - len(answered)} of the {len(uids)} asked for are "
            "missing from the answer (RFC 3501 6.4.8: the UID must be in every answer)."
        )
    return answered
