"""Property-based tests (Hypothesis) of header and MIME parsing: arbitrary bytes, arbitrary
header values, mutated real messages. Whatever comes in: no exception, every text storable
(no NUL, no lone surrogate), and — through the store — the raw bytes kept and the size right."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from mail import headers as h
from mail.models import MailMessage, MailSource
from mail.parsing import ParsedMessage, parse_message
from mail.store import FetchedMessage, upsert_messages
from tests.mail.hostile import corpus
from tests.support.mailfactory import MALFORMED

SEEDS = [c.raw for c in corpus() if len(c.raw) < 50_000] + [
    m for m in MALFORMED.values() if len(m) < 50_000
]
PROFILE = settings(max_examples=200, deadline=None, derandomize=True)


def storable(parsed: ParsedMessage) -> None:
    texts = [
        parsed.subject,
        parsed.from_name,
        parsed.from_address,
        parsed.message_id,
        parsed.text_body,
        parsed.html_body,
        parsed.snippet,
        parsed.date_header,
        *parsed.defects,
    ]
    texts += [v for entry in parsed.to + parsed.cc for v in entry.values()]
    texts += [a.filename for a in parsed.attachments] + [a.content_type for a in parsed.attachments]
    for text in texts:
        assert isinstance(text, str)
        assert "\x00" not in text
        text.encode("utf-8")  # no lone surrogates
    assert len(parsed.snippet) <= 200


@PROFILE
@given(st.binary(max_size=4000))
@example(b"Subject: =?UTF-8?B?w6k$$$!!?=\r\n\r\nx")
@example(b"\r" * 50)
@example(b"Content-Type: multipart/mixed; boundary=\r\n\r\n--\r\n--")
def test_arbitrary_bytes_never_raise(raw: bytes):
    storable(parse_message(raw))


HEADER_NAMES = [
    "Subject",
    "From",
    "To",
    "Cc",
    "Date",
    "Message-ID",
    "Content-Type",
    "Content-Disposition",
    "Content-Transfer-Encoding",
    "MIME-Version",
]


@PROFILE
@given(
    st.lists(
        st.tuples(
            st.sampled_from(HEADER_NAMES),
            st.one_of(
                st.text(max_size=200),
                st.binary(max_size=200).map(lambda b: b.decode("latin-1")),
                st.from_regex(
                    r"=\?[a-z0-9-]{0,12}\?[bBqQ]\?[A-Za-z0-9+/=_$!]{0,40}\?=", fullmatch=True
                ),
            ),
        ),
        max_size=8,
    ),
    st.binary(max_size=500),
)
def test_arbitrary_header_values_never_raise(pairs: list[tuple[str, str]], body: bytes):
    head = b"".join(
        name.encode()
        + b": "
        + value.encode("utf-8", "surrogatepass").replace(b"\n", b"\n ")
        + b"\r\n"
        for name, value in pairs
    )
    storable(parse_message(head + b"\r\n" + body))


@PROFILE
@given(st.text(max_size=300))
def test_encoded_words_and_addresses_never_raise(value: str):
    notes: list[str] = []
    assert isinstance(h.decode_words(value, "Subject", notes), str)
    for entry in h.addresses([value], "To", notes):
        assert set(entry) == {"name", "address"}
    h.date(value, notes)


def mutate(raw: bytes, operations: list[tuple[int, int, int]]) -> bytes:
    data = bytearray(raw)
    for kind, position, value in operations:
        if not data:
            break
        at = position % len(data)
        if kind == 0:
            data[at] = value % 256  # flip a byte
        elif kind == 1:
            del data[at : at + value % 64]  # cut a piece out
        elif kind == 2:
            data[at:at] = [b"\r", b"\n", b"\x00", b"--", b"=?", b"?=", b":", b";"][value % 8]
        elif kind == 3:
            data[at:at] = data[at : at + value % 128]  # repeat a piece
        else:
            del data[at:]  # truncate
    return bytes(data)


@PROFILE
@given(
    st.sampled_from(SEEDS),
    st.lists(st.tuples(st.integers(0, 4), st.integers(0, 10**6), st.integers(0, 255)), max_size=12),
)
def test_mutated_real_messages_never_raise(raw: bytes, operations: list[tuple[int, int, int]]):
    storable(parse_message(mutate(raw, operations)))


_uids = itertools.count(1)


@pytest.mark.django_db
@settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(st.one_of(st.binary(max_size=3000), st.sampled_from(SEEDS)))
def test_the_store_keeps_the_raw_bytes_and_the_size(make_connection: Any, raw: bytes):
    conn = make_connection(kind="imap", config={"host": "imap.example.com", "username": "u"})
    uid = next(_uids)
    item = FetchedMessage(
        folder="INBOX", uidvalidity=7, uid=uid, parsed=parse_message(raw), size=len(raw), raw=raw
    )
    counts = upsert_messages(conn, [item])
    assert counts.created == 1
    row = MailMessage.objects.get(connection=conn, uid=uid)
    source = MailSource.objects.get(message=row)
    assert bytes(source.data) == raw and source.size == len(raw) == row.size
