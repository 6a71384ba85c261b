"""A local iCalendar feed server (HTTPS, HTTP Basic), behaving as the documents say
(docs/protocols.md, "Calendar feeds"):

- the feed is one ``text/calendar`` document (RFC 5545 section 3.4) with a strong ``ETag``;
  a strong validator changes whenever the bytes do (RFC 9110 section 8.8.3), and
  ``If-None-Match`` with the current one is answered ``304 Not Modified`` (section 13.1.2);
- RFC 5545 gives components no order, and a UID may appear again in the same document as the
  override of one occurrence (``RECURRENCE-ID``, section 3.8.4.4): ``disorder()`` shuffles the
  events (seeded) and repeats one as an override;
- a server that restarts may issue new ETags for the same content (``forget_position``);
- 401 without valid Basic credentials (RFC 7617); 429 with ``Retry-After`` (RFC 6585 section 4)
  as a fault; a slow network streams the document in pieces (``slow``).
"""

from __future__ import annotations

import base64
import hashlib
import random
import time
from collections.abc import Iterator
from typing import Any

from sandbox.http import LocalServer, Request, Response
from sandbox.tls import TestCA

USERNAME = "feed"
PIECE = 5  # events per streamed piece


class FakeFeed(LocalServer):
    def __init__(self, ca: TestCA | None = None, seed: int = 5545) -> None:
        super().__init__(ca)
        self.username = USERNAME
        self.password = "feed-pass"
        self.events: dict[str, tuple[str, int]] = {}  # uid -> (summary, sequence)
        self.epoch = 0
        self.shuffled = False
        self.rng = random.Random(seed)
        self.pace = 0.0  # seconds per streamed piece
        self.without_uid: set[str] = set()  # events served without their UID (malformed)
        self._order: tuple[str, list[str]] | None = None

    @property
    def feed_url(self) -> str:
        return f"{self.url}/calendars/team.ics"

    # --- what tests do ---------------------------------------------------------------------
    def add_events(self, count: int) -> None:
        with self.lock:
            start = len(self.events)
            for i in range(start, start + count):
                self.events[f"event-{i}@feed.test"] = (f"Meeting {i}; room, 2\\nfloor", 0)

    def throttle(self, seconds: float) -> None:
        self.fault(r"\.ics", 429, retry_after=seconds, body="Too many requests")

    def forget_position(self) -> None:
        with self.lock:
            self.epoch += 1

    def disorder(self) -> None:
        self.shuffled = True

    def slow(self, seconds: float) -> None:
        self.pace = seconds

    # --- the protocol ----------------------------------------------------------------------
    def etag(self) -> str:
        state = (sorted(self.events.items()), self.epoch, sorted(self.without_uid), self.shuffled)
        digest = hashlib.sha256(repr(state).encode())
        return f'"{digest.hexdigest()[:20]}"'

    def _uids(self, etag: str) -> list[str]:
        """The document's event order: fixed for one ETag (the same bytes each time)."""
        if self._order is None or self._order[0] != etag:
            uids = sorted(self.events)
            if self.shuffled:
                self.rng.shuffle(uids)
            self._order = (etag, uids)
        return self._order[1]

    def handle(self, request: Request) -> Response:
        if request.path != "/calendars/team.ics" or request.method != "GET":
            return Response(404, "Not found")
        expected = base64.b64encode(f"{self.username}:{self.password}".encode()).decode()
        if request.headers.get("Authorization", "") != f"Basic {expected}":
            return Response(401, "Unauthorized", {"WWW-Authenticate": 'Basic realm="feed"'})
        with self.lock:
            etag = self.etag()
            if request.headers.get("If-None-Match") == etag:
                return Response(304, b"", {"ETag": etag})
            uids = list(self._uids(etag))
            events = dict(self.events)
        pieces = self._document(uids, events)
        return Response(200, headers={"ETag": etag}, content_type="text/calendar", stream=pieces)

    def _document(self, uids: list[str], events: dict[str, tuple[str, int]]) -> Iterator[bytes]:
        yield b"BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//syncproject tests//feed//EN\r\n"
        for start in range(0, len(uids), PIECE):
            if self.pace:
                time.sleep(self.pace)
            text = "".join(
                self._vevent(uid, *events[uid], malformed=uid in self.without_uid)
                for uid in uids[start : start + PIECE]
            )
            if self.shuffled and start == 0 and uids:
                text += self._vevent(uids[0], "moved occurrence", 1, "20261201T090000Z")
            yield text.encode()
        yield b"END:VCALENDAR\r\n"

    @staticmethod
    def _vevent(
        uid: str, summary: str, sequence: int, recurrence: str = "", malformed: bool = False
    ) -> str:
        lines = [
            "BEGIN:VEVENT",
            "X-NOTE:no UID here" if malformed else f"UID:{uid}",
            "DTSTAMP:20261130T080000Z",
            "DTSTART:20261201T090000Z",
            "DTEND:20261201T100000Z",
            f"SEQUENCE:{sequence}",
            # a long line folded as RFC 5545 section 3.1 says
            f"SUMMARY:{summary}\r\n  (folded)",
            "BEGIN:VALARM",
            "ACTION:DISPLAY",
            "DESCRIPTION:not the event's summary",
            "TRIGGER:-PT15M",
            "END:VALARM",
        ]
        if recurrence:
            lines.append(f"RECURRENCE-ID:{recurrence}")
        return "\r\n".join([*lines, "END:VEVENT"]) + "\r\n"

    def fault_body(self, fault: Any) -> str:
        return "injected fault"
