"""The Zendesk connector: an organization's tickets, exported incrementally on a schedule."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from django.utils import timezone

from integrations.base import (
    Batch,
    CheckResult,
    Connector,
    Counts,
    ItemRef,
    JobLog,
    NoLongerThere,
    SyncContext,
)
from integrations.errors import AuthFailed, Permanent
from integrations.zendesk.client import READ_SCOPES, SCOPES_PATH, Rejected, ZendeskClient
from integrations.zendesk.config import ZendeskConfig
from integrations.zendesk.models import Ticket
from integrations.zendesk.store import mark_deleted, upsert_tickets
from integrations.zendesk.sync import TicketPage, export


class ZendeskConnector(Connector[ZendeskConfig]):
    kind = "zendesk"
    label = "Zendesk tickets"
    Config = ZendeskConfig
    secret_fields = ("api_token", "oauth_token")
    destination_fields = ("subdomain",)
    # tickets are stored by their number, which is only unique within one account
    account_fields = ("subdomain",)
    default_schedule = "*/15 * * * *"
    requires_organization = True

    @property
    def zendesk(self) -> ZendeskConfig:
        return self.config

    def check(self) -> CheckResult:
        """Authenticate and confirm the user may export (admins only) and, for an OAuth token,
        that it may read tickets (its scopes, from Show Token)."""
        client = ZendeskClient(self.zendesk, self.secrets)
        try:
            me = client.get("/api/v2/users/me.json").get("user", {})
            token = self._own_token(client) if client.oauth else {}
        finally:
            client.close()
        if me.get("role") != "admin":
            raise Permanent(
                "The token's user must be a Zendesk admin to export tickets: "
                f"{me.get('email', 'this user')} is a {me.get('role', 'non-admin')}."
            )
        scopes = token.get("scopes")
        if client.oauth and isinstance(scopes, list) and not set(scopes) & READ_SCOPES:
            raise Permanent(
                "The OAuth token cannot read tickets: it needs the read (or tickets:read) "
                f"scope, and has {', '.join(map(str, scopes)) or 'none'}."
            )
        return CheckResult(
            f"Signed in to {self.zendesk.subdomain}.zendesk.com as {me.get('email')} (admin).",
            details={"role": me.get("role")},
        )

    @staticmethod
    def _own_token(client: ZendeskClient) -> dict[str, Any]:
        """Show Token for the OAuth token in use, or {} when it gives no clear answer (an
        error, a refusal, a body of another shape): whether the token may export is then
        left to the export itself, which says what is wrong. A rejected token (401) is
        reported as such."""
        try:
            token = client.get(SCOPES_PATH).get("token")
        except AuthFailed:
            raise
        except Exception:  # only a hint: never a reason to fail the check
            return {}
        return token if isinstance(token, dict) else {}

    def sync(self, ctx: SyncContext) -> Iterator[Batch]:
        client = ZendeskClient(self.zendesk, self.secrets)
        try:
            if ctx.retry:
                yield from self._retry_skipped(client, ctx)
            yield from export(client, self.zendesk, ctx)
        finally:
            client.close()

    def _retry_skipped(self, client: ZendeskClient, ctx: SyncContext) -> Iterator[Batch]:
        """Read skipped tickets again, one request each (with their people). A ticket Zendesk
        no longer shows (404: deleted since) is gone, and its stored copy marked deleted: the
        export that carried the deletion is behind us."""
        records: list[Any] = []
        gone: list[int] = []
        for ref in ctx.retry:
            ticket_id = ref.key.removeprefix("zendesk:")
            if not ticket_id.isdigit():
                continue
            ctx.working_on = ref.label
            try:
                found = client.get(f"/api/v2/tickets/{ticket_id}.json", {"include": "users"})
            except Rejected as rejected:
                if rejected.status == 404:
                    records.append(NoLongerThere(ref))
                    gone.append(int(ticket_id))
                    continue
                raise Permanent("Zendesk refused to show a ticket.", detail=str(rejected)) from None
            users = {int(u["id"]): u for u in found.get("users") or [] if "id" in u}
            records.append(TicketPage([found.get("ticket") or {"id": int(ticket_id)}], users))
        if records:
            yield Batch(records=records, deleted=gone, note="skipped tickets read again")

    def items(self, batch: Batch) -> list[Batch]:
        """One ticket per batch (with the page's people, for names)."""
        parts = []
        for page in batch.records:
            if isinstance(page, TicketPage):
                parts += [
                    replace(batch, records=[TicketPage([ticket], page.users)], deleted=(), note="")
                    for ticket in page.tickets
                ]
        parts += [replace(batch, records=[], deleted=[d], note="") for d in batch.deleted]
        return parts

    def describe(self, batch: Batch) -> ItemRef | None:
        for page in batch.records:
            if isinstance(page, TicketPage) and page.tickets:
                ticket_id = page.tickets[0].get("id")
                return ItemRef(f"zendesk:{ticket_id}", f"ticket #{ticket_id}")
        for ticket_id in batch.deleted:  # a deletion found by reading a skipped ticket again
            return ItemRef(f"zendesk:{ticket_id}", f"ticket #{ticket_id} (deleted)")
        return None

    def apply(self, batch: Batch, log: JobLog) -> Counts:
        counts = Counts()
        for page in batch.records:
            if isinstance(page, TicketPage):
                counts += upsert_tickets(self.connection, page.tickets, page.users)
        if batch.deleted:
            counts.deleted += mark_deleted(self.connection, batch.deleted)
        return counts

    @classmethod
    def describe_position(cls, cursor: Mapping[str, Any]) -> list[str]:
        newest = int(cursor.get("max_generated") or 0)
        if not newest and not cursor.get("start_time"):
            return []
        when = (
            f"{datetime.fromtimestamp(newest, UTC):%Y-%m-%d %H:%M} UTC"
            if newest
            else f"{datetime.fromtimestamp(int(cursor['start_time']), UTC):%Y-%m-%d} (start)"
        )
        line = f"Tickets: exported up to changes of {when}"
        if cursor.get("after_cursor"):
            line += "; the next sync continues from Zendesk's export cursor"
        return [line]

    @classmethod
    def holds_data(cls, connection: Any) -> bool:
        return Ticket.objects.filter(connection=connection).exists()

    @classmethod
    def stats(cls, connection: Any) -> dict[str, Any]:
        tickets = Ticket.objects.filter(connection=connection)
        today = timezone.localtime(timezone.now(), connection.tz).replace(
            hour=0, minute=0, second=0, microsecond=0
        )
        return {
            "Tickets": tickets.filter(deleted=False).count(),
            "Deleted tickets": tickets.filter(deleted=True).count(),
            "Changed today": tickets.filter(changed_at__gte=today).count(),
        }
