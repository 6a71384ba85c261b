"""The calendar feed connector: the events of an iCalendar feed, fetched with the shared HTTP
seam, streamed (a feed is one document, possibly large) and stored in batches with a
checkpoint, so a killed worker resumes where it was as long as the feed has not changed."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import requests
from pydantic import field_validator

from integrations.base import (
    Batch,
    CheckResult,
    Connector,
    ConnectorConfig,
    Counts,
    ItemRef,
    JobLog,
    SyncContext,
    read_each,
)
from integrations.errors import AuthFailed, Permanent, Transient
from integrations.http import HttpClient, overload_error
from tests.calfeed.ical import Event, read_event, vevents
from tests.calfeed.store import Retire, store_events


class FeedConfig(ConnectorConfig):
    url: str
    username: str = ""
    batch_size: int = 100

    @field_validator("url")
    @classmethod
    def _https(cls, value: str) -> str:
        if not value.startswith("https://"):
            raise ValueError("the feed's address must start with https://")
        return value


class _Framed:
    """The document's lines, noting whether it opened and closed as a VCALENDAR."""

    def __init__(self, lines: Iterator[str]) -> None:
        self.lines = lines
        self.opened = self.closed = False

    def __iter__(self) -> Iterator[str]:
        for line in self.lines:
            text = (line or "").strip().upper()
            if text:
                if not self.opened and text != "BEGIN:VCALENDAR":
                    return  # not a calendar at all
                self.opened = True
                self.closed = text == "END:VCALENDAR"
            yield line

    @property
    def complete(self) -> bool:
        return self.opened and self.closed


def _ref(props: dict[str, str]) -> ItemRef:
    uid = props.get("UID", "").strip() or "?"
    return ItemRef(f"calfeed:{uid}", f"event {uid}")


class CalFeedConnector(Connector[FeedConfig]):
    kind = "calfeed"
    label = "Calendar feed (iCalendar)"
    Config = FeedConfig
    secret_fields = ("password",)
    destination_fields = ("url",)
    default_schedule = "every 30m"

    def _get(self, client: HttpClient, etag: str | None = None) -> requests.Response | None:
        """The feed's answer, streaming; None when it has not changed since ``etag``."""
        headers = {"Accept": "text/calendar"}
        if etag:
            headers["If-None-Match"] = etag
        auth = (self.config.username, self.secrets.get("password", ""))
        answer = client.request("GET", self.config.url, headers=headers, auth=auth, stream=True)
        if answer.status_code == 304:
            answer.close()
            return None
        if answer.status_code == 200:
            return answer
        answer.close()
        overloaded = overload_error(answer, "the calendar feed")
        if overloaded is not None:
            raise overloaded
        if answer.status_code in (401, 403):
            raise AuthFailed("The calendar feed refused the user name or password.")
        if answer.status_code in (404, 410):
            raise Permanent(f"The calendar feed is not there (HTTP {answer.status_code}).")
        raise Transient(f"The calendar feed answered HTTP {answer.status_code}.")

    def check(self) -> CheckResult:
        client = HttpClient(what="the calendar feed")
        try:
            answer = self._get(client)
            assert answer is not None
            with answer:
                first = next(answer.iter_lines(decode_unicode=True), "") or ""
        finally:
            client.close()
        if first.strip().upper() != "BEGIN:VCALENDAR":
            raise Permanent("The address answers, but not with an iCalendar feed.")
        return CheckResult("Read the calendar feed.")

    def sync(self, ctx: SyncContext) -> Iterator[Batch]:
        resume = ctx.checkpoint or {}
        client = HttpClient(what="the calendar feed")
        try:
            # a resumed job reads the feed whole; a new one only if it changed
            answer = self._get(client, None if resume else (ctx.cursor or {}).get("etag"))
            if answer is None:
                yield Batch(note="The feed has not changed.", final=True)
                return
            with answer:
                yield from self._read(answer, resume)
        except requests.exceptions.RequestException as exc:  # while streaming the body
            raise Transient("The calendar feed stopped answering.", detail=str(exc)) from exc
        finally:
            client.close()

    def _read(self, answer: requests.Response, resume: dict[str, Any]) -> Iterator[Batch]:
        etag = answer.headers.get("ETag", "")
        # the same strong ETag is the same document: skip what the killed slice stored
        skip = int(resume.get("offset", 0)) if etag and resume.get("etag") == etag else 0
        answer.encoding = answer.encoding or "utf-8"
        seen: set[str] = set()
        position = 0  # events of this document taken so far, in its order
        pending: list[dict[str, str]] = []
        document = _Framed(answer.iter_lines(decode_unicode=True))
        for props in vevents(document):
            uid = props.get("UID", "").strip()
            if "RECURRENCE-ID" in props or (uid and uid in seen):
                continue  # an override of one occurrence, or the same event again
            if uid:
                seen.add(uid)
            position += 1
            if position <= skip:
                continue
            pending.append(props)
            if len(pending) >= self.config.batch_size:
                yield self._batch(pending, etag, position)
                pending = []
        if pending:
            yield self._batch(pending, etag, position)
        if not document.complete:
            # a sign-in page, or a body cut short: retiring what it lacks would delete events
            raise Transient(
                "The calendar feed's answer was not a whole iCalendar document "
                "(BEGIN:VCALENDAR … END:VCALENDAR); nothing was marked removed."
            )
        yield Batch(
            records=[Retire(frozenset(seen))],
            cursor={"etag": etag},
            done=position,
            total=position,
            final=True,
        )

    def _batch(self, events: list[dict[str, str]], etag: str, offset: int) -> Batch:
        return Batch(
            records=read_each(events, _ref, read_event),
            checkpoint={"etag": etag, "offset": offset},
            done=offset,
        )

    def describe(self, batch: Batch) -> ItemRef | None:
        for record in batch.records:
            if isinstance(record, Event):
                return ItemRef(f"calfeed:{record.uid}", f"event {record.uid}")
        return None

    def apply(self, batch: Batch, log: JobLog) -> Counts:
        return store_events(self.connection, batch.records)

    @classmethod
    def stats(cls, connection: Any) -> dict[str, Any]:
        from tests.calfeed.models import FeedEvent

        events = FeedEvent.objects.filter(connection=connection)
        return {
            "Events": events.filter(deleted=False).count(),
            "Removed from the feed": events.filter(deleted=True).count(),
        }
