"""The IMAP connector: check credentials and folders, mirror mail read-only, store it."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from datetime import date
from typing import Any

from django.conf import settings

from integrations.base import Batch, CheckResult, Connector, Counts, ItemRef, JobLog, SyncContext
from integrations.imap.client import open_session
from integrations.imap.config import ImapConfig
from integrations.imap.sync import MailboxSync, RetireFolder, message_ref
from mail import store
from mail.models import MailMessage
from mail.store import FetchedMessage, FlagChange


class ImapConnector(Connector[ImapConfig]):
    kind = "imap"
    label = "IMAP mailbox"
    Config = ImapConfig
    secret_fields = ("password",)
    destination_fields = ("host", "port", "security")
    # Messages are stored by folder, UIDVALIDITY and UID, which only the mailbox on that server
    # gives meaning to: RFC 3501 makes UIDVALIDITY unique per folder of one server only, and
    # servers that count it from 1 give another server's folder the same one. The host is part
    # of the account: a mailbox moved to another server is a new connection.
    account_fields = ("host", "username")
    default_schedule = "every 15m"
    settings_form = "integrations.imap.forms.ImapSettingsForm"

    @classmethod
    def destination(cls, config: Mapping[str, Any]) -> dict[str, Any]:
        """Host (any case) and the port actually used: 993 and "default" are the same."""
        found = super().destination(config)
        host = str(found.get("host") or "").strip().lower()
        port = found.get("port") or (993 if found.get("security", "ssl") == "ssl" else 143)
        return {"host": host, "port": port, "security": found.get("security")}

    @property
    def imap(self) -> ImapConfig:
        return self.config

    def _public_only(self) -> bool:
        """A mailbox of an ordinary user: its server must be on the public internet (or in a
        range the operator allowed), whoever typed the host in."""
        owner = self.connection.owner
        return owner is not None and not owner.is_staff

    def _session(self, *, probe: bool = False) -> Any:
        """A session; a probe (a connection test, inside a web request) waits at most
        ``SYNC_CONNECTION_TEST_TIMEOUT`` to connect and four times that for each answer."""
        wait = settings.SYNC_CONNECTION_TEST_TIMEOUT
        return open_session(
            self.imap,
            str(self.secrets.get("password", "")),
            public_only=self._public_only(),
            connect_timeout=min(self.imap.connect_timeout, wait) if probe else None,
            read_timeout=min(self.imap.read_timeout, 4 * wait) if probe else None,
        )

    @classmethod
    def push_watched(cls, connection: Any) -> bool:
        return bool((connection.config or {}).get("idle", True))

    def session(self) -> Any:
        """A logged-in session (a context manager) with the sync's own rules: credentials,
        TLS, and the public-address check for servers an ordinary user typed in."""
        return self._session()

    @classmethod
    def stats(cls, connection: Any) -> dict[str, Any]:
        return store.mail_stats(connection)

    @classmethod
    def holds_data(cls, connection: Any) -> bool:
        return MailMessage.objects.filter(connection=connection).exists()

    @classmethod
    def describe_position(cls, cursor: Mapping[str, Any]) -> list[str]:
        lines = []
        for name, state in sorted((cursor.get("folders") or {}).items()):
            if "uidvalidity" not in state:
                lines.append(f"{name}: first sync not finished")
                continue
            line = f"{name}: up to UID {int(state.get('last_uid') or 0):,}"
            line += f", UIDVALIDITY {state['uidvalidity']}"
            if state.get("highestmodseq"):
                line += f", flags as of MODSEQ {state['highestmodseq']}"
            lines.append(line)
        return lines

    def check(self) -> CheckResult:
        """Connect, sign in and look at every configured folder (one clear error each)."""
        with self._session(probe=True) as client:
            probe = MailboxSync(self, client, SyncContext(None, "check", {}, {}, {}))
            names = probe.folder_names()
            counts = {name: probe.status(name).get("messages", 0) for name in names}
        listed = ", ".join(f"{name} ({count})" for name, count in counts.items())
        mode = " (Gmail: All Mail with labels)" if probe.gmail else ""
        return CheckResult(
            f"Signed in to {self.imap.host} as {self.imap.username}. Folders{mode}: {listed}.",
            details={"folders": counts, "condstore": probe.condstore, "gmail": probe.gmail},
        )

    def sync(self, ctx: SyncContext) -> Iterator[Batch]:
        with self._session() as client:
            yield from MailboxSync(self, client, ctx).run()

    def describe(self, batch: Batch) -> ItemRef | None:
        for record in batch.records:
            if isinstance(record, FetchedMessage | FlagChange):
                return message_ref(record.folder, record.uidvalidity, record.uid)
            if isinstance(record, RetireFolder):
                return ItemRef(
                    f"imap-retire:{record.uidvalidity}:{record.folder}",
                    f"{record.folder}: messages left under UIDVALIDITY {record.uidvalidity}",
                )
        for folder, uidvalidity, uid in batch.deleted:
            return message_ref(folder, uidvalidity, uid)
        return None

    def apply(self, batch: Batch, log: JobLog) -> Counts:
        relink = {
            name: int(state["relink_from"])
            for name, state in (batch.cursor or {}).get("folders", {}).items()
            if state.get("relink_from") is not None
        }
        messages = [r for r in batch.records if isinstance(r, FetchedMessage)]
        counts = store.upsert_messages(self.connection, messages, relink=relink)
        counts.updated += store.apply_flag_changes(
            self.connection, [r for r in batch.records if isinstance(r, FlagChange)]
        )
        for retire in (r for r in batch.records if isinstance(r, RetireFolder)):
            counts.deleted += store.retire_old_uidvalidity(
                self.connection,
                retire.folder,
                retire.uidvalidity,
                since=date.fromisoformat(retire.since) if retire.since else None,
            )
        counts.deleted += store.mark_deleted(self.connection, list(batch.deleted))
        return counts
