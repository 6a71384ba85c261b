"""The fast reading of FETCH answers (integrations/imap/fetchparse.py) against imapclient's own
parser: on generated answers — plain ones and every kind of oddity — both give the same result
(or both refuse), and on the real Dovecot the fast path is the one taken."""

from __future__ import annotations

import random
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from imapclient.exceptions import ProtocolError
from imapclient.response_parser import parse_fetch_response

from integrations.imap import fetchparse
from tests.support.mailfactory import MALFORMED, realistic

PROFILE = settings(max_examples=400, deadline=None, derandomize=True)

plain_flag = st.sampled_from([b"\\Seen", b"\\Answered", b"\\Flagged", b"$Forwarded", b"Junk"])
odd_flag = st.sampled_from([b"NIL", b"123", b"0", b"0123", b"\\*", b'"q"', b"a]b", b"\xe9t\xe9"])
date = st.sampled_from(
    [b'"24-Feb-2011 19:30:36 +0000"', b'" 4-Mar-2024 01:02:03 -0700"', b'"not a date"', b"NIL"]
)
number = st.integers(0, 10**9).map(lambda n: str(n).encode())
odd_number = st.sampled_from([b"0123", b"00", b"-1", b"1.5"])


@st.composite
def message(draw: Any) -> tuple[Any, ...]:
    """One message of a FETCH answer as imaplib hands it over: (head, literal) and b")", or
    a line of items only."""
    odd = draw(st.booleans())
    body = draw(st.binary(max_size=60))
    flags = draw(st.lists(st.one_of(plain_flag, odd_flag) if odd else plain_flag, max_size=4))
    items = [
        b"UID " + draw(odd_number if odd and draw(st.booleans()) else number),
        b"FLAGS (" + b" ".join(flags) + b")",
        b"INTERNALDATE " + draw(date),
        b"RFC822.SIZE " + draw(odd_number if odd and draw(st.booleans()) else number),
        b"MODSEQ (" + draw(number) + b")",
    ]
    if odd:
        items += draw(
            st.lists(st.sampled_from([b"X-GM-LABELS (\\Inbox)", b"UID 7", b"FLAGS ()"]), max_size=2)
        )
    items = draw(st.permutations(items))
    items = draw(st.lists(st.sampled_from(items), min_size=0, max_size=len(items), unique=True))
    if draw(st.booleans()):
        items = [item.lower() for item in items]
    if draw(st.booleans()):  # items only (the metadata FETCH)
        tail = draw(st.sampled_from([b")", b")", b"", b" )"])) if odd else b")"
        return (draw(number) + b" (" + b" ".join(items) + tail,)
    name = draw(st.sampled_from([b"BODY[]<0>", b"BODY[]", b"body[]<0>", b"BODY[TEXT]"]))
    length = len(body) + (draw(st.sampled_from([0, 1, -1])) if odd and body else 0)
    glue = draw(st.sampled_from([b" ", b" ", b" ", b""])) if odd else b" "
    head = draw(number) + b" (" + b" ".join(items) + glue + name + b" {%d}" % length
    rest = draw(st.sampled_from([b")", b")", b" UID 9)"])) if odd else b")"
    return (head, body), rest


def imapclient_reads(data: list[Any]) -> Any:
    try:
        return dict(parse_fetch_response(list(data), True, True))
    except (ProtocolError, ValueError) as error:
        return type(error)


def ours(data: list[Any]) -> Any:
    try:
        return fetchparse.parse_fetch(data)
    except (ProtocolError, ValueError) as error:
        return type(error)


@PROFILE
@given(st.lists(message(), max_size=5))
def test_reads_every_answer_as_imapclient_does(messages: list[tuple[Any, bytes]]) -> None:
    data = [part for pair in messages for part in pair]
    reads_as_imapclient(data)


def reads_as_imapclient(data: list[Any]) -> None:
    """``ours`` reads ``data`` as imapclient does, except that an answer without a UID is left
    out instead of being keyed by its sequence number."""
    theirs = imapclient_reads(data)
    responses = [] if isinstance(theirs, type) else fetchparse._responses(data)
    each = [dict(parse_fetch_response(r, True, False)) for r in responses]
    if all(b"UID" in v for answer in each for v in answer.values()):
        assert ours(data) == theirs
    else:  # answers without a UID left out; the others as imapclient reads them alone
        expected: dict[int, dict[bytes, Any]] = {}
        for answer in each:
            for values in answer.values():
                if b"UID" in values:
                    expected.setdefault(values.pop(b"UID"), {}).update(values)
        assert ours(data) == expected


def test_an_answer_without_a_uid_is_not_taken_for_another_message() -> None:
    """An unsolicited flag change for the message at sequence number 5 arrives in the middle
    of the answer for UID 5 (another message): UID 5 keeps its own flags. Before, imapclient's
    reading keyed it by the number and gave UID 5 the other message's flags."""
    data = [
        (b"1 (UID 5 FLAGS () RFC822.SIZE 3 BODY[]<0> {3}", b"abc"),
        b")",
        b"5 (FLAGS (\\Seen))",
    ]
    assert fetchparse.fast_parse(data) is None  # the general reading's case
    assert imapclient_reads(data)[5][b"FLAGS"] == (b"\\Seen",)  # what it would have stored
    assert fetchparse.parse_fetch(data) == {
        5: {b"SEQ": 1, b"FLAGS": (), b"RFC822.SIZE": 3, b"BODY[]<0>": b"abc"}
    }
    # the UID-less change shares its sequence number with another message's answer: each
    # answer is read on its own, so neither is given the other's flags
    shared = [b"3 (UID 5 FLAGS ())", b"5 (FLAGS (\\Seen))", b"5 (UID 1234 FLAGS ())"]
    assert fetchparse.parse_fetch(shared) == {
        5: {b"SEQ": 3, b"FLAGS": ()},
        1234: {b"SEQ": 5, b"FLAGS": ()},
    }
    # numbers shift when a message is expunged in the middle of a UID FETCH (§7.4.1): two
    # answers under one number are still two messages
    shifted = [b"3 (UID 10 FLAGS (\\Seen))", b"3 (UID 11 FLAGS ())"]
    assert fetchparse.parse_fetch(shifted) == {
        10: {b"SEQ": 3, b"FLAGS": (b"\\Seen",)},
        11: {b"SEQ": 3, b"FLAGS": ()},
    }


@PROFILE
@given(st.lists(st.integers(1, 60), max_size=30))
def test_uid_sets_name_exactly_the_uids(uids: list[int]) -> None:
    named: list[int] = []
    for part in filter(None, fetchparse.uid_set(uids).split(",")):
        low, _, high = part.partition(":")
        named.extend(range(int(low), int(high or low) + 1))
    assert named == uids
    assert fetchparse.uid_set([1, 2, 3, 5, 7, 8]) == "1:3,5,7:8"


def test_plain_answers_take_the_fast_path() -> None:
    data = [
        (b'1 (UID 41 MODSEQ (9) FLAGS (\\Seen $Forwarded) INTERNALDATE "24-Feb-2011 19:30:36 '
         b'+0000" RFC822.SIZE 5 BODY[]<0> {5}', b"Hello"),
        b")",
        (b"2 (UID 42 FLAGS () RFC822.SIZE 3 BODY[]<0> {3}", b"abc"),
        b")",
    ]  # fmt: skip
    fast = fetchparse.fast_parse(data)
    assert fast is not None
    assert fast == dict(parse_fetch_response(data, True, True))
    assert fast[41][b"FLAGS"] == (b"\\Seen", b"$Forwarded")
    assert fast[42][b"BODY[]<0>"] == b"abc"


def test_answers_without_a_body_take_the_fast_path() -> None:
    """The metadata FETCH's answer, and an unsolicited flag update among bodies."""
    data = [
        b'1 (UID 41 MODSEQ (9) FLAGS (\\Seen) INTERNALDATE "24-Feb-2011 19:30:36 +0000" '
        b"RFC822.SIZE 5)",
        b"2 (UID 42 FLAGS () RFC822.SIZE 70000)",
        (b"3 (UID 43 BODY[]<0> {3}", b"abc"),
        b")",
        b"4 (FLAGS (\\Flagged) UID 44)",
    ]
    fast = fetchparse.fast_parse(data)
    assert fast is not None
    assert fast == dict(parse_fetch_response(data, True, True))
    assert fast[42] == {b"SEQ": 2, b"FLAGS": (), b"RFC822.SIZE": 70000}


@pytest.mark.parametrize(
    "odd",
    [
        [(b"1 (UID 4 FLAGS (NIL) BODY[]<0> {1}", b"x"), b")"],  # NIL is None to the lexer
        [(b"1 (UID 4 RFC822.SIZE 012 BODY[]<0> {1}", b"x"), b")"],  # kept as bytes there
        [(b"1 (FLAGS () BODY[]<0> {1}", b"x"), b")"],  # no UID: keyed by sequence number
        [(b"1 (UID 4 BODY[]<0> {2}", b"x"), b")"],  # literal shorter than announced
        [b"1 (UID 4 FLAGS (\\Seen)", (b"2 (UID 5 BODY[] {1}", b"x"), b")"],  # cut short
        [(b"1 (UID 4 BODY[] {1}", b"x"), b")", b"2 (UID 4 FLAGS (\\Seen))"],  # a repeat
        [None],  # nothing matched
        [(b"1 (UID 5BODY[] {3}", b"abc"), b")"],  # one word to the lexer
        [(b"1 (RFC822.SIZE 3body[]<0> {3}", b"abc"), b")"],
        [(b"1 (UID " + b"1" * 5000 + b" BODY[] {3}", b"abc"), b")"],  # past int()'s limit
    ],
)
def test_anything_else_is_left_to_imapclient(odd: list[Any]) -> None:
    assert fetchparse.fast_parse(odd) is None
    reads_as_imapclient(odd)


def test_real_dovecot_answers_take_the_fast_path(dovecot: Any, imap_user: str) -> None:
    """What the initial sync asks Dovecot for (with QRESYNC enabled, as the sync does): the
    metadata, then the bodies, malformed messages included. Read the same both ways, and
    without the fallback."""
    rng = random.Random(3)
    dovecot.deliver(imap_user, [realistic(i, rng) for i in range(30)], flags=(b"\\Seen",))
    dovecot.drop(imap_user, list(MALFORMED.values())[:10])
    client = dovecot.client(imap_user)
    try:
        client.enable("QRESYNC")
        client.select_folder("INBOX", readonly=True)
        uids = client.search(["ALL"])
        for items in (
            [b"FLAGS", b"INTERNALDATE", b"RFC822.SIZE"],
            [b"BODY.PEEK[]<0.25000000>"],
            [b"FLAGS", b"INTERNALDATE", b"RFC822.SIZE", b"BODY.PEEK[]<0.64000>"],
        ):
            imap = client._imap
            tag = imap._command(
                "UID", "FETCH", ",".join(map(str, uids)), b"(" + b" ".join(items) + b")"
            )
            typ, data = imap._command_complete("FETCH", tag)
            _, data = imap._untagged_response(typ, data, "FETCH")
            fast = fetchparse.fast_parse(data)
            assert fast is not None, f"Dovecot's answer to {items} fell back to imapclient"
            assert fast == dict(parse_fetch_response(data, True, True))
            assert fetchparse.fetch(client, uids, items) == client.fetch(uids, items)
            assert len(fast) == len(uids) == 40
    finally:
        client.logout()
