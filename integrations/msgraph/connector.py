"""The Microsoft Graph connector: one mailbox, app-only. Scheduled and manual jobs mirror the
mailbox with delta queries; history jobs search a case contact's mail and link it to the case."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import replace
from datetime import datetime
from typing import Any

from django.conf import settings

from integrations.base import Batch, CheckResult, Connector, Counts, ItemRef, JobLog, SyncContext
from integrations.msgraph.client import GraphClient
from integrations.msgraph.config import GraphConfig
from integrations.msgraph.sync import CaseLinks, FullPassDone, HistorySearch, MailboxDelta, Removed
from mail import store
from mail.store import FetchedMessage
from workspace.cases import link_messages


class GraphConnector(Connector[GraphConfig]):
    kind = "msgraph"
    label = "Microsoft 365 mailbox"
    Config = GraphConfig
    secret_fields = ("client_secret", "private_key")
    # the secret goes to the sign-in authority; the token made from it to the Graph URL
    destination_fields = ("tenant_id", "client_id", "authority_host", "graph_url")
    # No account_fields: another mailbox may be named. Messages are stored by their immutable
    # ids and folders tracked by id, so the old mailbox's folders are "gone" (their messages
    # marked deleted, kept) and the new one's read from the start; push moves its subscription.
    default_schedule = "every 15m"
    searches_history = True  # a case's contact: every folder, all time (sync.HistorySearch)

    @property
    def graph(self) -> GraphConfig:
        return self.config

    @classmethod
    def stats(cls, connection: Any) -> dict[str, Any]:
        return store.mail_stats(connection)

    @classmethod
    def push_watched(cls, connection: Any) -> bool:
        return bool(settings.SYNC_PUBLIC_URL)

    @classmethod
    def doctor_notes(cls) -> list[tuple[str, str, str]]:
        from integrations.msgraph import push

        return push.doctor_notes()

    @classmethod
    def describe_position(cls, cursor: Mapping[str, Any]) -> list[str]:
        lines = []
        for state in (cursor.get("folders") or {}).values():
            name = state.get("name") or "(unnamed folder)"
            if state.get("next") and state.get("delta"):
                lines.append(f"{name}: a full pass is under way (after a reset)")
            elif state.get("next"):
                lines.append(f"{name}: first pass under way")
            elif state.get("delta"):
                lines.append(f"{name}: caught up; the next sync asks for changes only")
            else:
                lines.append(f"{name}: not synced yet")
        return sorted(lines)

    @classmethod
    def folder_label(cls, cursor: Mapping[str, Any], folder: str) -> str:
        """Messages are filed by folder id; the sync keeps each folder's display name."""
        state = (cursor.get("folders") or {}).get(folder)
        return str(state.get("name") or folder) if isinstance(state, dict) else folder

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

    def items(self, batch: Batch) -> list[Batch]:
        """One message per batch (with the case link that goes with it); each removal and
        the end of a full pass on their own."""
        links = [r for r in batch.records if isinstance(r, CaseLinks)]
        parts = []
        for record in batch.records:
            if isinstance(record, FetchedMessage):
                parts.append(replace(batch, records=[record, *links], note=""))
            elif isinstance(record, Removed):
                parts += [
                    replace(batch, records=[Removed(record.folder, [gone])], note="")
                    for gone in record.remote_ids
                ]
            elif not isinstance(record, CaseLinks):
                parts.append(replace(batch, records=[record], note=""))
        return parts

    def describe(self, batch: Batch) -> ItemRef | None:
        for record in batch.records:
            if isinstance(record, FetchedMessage):
                return ItemRef(
                    f"graph:{record.remote_id}",
                    f"message “{record.parsed.subject[:60]}” ({record.remote_id[:16]}…)",
                )
            if isinstance(record, Removed) and record.remote_ids:
                gone = record.remote_ids[0]
                return ItemRef(f"graph:{gone}", f"removed message ({gone[:16]}…)")
        return None

    def apply(self, batch: Batch, log: JobLog) -> Counts:
        folders = (batch.cursor or {}).get("folders", {})
        # during a full pass every message seen is marked seen, so that the pass's end retires
        # only what it did not see — including the pass's last page
        resetting = any(state.get("reset") for state in folders.values()) or any(
            isinstance(r, FullPassDone) for r in batch.records
        )
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
