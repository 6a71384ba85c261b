"""A local Zendesk Support API for tests, benchmarks and the demo: the cursor-based incremental
ticket export and Show Ticket as documented, over real HTTPS (behaviours and sources:
docs/protocols.md, Zendesk).

Accounts live under a path prefix (``/{subdomain}/api/v2/…``), standing in for
``https://{subdomain}.zendesk.com`` (the product's ``ZENDESK_BASE_URL`` template makes the same
substitution). The server enforces Basic ``{email}/token`` auth (or an OAuth bearer token) and
the admin role, orders the export by ``generated_timestamp``, hands out opaque cursors that are
**standard base64** (``+``, ``/`` and ``=`` included: a client must send them back exactly),
honours ``per_page``, ``exclude_deleted``, ``support_type_scope`` and ``include=users``, lists a
deleted ticket with status ``deleted`` and its subject and description **scrubbed**
("SCRUBBED", "X"), answers 422 for a ``start_time`` less than a minute old, and past the
export's rate limit (10 requests per minute by default) 429 as Zendesk does: a ``text/plain``
body and a lowercase ``retry-after`` header, counting what it refused.
"""

from __future__ import annotations

import base64
import itertools
import re
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from sandbox.http import LocalServer, Request, Response
from sandbox.tls import TestCA

_NOW = time.time


@dataclass
class Agent:
    email: str
    token: str
    admin: bool = True
    oauth_token: str = ""
    #: the OAuth token's scopes ("read", "write", or per resource: "tickets:read", ...)
    oauth_scopes: frozenset[str] = frozenset({"read"})


@dataclass
class Account:
    subdomain: str
    agents: dict[str, Agent] = field(default_factory=dict)
    tickets: dict[int, dict[str, Any]] = field(default_factory=dict)
    users: dict[int, dict[str, Any]] = field(default_factory=dict)
    export_log: deque[float] = field(default_factory=deque)
    refused: int = 0
    exports: int = 0


def _cursor(generated: int, ticket_id: int, generation: int = 1) -> str:
    """Zendesk's shape (``base64("<epoch>.0||<id>|")``) in standard base64, padded with three
    bytes whose encoding holds ``+`` and ``/``: a client that does not send the cursor back
    exactly as received (say, unescaped in a URL, where ``+`` reads as a space) loses it."""
    data = f"{generated}.0||{ticket_id}|{generation}".encode() + b"\xfb\xff\xfe"
    return base64.b64encode(data).decode()


def _uncursor(text: str, generation: int = 1) -> tuple[int, int] | None:
    try:
        data = base64.b64decode(text.encode(), validate=True)
        generated, _, rest = data.partition(b".0||")
        ticket, _, tail = rest.partition(b"|")
        if int(tail[:-3] or 0) != generation:
            return None
        return int(generated), int(ticket)
    except (ValueError, TypeError):
        return None


def _iso(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


class FakeZendesk(LocalServer):
    LINK_KEYS = frozenset({"after_url", "before_url", "next_page", "previous_page"})

    def __init__(self, ca: TestCA, *, rate: tuple[int, float] | None = (10, 60.0)) -> None:
        super().__init__(ca)
        self.accounts: dict[str, Account] = {}
        self.rate = rate  # (requests, seconds) on the export endpoint; None: no limit
        self.ids = itertools.count(1001)
        self.clock = _NOW
        self.generation = 1  # cursors of an older generation are refused (forget_cursors)
        self.throttled: list[float] = []  # pending one-off 429s (their retry-after)
        # called before each export page is answered (with its query): a test changes tickets
        # while an export is under way, as people do
        self.before_page: Callable[[dict[str, str]], None] | None = None

    @property
    def base_url(self) -> str:
        """What ``ZENDESK_BASE_URL`` should be to point the product here."""
        return f"{self.url}/{{subdomain}}"

    # --- setting up --------------------------------------------------------------------------
    def add_account(
        self,
        subdomain: str,
        email: str = "admin@acme.test",
        token: str = "tok-acme",  # noqa: S107 - a test account
    ) -> Account:
        account = Account(subdomain)
        account.agents[email] = Agent(email, token)
        with self.lock:
            self.accounts[subdomain] = account
        return account

    def add_user(self, account: Account, name: str, email: str = "") -> int:
        user_id = next(self.ids)
        with self.lock:
            account.users[user_id] = {
                "id": user_id,
                "name": name,
                "email": email or f"{name.split()[0].lower()}@customer.test",
                "role": "end-user",
            }
        return user_id

    def add_ticket(
        self,
        account: Account,
        subject: str = "Printer on fire",
        *,
        requester: int | None = None,
        assignee: int | None = None,
        status: str = "open",
        ai_agent: bool = False,
        generated: int | None = None,
        **fields: Any,
    ) -> int:
        ticket_id = next(self.ids)
        stamp = generated if generated is not None else int(self.clock()) - 120
        ticket = {
            "id": ticket_id,
            "url": f"https://{account.subdomain}.zendesk.com/api/v2/tickets/{ticket_id}.json",
            "external_id": None,
            "subject": subject,
            "raw_subject": subject,
            "description": f"{subject}: details follow.",
            "status": status,
            "priority": "normal",
            "type": "question",
            "requester_id": requester,
            "submitter_id": requester,
            "assignee_id": assignee,
            "organization_id": None,
            "group_id": None,
            "brand_id": 1,
            "tags": ["support"],
            "custom_fields": [],
            "via": {"channel": "ai_agent" if ai_agent else "email"},
            "created_at": _iso(stamp),
            "updated_at": _iso(stamp),
            "generated_timestamp": stamp,
            "due_at": None,
            "ticket_form_id": None,
            "problem_id": None,
            **fields,
        }
        with self.lock:
            account.tickets[ticket_id] = ticket
        return ticket_id

    def update_ticket(self, account: Account, ticket_id: int, **changes: Any) -> None:
        stamp = int(self.clock()) - 61
        with self.lock:
            ticket = account.tickets[ticket_id]
            ticket.update(changes)
            ticket["updated_at"] = _iso(stamp)
            ticket["generated_timestamp"] = max(stamp, ticket["generated_timestamp"] + 1)

    def forget_cursors(self) -> None:
        """Every cursor handed out so far is refused from now on."""
        with self.lock:
            self.generation += 1

    def throttle(self, retry_after: float, times: int = 1) -> None:
        """The next ``times`` export requests get Zendesk's 429 (text/plain, ``retry-after``)."""
        with self.lock:
            self.throttled += [retry_after] * times

    def delete_ticket(self, account: Account, ticket_id: int) -> None:
        """Deleted: the export lists it with its content scrubbed."""
        self.update_ticket(
            account,
            ticket_id,
            status="deleted",
            subject="SCRUBBED",
            raw_subject="SCRUBBED",
            description="X",
        )

    # --- protocol ------------------------------------------------------------------------------
    def handle(self, request: Request) -> Response:
        match = re.match(r"^/([^/]+)/api/v2(/.*)$", request.path)
        account = self.accounts.get(match.group(1)) if match else None
        if match is None or account is None:
            host = f"{match.group(1) if match else '?'}.zendesk.com"
            return Response(
                404,
                {
                    "error": {
                        "title": f"No help desk at {host}",
                        "message": "There is no help desk configured at this address.",
                    }
                },
            )
        agent = self.authenticate(account, request)
        if agent is None:
            return Response(401, {"error": "Couldn't authenticate you"})
        bearer = (request.headers.get("Authorization") or "").startswith("Bearer ")
        path = match.group(2)
        if path == "/users/me.json":
            return Response(
                200,
                {
                    "user": {
                        "email": agent.email,
                        "role": "admin" if agent.admin else "agent",
                        "name": agent.email.split("@")[0],
                    }
                },
            )
        if path == "/oauth/tokens/current.json" and bearer:  # Show Token, for the caller's own
            return Response(
                200,
                {
                    "token": {
                        "token": agent.oauth_token[:10],  # only the first 10 characters
                        "scopes": sorted(agent.oauth_scopes),
                        "user_id": abs(hash(agent.email)) % 10**9,
                    }
                },
            )
        shown = re.match(r"^/tickets/(\d+)\.json$", path)
        if shown:  # Show Ticket (GET /api/v2/tickets/{id}.json, with include=users)
            return self.show_ticket(account, int(shown.group(1)))
        if path != "/incremental/tickets/cursor.json":
            return Response(404, {"error": "InvalidEndpoint", "description": "Not found"})
        # Zendesk: a 403 is an authenticated caller without permission: a role that may not
        # export (admins only), or an OAuth token without a scope that reads tickets
        if not agent.admin or (
            bearer and not agent.oauth_scopes & {"read", "tickets", "tickets:read"}
        ):
            return Response(
                403,
                {
                    "error": "Forbidden",
                    "description": "You do not have access to this page. "
                    "Please contact the account owner of this help desk for further help.",
                },
            )
        with self.lock:
            pending = self.throttled.pop(0) if self.throttled else None
        if pending is not None:
            return Response(
                429,
                "Number of allowed API requests per minute exceeded",
                {"retry-after": f"{pending:g}"},
            )
        limited = self.limit(account)
        if limited is not None:
            return limited
        return self.export(account, request)

    def show_ticket(self, account: Account, ticket_id: int) -> Response:
        with self.lock:
            ticket = account.tickets.get(ticket_id)
            if ticket is None or ticket.get("status") == "deleted":
                # Deleted tickets are not shown (only the export lists them).
                return Response(404, {"error": "RecordNotFound", "description": "Not found"})
            ids = {ticket.get("requester_id"), ticket.get("assignee_id")}
            users = [account.users[u] for u in ids if u in account.users]
            # the ticket as Show Ticket gives it: generated_timestamp belongs to the export
            # (only the export's examples carry it; the Ticket schema has no such property)
            shown = {k: v for k, v in ticket.items() if k != "generated_timestamp"}
            return Response(200, {"ticket": shown, "users": users})

    def authenticate(self, account: Account, request: Request) -> Agent | None:
        header = request.headers.get("Authorization") or ""
        if header.startswith("Bearer "):
            token = header[7:]
            return next(
                (a for a in account.agents.values() if a.oauth_token == token and token), None
            )
        if not header.startswith("Basic "):
            return None
        try:
            user, _, secret = base64.b64decode(header[6:]).decode().partition(":")
        except ValueError:
            return None
        email, _, kind = user.rpartition("/")
        agent = account.agents.get(email)
        if kind != "token" or agent is None or agent.token != secret:
            return None
        return agent

    def limit(self, account: Account) -> Response | None:
        if self.rate is None:
            with self.lock:
                account.exports += 1
            return None
        allowed, per = self.rate
        now = self.clock()
        with self.lock:
            log = account.export_log
            while log and log[0] <= now - per:
                log.popleft()
            if len(log) >= allowed:
                account.refused += 1
                wait = max(1, int(log[0] + per - now + 0.999))
                return Response(
                    429,
                    "Number of allowed API requests per minute exceeded",  # text/plain
                    {"retry-after": str(wait)},
                )
            log.append(now)
            account.exports += 1
        return None

    def export(self, account: Account, request: Request) -> Response:
        query = request.query
        if self.before_page is not None:
            self.before_page(query)
        per_page = max(1, min(int(query.get("per_page", 1000)), 1000))
        if "cursor" in query:
            position = _uncursor(query["cursor"], self.generation)
            if position is None:
                return Response(
                    400, {"error": "InvalidPaginationParameter", "description": "invalid cursor"}
                )
        elif "start_time" in query:
            start = int(query["start_time"])
            if start > self.clock() - 60:
                return Response(
                    422,
                    {
                        "error": "InvalidValue",
                        "description": "Too recent start_time. Use a "
                        f"start_time older than {int(self.clock()) - 60}.",
                    },
                )
            position = (start - 1, 2**62)
        else:
            return Response(400, {"error": "InvalidValue", "description": "start_time or cursor"})
        scope = query.get("support_type_scope", "agent")
        exclude_deleted = query.get("exclude_deleted", "false") == "true"
        horizon = int(self.clock()) - 60  # changes of the last minute are not exported yet
        with self.lock:
            ordered = sorted(
                (
                    t
                    for t in account.tickets.values()
                    if (t["generated_timestamp"], t["id"]) > position
                    and t["generated_timestamp"] <= horizon
                ),
                key=lambda t: (t["generated_timestamp"], t["id"]),
            )
            page = ordered[:per_page]
            end = len(ordered) <= per_page
            last: tuple[int, int] = (
                (page[-1]["generated_timestamp"], page[-1]["id"]) if page else position
            )
            users = {
                uid: account.users[uid]
                for t in page
                for uid in (t["requester_id"], t["assignee_id"])
                if uid in account.users
            }
            tickets = [
                dict(t)
                for t in page
                if (scope == "all" or t["via"]["channel"] != "ai_agent")
                and not (exclude_deleted and t["status"] == "deleted")
            ]
        base = f"{self.url}/{account.subdomain}/api/v2/incremental/tickets/cursor.json"
        keep = {k: v for k, v in query.items() if k not in ("cursor", "start_time")}
        # when no ticket comes back there is no cursor either (after_cursor is nullable in the
        # OpenAPI schema; docs/protocols.md)
        cursor = _cursor(*last, self.generation) if page else None
        body: dict[str, Any] = {
            "tickets": tickets,
            "after_cursor": cursor,
            "after_url": f"{base}?{urlencode({**keep, 'cursor': cursor})}" if cursor else None,
            "before_cursor": None,
            "before_url": None,
            "end_of_stream": end,
        }
        if "users" in query.get("include", "").split(","):
            body["users"] = list(users.values())
        return Response(200, body)
