"""Turning raw RFC 5322 bytes into what the mail store keeps — without ever raising.

Real mail is broken in every way: Exchange-style Message-IDs and unterminated address headers
make ``email.policy.default`` raise on header access, charsets are unknown, bodies are missing or
huge, multiparts nest a thousand deep. So this parses with the lenient ``compat32`` policy,
decodes every header explicitly, and turns each problem into a *defect*: a short note stored with
the message (and counted by the sync), never an exception that takes a batch down.
"""

from __future__ import annotations

import email
import hashlib
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.header import decode_header
from email.message import Message
from email.policy import compat32
from email.utils import getaddresses, parsedate_to_datetime
from html import unescape

from django.conf import settings

from mail import mime
from mail.mime import Leaf

MAX_PARTS = 500
SNIPPET_CHARS = 200
_TAGS = re.compile(r"<(script|style)\b.*?</\1>|<[^>]+>", re.IGNORECASE | re.DOTALL)
_SPACE = re.compile(r"\s+")
_MSGID = re.compile(r"<([^<>]*)>")


@dataclass
class ParsedAttachment:
    filename: str
    content_type: str
    size: int
    content_id: str
    inline: bool
    data: bytes | None  # None when over the size limit (see note)
    note: str = ""


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


def _bytes_to_text(data: bytes, charset: str | None) -> tuple[str, bool]:
    """Decode with the declared charset; fall back to UTF-8, then Windows-1252. Returns the
    text and whether a fallback was needed."""
    if charset and charset not in ("unknown-8bit",):
        try:
            return data.decode(charset), False
        except (LookupError, UnicodeDecodeError):
            pass
    try:
        return data.decode("utf-8"), charset not in (None, "utf-8", "us-ascii", "unknown-8bit")
    except UnicodeDecodeError:
        return data.decode("cp1252", "replace"), True


def _text(value: object, defects: list[str], name: str) -> str:
    """Decode a raw header value (RFC 2047 encoded words, raw 8-bit bytes) to clean text."""
    if value is None:
        return ""
    text = str(value)
    if not text.isascii() and any("\udc80" <= ch <= "\udcff" for ch in text):  # raw 8-bit
        text, _ = _bytes_to_text(text.encode("ascii", "surrogateescape"), None)
        defects.append(f"{name}: raw 8-bit header")
    if "=?" in text:
        try:
            chunks = decode_header(text)
        except (ValueError, UnicodeError, AssertionError, LookupError):
            defects.append(f"{name}: malformed encoded words kept as they were")
        else:
            pieces = []
            for chunk, charset in chunks:
                if isinstance(chunk, bytes):
                    decoded, fallback = _bytes_to_text(chunk, charset)
                    if fallback:
                        defects.append(f"{name}: unknown charset {charset!r}, read as UTF-8")
                    pieces.append(decoded)
                else:
                    pieces.append(chunk)
            text = "".join(pieces)
    return _SPACE.sub(" ", text).strip()


# "Name <addr>" or "addr": the shapes of nearly all real address lists. Anything else (quotes,
# comments, groups, escapes) goes to the standard library's full parser.
_SIMPLE_ADDRESS = re.compile(
    r"\s*(?:([^<>,;:\"()\\@]*?)\s*<([^<>\s,;\"()\\]+@[^<>\s,;\"()\\]+)>"
    r"|([^<>\s,;:\"()\\]+@[^<>\s,;:\"()\\]+))\s*$"
)


def _simple_addresses(value: str) -> list[dict[str, str]] | None:
    found = []
    for piece in value.split(","):
        if not piece.strip():
            continue
        match = _SIMPLE_ADDRESS.match(piece)
        if match is None:
            return None
        name, angle, bare = match.groups()
        found.append({"name": (name or "")[:300], "address": (angle or bare)[:320]})
    return found


_EMPTY_GROUP = re.compile(r"[^,:;<>\"]*:\s*;")  # "undisclosed-recipients:;"


def _addresses(values: list[str], defects: list[str], name: str) -> list[dict[str, str]]:
    values = [_EMPTY_GROUP.sub("", v) for v in values]
    simple = [_simple_addresses(v) for v in values]
    if all(part is not None for part in simple):
        return [address for part in simple for address in part]  # type: ignore[union-attr]
    try:
        pairs = getaddresses(values)
    except (ValueError, IndexError, TypeError):
        defects.append(f"{name}: unparseable address list")
        return [{"name": "", "address": v[:320]} for v in values if v]
    result = [{"name": n[:300], "address": a[:320]} for n, a in pairs if n or a]
    if values and any(v.strip() for v in values) and not result:
        defects.append(f"{name}: unparseable address list")
        return [{"name": "", "address": v[:320]} for v in values if v.strip()]
    return result


def _date(value: str, defects: list[str]) -> datetime | None:
    if not value:
        defects.append("missing Date header")
        return None
    try:
        parsed = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        defects.append(f"unparseable Date header {value[:60]!r}")
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _decode_text(leaf: Leaf, defects: list[str]) -> str:
    charset = leaf.headers.get_content_charset() or "us-ascii"
    try:
        return leaf.payload.decode(charset, "replace")
    except LookupError:
        defects.append(f"unknown charset {charset!r}: read as UTF-8")
        return leaf.payload.decode("utf-8", "replace")


def _stdlib_leaves(raw: bytes, defects: list[str]) -> tuple[Message, list[Leaf], bool]:
    """The slow, maximally lenient path: the standard library's full parse, as leaves.

    An attached message (message/rfc822) is one leaf whose payload is that message's bytes.
    """
    msg = email.message_from_bytes(raw, policy=compat32)
    leaves: list[Leaf] = []
    stack: list[Message] = [msg]
    more = False
    while stack:
        part = stack.pop()
        payload = part.get_payload()
        if isinstance(payload, list) and part.get_content_maintype() == "multipart":
            stack.extend(reversed(payload))
            continue
        if len(leaves) >= MAX_PARTS:
            more = True
            break
        problems = sorted({type(d).__name__ for d in part.defects})
        if isinstance(payload, list):  # message/rfc822: keep the attached message whole
            try:
                data = payload[0].as_bytes() if payload else b""
            except (LookupError, ValueError, UnicodeError, TypeError, IndexError):
                data = b""
                problems.append("attached message could not be re-serialized")
        elif part.get_content_maintype() == "multipart":  # no usable boundary: plain text
            data = str(payload).encode("utf-8", "surrogateescape")
        else:
            decoded = part.get_payload(decode=True)
            data = decoded if isinstance(decoded, bytes) else b""
        leaves.append(Leaf(part, data, problems))
    return msg, leaves, more


def _attachment(leaf: Leaf, defects: list[str], limit: int) -> ParsedAttachment:
    headers = leaf.headers
    content_type = headers.get_content_type()
    try:
        filename = headers.get_filename() or ""
    except (LookupError, ValueError, UnicodeError):
        filename = ""
        defects.append("undecodable attachment filename")
    filename = _text(filename, defects, "attachment filename")[:500]
    if content_type == "message/rfc822":
        filename = filename or "attached-message.eml"
    data = leaf.payload
    content_id = _SPACE.sub("", str(headers.get("Content-ID", "") or "")).strip("<>")[:500]
    disposition = str(headers.get("Content-Disposition", "") or "").lower()
    inline = disposition.startswith("inline") or (bool(content_id) and not filename)
    note = ""
    keep: bytes | None = data
    if len(data) > limit:
        keep = None
        note = f"larger than the {limit // 1_000_000} MB attachment limit: content not stored"
    return ParsedAttachment(
        filename=filename,
        content_type=content_type[:200],
        size=len(data),
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


def html_to_text(html: str) -> str:
    return _SPACE.sub(" ", unescape(_TAGS.sub(" ", html))).strip()


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
        try:
            msg, leaves, more = mime.leaves(raw, MAX_PARTS)
        except mime.Unsupported:
            msg, leaves, more = _stdlib_leaves(raw, defects)
    except RecursionError:
        defects.append("structure nested too deeply to read")
        return result
    except Exception as exc:  # the parsers are lenient; anything else is a defect too
        defects.append(f"unreadable message ({type(exc).__name__})")
        return result
    defects.extend(sorted({type(d).__name__ for d in msg.defects}))
    if more:
        defects.append(f"more than {MAX_PARTS} parts: the rest was not read")
    # Raw values: compat32's get() wraps 8-bit values in Header objects that lose the bytes.
    raw: dict[str, list[str]] = {}
    for key, value in msg.raw_items():
        raw.setdefault(key.lower(), []).append(value)

    def first(key: str) -> str | None:
        return raw.get(key, [None])[0]

    result.subject = _text(first("subject"), defects, "Subject")
    raw_id = _text(first("message-id"), defects, "Message-ID")
    result.message_id = normalize_message_id(raw_id)[:998]
    if not result.message_id:
        defects.append("missing Message-ID header")
    senders = _addresses([_text(v, defects, "From") for v in raw.get("from", [])], defects, "From")
    if senders:
        result.from_name, result.from_address = senders[0]["name"], senders[0]["address"]
    result.to = _addresses([_text(v, defects, "To") for v in raw.get("to", [])], defects, "To")
    result.cc = _addresses([_text(v, defects, "Cc") for v in raw.get("cc", [])], defects, "Cc")
    result.date_header = _text(first("date"), defects, "Date")
    result.sent_at = _date(result.date_header, defects)

    body_limit = settings.MAIL_MAX_BODY_CHARS
    attachment_limit = settings.MAIL_MAX_ATTACHMENT_BYTES
    for leaf in leaves:
        try:
            headers = leaf.headers
            content_type = headers.get_content_type()
            disposition = str(headers.get("Content-Disposition", "") or "").lower()
            is_file = disposition.startswith("attachment") or bool(headers.get_filename())
            if content_type == "text/plain" and not is_file and not result.text_body:
                text = _decode_text(leaf, defects)
                result.text_body = _cut(text, body_limit, "text body", result)
            elif content_type == "text/html" and not is_file and not result.html_body:
                text = _decode_text(leaf, defects)
                result.html_body = _cut(text, body_limit, "HTML body", result)
            elif headers.get_content_maintype() == "multipart":
                # A multipart without a usable boundary: its body is plain text, keep it.
                text = leaf.payload.decode("utf-8", "replace")
                if text.strip() and not result.text_body:
                    result.text_body = _cut(text, body_limit, "text body", result)
            elif is_file or content_type not in ("text/plain", "text/html"):
                result.attachments.append(_attachment(leaf, defects, attachment_limit))
            defects.extend(leaf.defects)
        except Exception as exc:  # one bad part must not lose the others
            defects.append(f"unreadable part ({type(exc).__name__})")
    for attachment in result.attachments:
        if attachment.note:
            result.truncated = True
            defects.append(f"{attachment.filename or attachment.content_type}: {attachment.note}")
    source = result.text_body or html_to_text(result.html_body[:20_000])
    result.snippet = _SPACE.sub(" ", source[: SNIPPET_CHARS * 4]).strip()[:SNIPPET_CHARS]
    result.defects = list(dict.fromkeys(defects))  # unique, in order
    return result
