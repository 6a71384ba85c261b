"""The cursor-based incremental ticket export (docs/protocols.md, Zendesk).

The first run starts at ``start_time`` (7 days back by default); every page's ``after_cursor``
is committed with that page's tickets, the last page's too, so the next poll continues from it.
The newest ``generated_timestamp`` seen is kept beside it: if Zendesk ever rejects the stored
cursor, the export restarts from that time minus a small overlap (tickets are upserted by id,
so the overlap creates no duplicates). Before any ticket was seen, it restarts where the first
export started (``first_start``, kept in the cursor too): a default start of "7 days back"
counted from the day of the restart would skip what changed while a connection was off for
longer than that. The restart's start is committed before it is asked for, so a failure right
after it does not undo the choice.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from django.utils import timezone

from integrations.base import Batch, SyncContext
from integrations.errors import Permanent
from integrations.zendesk.client import Rejected, ZendeskClient
from integrations.zendesk.config import ZendeskConfig

OVERLAP_SECONDS = 300


@dataclass
class TicketPage:
    tickets: list[dict[str, Any]]
    users: dict[int, dict[str, Any]]


def export(client: ZendeskClient, config: ZendeskConfig, ctx: SyncContext) -> Iterator[Batch]:
    base = {
        "per_page": config.per_page,
        "include": "users",
        "exclude_deleted": "false",
        "support_type_scope": "all",
    }
    cursor = dict(ctx.cursor)
    newest = int(cursor.get("max_generated") or 0)
    first_start = cursor.get("first_start")
    if cursor.get("after_cursor"):
        params = {**base, "cursor": cursor["after_cursor"]}
    else:
        start = cursor.get("start_time")
        if start is None:
            start = config.first_start_time(timezone.now())
        first_start = int(start) if first_start is None else first_start
        params = {**base, "start_time": int(start)}
    kept = {"first_start": first_start} if first_start is not None else {}
    done = ctx.progress_done
    fell_back = False
    while True:
        try:
            page = client.export(params)
        except Rejected as rejected:
            if "cursor" in params and not fell_back:
                fell_back = True
                if newest:
                    start, since = (
                        max(0, newest - OVERLAP_SECONDS),
                        f"the last change seen, minus {OVERLAP_SECONDS}s",
                    )
                elif first_start is not None:
                    start, since = int(first_start), "where the first export started"
                else:  # a cursor from before first_start was kept: this is its first start now
                    start, since = config.first_start_time(timezone.now()), "the configured start"
                    first_start, kept = start, {"first_start": start}
                reason = rejected.description or rejected.error
                ctx.log(
                    "warning",
                    f"Zendesk rejected the stored export cursor ({reason}); continuing from "
                    f"{start} ({since}).",
                )
                params = {**base, "start_time": start}
                cursor = {"start_time": start, "max_generated": newest, **kept}
                # committed before it is asked for: a retry after a failure here starts at the
                # same time, not at the rejected cursor or a window counted from its own day
                yield Batch(cursor=dict(cursor), done=done)
                continue
            too_recent = "too recent" in (rejected.description or "").lower()
            if rejected.status == 422 and "start_time" in params and too_recent:
                # "Too recent start_time": nothing can have changed since; caught up. (Any
                # other 422 is a refusal: "caught up" would hide it on every run.)
                yield Batch(cursor=cursor, final=True, note="Caught up: nothing changed.")
                return
            raise Permanent(
                "Zendesk refused the export request.", detail=str(rejected)[:500]
            ) from rejected
        tickets = page.get("tickets") or []
        if tickets:
            newest = max(newest, *(int(t.get("generated_timestamp") or 0) for t in tickets))
        users = {int(u["id"]): u for u in page.get("users") or [] if "id" in u}
        after = page.get("after_cursor")
        # No cursor back (Zendesk sends none when no ticket comes back): the next poll asks
        # again from where this one did, never from a window counted from its own day.
        asked = (
            {"after_cursor": params["cursor"]}
            if "cursor" in params
            else {"start_time": params["start_time"]}
        )
        position = {"after_cursor": after} if after else asked
        end = bool(page.get("end_of_stream")) or not after  # (nowhere further to ask from)
        if tickets and not after:
            ctx.log(
                "warning",
                "Zendesk sent tickets without a cursor to continue from; the next sync asks "
                "again from the same place.",
            )
        cursor = {**position, "max_generated": newest, **kept}
        done += len(tickets)
        yield Batch(
            records=[TicketPage(tickets, users)] if tickets else [],
            cursor=dict(cursor),
            done=done,
            final=end,
        )
        if end:
            return
        params = {**base, "cursor": after}
