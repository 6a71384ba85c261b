"""Building test mail: well-formed messages and a corpus of broken ones seen in the wild."""

from __future__ import annotations

import random
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime, make_msgid

LOREM = (
    "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor incididunt "
    "ut labore et dolore magna aliqua. Ut enim ad minim veniam, quis nostrud exercitation. "
)


def message(
    subject: str = "Hello",
    sender: str = "Ann Sender <ann@example.com>",
    to: str = "Bob <bob@example.org>",
    cc: str | None = None,
    body: str = "Hello Bob,\nhow are you?\n",
    html: str | None = None,
    attachments: list[tuple[str, str, bytes]] = (),  # type: ignore[assignment]
    date=None,
    message_id: str | None = None,
) -> bytes:
    msg = EmailMessage()
    msg["Subject"] = subject
    msg["From"] = sender
    msg["To"] = to
    if cc:
        msg["Cc"] = cc
    if date is not None:
        msg["Date"] = format_datetime(date)
    else:
        msg["Date"] = "Mon, 23 Nov 2026 10:00:00 +0000"
    msg["Message-ID"] = message_id or make_msgid(domain="example.com")
    msg.set_content(body)
    if html:
        msg.add_alternative(html, subtype="html")
    for filename, ctype, data in attachments:
        maintype, subtype = ctype.split("/")
        msg.add_attachment(data, maintype=maintype, subtype=subtype, filename=filename)
    return msg.as_bytes(policy=SMTP)


def realistic(i: int, rng: random.Random) -> bytes:
    """Varied sizes, multipart alternatives, about 10 % with an attachment."""
    paragraphs = rng.choice([1, 2, 4, 8, 20, 60])
    body = f"Message {i}\n\n" + "\n\n".join(LOREM * rng.randint(1, 3) for _ in range(paragraphs))
    html = None
    if rng.random() < 0.5:
        html = "<html><body><p>" + body.replace("\n\n", "</p><p>") + "</p></body></html>"
    attachments = []
    if rng.random() < 0.1:
        size = rng.choice([2_000, 20_000, 200_000])
        attachments.append((f"report-{i}.pdf", "application/pdf", rng.randbytes(size)))
    return message(
        subject=f"Report {i}: quarterly numbers",
        sender=f"Sender {i % 97} <sender{i % 97}@example.com>",
        to="Team <team@example.org>, Boss <boss@example.org>",
        body=body,
        html=html,
        attachments=attachments,
    )


def _deep(levels: int) -> bytes:
    head = b"From: deep@example.com\r\nSubject: nested\r\nMIME-Version: 1.0\r\n"
    parts = []
    for level in range(levels):
        parts.append(f'Content-Type: multipart/mixed; boundary="b{level}"\r\n\r\n--b{level}\r\n')
    middle = "Content-Type: text/plain\r\n\r\ninnermost text\r\n"
    tail = "".join(f"--b{level}--\r\n" for level in reversed(range(levels)))
    return head + "".join(parts).encode() + middle.encode() + tail.encode()


def _many_parts(count: int) -> bytes:
    head = (
        b"From: many@example.com\r\nSubject: many parts\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/mixed; boundary="x"\r\n\r\n'
    )
    part = b"--x\r\nContent-Type: text/plain\r\n\r\npart\r\n"
    return head + part * count + b"--x--\r\n"


# name -> raw bytes. Each is a real-world failure mode (docs/protocols.md, IMAP and mail).
MALFORMED: dict[str, bytes] = {
    "exchange_message_id": (
        b"From: Ex <ex@contoso.com>\r\nTo: a@example.com\r\nSubject: exchange id\r\n"
        b"Message-ID: <[b378dfc5-0f7e-4bd2-9d9f-3a2b8a7c1d2e]@microsoft.com>\r\n"
        b"Date: Mon, 2 Nov 2026 10:00:00 +0000\r\n\r\nbody\r\n"
    ),
    "unterminated_to": (
        b'From: a@example.com\r\nTo: "\r\nSubject: broken to\r\n'
        b"Date: Mon, 2 Nov 2026 10:00:00 +0000\r\nMessage-ID: <ut@example.com>\r\n\r\nbody\r\n"
    ),
    "eight_bit_headers": (
        "From: Jürgen Müller <j@example.de>\r\nTo: b@example.com\r\nSubject: Grüße aus Köln\r\n"
        "Date: Mon, 2 Nov 2026 10:00:00 +0100\r\nMessage-ID: <8bit@example.de>\r\n\r\n"
        "Hallo\r\n"
    ).encode(),
    "unknown_charset": (
        b"From: a@example.com\r\nTo: b@example.com\r\nSubject: =?x-klingon?Q?qapla?=\r\n"
        b"Date: Mon, 2 Nov 2026 10:00:00 +0000\r\nMessage-ID: <cs@example.com>\r\n"
        b"Content-Type: text/plain; charset=x-klingon\r\n\r\nnuqneH\r\n"
    ),
    "missing_date_and_id": (
        b"From: a@example.com\r\nTo: b@example.com\r\nSubject: bare\r\n\r\nx\r\n"
    ),
    "junk_date": (
        b"From: a@example.com\r\nSubject: junk date\r\nDate: the day after tomorrow\r\n"
        b"Message-ID: <jd@example.com>\r\n\r\nx\r\n"
    ),
    "bad_base64": (
        b"From: a@example.com\r\nSubject: bad b64\r\nMessage-ID: <b64@example.com>\r\n"
        b"Date: Mon, 2 Nov 2026 10:00:00 +0000\r\nContent-Type: text/plain\r\n"
        b"Content-Transfer-Encoding: base64\r\n\r\n!!!not base64 at all###\r\n"
    ),
    "multipart_without_boundary": (
        b"From: a@example.com\r\nSubject: no boundary\r\nMessage-ID: <nb@example.com>\r\n"
        b"Date: Mon, 2 Nov 2026 10:00:00 +0000\r\nContent-Type: multipart/mixed\r\n\r\n"
        b"just text where parts should be\r\n"
    ),
    "no_headers": b"\r\nthis message has no headers at all\r\n",
    "binary_garbage": bytes(range(256)) * 4,
    "deeply_nested": _deep(400),
    "many_parts": _many_parts(2000),
    "bad_rfc2231_filename": (
        b"From: a@example.com\r\nSubject: filename\r\nMessage-ID: <fn@example.com>\r\n"
        b"Date: Mon, 2 Nov 2026 10:00:00 +0000\r\n"
        b'MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="z"\r\n\r\n'
        b"--z\r\nContent-Type: text/plain\r\n\r\nsee file\r\n"
        b"--z\r\nContent-Type: application/octet-stream\r\n"
        b"Content-Disposition: attachment; filename*=x-bogus''%E4%F6.bin\r\n\r\nDATA\r\n--z--\r\n"
    ),
}
