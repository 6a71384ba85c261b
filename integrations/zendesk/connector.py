"""The Zendesk connector: an organization's tickets, exported incrementally on a schedule."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, cast

from django.utils import timezone

from integrations.base import Batch, CheckResult, Connector, Counts, SyncContext
from integrations.zendesk.client import ZendeskClient
from integrations.zendesk.config import ZendeskConfig
from integrations.zendesk.sync import TicketPage, export


class ZendeskConnector(Connector):
    kind = "zendesk"
    label = "Zendesk tickets"
    Config = ZendeskConfig
    secret_fields = ("api_token", "oauth_token")
    destination_fields = ("subdomain",)
    default_schedule = "*/15 * * * *"
    requires_organization = True

    @property
    def zendesk(self) -> ZendeskConfig:
        return cast(ZendeskConfig, self.config)

    def check(self) -> CheckResult:
        """Authenticate and confirm the user may export (admins only)."""
        client = ZendeskClient(self.zendesk, self.secrets)
        try:
            me = client.get("/api/v2/users/me.json").get("user", {})
        finally:
            client.close()
        if me.get("role") != "admin":
            from integrations.errors import Permanent

            raise Permanent(
                "The token's user must be a Zendesk admin to export tickets: "
                f"{me.get('email', 'this user')} is a {me.get('role', 'non-admin')}."
            )
        return CheckResult(
            f"Signed in to {self.zendesk.subdomain}.zendesk.com as {me.get('email')} (admin).",
            details={"role": me.get("role")},
        )

    def sync(self, ctx: SyncContext) -> Iterator[Batch]:
        client = ZendeskClient(self.zendesk, self.secrets)
        try:
            yield from export(client, self.zendesk, ctx)
        finally:
            client.close()

    def apply(self, batch: Batch) -> Counts:
        from workspace.tickets import upsert_tickets

        counts = Counts()
        for page in batch.records:
            if isinstance(page, TicketPage):
                counts += upsert_tickets(self.connection, page.tickets, page.users)
        return counts

    @classmethod
    def stats(cls, connection: Any) -> dict[str, Any]:
        from workspace.models import Ticket

        tickets = Ticket.objects.filter(connection=connection)
        today = timezone.localtime(timezone.now(), connection.tz).replace(
            hour=0, minute=0, second=0, microsecond=0
        )
        return {
            "Tickets": tickets.filter(deleted=False).count(),
            "Deleted tickets": tickets.filter(deleted=True).count(),
            "Changed today": tickets.filter(changed_at__gte=today).count(),
        }
