"""Splitting a message into its leaf parts quickly.

The standard library's feed parser reads every body line by line and compiles a regular
expression per multipart boundary, which makes it the slowest step of a mail sync. Here the
stdlib still parses each *header block* (so parameters, RFC 2231 filenames and charsets behave
exactly as in ``email``), but bodies are cut at their boundaries with ``bytes.find`` and decoded
with the C codecs in ``binascii``. What the standard library reads leniently is read the same
way here: a multipart without a boundary, or whose boundary never appears, is plain text;
nesting deeper than the limit is kept as one part. (A fallback to the standard library's full
parse for those lost attached messages nested 250 deep and re-wrote their bytes.)
"""

from __future__ import annotations

import binascii
import email.utils
import re
from dataclasses import dataclass, field
from email.message import Message
from email.policy import compat32
from typing import Any

#: what well-formed base64 content consists of (``bytes.translate`` deletes these: whatever
#: remains is what ``a2b_base64`` skipped silently)
_BASE64_BYTES = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/= \t\r\n"
MAX_DEPTH = 1000  # the walk is iterative; deeper content is kept as one part


_MISSING = object()


class Headers(Message):
    """A compat32 ``Message`` holding one header block, with a quicker ``get``.

    Reading a header is what parsing a message does most (content types, parameters and
    encodings are all read through ``get``). compat32 passes every value through its policy,
    which only ever changes values holding raw 8-bit bytes; an ASCII value is returned as
    it is here, without that detour. Everything else is ``Message``'s own.
    """

    def get(self, name: str, failobj: Any = None) -> Any:
        name = name.lower()
        for key, value in self.raw_items():
            if key.lower() == name:
                if isinstance(value, str) and value.isascii():
                    return value  # what compat32's header_fetch_parse returns for it
                return self.policy.header_fetch_parse(key, value)
        return failobj

    def get_param(
        self, param: str, failobj: Any = None, header: str = "content-type", unquote: bool = True
    ) -> Any:
        """``Message.get_param``, read in one pass for plain parameter lists (no backslash,
        no RFC 2231 ``*``, no ``;`` inside quotes): for those, what
        ``Message.get_param`` returns is the first parameter of that name with its quotes
        (or angle brackets) removed. Anything else goes to ``Message.get_param`` itself."""
        value = self.get(header, _MISSING)
        if value is _MISSING:
            return failobj
        if not unquote or not isinstance(value, str) or "\\" in value or "*" in value:
            return super().get_param(param, failobj, header, unquote)
        segments = value.split(";")
        if '"' in value and any(segment.count('"') % 2 for segment in segments):
            return super().get_param(param, failobj, header, unquote)
        wanted = param.lower()
        for segment in segments:
            name, _, text = segment.partition("=")
            if name.strip().lower() == wanted:
                return email.utils.unquote(text.strip())
        return failobj


@dataclass
class Leaf:
    """A non-multipart part: its headers and its content, decoded when first asked for.

    The content is ``source[start:end]``: a stretch of the whole message, still encoded (no
    copy is made), or the decoded content itself when ``decoded`` is set. Decoding waits until
    someone needs the bytes, so an attachment too large to store is never decoded at all
    (``decoded_size`` says how large it is).
    """

    headers: Message
    source: bytes
    defects: list[str] = field(default_factory=list)
    opaque: bool = False  # content kept as it was (nested too deep to split)
    decoded: bool = False
    start: int = 0
    end: int | None = None
    _payload: bytes | None = None

    @property
    def body(self) -> memoryview:
        return memoryview(self.source)[self.start : self.end]

    @property
    def payload(self) -> bytes:
        if self._payload is None:
            if self.decoded or self.opaque:
                self._payload = bytes(self.body)
            else:
                self._payload = decode_payload(self.headers, self.body, self.defects)
        return self._payload

    @property
    def encoded_size(self) -> int:
        """The content's size as it is in the message: never less than its decoded size
        (base64 and quoted-printable only ever shrink when decoded)."""
        return (len(self.source) if self.end is None else self.end) - self.start

    @property
    def decoded_size(self) -> int:
        """The content's size once decoded (exact for base64 and plain content; for
        quoted-printable, an upper bound)."""
        if self._payload is not None:
            return len(self._payload)
        end = len(self.source) if self.end is None else self.end
        if self.decoded or self.opaque:
            return end - self.start
        encoding = str(self.headers.get("Content-Transfer-Encoding", "") or "").strip().lower()
        if encoding != "base64":
            return end - self.start
        # alphabet characters (line breaks and blanks are the only others in well-formed
        # base64) times 3/4, less the padding — counted in place, without a copy
        noise = sum(self.source.count(c, self.start, end) for c in (b"\r", b"\n", b" ", b"\t"))
        tail = self.source[max(self.start, end - 4) : end].rstrip(b"\r\n \t")
        padding = len(tail) - len(tail.rstrip(b"="))
        return max(0, (end - self.start - noise) * 3 // 4 - padding)


_HEADER_LINE = re.compile(r"^[!-9;-~]+[ \t]*:")  # printable name, optional WSP, colon


def headers_of(block: bytes) -> tuple[Message, list[str], int | None]:
    """Parse a header block into a compat32 ``Message`` (headers only), leniently.

    Unfolds continuation lines and stores each header raw with ``Message.set_raw`` — what the
    feed parser would store. Returns the message, notes about what was wrong, and, when the
    block turned out to hold body text (a line that is no header, with no header after it: a
    missing blank line), the offset in ``block`` where the body really starts.

    A line that is no header but is followed by more headers is skipped with a note — the
    standard library would end the headers there and lose Date and Message-ID after it. A bare
    CR ends a line like CRLF does.

    A block of nothing but fields and their continuation lines (nearly every one) is read in
    one pass (``_plain_fields``); any other goes line by line (``_headers_by_line``). Both
    give the same result for the blocks the first one reads
    (tests/mail/test_mime_fast_paths.py).
    """
    text = block.decode("ascii", "surrogateescape")
    bare_cr = text.count("\r") != text.count("\r\n")
    unified = text.replace("\r\n", "\n")
    # the one-pass reading knows no body offset: only for a block its first blank line ends
    if not bare_cr and unified.find("\n\n") + 2 == len(unified):
        plain = _plain_fields(unified)
        if plain is not None:
            return _message(plain), [], None
    return _headers_by_line(text, unified, bare_cr)


def _headers_by_line(
    text: str, unified: str, bare_cr: bool
) -> tuple[Message, list[str], int | None]:
    """``headers_of`` for any block, one line at a time (``unified``: ``text`` with CRLF
    made LF). Linear in the block's length, whatever it holds."""
    headers: list[list[str]] = []
    notes: list[str] = []
    if bare_cr:
        notes.append("bare CR line ends in the headers (read as line breaks)")
    lines, starts = _split_lines(text)
    later_header: list[bool] | None = None
    for index, line in enumerate(lines):
        if line == "":
            # the blank line: the body starts after it, which is where the caller looked for
            # it unless bare CRs made a blank line before the CRLF CRLF it found
            after = starts[index + 1] if index + 1 < len(starts) else len(text)
            return _message(headers), notes, after if after < len(text) else None
        if line[:1] in (" ", "\t"):
            if headers:
                headers[-1][1] += "\r\n" + line
            continue
        if not headers and line.startswith("From ") and index == 0:
            continue  # an mbox envelope line
        if _HEADER_LINE.match(line) and "\x00" not in line.partition(":")[0]:
            name, _, value = line.partition(":")
            headers.append([name.rstrip(" \t"), value.lstrip(" \t")])
            continue
        if not line.startswith("--"):  # (a MIME boundary ends the headers, as in the stdlib)
            if later_header is None:
                later_header = _header_after(lines)
            if later_header[index]:
                notes.append(f"a header line without a name was skipped: {line[:60]!r}")
                continue
        notes.append("no blank line between the headers and the body")
        return _message(headers), notes, starts[index]
    return _message(headers), notes, None


#: a line end: LF with any CRs before it (CR CR LF is a message converted twice), or a bare CR
_LINE_END = re.compile(r"\r*\n|\r")


def _split_lines(text: str) -> tuple[list[str], list[int]]:
    """The lines of ``text`` and where each starts."""
    lines: list[str] = []
    starts = [0]
    for match in _LINE_END.finditer(text):
        lines.append(text[starts[-1] : match.start()])
        starts.append(match.end())
    lines.append(text[starts[-1] :])
    return lines, starts


def _header_after(lines: list[str]) -> list[bool]:
    """For each line, whether a header line comes after it (one pass from the end: asking
    this anew for each stray line made a block of many of them quadratic)."""
    flags = [False] * len(lines)
    seen = False
    for index in range(len(lines) - 1, -1, -1):
        flags[index] = seen
        seen = seen or bool(lines[index] and _HEADER_LINE.match(lines[index]))
    return flags


#: one header field: a name, its value and any continuation lines (LF line ends)
_FIELD = re.compile(r"([!-9;-~]+)[ \t]*:[ \t]*([^\n]*(?:\n[ \t][^\n]*)*)\n")
#: a header block made of nothing but such fields
_FIELDS = re.compile(r"(?:[!-9;-~]+[ \t]*:[^\n]*\n(?:[ \t][^\n]*\n)*)+")


def _plain_fields(unified: str) -> list[list[str]] | None:
    """The fields of a header block in which every line up to the first blank one is a
    field or continues one (nearly every block), read in one pass with the same result as
    ``headers_of``'s line-by-line reading; None for anything else, which that reading
    handles. ``unified`` has LF line ends only."""
    end = unified.find("\n\n") + 1
    # a first line "From ..." is an mbox envelope line to the line-by-line reading, even as
    # "From : Alice" (which reads as a field here): that reading decides
    if end <= 0 or unified.startswith("From ") or _FIELDS.fullmatch(unified, 0, end) is None:
        return None
    return [[name, value.replace("\n", "\r\n")] for name, value in _FIELD.findall(unified, 0, end)]


def _message(headers: list[list[str]]) -> Message:
    msg = Headers(policy=compat32)
    for name, value in headers:
        msg.set_raw(name, value.rstrip("\r\n"))
    return msg


def _split_multipart(
    raw: bytes, start: int, end: int, boundary: bytes
) -> list[tuple[int, int]] | None:
    """The (start, end) offsets of each part between ``start`` and ``end`` (no copies); None
    when the boundary never appears."""
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
        return None  # the boundary never appears
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


def decode_payload(headers: Message, body: bytes | memoryview, defects: list[str]) -> bytes:
    """Undo the Content-Transfer-Encoding (base64, quoted-printable) of one part."""
    encoding = str(headers.get("Content-Transfer-Encoding", "") or "").strip().lower()
    if encoding == "base64":
        try:
            data = binascii.a2b_base64(body)
        except binascii.Error:
            defects.append("invalid base64 content: kept what could be decoded")
            cleaned = b"".join(bytes(body).split())
            usable = len(cleaned) - len(cleaned) % 4
            try:
                return binascii.a2b_base64(cleaned[:usable])
            except binascii.Error:
                return b""
        if bytes(body).translate(None, _BASE64_BYTES):  # a2b_base64 skipped these silently
            defects.append("invalid base64 content: characters outside base64 were ignored")
        return data
    if encoding == "quoted-printable":
        return binascii.a2b_qp(body)
    if encoding not in ("", "7bit", "8bit", "binary"):
        defects.append(f"unknown transfer encoding {encoding[:40]!r}: content kept as it was")
    return bytes(body)


def leaves(raw: bytes, max_parts: int) -> tuple[Message, list[Leaf], bool, list[str]]:
    """Top-level headers, the leaf parts in document order, whether there were more than
    ``max_parts`` (the rest is not read), and notes about the top-level headers.

    Multiparts nested deeper than ``MAX_DEPTH`` are not split further: the deeper content is
    kept as one part, with a note (a thousand levels must not cost a thousand times anything).
    """
    block, body_start = _split_head_at(raw, 0, len(raw))
    top, notes, body_at = headers_of(block)
    if body_at is not None:
        body_start = min(body_at, len(raw))  # (not into the blank line added to the block)
    result: list[Leaf] = []
    stack: list[tuple[Message, int, int, int, list[str]]] = [(top, body_start, len(raw), 0, [])]
    while stack:
        headers, start, end, depth, header_notes = stack.pop()
        as_text = False
        if headers.get_content_maintype() == "multipart" and depth < MAX_DEPTH:
            boundary = headers.get_param("boundary")
            spans = (
                _split_multipart(raw, start, end, str(boundary).encode("latin-1", "replace"))
                if boundary
                else None
            )
            if spans is not None:
                children = []
                for part_start, part_end in spans:
                    part_block, part_body = _split_head_at(raw, part_start, part_end)
                    part, part_notes, part_body_at = headers_of(part_block)
                    if part_body_at is not None:
                        part_body = min(part_start + part_body_at, part_end)
                    children.append((part, part_body, part_end, depth + 1, part_notes))
                stack.extend(reversed(children))
                continue
            as_text = True
        if len(result) >= max_parts:
            return top, result, True, notes
        defects = list(header_notes)
        if as_text:
            # no boundary, or one that never appears: as in the standard library, the content
            # is plain text (kept as it is, and read as the text body)
            why = "without a boundary" if not boundary else "whose boundary never appears"
            defects.append(f"multipart {why}: its content is kept as text")
            result.append(Leaf(headers, raw, defects, decoded=True, start=start, end=end))
            continue
        if headers.get_content_maintype() == "multipart":
            defects.append(
                f"multipart nested deeper than {MAX_DEPTH} levels: the rest is kept as one part"
            )
            result.append(Leaf(headers, raw, defects, opaque=True, start=start, end=end))
            continue
        result.append(Leaf(headers, raw, defects, start=start, end=end))
    return top, result, False, notes
