"""Splitting a message into its leaf parts quickly.

The standard library's feed parser reads every body line by line and compiles a regular
expression per multipart boundary, which makes it the slowest step of a mail sync. Here the
stdlib still parses each *header block* (so parameters, RFC 2231 filenames and charsets behave
exactly as in ``email``), but bodies are cut at their boundaries with ``bytes.find`` and decoded
with the C codecs in ``binascii``. Anything this does not handle plainly — a multipart without a
boundary, nesting deeper than the limit, a boundary that never appears — raises ``Unsupported``
and the caller falls back to the full standard-library parse.
"""

from __future__ import annotations

import binascii
from dataclasses import dataclass, field
from email.message import Message
from email.parser import BytesHeaderParser
from email.policy import compat32

MAX_DEPTH = 1000  # the walk is iterative; deeper than this is pathological
_HEADERS = BytesHeaderParser(policy=compat32)


class Unsupported(Exception):
    """The structure needs the full standard-library parser."""


@dataclass
class Leaf:
    """A non-multipart part: its headers and its decoded content."""

    headers: Message
    payload: bytes
    defects: list[str] = field(default_factory=list)


def headers_of(block: bytes) -> Message:
    """Parse a header block into a compat32 ``Message`` (headers only).

    Unfolds continuation lines and stores each header raw with ``Message.set_raw`` — what the
    feed parser would store — without its per-line machinery. A block with a line that is not
    a header (no colon) goes to the standard parser, which knows how to recover from that.
    """
    text = block.decode("ascii", "surrogateescape")
    headers: list[list[str]] = []
    for line in text.splitlines(keepends=True):
        if line in ("\r\n", "\n"):
            break
        if line[:1] in (" ", "\t") and headers:
            headers[-1][1] += line
            continue
        name, colon, value = line.partition(":")
        if not colon or not name or name != name.rstrip() or "\x00" in name:
            if not headers and line.startswith("From "):
                continue  # an mbox envelope line
            return _HEADERS.parsebytes(block)
        headers.append([name, value.lstrip(" \t")])
    msg = Message(policy=compat32)
    for name, value in headers:
        msg.set_raw(name, value.rstrip("\r\n"))
    return msg


def _split_multipart(raw: bytes, start: int, end: int, boundary: bytes) -> list[tuple[int, int]]:
    """The (start, end) offsets of each part between ``start`` and ``end`` (no copies)."""
    marker = b"--" + boundary
    starts: list[int] = []
    search = start
    while (found := raw.find(marker, search, end)) >= 0:
        search = found + len(marker)
        if found != start and raw[found - 1] != 0x0A:
            continue  # not at the start of a line
        line_end = raw.find(b"\n", search, end)
        rest = raw[search : line_end if line_end >= 0 else end]
        if rest.removeprefix(b"--").strip(b" \t\r"):
            continue  # a longer boundary that merely starts with ours
        starts.append(found)
    if not starts:
        raise Unsupported("boundary never appears")
    parts = []
    for position, delimiter in enumerate(starts):
        after = delimiter + len(marker)
        if raw.startswith(b"--", after):
            break  # the closing delimiter; the rest is the epilogue
        line_end = raw.find(b"\n", after, end)
        if line_end < 0:
            break
        stop = starts[position + 1] if position + 1 < len(starts) else end
        # the line break before a delimiter belongs to the delimiter
        if raw[stop - 2 : stop] == b"\r\n":
            stop -= 2
        elif raw[stop - 1 : stop] == b"\n":
            stop -= 1
        parts.append((line_end + 1, max(stop, line_end + 1)))
    return parts


def _split_head_at(raw: bytes, start: int, end: int) -> tuple[bytes, int]:
    """Header block of the part at ``start`` and the offset where its body begins."""
    for blank in (b"\r\n", b"\n"):
        if raw.startswith(blank, start):  # no headers at all
            return b"", start + len(blank)
    crlf = raw.find(b"\r\n\r\n", start, end)
    # a bare-LF blank line only counts if it comes first: never scan past the CRLF one
    lf = raw.find(b"\n\n", start, crlf if crlf >= 0 else end)
    if lf >= 0:
        return raw[start : lf + 2], lf + 2
    if crlf >= 0:
        return raw[start : crlf + 4], crlf + 4
    return raw[start:end] + b"\r\n\r\n", end


def decode_payload(headers: Message, body: bytes, defects: list[str]) -> bytes:
    """Undo the Content-Transfer-Encoding (base64, quoted-printable) of one part."""
    encoding = str(headers.get("Content-Transfer-Encoding", "") or "").strip().lower()
    if encoding == "base64":
        try:
            return binascii.a2b_base64(body)
        except binascii.Error:
            defects.append("invalid base64 content: kept what could be decoded")
            cleaned = b"".join(body.split())
            usable = len(cleaned) - len(cleaned) % 4
            try:
                return binascii.a2b_base64(cleaned[:usable])
            except binascii.Error:
                return b""
    if encoding == "quoted-printable":
        return binascii.a2b_qp(body)
    return body


def leaves(raw: bytes, max_parts: int) -> tuple[Message, list[Leaf], bool]:
    """Top-level headers, the leaf parts in document order, and whether there were more than
    ``max_parts`` (the rest is not read). Raises ``Unsupported`` for unusual structures."""
    block, body_start = _split_head_at(raw, 0, len(raw))
    top = headers_of(block)
    result: list[Leaf] = []
    stack: list[tuple[Message, int, int, int]] = [(top, body_start, len(raw), 0)]
    while stack:
        headers, start, end, depth = stack.pop()
        if headers.get_content_maintype() == "multipart":
            boundary = headers.get_param("boundary")
            if not boundary or depth >= MAX_DEPTH:
                raise Unsupported("multipart without a usable boundary, or too deep")
            children = []
            for part_start, part_end in _split_multipart(
                raw, start, end, str(boundary).encode("latin-1", "replace")
            ):
                part_block, part_body = _split_head_at(raw, part_start, part_end)
                children.append((headers_of(part_block), part_body, part_end, depth + 1))
            stack.extend(reversed(children))
            continue
        if len(result) >= max_parts:
            return top, result, True
        defects: list[str] = []
        payload = decode_payload(headers, raw[start:end], defects)
        result.append(Leaf(headers, payload, defects))
    return top, result, False
