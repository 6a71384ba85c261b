"""Bytes to text, truthfully: what a message declares, what its bytes really are, and a note
saying which reading was used when the two disagree.

Real mail declares ``us-ascii`` and sends UTF-8, declares UTF-8 and sends Windows-1252, names
charsets Python has never heard of (``x-unknown``, ``unicode-1-1-utf-7``, ``ks_c_5601-1987``).
The order of readings is always the same: the declared charset (strictly), then UTF-8
(strictly: valid UTF-8 is almost never an accident), then Windows-1252 (every byte means
something; the five undefined ones become U+FFFD). The note names the reading that was used,
never a guess that contradicts it.
"""

from __future__ import annotations

import codecs

# Names mail software writes that Python does not know, mapped to the codec they mean.
ALIASES = {
    "ks_c_5601-1987": "cp949",
    "ks_c_5601": "cp949",
    "x-sjis": "shift_jis",
    "x-euc-jp": "euc_jp",
    "x-mac-roman": "mac_roman",
    "macintosh": "mac_roman",
    "x-user-defined": "latin-1",
    "iso-8859-8-i": "iso8859_8",
    "windows-874": "cp874",
    "x-gbk": "gbk",
    "gb2312": "gb18030",  # GB2312 mail routinely holds GBK/GB18030 characters
    "gbk": "gb18030",
    "ansi_x3.4-1968": "ascii",
    "unicode-1-1-utf-7": "utf-7",
    "utf8": "utf-8",
    "latin1": "latin-1",
    "cp-1252": "cp1252",
}
# Declared charsets that say nothing about the bytes.
NO_INFORMATION = {"", "unknown-8bit", "x-unknown", "unknown", "default", "charset", "binary"}


def codec_for(charset: str | None) -> str | None:
    """The Python codec for a declared charset name, or None when there is none."""
    name = (charset or "").strip().strip("\"'").lower()
    if name in NO_INFORMATION:
        return None
    name = ALIASES.get(name, name)
    try:
        info = codecs.lookup(name)
    except (LookupError, ValueError):  # unknown, or a name Python refuses (a NUL in it)
        return None
    # base64, quoted-printable, rot13, hex, zlib: Python's codecs, but not charsets (decoding
    # bytes with them raises LookupError); a charset naming one says nothing about the bytes
    if not getattr(info, "_is_text_encoding", True):
        return None
    return info.name


def to_text(data: bytes, charset: str | None, what: str) -> tuple[str, str]:
    """Decode ``data`` declared as ``charset``; returns the text and a note ("" when the
    declared charset read the bytes cleanly). ``what`` names the field in the note."""
    declared = (charset or "").strip().strip("\"'")
    codec = codec_for(declared)
    if codec is not None:
        try:
            return data.decode(codec), ""
        except (UnicodeDecodeError, ValueError):
            pass
    elif data.isascii():
        return data.decode("ascii"), ""  # nothing to interpret: no note needed
    if declared and codec is None and declared.lower() not in NO_INFORMATION:
        why = f"unknown charset {declared!r}"
    elif declared and declared.lower() not in NO_INFORMATION:
        why = f"declared {declared} but the bytes are not valid {declared}"
    else:
        why = "no charset given for 8-bit bytes"
    try:
        return data.decode("utf-8"), f"{what}: {why}; the bytes are valid UTF-8, read as UTF-8"
    except UnicodeDecodeError:
        return (
            data.decode("cp1252", "replace"),
            f"{what}: {why}; invalid UTF-8 bytes, read as Windows-1252",
        )
