"""Remote text made safe to *read*: control and direction-changing characters shown, not obeyed.

A subject, a sender's name or an attachment's file name comes from whoever sent the mail.
U+202E (RIGHT-TO-LEFT OVERRIDE) turns ``‮fdp.exe`` into what looks like ``exe.pdf``; NUL, line
breaks and zero-width characters hide or fake text. Pages and API answers show these characters
as visible markers (``[U+202E]``); the stored value keeps the original.

Zero-width joiner and non-joiner (U+200D, U+200C) are left alone: emoji sequences and several
scripts need them.
"""

from __future__ import annotations

import re

_INVISIBLE = (
    "\u0000-\u0008\u000b-\u001f\u007f-\u009f"  # C0/C1 controls (tab and line feed below)
    "\u061c\u200b\u200e\u200f\u202a-\u202e\u2060-\u2064\u2066-\u2069\ufeff\ufff9-\ufffb"
)
_PATTERN = re.compile(f"[{_INVISIBLE}\t\n]")


def _marker(match: re.Match[str]) -> str:
    return f"[U+{ord(match.group(0)):04X}]"


def neutral(text: object) -> str:
    """``text`` with every control, bidirectional and invisible formatting character replaced
    by a visible ``[U+XXXX]`` marker."""
    value = "" if text is None else str(text)
    return _PATTERN.sub(_marker, value)


_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def storable(text: object) -> str:
    """``text`` as a database can store it: without NUL (PostgreSQL refuses it in text) and
    with lone surrogates (which JSON from a remote server may carry as ``\\ud800``; no UTF-8
    encoder takes them) replaced by U+FFFD."""
    value = "" if text is None else str(text)
    if value.isascii() and "\x00" not in value:
        return value
    return _UNSTORABLE.sub(lambda m: "" if m.group(0) == "\x00" else "\ufffd", value)
