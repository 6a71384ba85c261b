"""The Microsoft Graph connector: one mailbox, app-only. Scheduled and manual jobs mirror the
mailbox with delta queries; history jobs search a case contact's mail and link it to the case."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import cast

from integrations.base import Batch, CheckResult, Connector, Counts, SyncContext
from integrations.msgraph.client import GraphClient
from integrations.msgraph.config import GraphConfig
from integrations.msgraph.sync import CaseLinks, FullPassDone, HistorySearch, MailboxDelta, Removed
from mail import store
from mail.store import FetchedMessage
from workspace.cases import link_messages


class GraphConnector(Connector):
    kind = "msgraph"
    label = "Microsoft 365 mailbox"
    Config = GraphConfig
    secret_fields = ("client_secret", "private_key")
    # the secret goes to the sign-in authority; the token made from it to the Graph URL
    destination_fields = ("tenant_id", "client_id", "authority_host", "graph_url")
    default_schedule = "every 15m"

    @property
    def graph(self) -> GraphConfig:
        return cast(GraphConfig, self.config)

    def check(self) -> CheckResult:
        """Get a token, read the mailbox's owner and count its folders."""
        client = GraphClient(self.graph, self.secrets)
        try:
            user = client.get(client.mailbox_url(), params={"$select": "displayName,mail"})
            folders = client.get("mailFolders", params={"$top": 100}).get("value", [])
        finally:
            client.close()
        return CheckResult(
            f"Signed in to tenant {self.graph.tenant_id} as app {self.graph.client_id}; mailbox "
            f"{user.get('displayName') or self.graph.mailbox} <{user.get('mail', '')}> is "
            f"readable ({len(folders)} top-level folders).",
            details={"folders": len(folders)},
        )

    def sync(self, ctx: SyncContext) -> Iterator[Batch]:
        client = GraphClient(self.graph, self.secrets)
        try:
            algorithm = HistorySearch if ctx.job_kind == "historical" else MailboxDelta
            yield from algorithm(self, client, ctx).run()
        finally:
            client.close()

    def apply(self, batch: Batch) -> Counts:
        folders = (batch.cursor or {}).get("folders", {})
        resetting = any(state.get("reset") for state in folders.values())
        messages = [r for r in batch.records if isinstance(r, FetchedMessage)]
        counts, ids = store.upsert_remote(self.connection, messages, touch=resetting)
        for record in batch.records:
            if isinstance(record, Removed):
                counts.deleted += store.mark_removed(
                    self.connection, record.folder, record.remote_ids
                )
            elif isinstance(record, FullPassDone):
                counts.deleted += store.retire_unseen(
                    self.connection, record.folder, datetime.fromisoformat(record.started)
                )
            elif isinstance(record, CaseLinks):
                link_messages(record.case_id, record.contact_id, list(ids.values()))
        return counts
