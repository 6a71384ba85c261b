"""Property-based tests (Hypothesis) of header and MIME parsing: arbitrary bytes, arbitrary
header values, mutated real messages. Whatever comes in: no exception, every text storable
(no NUL, no lone surrogate), and — through the store — the raw bytes kept and the size right."""

from __future__ import annotations

import itertools
from email.message import Message
from email.policy import compat32
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from mail import headers as h
from mail import mime
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


# header values as mail carries them: parameters, quotes, RFC 2231 pieces, 8-bit bytes (kept as
# surrogates, as the splitter keeps them), folded lines, stray semicolons
PARAM_PIECES = st.sampled_from(
    [
        "text/plain",
        "multipart/mixed",
        "TEXT/HTML",
        "application",
        "a/b/c",
        "; ",
        ";",
        " charset=",
        "charset*=",
        "name*0*=",
        "name*1=",
        "filename=",
        "boundary=",
        '"',
        "\\",
        "utf-8''",
        "%E9",
        "=?UTF-8?B?w6k=?=",
        "\udce9",
        "\r\n\t",
        "x",
        " ",
        "attachment",
        "=",
    ]
)


RFC2231_NAME = "attachment; filename*0*=utf-8''%E9t%E9; filename*1=.txt"


@PROFILE
@given(
    st.lists(PARAM_PIECES, max_size=12).map("".join),
    st.sampled_from(["charset", "CHARSET", "boundary", "name", "filename", "missing"]),
    st.sampled_from(["content-type", "content-disposition", "Content-Type"]),
    st.booleans(),
)
@example('text/plain; charset="utf-8"', "charset", "content-type", False)
@example('text/plain; charset="utf-8"', "charset", "content-type", True)
@example(RFC2231_NAME, "filename", "content-disposition", True)
@example('text/plain; name="\udce9t\udce9.txt"', "name", "Content-Type", True)
@example('multipart/mixed; boundary="a;b"', "boundary", "content-type", True)
def test_remembered_header_parameters_are_the_standard_librarys(
    value: str, param: str, header: str, unquote: bool
):
    """``mime.Headers`` remembers what it read from each header value: its answers are exactly
    what a plain compat32 ``Message`` gives for the same headers, first header winning."""
    plain = Message(policy=compat32)
    remembering = mime.Headers(policy=compat32)
    for msg in (plain, remembering):
        msg.set_raw("X-Other", "y")
        msg.set_raw(header, value)
        msg.set_raw(header, "text/other; charset=later")  # a second one is never read
    for _ in range(2):  # the second answer comes from what was remembered
        assert remembering.get_param(param, header=header, unquote=unquote) == plain.get_param(
            param, header=header, unquote=unquote
        )
        assert remembering.get_param(param, "fallback", header) == plain.get_param(
            param, "fallback", header
        )
        assert remembering.get_content_type() == plain.get_content_type()
        assert remembering.get_content_maintype() == plain.get_content_maintype()
    empty = mime.Headers(policy=compat32)
    assert empty.get_content_type() == Message(policy=compat32).get_content_type()
    assert empty.get_param(param, "fallback") == "fallback"
