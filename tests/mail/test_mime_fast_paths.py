"""The quick readings in ``mail.mime`` against the ones they stand in for (Hypothesis).

Parsing a message reads header blocks, headers and parameters thousands of times per sync, so
``mail.mime`` reads the common shapes quickly: a header block of nothing but fields in one
regular-expression pass (``_plain_fields``), header values without the compat32 policy detour
(``Headers.get``) and plain parameter lists in one split (``Headers.get_param``). Each must give
exactly what the general reading gives — for everything it accepts, whatever the input.
"""

from __future__ import annotations

import re
from email.message import Message
from email.policy import compat32
from typing import Any

from hypothesis import example, given, settings
from hypothesis import strategies as st

from mail import headers as h
from mail import mime

PROFILE = settings(max_examples=400, deadline=None, derandomize=True)

NAME = st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1).map(
    lambda name: name.replace(":", "")
)
WSP = st.sampled_from(["", " ", "\t", "  ", " \t"])
VALUE = st.text(
    alphabet=st.one_of(
        st.characters(min_codepoint=0x20, max_codepoint=0x7E),
        st.sampled_from(["\t", "\x00", "\udc80", "\udcff", "é", ":", "\r"]),
    ),
    max_size=40,
)
LINE = st.one_of(
    st.builds(lambda n, w1, w2, v: f"{n}{w1}:{w2}{v}", NAME, WSP, WSP, VALUE),  # a field
    st.builds(lambda w, v: w + v, st.sampled_from([" ", "\t"]), VALUE),  # a continuation
    VALUE,  # anything: no header at all, an mbox "From " line, a stray blank
    st.just("From someone@example.com Mon Nov 23 10:00:00 2026"),
    st.builds(lambda w, v: f"From{w}:{v}", st.sampled_from([" ", "\t "]), VALUE),
    st.just(""),
)
ENDING = st.sampled_from(["\r\n", "\n", "\r"])


@st.composite
def header_blocks(draw: st.DrawFn) -> bytes:
    lines = draw(st.lists(LINE, max_size=12))
    mixed = draw(st.booleans())
    ending = draw(ENDING)
    text = ""
    for line in lines:
        text += line + (draw(ENDING) if mixed else ending)
    if draw(st.booleans()):
        text += ending  # the blank line ending a block (mail.mime always adds one)
    return text.encode("utf-8", "surrogateescape")


@PROFILE
@given(header_blocks())
@example(b"Subject:   \r\n\tfolded\r\nFrom: a@example.com\r\n\r\n")
@example(b"A: b\n\r\nC: d\r\n\r\n")
@example(b" leading: continuation\r\nA: b\r\n\r\n")
@example(b"From : Alice <alice@example.com>\r\nSubject: hi\r\n\r\n")  # an mbox line to both
def test_a_plain_header_block_reads_as_line_by_line(block: bytes) -> None:
    text = block.decode("ascii", "surrogateescape")
    bare_cr = text.count("\r") != text.count("\r\n")
    unified = text.replace("\r\n", "\n")
    msg, notes, body_at = mime._headers_by_line(text, unified, bare_cr)
    plain = None if bare_cr else mime._plain_fields(unified)
    if plain is not None:
        assert notes == []
        assert list(mime._message(plain).raw_items()) == list(msg.raw_items())
        # and the body starts after the first blank line: where the block ends, or earlier
        # (then the block holds body text the one-pass reading cannot place: it is not used)
        ends_block = unified.find("\n\n") + 2 == len(unified)
        assert (body_at is None) == ends_block, body_at
    quick, quick_notes, quick_body_at = mime.headers_of(block)
    assert (list(quick.raw_items()), quick_notes, quick_body_at) == (
        list(msg.raw_items()),
        notes,
        body_at,
    )


def test_an_ordinary_block_takes_the_quick_reading() -> None:
    block = (
        "Subject: Report\r\nFrom: A <a@example.com>\r\nContent-Type: multipart/mixed;\r\n"
        ' boundary="b1"\r\n\r\n'
    )
    assert mime._plain_fields(block.replace("\r\n", "\n")) == [
        ["Subject", "Report"],
        ["From", "A <a@example.com>"],
        ["Content-Type", 'multipart/mixed;\r\n boundary="b1"'],
    ]


TOKEN = st.text(alphabet="abcXYZ-_/.0123=", min_size=0, max_size=8)
PARAM_VALUE = st.one_of(
    TOKEN,
    st.builds(lambda v: f'"{v}"', st.text(alphabet='ab;= \\"<>*', max_size=8)),
    st.builds(lambda v: f'"{v}"', st.text(alphabet="a;=charset", max_size=16)),
    st.builds(lambda v: f"<{v}>", TOKEN),
    st.just("utf-8''%E2%82%AC"),
    st.text(alphabet=st.characters(blacklist_categories=[]), max_size=10),  # surrogates too
)
PARAM_NAME = st.sampled_from(
    ["charset", "CharSet", "boundary", "name", "filename", "name*", "name*0", "name*1*", "x", ""]
)


@st.composite
def parameter_lists(draw: st.DrawFn) -> str:
    head = draw(st.sampled_from(["text/plain", "multipart/mixed", "attachment", "", "charset=x"]))
    segments = [head]
    for _ in range(draw(st.integers(0, 4))):
        name, value = draw(PARAM_NAME), draw(PARAM_VALUE)
        segments.append(
            draw(WSP) + name + draw(WSP) + draw(st.sampled_from(["=", "", " = "])) + value
        )
    return ";".join(segments)


def outcome(read: Any, *args: Any, **kwargs: Any) -> tuple[str, Any]:
    """What ``read`` returns, or the kind of exception it raises (the standard library raises
    on some RFC 2231 lists; the quick reading must raise alike, and the parser notes it)."""
    try:
        return "returned", read(*args, **kwargs)
    except Exception as exc:
        return "raised", type(exc)


@PROFILE
@given(
    st.one_of(parameter_lists(), st.text(st.characters(blacklist_categories=[]), max_size=40)),
    st.sampled_from(["charset", "boundary", "name", "filename", "CHARSET", "text/plain", "x"]),
    st.sampled_from(["content-type", "content-disposition"]),
)
@example('text/plain; charset="utf-8"', "charset", "content-type")
@example('multipart/mixed; boundary="a;b"; charset=x', "charset", "content-type")
@example("attachment; filename*=utf-8''%E2%82%AC.txt", "filename", "content-disposition")
@example('text/plain; charset="\\"x\\""', "charset", "content-type")
@example('text/plain; name="a;charset=evil"', "charset", "content-type")
@example('text/plain; a="\\";charset=evil;\\""', "charset", "content-type")
@example("text/plain; charset=\udcff", "charset", "content-type")
def test_get_param_reads_as_the_standard_library(value: str, param: str, header: str) -> None:
    quick, general = mime.Headers(policy=compat32), Message(policy=compat32)
    for msg in (quick, general):
        msg.set_raw(header.title(), value)
    assert outcome(quick.get_param, param, header=header) == outcome(
        general.get_param, param, header=header
    )
    quick_value, value_read = quick.get(header), general.get(header)
    assert (type(quick_value), str(quick_value)) == (type(value_read), str(value_read))
    assert quick.get_param(param, "none", header="x-missing") == "none"


@PROFILE
@given(st.text())
@example(" \t\r\n a \x1c b\u00a0\u2028 ")
def test_folding_whitespace_is_the_regular_expression_s(value: str) -> None:
    assert h.clean(value) == re.sub(r"\s+", " ", value).strip()
