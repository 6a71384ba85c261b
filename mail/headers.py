"""Reading header values the way real mail needs: leniently, and saying what was wrong.

Every function returns its best reading plus notes (defects). None of them raises on input:
the standard library's ``decode_header`` raises ``HeaderParseError`` on an encoded word with
invalid base64, and ``getaddresses`` turns an obsolete source route into an empty address —
both seen in real mailboxes.

Header values arrive as ``str`` decoded with ``surrogateescape`` (raw 8-bit bytes survive as
lone surrogates) and leave as clean text.
"""

from __future__ import annotations

import binascii
import re
from datetime import UTC, datetime
from email.utils import getaddresses, parsedate_to_datetime

from mail.charsets import to_text

# RFC 2047 encoded word; lenient about the encoded text (anything but "?" and whitespace)
_WORD = re.compile(r"=\?([^?\s]+)\?([bBqQ])\?([^?\s]*)\?=")
_BETWEEN_WORDS = re.compile(r"(?<=\?=)[ \t\r\n]+(?==\?)")
_QP_HEX = re.compile(rb"=([0-9A-Fa-f]{2})")
_ROUTE = re.compile(r"^\s*@[^:<>]*:\s*(?P<address>[^@\s<>]+@[^@\s<>]+)\s*$")


def unescape_8bit(text: str, what: str, notes: list[str]) -> str:
    """Raw 8-bit bytes in a header (kept as surrogates) become text: UTF-8 when valid, else
    Windows-1252, with a note saying which."""
    if text.isascii() or not any("\udc80" <= ch <= "\udcff" for ch in text):
        return text
    decoded, note = to_text(text.encode("ascii", "surrogateescape"), None, what)
    notes.append(f"{what}: raw 8-bit bytes instead of encoded words" + note[len(what) :])
    return decoded


def _decode_word(charset: str, encoding: str, payload: str) -> bytes:
    """The bytes of one encoded word; raises ``ValueError`` when they cannot be read."""
    charset = charset.split("*", 1)[0]  # RFC 2231 language suffix: =?utf-8*en?Q?…?=
    if encoding in "bB":
        data = payload.encode("ascii", "strict")
        data += b"=" * (-len(data) % 4)  # missing padding is common and harmless
        return binascii.a2b_base64(data, strict_mode=True)
    data = payload.replace("_", " ").encode("ascii", "strict")
    if re.search(rb"=(?![0-9A-Fa-f]{2})", data):
        raise ValueError("a '=' not followed by two hex digits")
    return _QP_HEX.sub(lambda m: bytes([int(m.group(1), 16)]), data)


def decode_words(value: str, what: str, notes: list[str]) -> str:
    """Decode RFC 2047 encoded words in a header value: a word that cannot be decoded is kept
    as written (noted), the others are decoded. Adjacent words in the same charset are decoded
    together (RFC 2047 §5 lets a mailer split anywhere, and many split inside a multibyte
    character: "=?UTF-8?B?5pel5pw=?= =?UTF-8?B?rOiqng==?=" is one word's bytes, 日本語)."""
    text = unescape_8bit(value, what, notes)
    if "=?" not in text:
        return text
    text = _BETWEEN_WORDS.sub("", text)  # whitespace between encoded words is not text
    pieces: list[str] = []
    run: list[bytes] = []  # the bytes of adjacent words in one charset, not decoded yet
    run_charset = ""
    last = 0  # where the text not yet in ``pieces`` starts

    def flush() -> None:
        nonlocal run_charset
        if run:
            decoded, note = to_text(b"".join(run), run_charset, what)
            if note:
                notes.append(note)
            pieces.append(decoded)
            run.clear()
        run_charset = ""

    for match in _WORD.finditer(text):
        charset, encoding, payload = match.groups()
        charset = charset.split("*", 1)[0]  # (an RFC 2231 language after "*")
        if not run or match.start() != last or charset.lower() != run_charset.lower():
            flush()
            pieces.append(text[last : match.start()])
        last = match.end()
        try:
            data = _decode_word(charset, encoding, payload)
        except (ValueError, binascii.Error, UnicodeError):
            flush()
            notes.append(
                f"{what}: invalid {'base64' if encoding in 'bB' else 'quoted-printable'} in "
                f"encoded word {match.group(0)[:80]!r}: kept as written"
            )
            pieces.append(match.group(0))
            continue
        run_charset = run_charset or charset
        run.append(data)
    flush()
    pieces.append(text[last:])
    return "".join(pieces)


def clean(value: str) -> str:
    """Fold whitespace (line breaks, tabs) to single spaces; trim."""
    return " ".join(value.split())  # what re's \s+ and strip() mean, without a regex


def header_text(value: str | None, what: str, notes: list[str]) -> str:
    """A free-text header (Subject, a name): decoded and folded."""
    if value is None:
        return ""
    return clean(decode_words(value, what, notes))


# "Name <addr>" or "addr": the shapes of nearly all real address lists. Anything else (quotes,
# comments, groups, escapes) goes to the standard library's full parser.
# Matched against a stripped piece, in time linear in its length: the name is words with
# single runs of blanks between them (no quantifier can take the same blank as another), the
# domain has no "@" (so the address splits at its last one) and atomic groups try nothing
# twice. A pattern that let a lazy name and the blanks around it share a run of spaces took
# 25 s on 3,000 of them.
_SIMPLE_ADDRESS = re.compile(
    r"(?:(?>([^<>,;:\"()\\@\s]+(?:\s+[^<>,;:\"()\\@\s]+)*))?\s*"
    r"<(?>([^<>\s,;\"()\\]+@[^<>\s,;\"()\\@]+))>"
    r"|(?>([^<>\s,;:\"()\\]+@[^<>\s,;:\"()\\@]+)))"
)
# "undisclosed-recipients:;" at the start or after a comma (only there: tried at every
# position, the scan for a colon made 100 kB without one take 27 s)
_EMPTY_GROUP = re.compile(r"(?:^|(?<=,))[^,:;<>\"]*:\s*;")
_ROUTE_IN_ANGLES = re.compile(r"<\s*(@[^<>:]*:)\s*([^<>]+)>")


def _simple(value: str) -> list[dict[str, str]] | None:
    found = []
    for piece in value.split(","):
        if not piece.strip():
            continue
        match = _SIMPLE_ADDRESS.fullmatch(piece.strip())
        if match is None:
            return None
        name, angle, bare = match.groups()
        found.append({"name": (name or "")[:300], "address": (angle or bare)[:320]})
    return found


def addresses(raw_values: list[str], what: str, notes: list[str]) -> list[dict[str, str]]:
    """An address header (all its occurrences) as ``[{"name", "address"}]``; names decoded.

    Obsolete source routes (``<@relay.example:user@host.example>``, RFC 5322 §4.4) are
    dropped from the address, with a note; an address list nothing can read is kept as one
    entry holding the raw text, with a note.
    """
    values = []
    for raw in raw_values:
        text = unescape_8bit(raw, what, notes)
        if _ROUTE_IN_ANGLES.search(text):
            notes.append(f"{what}: obsolete source route removed from an address")
            text = _ROUTE_IN_ANGLES.sub(lambda m: f"<{m.group(2).strip()}>", text)
        values.append(_EMPTY_GROUP.sub("", text) if ";" in text else text)  # (a quick no)
    simple = [_simple(v) for v in values]
    if all(part is not None for part in simple):
        found = [address for part in simple for address in part]  # type: ignore[union-attr]
    else:
        try:
            pairs = getaddresses(values)
        except Exception:  # the stdlib parser on hostile input: never fatal
            pairs = []
        found = []
        for name, address in pairs:
            route = _ROUTE.match(address)
            if route:
                notes.append(f"{what}: obsolete source route removed from an address")
                address = route.group("address")
            if name or address:
                found.append({"name": name[:300], "address": address[:320]})
        if found and not any("@" in v for v in values):
            # "From: Just A Name": a name and no address at all (the stdlib makes the first
            # word an address)
            notes.append(f"{what}: no email address, only a name")
            found = [{"name": clean(v)[:300], "address": ""} for v in values if v.strip()]
        if not found and any(v.strip() for v in values):
            notes.append(f"{what}: unparseable address list kept as written")
            return [{"name": "", "address": clean(v)[:320]} for v in values if v.strip()]
    for entry in found:
        entry["name"] = clean(decode_words(entry["name"], f"{what} name", notes))[:300]
        entry["address"] = clean(entry["address"])[:320]
    return found


def date(value: str, notes: list[str]) -> datetime | None:
    """The Date header as an aware datetime (UTC when it has no zone); None with a note."""
    if not value:
        notes.append("missing Date header")
        return None
    try:
        parsed = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        notes.append(f"unparseable Date header {value[:60]!r}")
        return None
    if parsed.tzinfo is None:
        notes.append("Date header without a time zone: read as UTC")
        parsed = parsed.replace(tzinfo=UTC)
    try:
        parsed.astimezone(UTC)  # an offset that puts it outside the representable range
    except (OverflowError, ValueError):
        notes.append(f"unparseable Date header {value[:60]!r}")
        return None
    return parsed
