"""Reading iCalendar (RFC 5545) as it streams in: unfold content lines (section 3.1), split
``name;params:value`` (3.1, the colon outside quoted parameter values), and collect each
top-level ``VEVENT``'s properties (components nested in it, like ``VALARM``, are skipped)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

TEXT_ESCAPES = {"n": "\n", "N": "\n", "\\": "\\", ";": ";", ",": ","}


def content_lines(chunks: Iterable[str]) -> Iterator[str]:
    """Unfolded lines: a line starting with a space or tab continues the previous one."""
    pending = ""
    for line in chunks:
        line = line.rstrip("\r\n")
        if line[:1] in (" ", "\t"):
            pending += line[1:]
            continue
        if pending:
            yield pending
        pending = line
    if pending:
        yield pending


def split_line(line: str) -> tuple[str, str]:
    """(NAME, value): the name without parameters, upper-cased."""
    quoted = False
    for index, char in enumerate(line):
        if char == '"':
            quoted = not quoted
        elif char == ":" and not quoted:
            return line[:index].split(";", 1)[0].upper(), line[index + 1 :]
    return line.split(";", 1)[0].upper(), ""


def unescape(value: str) -> str:
    out, index = [], 0
    while index < len(value):
        char = value[index]
        if char == "\\" and index + 1 < len(value):
            out.append(TEXT_ESCAPES.get(value[index + 1], value[index + 1]))
            index += 2
            continue
        out.append(char)
        index += 1
    return "".join(out)


def vevents(lines: Iterable[str]) -> Iterator[dict[str, str]]:
    """Each top-level VEVENT's properties (the first of each name)."""
    depth, event_depth = 0, 0
    event: dict[str, str] | None = None
    for line in content_lines(lines):
        name, value = split_line(line)
        if name == "BEGIN":
            depth += 1
            if value.strip().upper() == "VEVENT" and event is None:
                event, event_depth = {}, depth
            continue
        if name == "END":
            if event is not None and depth == event_depth:
                yield event
                event = None
            depth -= 1
            continue
        if event is not None and depth == event_depth:
            event.setdefault(name, value)


@dataclass(frozen=True)
class Event:
    uid: str
    summary: str
    starts: str
    ends: str
    sequence: int
    status: str


def read_event(props: dict[str, str]) -> Event:
    """An event from its properties; raises ``ValueError`` for one without a UID (RFC 5545
    requires it) or with a malformed SEQUENCE."""
    uid = props.get("UID", "").strip()
    if not uid:
        raise ValueError("VEVENT without a UID")
    return Event(
        uid=uid[:255],
        summary=unescape(props.get("SUMMARY", "")),
        starts=props.get("DTSTART", "")[:64],
        ends=props.get("DTEND", "")[:64],
        sequence=int(props.get("SEQUENCE") or 0),
        status=props.get("STATUS", "").upper()[:20],
    )
