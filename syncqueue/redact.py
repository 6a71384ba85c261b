"""Scrubbing secrets out of text before it is stored or logged (defence in depth: connectors
already build messages without secrets, but library exceptions can quote a URL or a header)."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

REDACTED = "[redacted]"

# Header-, URL- and form-shaped credentials that can leak from library exception texts.
_PATTERNS = [
    re.compile(r"(?i)(authorization\s*[:=]\s*)(bearer|basic)\s+[^\s'\",]+"),
    re.compile(
        r"(?i)((?:access_token|client_secret|password|api_token|authToken)[\"']?\s*[=:]\s*[\"']?)[^\s&'\",<]+"
    ),
    re.compile(r"(?i)(<authToken>)[^<]+"),
    re.compile(r"(?i)(<password>)[^<]+"),
]


def secret_values(secrets: Mapping[str, Any]) -> list[str]:
    """The string values worth scrubbing (short values would mangle ordinary text)."""
    return [str(v) for v in secrets.values() if isinstance(v, str | int) and len(str(v)) >= 4]


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """Replace known secret values and credential-shaped fragments with ``[redacted]``."""
    if not text:
        return text
    for value in sorted(set(secrets), key=len, reverse=True):
        text = text.replace(value, REDACTED)
    for pattern in _PATTERNS:
        text = pattern.sub(lambda m: m.group(1) + REDACTED, text)
    return text
