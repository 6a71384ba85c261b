"""Turning raw RFC 5322 bytes into what the mail store keeps — without ever raising.

Real mail is broken in every way: encoded words with invalid base64, charsets that lie or do
not exist, bare CR line ends, header lines without a name, obsolete address syntax, a thousand
nested multiparts, NUL bytes. So every field is read on its own (one that cannot be read does not
take the others down), each reading that had to guess leaves a *defect* note saying what it did
("Subject: invalid base64 in encoded word '=?UTF-8?B?w6k$$$!!?=': kept as written"), and the
raw bytes are always kept, so nothing is lost even when a reading is wrong.

What is stored is also safe to store: NUL characters (which PostgreSQL text and JSON refuse) and
lone surrogates are removed, with a note.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field, fields
from datetime import datetime
from email.message import Message
from email.policy import compat32
from html import unescape
from typing import Any

from django.conf import settings

from mail import headers as h
from mail import mime
from mail.charsets import to_text
from mail.mime import Leaf

MAX_PARTS = 500
SNIPPET_CHARS = 200
MESSAGE_ID_CHARS = 998  # the column's size, and RFC 5322's line limit
_TAGS = re.compile(r"<(script|style)\b.*?</\1>|<[^>]+>", re.IGNORECASE | re.DOTALL)
_SPACE = re.compile(r"\s+")
_MSGID = re.compile(r"<([^<>]*)>")
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


@dataclass
class ParsedAttachment:
    filename: str
    content_type: str
    size: int
    content_id: str
    inline: bool
    data: bytes | None  # None when over the size limit (see note), or once ``stored``
    note: str = ""
    #: (file name, sha256) once the parse helper has written ``data`` to the file storage
    stored: tuple[str, str] | None = None


@dataclass
class ParsedMessage:
    message_id: str = ""
    subject: str = ""
    from_name: str = ""
    from_address: str = ""
    to: list[dict[str, str]] = field(default_factory=list)
    cc: list[dict[str, str]] = field(default_factory=list)
    sent_at: datetime | None = None
    date_header: str = ""
    text_body: str = ""
    html_body: str = ""
    snippet: str = ""
    attachments: list[ParsedAttachment] = field(default_factory=list)
    defects: list[str] = field(default_factory=list)
    truncated: bool = False

    def fingerprint(self, size: int) -> str:
        """Content identity used to re-link a message when its server identity changed."""
        key = "\x1f".join(
            [self.message_id, self.date_header.strip(), self.from_address, self.subject, str(size)]
        )
        return hashlib.sha256(key.encode("utf-8", "replace")).hexdigest()


def normalize_message_id(raw: str) -> str:
    """``<Abc@Example.COM>`` -> ``Abc@example.com``: no brackets or folding, domain lowercased."""
    raw = _SPACE.sub("", raw or "")
    match = _MSGID.search(raw)
    value = match.group(1) if match else raw.strip("<>")
    local, at, domain = value.rpartition("@")
    return f"{local}@{domain.lower()}" if at else value


def html_to_text(html: str) -> str:
    return _SPACE.sub(" ", unescape(_TAGS.sub(" ", html))).strip()


# --- structure -------------------------------------------------------------------------------
def _normalize_line_ends(raw: bytes, defects: list[str]) -> bytes:
    """A message that uses bare CR as its only line end (old Mac software, some gateways) is
    read as if it used CRLF; otherwise its headers would swallow its body."""
    if b"\r" in raw and b"\n" not in raw:
        defects.append("bare CR line ends throughout (read as line breaks)")
        return raw.replace(b"\r", b"\r\n")
    return raw


def _structure(raw: bytes, defects: list[str]) -> tuple[Message, list[Leaf], bool]:
    msg, leaves, more, notes = mime.leaves(raw, MAX_PARTS)
    defects.extend(notes)
    return msg, leaves, more


# --- fields ----------------------------------------------------------------------------------
def _read(defects: list[str], what: str, read: Any, default: Any) -> Any:
    """Run one field's reading; a failure costs that field only (noted), never the message."""
    try:
        return read()
    except Exception as exc:  # hostile input must not take the other fields down
        defects.append(f"{what} could not be read ({type(exc).__name__})")
        return default


def _headers(msg: Message, result: ParsedMessage) -> None:
    defects = result.defects
    raw: dict[str, list[str]] = {}
    for key, value in msg.raw_items():  # raw: compat32's get() loses 8-bit bytes
        raw.setdefault(str(key).lower(), []).append(str(value))

    def first(key: str) -> str | None:
        return raw.get(key, [None])[0]

    result.subject = _read(
        defects, "Subject", lambda: h.header_text(first("subject"), "Subject", defects), ""
    )

    def message_id() -> str:
        value = normalize_message_id(
            h.unescape_8bit(first("message-id") or "", "Message-ID", defects)
        )
        if len(value) > MESSAGE_ID_CHARS:
            defects.append(
                f"Message-ID cut to {MESSAGE_ID_CHARS} characters (was {len(value)}); the raw "
                "message keeps it whole"
            )
            value = value[:MESSAGE_ID_CHARS]
        return value

    result.message_id = _read(defects, "Message-ID", message_id, "")
    if not result.message_id and first("message-id") is None:
        defects.append("missing Message-ID header")
    senders = _read(defects, "From", lambda: h.addresses(raw.get("from", []), "From", defects), [])
    if senders:
        result.from_name, result.from_address = senders[0]["name"], senders[0]["address"]
    result.to = _read(defects, "To", lambda: h.addresses(raw.get("to", []), "To", defects), [])
    result.cc = _read(defects, "Cc", lambda: h.addresses(raw.get("cc", []), "Cc", defects), [])
    result.date_header = _read(
        defects, "Date", lambda: h.header_text(first("date"), "Date", defects), ""
    )
    result.sent_at = _read(defects, "Date", lambda: h.date(result.date_header, defects), None)


def _decode_text(leaf: Leaf, what: str, defects: list[str]) -> str:
    charset = leaf.headers.get_param("charset")
    if isinstance(charset, tuple):  # RFC 2231 form
        charset = charset[2]
    text, note = to_text(leaf.payload, str(charset) if charset else None, what)
    if note:
        defects.append(note)
    return text


def _param(headers: Message, name: str, header: str, defects: list[str]) -> Any:
    """A header parameter as ``get_param`` reads it, but with raw 8-bit bytes decoded first:
    compat32 turns them into U+FFFD, which would lose a UTF-8 file name."""
    raw = next((str(v) for k, v in headers.raw_items() if str(k).lower() == header), None)
    if raw is None or raw.isascii():
        return headers.get_param(name, header=header)
    decoded = Message(policy=compat32)
    decoded[header] = h.unescape_8bit(raw, "attachment filename", defects)
    return decoded.get_param(name, header=header)


def _filename(headers: Message, defects: list[str]) -> str:
    """The attachment's file name, decoded (RFC 2231 or encoded words); kept as written when
    it cannot be decoded — an attachment is never dropped for its name."""
    value = _param(headers, "filename", "content-disposition", defects)
    if value is None:
        value = _param(headers, "name", "content-type", defects)
    if value is None:
        return ""
    if isinstance(value, tuple):  # RFC 2231: (charset, language, percent-decoded latin-1)
        charset, _, text = value
        try:
            data = str(text).encode("latin-1", "surrogateescape")
        except UnicodeEncodeError:
            # characters, not bytes: the header held raw 8-bit text (filename*=UTF-8''Отчёт
            # written unencoded), which the header reading already decoded
            return str(text)
        name, note = to_text(data, charset, "attachment filename")
        if note:
            defects.append(note)
        return name
    return h.decode_words(str(value).strip('"'), "attachment filename", defects)


def _attachment(leaf: Leaf, defects: list[str], limit: int) -> ParsedAttachment:
    headers = leaf.headers
    content_type = _read(
        defects, "attachment type", headers.get_content_type, "application/octet-stream"
    )
    filename = _read(defects, "attachment filename", lambda: _filename(headers, defects), "")[:500]
    if content_type == "message/rfc822":
        filename = filename or "attached-message.eml"
    # counting the decoded size takes a pass over the content: only needed when it may be
    # over the limit (the decoded content is never larger than the encoded one)
    size = leaf.encoded_size if leaf.encoded_size <= limit else leaf.decoded_size
    content_id = _SPACE.sub("", str(headers.get("Content-ID", "") or "")).strip("<>")[:500]
    disposition = str(headers.get("Content-Disposition", "") or "").lower()
    inline = disposition.startswith("inline") or (bool(content_id) and not filename)
    note = ""
    keep: bytes | None = None
    if size > limit:  # not even decoded: a 20 MiB attachment costs no 20 MiB here
        note = f"larger than the {limit // 1_000_000} MB attachment limit: content not stored"
    else:
        keep = leaf.payload
        size = len(keep)
    return ParsedAttachment(
        filename=filename,
        content_type=content_type[:200],
        size=size,
        content_id=content_id,
        inline=inline,
        data=keep,
        note=note,
    )


def _cut(text: str, limit: int, what: str, result: ParsedMessage) -> str:
    if len(text) <= limit:
        return text
    result.truncated = True
    result.defects.append(f"{what} cut to {limit} characters (was {len(text)})")
    return text[:limit]


def _names_a_file(headers: Message, disposition: str) -> bool:
    """A ``filename`` or ``name`` parameter (the parameter parse only where one can be)."""
    if "name" not in disposition and "name" not in str(headers.get("Content-Type", "")).lower():
        return False
    return bool(headers.get_param("filename", header="content-disposition")) or bool(
        headers.get_param("name")
    )


def _parts(leaves: list[Leaf], result: ParsedMessage) -> None:
    defects = result.defects
    body_limit = settings.MAIL_MAX_BODY_CHARS
    attachment_limit = settings.MAIL_MAX_ATTACHMENT_BYTES
    for leaf in leaves:
        try:
            headers = leaf.headers
            content_type = headers.get_content_type()
            disposition = str(headers.get("Content-Disposition", "") or "").lower()
            is_file = disposition.startswith("attachment") or _names_a_file(headers, disposition)
            if content_type == "text/plain" and not is_file and not result.text_body:
                text = _decode_text(leaf, "text body", defects)
                result.text_body = _cut(text, body_limit, "text body", result)
            elif content_type == "text/html" and not is_file and not result.html_body:
                text = _decode_text(leaf, "HTML body", defects)
                result.html_body = _cut(text, body_limit, "HTML body", result)
            elif headers.get_content_maintype() == "multipart" and not leaf.opaque:
                # A multipart without a usable boundary: its body is plain text, keep it.
                text, note = to_text(leaf.payload, None, "text body")
                if note:
                    defects.append(note)
                if text.strip() and not result.text_body:
                    result.text_body = _cut(text, body_limit, "text body", result)
            else:
                result.attachments.append(_attachment(leaf, defects, attachment_limit))
            defects.extend(leaf.defects)
        except Exception as exc:  # one bad part must not lose the others
            defects.append(f"a part could not be read ({type(exc).__name__})")
            size = leaf.decoded_size
            result.attachments.append(
                ParsedAttachment(
                    "",
                    "application/octet-stream",
                    size,
                    "",
                    False,
                    None,
                    "the part could not be read; the raw message keeps it",
                )
            )


def _storable_text(value: str) -> bool:
    """No NUL and no lone surrogate — checked in C (a body can be megabytes)."""
    if "\x00" in value:
        return False
    if value.isascii():
        return True
    try:
        value.encode("utf-8")  # refuses exactly the lone surrogates
    except UnicodeEncodeError:
        return False
    return True


def make_storable(result: ParsedMessage) -> None:
    """Remove what databases cannot store (NUL; lone surrogates) from every text, noting it."""

    def fix(value: str, what: str) -> str:
        if _storable_text(value):
            return value
        result.defects.append(f"{what}: NUL or invalid characters removed")
        return _UNSTORABLE.sub("", value)

    for name in _TEXT_FIELDS:
        setattr(result, name, fix(getattr(result, name), name.replace("_", " ")))
    for name in ("to", "cc"):
        for entry in getattr(result, name):
            entry["name"] = fix(entry["name"], f"{name} name")
            entry["address"] = fix(entry["address"], f"{name} address")
    for attachment in result.attachments:
        attachment.filename = fix(attachment.filename, "attachment filename")
        attachment.content_id = fix(attachment.content_id, "attachment content id")
        attachment.content_type = fix(attachment.content_type, "attachment type")
    result.defects = [d if _storable_text(d) else _UNSTORABLE.sub("", d) for d in result.defects]


#: the text fields ``make_storable`` checks (the snippet is cut from them afterwards)
_TEXT_FIELDS = tuple(
    f.name for f in fields(ParsedMessage) if f.type in ("str", str) and f.name != "snippet"
)


def parse_message(raw: bytes, *, cut_at: int | None = None) -> ParsedMessage:
    """Parse raw message bytes. Never raises: problems become ``defects``.

    ``cut_at``: the server's full size when ``raw`` is only the first part of a message that was
    over the size limit (the message is then marked truncated).
    """
    result = ParsedMessage()
    defects = result.defects
    if cut_at is not None:
        result.truncated = True
        defects.append(f"message of {cut_at} bytes cut to the first {len(raw)} bytes")
    try:
        raw = _normalize_line_ends(raw, defects)
        msg, leaves, more = _structure(raw, defects)
    except RecursionError:
        defects.append("structure nested too deeply to read; the raw message is kept")
        return result
    except Exception as exc:  # the parsers are lenient; anything else is a defect too
        defects.append(f"unreadable message ({type(exc).__name__}); the raw message is kept")
        return result
    if more:
        defects.append(f"more than {MAX_PARTS} parts: the rest was not read")
    _read(defects, "headers", lambda: _headers(msg, result), None)
    _parts(leaves, result)
    for attachment in result.attachments:
        if attachment.note:
            result.truncated = True
            defects.append(f"{attachment.filename or attachment.content_type}: {attachment.note}")
    source = result.text_body or html_to_text(result.html_body[:20_000])
    result.snippet = h.clean(source[: SNIPPET_CHARS * 4])[:SNIPPET_CHARS]
    make_storable(result)  # result.defects is then a cleaned copy of ``defects``
    result.snippet = _UNSTORABLE.sub("", result.snippet)
    result.defects = list(dict.fromkeys(result.defects))  # unique, in order
    return result
