"""The Zimbra connector: assigned tasks into each person's Zimbra Tasks, and (optionally)
their status and percent complete back.

The parts: :mod:`.push` (outbound, one assignment per job), :mod:`.incoming` (changes made in
Zimbra), :mod:`.merge` (who wins when both sides changed; pure), :mod:`.message` (the wire
format), :mod:`.store` (writing what was read or pushed), :mod:`.outbound` (which copies need
a push, from the host's ``assignments_changed``) and :mod:`.soap` (the protocol seam).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from integrations.base import (
    Batch,
    CheckResult,
    Connector,
    Counts,
    ItemRef,
    JobLog,
    PersonalSwitch,
    SyncContext,
)
from integrations.zimbra import incoming, push, store
from integrations.zimbra.config import ZimbraConfig
from integrations.zimbra.outbound import SWITCH
from integrations.zimbra.records import (
    GoneThere,
    Incoming,
    LeftMailbox,
    NotOurs,
    Pushed,
    assignment_ref,
)
from integrations.zimbra.soap import ZimbraSoap


class ZimbraConnector(Connector[ZimbraConfig]):
    kind = "zimbra"
    label = "Zimbra server (tasks)"
    Config = ZimbraConfig
    secret_fields = ("admin_password",)
    destination_fields = ("soap_url", "admin_url")
    personal_switches = (
        PersonalSwitch(
            key=SWITCH,
            label="Add tasks assigned to me to my Zimbra task list",
            help="Your tasks appear in Zimbra's Tasks and stay up to date; turning this off "
            "stops updates (tasks already there stay).",
            value_label="Zimbra address (if not your email)",
            value_is_confirmed_address=True,
        ),
    )

    @property
    def zimbra(self) -> ZimbraConfig:
        return self.config

    def soap(self) -> ZimbraSoap:
        return ZimbraSoap(self.zimbra, self.secrets)

    @classmethod
    def stats(cls, connection: Any) -> dict[str, Any]:
        from django.db.models import Count

        from integrations.zimbra.models import TaskCopy

        states = dict(
            TaskCopy.objects.filter(assignment__isnull=False)
            .values_list("state")
            .annotate(n=Count("pk"))
            .values_list("state", "n")
        )
        labels = dict(TaskCopy.State.choices)
        return {f"Task copies {labels.get(k, k).lower()}": n for k, n in sorted(states.items())}

    @classmethod
    def describe_position(cls, cursor: Mapping[str, Any]) -> list[str]:
        tokens = cursor.get("tokens") or {}
        read = [
            f"{account}: changes read up to token {token}"
            for account, token in sorted(tokens.items())
        ]
        return ([f"Read from {cursor['server']}"] if cursor.get("server") else []) + read

    def check(self) -> CheckResult:
        self.soap().admin_token(fresh=True)
        return CheckResult(f"Signed in to Zimbra as {self.zimbra.admin_name}.")

    def push(self, ctx: SyncContext) -> Iterator[Batch]:
        return push.run(self.zimbra, self.soap(), ctx)

    def sync(self, ctx: SyncContext) -> Iterator[Batch]:
        return incoming.run(self.zimbra, self.soap(), self.connection, ctx)

    def apply(self, batch: Batch, log: JobLog) -> Counts:
        return store.apply(batch, log)

    def describe(self, batch: Batch) -> ItemRef | None:
        for record in batch.records:
            if isinstance(record, Incoming | GoneThere | Pushed | LeftMailbox | NotOurs):
                return assignment_ref(record.assignment_id)
        return None
