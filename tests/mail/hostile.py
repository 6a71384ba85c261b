"""A corpus of hostile mail, built in code: the kinds real servers deliver.

Each case is raw bytes plus what must be true once it is stored: a field read right, or a
truthful defect note about it. Every case carries a marker (``case-<name>``) in its raw bytes,
so a test finds its stored row through the kept source whatever happened to its headers.

Groups: headers, encoded words and charsets, addresses, dates and ids, line ends and
structure, MIME, sizes, control characters.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

CRLF = b"\r\n"
DATE = b"Date: Mon, 23 Nov 2026 10:00:00 +0000"


@dataclass
class Case:
    name: str
    raw: bytes
    subject: str | None = None  # exact stored subject
    subject_has: str | None = None
    from_address: str | None = None
    from_name: str | None = None
    text_has: str | None = None
    html_has: str | None = None
    defects_have: list[str] = field(default_factory=list)  # substrings, each in some defect
    clean: bool = False  # no defects at all
    attachments: list[str] | None = None  # file names, in order
    attachment_count: int | None = None
    sent: bool | None = None  # whether sent_at was read
    message_id: str | None = None
    to_addresses: list[str] | None = None
    truncated: bool | None = None
    verify: Callable[[Any], None] | None = None  # any further check of the result

    @property
    def marker(self) -> bytes:
        return f"case-{self.name}".encode()


def mail(
    name: str,
    headers: bytes | list[bytes] = (),  # type: ignore[assignment]
    body: bytes = b"Hello.",
    *,
    subject: bytes | None = None,
    date: bool = True,
    message_id: bytes | None = None,
    sender: bytes = b"From: Ann Sender <ann@example.com>",
    eol: bytes = CRLF,
) -> bytes:
    """A message with the case's marker; ``headers`` lines come after the standard ones."""
    lines = [sender, b"To: Bob <bob@example.org>"]
    lines.append(b"Subject: " + (subject if subject is not None else name.encode()))
    if date:
        lines.append(DATE)
    lines.append(b"Message-ID: " + (message_id or f"<{name}@hostile.example>".encode()))
    lines.append(b"X-Case: case-" + name.encode())
    lines += [headers] if isinstance(headers, bytes) else list(headers)
    return eol.join(lines) + eol + eol + body + eol + b"-- case-" + name.encode() + eol


def multipart(name: str, parts: list[bytes], boundary: bytes = b"BOUNDARY", **kw: Any) -> bytes:
    body = b""
    for part in parts:
        body += b"--" + boundary + CRLF + part + CRLF
    body += b"--" + boundary + b"--"
    return mail(
        name,
        [b"MIME-Version: 1.0", b'Content-Type: multipart/mixed; boundary="' + boundary + b'"'],
        body,
        **kw,
    )


def text_part(text: bytes, charset: bytes = b"utf-8", extra: bytes = b"") -> bytes:
    head = b"Content-Type: text/plain; charset=" + charset + CRLF
    return head + extra + CRLF + text


def file_part(filename_header: bytes, data: bytes = b"DATA") -> bytes:
    return (
        b"Content-Type: application/octet-stream"
        + CRLF
        + b"Content-Transfer-Encoding: base64"
        + CRLF
        + filename_header
        + CRLF
        + CRLF
        + base64.encodebytes(data)
    )


def nested(depth: int) -> bytes:
    body = b"Content-Type: text/plain" + CRLF + CRLF + b"innermost text"
    for level in range(depth):
        boundary = f"b{level}".encode()
        body = (
            b'Content-Type: multipart/mixed; boundary="'
            + boundary
            + b'"'
            + CRLF
            + CRLF
            + b"--"
            + boundary
            + CRLF
            + body
            + CRLF
            + b"--"
            + boundary
            + b"--"
        )
    return body


def two_thousand_cc(found: Any) -> None:
    assert len(found.cc) == 2000, len(found.cc)


def corpus() -> list[Case]:
    big = b"A" * 76 + CRLF
    cases = [
        # --- headers and encoded words ----------------------------------------------------
        Case(
            "subject_bad_base64",
            mail("subject_bad_base64", subject=b"Report =?UTF-8?B?w6k$$$!!?= Q3"),
            subject="Report =?UTF-8?B?w6k$$$!!?= Q3",
            defects_have=["invalid base64 in encoded word"],
        ),
        Case(
            "subject_bad_qp",
            mail("subject_bad_qp", subject=b"=?utf-8?Q?caf=E9=Z?="),
            subject="=?utf-8?Q?caf=E9=Z?=",
            defects_have=["invalid quoted-printable"],
        ),
        Case(
            "subject_unknown_charset",
            mail("subject_unknown_charset", subject=b"=?x-klingon?B?SGVsbG8gd29ybGQ=?="),
            subject="Hello world",
            clean=True,
        ),
        Case(
            "subject_unknown_charset_8bit",
            mail("subject_unknown_charset_8bit", subject=b"=?x-klingon?B?Q2Fmw6k=?="),
            subject="Café",
            defects_have=["unknown charset 'x-klingon'", "read as UTF-8"],
        ),
        Case(
            "subject_lying_charset",
            mail("subject_lying_charset", subject=b"=?utf-8?Q?caf=E9?="),
            subject="café",
            defects_have=["not valid utf-8", "read as Windows-1252"],
        ),
        Case(
            "subject_raw_utf8",
            mail("subject_raw_utf8", subject="Grüße aus Köln".encode()),
            subject="Grüße aus Köln",
            defects_have=["raw 8-bit bytes", "read as UTF-8"],
        ),
        Case(
            "subject_raw_latin1",
            mail("subject_raw_latin1", subject="Café crème".encode("latin-1")),
            subject="Café crème",
            defects_have=["raw 8-bit bytes", "invalid UTF-8 bytes, read as Windows-1252"],
        ),
        Case(
            "subject_folded",
            mail("subject_folded", subject=b"a very\r\n long\r\n\tsubject"),
            subject="a very long subject",
            clean=True,
        ),
        Case(
            "subject_adjacent_words",
            mail("subject_adjacent_words", subject=b"=?utf-8?Q?Gr=C3=BC?= =?utf-8?Q?=C3=9Fe?="),
            subject="Grüße",
            clean=True,
        ),
        Case(
            "subject_mixed_charsets",
            mail(
                "subject_mixed_charsets",
                subject=b"=?iso-8859-1?Q?Caf=E9?= und =?koi8-r?B?8NLJ18XU?=",
            ),
            subject="Café und Привет",
            clean=True,
        ),
        Case(
            "subject_empty_word",
            mail("subject_empty_word", subject=b"=?utf-8?B??= empty"),
            subject_has="empty",
        ),
        Case(
            "subject_missing",
            mail("subject_missing", subject=b"").replace(b"Subject: \r\n", b""),
            subject="",
        ),
        Case("subject_huge", mail("subject_huge", subject=b"x" * 20000), subject="x" * 20000),
        Case(
            "subject_duplicate",
            mail("subject_duplicate", [b"Subject: second"]),
            subject="subject_duplicate",
        ),
        Case(
            "subject_rtl_override",
            mail("subject_rtl_override", subject="Invoice \u202eexe.pdf".encode()),
            subject="Invoice \u202eexe.pdf",
        ),
        Case(
            "subject_nul",
            mail("subject_nul", subject=b"nul\x00byte"),
            subject="nulbyte",
            defects_have=["NUL or invalid characters removed"],
        ),
        Case(
            "subject_control_chars",
            mail("subject_control_chars", subject=b"bell\x07 esc\x1b"),
            subject="bell\x07 esc\x1b",
        ),
        Case(
            "subject_utf7",
            mail("subject_utf7", subject=b"=?unicode-1-1-utf-7?Q?+AOk-t+AOk-?="),
            subject="été",
            clean=True,
        ),
        # --- header block structure -------------------------------------------------------
        Case(
            "header_without_colon",
            mail("header_without_colon", [b"this line is not a header", b"X-After: yes"]),
            sent=True,
            message_id="header_without_colon@hostile.example",
            defects_have=["header line without a name was skipped"],
        ),
        Case(
            "header_bare_cr",
            mail("header_bare_cr", [b"X-One: a\rX-Two: b"]),
            sent=True,
            defects_have=["bare CR line ends in the headers"],
        ),
        Case(
            "header_space_before_colon",
            mail("header_space_before_colon", [b"X-Spaced : yes"]),
            sent=True,
        ),
        Case(
            "header_nul_in_name",
            mail("header_nul_in_name", [b"X-Bad\x00Name: v", b"X-After: yes"]),
            sent=True,
            defects_have=["header line without a name was skipped"],
        ),
        Case(
            "header_huge_line", mail("header_huge_line", [b"X-Long: " + b"y" * 200_000]), sent=True
        ),
        Case(
            "no_blank_line",
            (
                b"From: a@example.com\r\nSubject: no_blank_line\r\n"
                + DATE
                + b"\r\nThis is the body case-no_blank_line\r\nmore body\r\n"
            ),
            subject="no_blank_line",
            text_has="This is the body",
            defects_have=["no blank line between the headers and the body"],
        ),
        Case(
            "headers_only",
            b"From: a@example.com\r\nSubject: headers_only\r\nX-Case: case-headers_only\r\n",
            subject="headers_only",
            text_has="",
        ),
        Case(
            "mbox_from_line",
            b"From someone@example.com Mon Nov 23 10:00:00 2026\r\n" + mail("mbox_from_line"),
            subject="mbox_from_line",
            sent=True,
        ),
        Case(
            "empty_lines_first",
            b"\r\n\r\n" + mail("empty_lines_first"),
            text_has="Subject: empty_lines_first",
        ),
        Case("garbage_bytes", bytes(range(256)) * 8 + b"case-garbage_bytes"),
        Case("only_marker", b"case-only_marker"),
        # --- line ends --------------------------------------------------------------------
        Case(
            "bare_cr_only",
            mail("bare_cr_only", eol=b"\r", body=b"body line one\rline two"),
            subject="bare_cr_only",
            text_has="body line one",
            sent=True,
            defects_have=["bare CR line ends throughout"],
        ),
        Case(
            "lf_only",
            mail("lf_only", eol=b"\n", body=b"unix body"),
            subject="lf_only",
            text_has="unix body",
            clean=True,
        ),
        Case(
            "mixed_line_ends",
            mail("mixed_line_ends").replace(b"\r\nTo:", b"\nTo:"),
            subject="mixed_line_ends",
            sent=True,
        ),
        # --- addresses --------------------------------------------------------------------
        Case(
            "from_obsolete_route",
            mail(
                "from_obsolete_route",
                sender=b"From: <@relay.example,@hub.example:user@host.example>",
            ),
            from_address="user@host.example",
            defects_have=["obsolete source route removed"],
        ),
        Case(
            "from_group",
            mail("from_group", sender=b"From: Team: ann@example.com, bob@example.com;"),
            from_address="ann@example.com",
        ),
        Case(
            "from_name_only",
            mail("from_name_only", sender=b"From: Just A Name"),
            from_address="",
            from_name="Just A Name",
            defects_have=["From: no email address, only a name"],
        ),
        Case(
            "from_comment",
            mail("from_comment", sender=b"From: ann@example.com (Ann Example)"),
            from_address="ann@example.com",
            from_name="Ann Example",
        ),
        Case(
            "from_quoted_comma",
            mail("from_quoted_comma", sender=b'From: "Doe, John" <john@example.com>'),
            from_address="john@example.com",
            from_name="Doe, John",
        ),
        Case(
            "from_encoded_name",
            mail("from_encoded_name", sender=b"From: =?utf-8?B?SsO8cmdlbg==?= <j@example.de>"),
            from_address="j@example.de",
            from_name="Jürgen",
        ),
        Case(
            "from_raw_8bit_name",
            mail("from_raw_8bit_name", sender="From: Jürgen Müller <j@example.de>".encode()),
            from_address="j@example.de",
            from_name="Jürgen Müller",
            defects_have=["raw 8-bit bytes"],
        ),
        Case("from_missing", mail("from_missing", sender=b"X-No-From: yes"), from_address=""),
        Case(
            "to_undisclosed",
            mail("to_undisclosed", [b"Cc: undisclosed-recipients:;"]),
            subject="to_undisclosed",
        ),
        Case(
            "to_huge_list",
            mail(
                "to_huge_list",
                [b"Cc: " + b", ".join(f"u{i}@example.com".encode() for i in range(2000))],
            ),
            subject="to_huge_list",
            verify=two_thousand_cc,
        ),
        Case("to_garbage", mail("to_garbage", [b"Cc: <<<>>>,,@@,,"]), subject="to_garbage"),
        Case(
            "to_unterminated_quote",
            mail("to_unterminated_quote", [b'Cc: "never closed <x@example.com>']),
            subject="to_unterminated_quote",
        ),
        # --- dates and ids ----------------------------------------------------------------
        Case(
            "date_missing",
            mail("date_missing", date=False),
            sent=False,
            defects_have=["missing Date header"],
        ),
        Case(
            "date_garbage",
            mail("date_garbage", date=False, subject=b"date_garbage").replace(
                b"X-Case", b"Date: yesterday-ish\r\nX-Case"
            ),
            sent=False,
            defects_have=["unparseable Date header"],
        ),
        Case(
            "date_two_digit_year",
            mail("date_two_digit_year", date=False).replace(
                b"X-Case", b"Date: 1 Jan 99 00:00 EST\r\nX-Case"
            ),
            sent=True,
        ),
        Case(
            "date_out_of_range",
            mail("date_out_of_range", date=False).replace(
                b"X-Case", b"Date: Fri, 31 Dec 9999 23:59:59 -9999\r\nX-Case"
            ),
            defects_have=["Date header"],
        ),
        Case(
            "date_no_zone",
            mail("date_no_zone", date=False).replace(
                b"X-Case", b"Date: Mon, 23 Nov 2026 10:00:00\r\nX-Case"
            ),
            sent=True,
            defects_have=["without a time zone"],
        ),
        Case(
            "message_id_missing",
            mail("message_id_missing").replace(
                b"Message-ID: <message_id_missing@hostile.example>\r\n", b""
            ),
            message_id="",
            defects_have=["missing Message-ID header"],
        ),
        Case(
            "message_id_too_long",
            mail("message_id_too_long", message_id=b"<" + b"a" * 1500 + b"@example.com>"),
            defects_have=["Message-ID cut to 998 characters (was 1512)"],
        ),
        Case(
            "message_id_no_brackets",
            mail("message_id_no_brackets", message_id=b"plain@Example.COM"),
            message_id="plain@example.com",
        ),
        # --- body charsets ------------------------------------------------------------------
        Case(
            "body_ascii_declared_utf8_sent",
            mail(
                "body_ascii_declared_utf8_sent",
                [b"Content-Type: text/plain; charset=us-ascii"],
                "A naïve café".encode(),
            ),
            text_has="A naïve café",
            defects_have=["declared us-ascii", "valid UTF-8, read as UTF-8"],
        ),
        Case(
            "body_utf8_declared_latin1_sent",
            mail(
                "body_utf8_declared_latin1_sent",
                [b"Content-Type: text/plain; charset=utf-8"],
                "Crème brûlée".encode("latin-1"),
            ),
            text_has="Crème brûlée",
            defects_have=["declared utf-8", "read as Windows-1252"],
        ),
        Case(
            "body_unknown_charset",
            mail(
                "body_unknown_charset", [b"Content-Type: text/plain; charset=x-klingon"], b"nuqneH"
            ),
            text_has="nuqneH",
            clean=True,
        ),
        Case(
            "body_quoted_charset",
            mail(
                "body_quoted_charset",
                [b'Content-Type: text/plain; charset="UTF-8"'],
                "Straße".encode(),
            ),
            text_has="Straße",
            clean=True,
        ),
        Case(
            "body_bad_base64",
            mail(
                "body_bad_base64",
                [b"Content-Type: text/plain", b"Content-Transfer-Encoding: base64"],
                b"SGVsbG8gd29y!!!bGQ=\r\n$$$",
            ),
            text_has="Hello world",
            defects_have=["invalid base64 content: characters outside base64 were ignored"],
        ),
        Case(
            "body_bad_qp",
            mail(
                "body_bad_qp",
                [b"Content-Type: text/plain", b"Content-Transfer-Encoding: quoted-printable"],
                b"soft=\r\nbreak =ZZ end",
            ),
            text_has="softbreak",
        ),
        Case(
            "body_unknown_cte",
            mail(
                "body_unknown_cte",
                [b"Content-Type: text/plain", b"Content-Transfer-Encoding: x-uuencode"],
                b"begin 644 x",
            ),
            text_has="begin 644",
            defects_have=["unknown transfer encoding 'x-uuencode'"],
        ),
        Case(
            "body_utf16",
            mail(
                "body_utf16",
                [b"Content-Type: text/plain; charset=utf-16"],
                "Hallo Welt".encode("utf-16"),
            ),
            text_has="Hallo Welt",
        ),
        Case(
            "body_shift_jis",
            mail(
                "body_shift_jis",
                [b"Content-Type: text/plain; charset=shift_jis"],
                "こんにちは".encode("shift_jis"),
            ),
            text_has="こんにちは",
            clean=True,
        ),
        Case(
            "body_gb2312_with_gbk",
            mail(
                "body_gb2312_with_gbk",
                [b"Content-Type: text/plain; charset=gb2312"],
                "镕".encode("gbk"),
            ),
            text_has="镕",
            clean=True,
        ),
        Case(
            "body_html_only",
            mail(
                "body_html_only",
                [b"Content-Type: text/html; charset=utf-8"],
                b"<p>Hi <b>there</b></p>",
            ),
            html_has="<b>there</b>",
        ),
        Case(
            "body_nul_bytes",
            mail("body_nul_bytes", [b"Content-Type: text/plain"], b"before\x00after"),
            text_has="beforeafter",
            defects_have=["text body: NUL or invalid characters removed"],
        ),
        # --- MIME structure ---------------------------------------------------------------
        Case(
            "multipart_no_boundary",
            mail(
                "multipart_no_boundary",
                [b"MIME-Version: 1.0", b"Content-Type: multipart/mixed"],
                b"just text",
            ),
            text_has="just text",
        ),
        Case(
            "multipart_boundary_missing",
            mail(
                "multipart_boundary_missing",
                [b"MIME-Version: 1.0", b'Content-Type: multipart/mixed; boundary="zz"'],
                b"no delimiters here",
            ),
            text_has="no delimiters here",
        ),
        Case(
            "multipart_unclosed",
            multipart("multipart_unclosed", [text_part(b"first part")]).replace(
                b"--BOUNDARY--", b""
            ),
            text_has="first part",
        ),
        Case(
            "multipart_preamble_epilogue",
            multipart("multipart_preamble_epilogue", [text_part(b"the text")]).replace(
                b"--BOUNDARY\r\n", b"preamble junk\r\n--BOUNDARY\r\n", 1
            )
            + b"epilogue junk",
            text_has="the text",
        ),
        Case(
            "nested_1000",
            mail(
                "nested_1000",
                [b"MIME-Version: 1.0", *nested(1000).split(CRLF + CRLF, 1)[0].split(CRLF)],
                nested(1000).split(CRLF + CRLF, 1)[1],
            ),
            subject="nested_1000",
        ),
        Case(
            "parts_600",
            multipart("parts_600", [text_part(f"part {i}".encode()) for i in range(600)]),
            defects_have=["more than 500 parts"],
        ),
        Case(
            "attached_message",
            multipart(
                "attached_message",
                [
                    text_part(b"see attached"),
                    b"Content-Type: message/rfc822" + CRLF + CRLF + mail("inner"),
                ],
            ),
            text_has="see attached",
            attachments=["attached-message.eml"],
        ),
        Case(
            "content_type_garbage",
            mail("content_type_garbage", [b"Content-Type: ;;;==="], b"text anyway"),
            text_has="text anyway",
        ),
        # --- attachments ------------------------------------------------------------------
        Case(
            "filename_bad_encoded_word",
            multipart(
                "filename_bad_encoded_word",
                [
                    text_part(b"see file"),
                    file_part(
                        b'Content-Disposition: attachment; filename="=?utf-8?B?w6k$$$?=.pdf"'
                    ),
                ],
            ),
            attachments=["=?utf-8?B?w6k$$$?=.pdf"],
            defects_have=["attachment filename: invalid base64"],
        ),
        Case(
            "filename_rfc2231_bad_charset",
            multipart(
                "filename_rfc2231_bad_charset",
                [
                    text_part(b"see file"),
                    file_part(b"Content-Disposition: attachment; filename*=x-bogus''%E4%F6.bin"),
                ],
            ),
            attachments=["äö.bin"],
            defects_have=["unknown charset 'x-bogus'"],
        ),
        Case(
            "filename_rfc2231_utf8",
            multipart(
                "filename_rfc2231_utf8",
                [
                    text_part(b"see file"),
                    file_part(
                        b"Content-Disposition: attachment; filename*=UTF-8''%E2%82%AC%20rates.pdf"
                    ),
                ],
            ),
            attachments=["€ rates.pdf"],
        ),
        Case(
            "filename_rtl_override",
            multipart(
                "filename_rtl_override",
                [
                    text_part(b"see file"),
                    file_part('Content-Disposition: attachment; filename="\u202efdp.exe"'.encode()),
                ],
            ),
            attachments=["\u202efdp.exe"],
        ),
        Case(
            "filename_newline",
            multipart(
                "filename_newline",
                [
                    text_part(b"see file"),
                    file_part(b'Content-Disposition: attachment;\r\n filename="two\r\n lines.txt"'),
                ],
            ),
            attachment_count=1,
        ),
        Case(
            "attachment_no_name",
            multipart(
                "attachment_no_name",
                [
                    text_part(b"see file"),
                    b"Content-Type: application/pdf" + CRLF + CRLF + b"%PDF-1.4",
                ],
            ),
            attachment_count=1,
        ),
        Case(
            "inline_image_cid",
            multipart(
                "inline_image_cid",
                [
                    b"Content-Type: text/html" + CRLF + CRLF + b'<img src="cid:logo">',
                    b"Content-Type: image/png"
                    + CRLF
                    + b"Content-ID: <logo>"
                    + CRLF
                    + CRLF
                    + b"\x89PNG",
                ],
            ),
            html_has="cid:logo",
            attachment_count=1,
        ),
        Case(
            "text_as_attachment",
            multipart(
                "text_as_attachment",
                [
                    text_part(b"the body"),
                    text_part(
                        b"a,b\r\n1,2",
                        extra=b'Content-Disposition: attachment; filename="data.csv"' + CRLF,
                    ),
                ],
            ),
            text_has="the body",
            attachments=["data.csv"],
        ),
        # --- sizes ------------------------------------------------------------------------
        Case(
            "huge_attachment",
            multipart(
                "huge_attachment",
                [
                    text_part(b"big file attached"),
                    file_part(
                        b'Content-Disposition: attachment; filename="big.bin"',
                        b"\x00" * (12 * 1024 * 1024),
                    ),
                ],
            ),
            attachments=["big.bin"],
            defects_have=["larger than the 10 MB attachment limit"],
            truncated=True,
        ),
        Case(
            "huge_text_body",
            mail("huge_text_body", [b"Content-Type: text/plain"], big * 20000),
            text_has="AAAA",
            defects_have=["text body cut to"],
            truncated=True,
        ),
        # --- headers that are slow to read with a careless pattern (found by a hostile-mail
        # probe: each of these took seconds to minutes, and a message slower than the task
        # timeout stopped its mailbox's sync at every attempt) ------------------------------
        Case(
            "cc_long_blank_run",
            mail(
                "cc_long_blank_run",
                [b"Cc: carol@example.com," + b" " * 20_000 + b"dave@example.com (Dave)"],
            ),
            subject="cc_long_blank_run",
            verify=carol_and_dave,
        ),
        Case(
            "cc_group_without_colon",
            mail("cc_group_without_colon", [b"Cc: " + b"a" * 100_000 + b";"]),
            subject="cc_group_without_colon",
            sent=True,
        ),
        Case(
            "to_folded_without_indent",
            mail(
                "to_folded_without_indent",
                [b"To-List: first@example.com,"]
                + [b"user%d@example.com," % i for i in range(20_000)]
                + [b"X-Last: y"],
            ),
            subject="to_folded_without_indent",
            sent=True,
            defects_have=["a header line without a name was skipped"],
        ),
        # --- charsets that are Python codecs but not charsets ------------------------------
        Case(
            "charset_is_a_transform",
            mail(
                "charset_is_a_transform",
                [b"Content-Type: text/plain; charset=base64"],
                b"The body text that matters",
            ),
            subject="charset_is_a_transform",
            text_has="The body text that matters",
            attachment_count=0,
        ),
        Case(
            "subject_word_in_a_transform",
            mail(
                "subject_word_in_a_transform",
                subject=b"Invoice 42 =?quoted-printable?Q?paid?= today",
            ),
            subject_has="today",
            verify=invoice_paid_today,
        ),
        # --- encoded words split inside a character (RFC 2047 §5 allows any split) ----------
        Case(
            "subject_split_in_a_character",
            mail(
                "subject_split_in_a_character",
                subject=b"=?UTF-8?B?5pel5pw=?=\r\n =?UTF-8?B?rOiqnuOBruS7tuWQjeOBp+OBmQ==?=",
            ),
            subject="日本語の件名です",
            clean=True,
        ),
        Case(
            "subject_split_in_a_character_q",
            mail(
                "subject_split_in_a_character_q",
                subject=b"=?utf-8?Q?Gr=C3?= =?utf-8?Q?=BC=C3=9Fe?=",
            ),
            subject="Grüße",
            clean=True,
        ),
        Case(
            "filename_2231_raw_utf8",
            multipart(
                "filename_2231_raw_utf8",
                [
                    text_part(b"see the report"),
                    file_part(
                        "Content-Disposition: attachment; filename*=UTF-8''Отчёт €.pdf".encode()
                    ),
                ],
            ),
            attachments=["Отчёт €.pdf"],
        ),
        # --- a multipart without a boundary beside an attached-message chain (it sent the
        # whole message to the standard library, which stored a chain 300 deep as 0 bytes
        # and re-wrote a shallow one with LF line ends) ---------------------------------------
        Case(
            "chain_beside_no_boundary",
            multipart(
                "chain_beside_no_boundary",
                [
                    text_part(b"the text"),
                    b"Content-Type: multipart/alternative\r\n\r\nno boundary here",
                    b"Content-Type: message/rfc822\r\n\r\n" + rfc822_chain(300),
                ],
            ),
            text_has="the text",
            verify=chain_kept_byte_for_byte,
        ),
        # --- where the body starts -----------------------------------------------------------
        Case(
            "boundary_without_blank_line",
            mail(
                "boundary_without_blank_line",
                [b"MIME-Version: 1.0", b'Content-Type: multipart/mixed; boundary="B"'],
                b"--B\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nThe body text.\r\n"
                b'--B\r\nContent-Type: application/pdf; name="x.pdf"\r\n'
                b"Content-Transfer-Encoding: base64\r\n\r\nJVBERi0xLjQ=\r\n--B--",
            )
            # no blank line between the headers and the first boundary
            .replace(b'boundary="B"\r\n\r\n--B', b'boundary="B"\r\n--B'),
            subject="boundary_without_blank_line",
            text_has="The body text.",
            attachments=["x.pdf"],
            defects_have=["no blank line between the headers and the body"],
        ),
        Case(
            "cr_cr_lf",  # a message converted to CRLF twice
            mail("cr_cr_lf", body=b"First paragraph.\r\r\n\r\r\nSecond.", eol=b"\r\r\n"),
            subject="cr_cr_lf",
            to_addresses=["bob@example.org"],
            message_id="cr_cr_lf@hostile.example",
            sent=True,
            text_has="First paragraph.",
        ),
        Case(
            "blank_line_cr_cr_lf",
            mail("blank_line_cr_cr_lf", body=b"First paragraph.\r\n\r\nSecond paragraph.").replace(
                b"case-blank_line_cr_cr_lf\r\n\r\n", b"case-blank_line_cr_cr_lf\r\n\r\r\n"
            ),
            subject="blank_line_cr_cr_lf",
            sent=True,
            text_has="First paragraph.",
        ),
    ]
    return cases


def rfc822_chain(depth: int) -> bytes:
    """A message attached to a message, ``depth`` times over (CRLF line ends)."""
    inner = b"From: x@example.com\r\nSubject: innermost\r\n\r\nbody\r\n"
    for _ in range(depth):
        head = b"From: x@example.com\r\nSubject: level\r\nContent-Type: message/rfc822\r\n"
        inner = head + b"\r\n" + inner
    return inner


def chain_kept_byte_for_byte(found: Any) -> None:
    """(``found``: what the parser made, or the stored message.)"""
    chain = rfc822_chain(300)
    attachments = found.attachments
    if hasattr(attachments, "all"):  # stored: the file holds the bytes
        [attached] = attachments.filter(content_type="message/rfc822")
        with attached.file.open("rb") as stored:
            assert stored.read() == chain
    else:
        [attached] = [a for a in attachments if a.content_type == "message/rfc822"]
        assert attached.data is None or attached.data == chain
    assert attached.size == len(chain)


def invoice_paid_today(found: Any) -> None:
    assert found.subject.startswith("Invoice 42 ") and found.subject.endswith(" today")


def carol_and_dave(found: Any) -> None:
    assert [a["address"] for a in found.cc] == ["carol@example.com", "dave@example.com"]
