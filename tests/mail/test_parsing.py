"""The parser never raises; every problem becomes a recorded defect."""

from __future__ import annotations

import pytest

from mail.parsing import normalize_message_id, parse_message
from tests.support.mailfactory import MALFORMED, message


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_malformed_messages_parse_without_raising(name):
    parsed = parse_message(MALFORMED[name])
    assert isinstance(parsed.defects, list)
    assert len(parsed.snippet) <= 200


@pytest.mark.parametrize(
    "raw,expected",
    [
        ("<Abc.Def@Example.COM>", "Abc.Def@example.com"),
        ("  <x@y.org>\r\n ", "x@y.org"),
        ("<[b378dfc5-0f7e]@microsoft.com>", "[b378dfc5-0f7e]@microsoft.com"),
        ("no-brackets@Host", "no-brackets@host"),
        ("", ""),
    ],
)
def test_message_ids_are_normalized(raw, expected):
    assert normalize_message_id(raw) == expected


def test_well_formed_message():
    parsed = parse_message(
        message(
            subject="=?utf-8?q?Gr=C3=BC=C3=9Fe?=",
            cc="Carol <carol@example.net>",
            html="<p>Hello <b>Bob</b></p>",
            attachments=[("a.csv", "text/csv", b"1,2\n")],
        )
    )
    assert parsed.subject == "Grüße" and parsed.cc == [
        {"name": "Carol", "address": "carol@example.net"}
    ]
    assert parsed.html_body.startswith("<p>Hello") and parsed.text_body.startswith("Hello Bob")
    assert [(a.filename, a.content_type, a.data) for a in parsed.attachments] == [
        ("a.csv", "text/csv", b"1,2\n")
    ]
    assert parsed.defects == [] and not parsed.truncated


def test_broken_headers_are_recorded_not_fatal():
    parsed = parse_message(MALFORMED["unterminated_to"])
    assert parsed.subject == "broken to" and parsed.from_address == "a@example.com"
    assert "To: unparseable address list kept as written" in parsed.defects
    assert parse_message(MALFORMED["eight_bit_headers"]).subject == "Grüße aus Köln"
    assert parse_message(MALFORMED["unknown_charset"]).text_body.strip() == "nuqneH"


def test_missing_headers_and_nesting():
    bare = parse_message(MALFORMED["missing_date_and_id"])
    assert bare.sent_at is None and bare.message_id == ""
    assert {"missing Date header", "missing Message-ID header"} <= set(bare.defects)
    assert parse_message(MALFORMED["deeply_nested"]).text_body.strip() == "innermost text"
    many = parse_message(MALFORMED["many_parts"])
    assert "more than 500 parts: the rest was not read" in many.defects


def test_limits_cut_and_mark(settings):
    settings.MAIL_MAX_BODY_CHARS = 1000
    settings.MAIL_MAX_ATTACHMENT_BYTES = 10
    parsed = parse_message(
        message(body="z" * 5000, attachments=[("b.bin", "application/x", b"y" * 50)])
    )
    assert parsed.truncated and len(parsed.text_body) == 1000
    assert parsed.attachments[0].data is None and parsed.attachments[0].size == 50
    assert any("text body cut to 1000" in d for d in parsed.defects)


def test_fingerprint_is_stable_and_content_based():
    raw = message(message_id="<fp@example.com>")
    a, b = parse_message(raw), parse_message(raw)
    assert a.fingerprint(len(raw)) == b.fingerprint(len(raw))
    assert a.fingerprint(len(raw)) != parse_message(message(message_id="<other@x>")).fingerprint(
        len(raw)
    )


def test_a_boundary_that_prefixes_another_is_not_confused_with_it():
    raw = (
        b"From: a@example.com\r\nSubject: nested\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/mixed; boundary="b1"\r\n\r\n'
        b'--b1\r\nContent-Type: multipart/alternative; boundary="b10"\r\n\r\n'
        b"--b10\r\nContent-Type: text/plain\r\n\r\nplain\r\n"
        b"--b10\r\nContent-Type: text/html\r\n\r\n<p>html</p>\r\n"
        b"--b10--\r\n"
        b'--b1\r\nContent-Type: application/pdf; name="x.pdf"\r\n\r\n%PDF\r\n'
        b"--b1--\r\n"
    )
    parsed = parse_message(raw)
    assert (parsed.text_body, parsed.html_body) == ("plain", "<p>html</p>")
    assert [(a.filename, a.data) for a in parsed.attachments] == [("x.pdf", b"%PDF")]


def test_no_defect_note_carries_a_nul(settings):
    """A file name with a NUL (RFC 2231 ``%00``) on an attachment over the limit: the note
    about it names the file without the NUL (PostgreSQL refuses NUL in JSON, and the row would
    never be stored). The cleaned notes were made, then replaced by the raw ones."""
    settings.MAIL_MAX_ATTACHMENT_BYTES = 10
    raw = (
        b"Subject: nul\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n'
        b"--b\r\nContent-Type: text/plain\r\n\r\nhello\r\n"
        b"--b\r\nContent-Type: application/octet-stream\r\n"
        b"Content-Disposition: attachment; filename*=utf-8''a%00b.bin\r\n\r\n"
        + b"x" * 100
        + b"\r\n--b--\r\n"
    )
    parsed = parse_message(raw)
    assert parsed.attachments[0].filename == "ab.bin"
    assert any("ab.bin: larger than" in d for d in parsed.defects)
    assert not any("\x00" in d for d in parsed.defects)
