"""A small connector used only by the tests and benchmarks to drive the engine.

Its "remote side" is items 1..total described by the config; faults are a plan in the config
whose firing is counted in the database, so a plan works across real worker processes.

config: {"total": 100, "batch": 10, "delay": 0.0, "version": 1,
         "faults": [{"at": 40, "error": "transient", "times": 1, "retry_after": 2}],
         "deleted": [3, 4], "check_error": "", "unreadable": [2], "refused": [5]}
unreadable: items that come as ``Unreadable`` records; refused: items ``apply`` cannot store
(as a constraint nobody expected would refuse them).
error names: transient, ratelimited, auth, permanent, reset, crash (a plain exception)
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from django.db.models import F

from integrations.base import (
    Batch,
    CheckResult,
    Connector,
    ConnectorConfig,
    Counts,
    ItemRef,
    JobLog,
    SyncContext,
    Unreadable,
)
from integrations.errors import AuthFailed, CursorReset, Permanent, RateLimited, Transient
from tests.support.models import FakeRecord, FaultHit, RunSpan


class FakeConfig(ConnectorConfig):
    total: int = 10
    batch: int = 5
    delay: float = 0.0
    version: int = 1
    faults: list[dict[str, Any]] = []
    deleted: list[int] = []
    check_error: str = ""
    track_runs: bool = False
    unreadable: list[int] = []
    refused: list[int] = []


def _error(name: str, retry_after: float) -> Exception:
    return {
        "transient": Transient("The fake server dropped the connection."),
        "ratelimited": RateLimited("Slow down.", retry_after=retry_after),
        "auth": AuthFailed("The fake server rejected the password."),
        "permanent": Permanent("The fake server says this is not allowed."),
        "reset": CursorReset("The fake cursor expired."),
        "crash": RuntimeError("unexpected fake crash"),
    }[name]


class FakeConnector(Connector[FakeConfig]):
    kind = "fake"
    label = "Fake"
    Config = FakeConfig
    secret_fields = ("password",)
    default_schedule = "every 15m"

    @classmethod
    def stats(cls, connection: Any) -> dict[str, Any]:
        return {"Items": FakeRecord.objects.filter(connection=connection).count()}

    @classmethod
    def describe_position(cls, cursor: Any) -> list[str]:
        return [f"Items: up to {int(cursor.get('pos', 0)):,}"] if "pos" in cursor else []

    def check(self) -> CheckResult:
        if self.config.check_error:
            raise _error(self.config.check_error, 1)
        return CheckResult(f"Reached the fake server; {self.config.total} items.")

    def _maybe_fail(self, position: int) -> None:
        for index, fault in enumerate(self.config.faults):
            if position < fault["at"]:
                continue
            hit, _ = FaultHit.objects.get_or_create(connection=self.connection, index=index)
            if hit.hits < fault.get("times", 1):
                FaultHit.objects.filter(pk=hit.pk).update(hits=F("hits") + 1)
                raise _error(fault["error"], fault.get("retry_after", 1))

    @contextmanager
    def _tracked(self, ctx: SyncContext) -> Iterator[None]:
        """Record when this process works on the connection (proves runs never overlap)."""
        if not self.config.track_runs:
            yield
            return
        assert ctx.job_id is not None, "runs are tracked only inside a job"
        span = RunSpan.objects.create(
            connection=self.connection, job_id=ctx.job_id, pid=os.getpid(), started=time.time()
        )
        try:
            yield
        finally:
            RunSpan.objects.filter(pk=span.pk).update(ended=time.time())

    def sync(self, ctx: SyncContext) -> Iterator[Batch]:
        with self._tracked(ctx):
            position = int(ctx.cursor.get("pos", 0))
            total = self.config.total
            while position < total:
                self._maybe_fail(position)
                if self.config.delay:
                    time.sleep(self.config.delay)
                end = min(position + self.config.batch, total)
                yield Batch(
                    records=[
                        Unreadable(ItemRef(f"fake:{k}", f"item {k}"), "ValueError", "unreadable")
                        if k in self.config.unreadable
                        else k
                        for k in range(position + 1, end + 1)
                    ],
                    cursor={"pos": end},
                    done=end,
                    total=total,
                    final=end == total and not self.config.deleted,
                )
                position = end
            if self.config.deleted:
                yield Batch(
                    deleted=self.config.deleted,
                    cursor={"pos": position},
                    done=total,
                    total=total,
                    final=True,
                )

    def apply(self, batch: Batch, log: JobLog) -> Counts:
        counts = Counts()
        value = f"v{self.config.version}"
        log("info", f"Storing {len(batch.records)} item(s).")
        refused = set(batch.records) & set(self.config.refused)
        if refused:
            raise ValueError(f"item {min(refused)} does not fit")
        existing = {
            r.key: r
            for r in FakeRecord.objects.filter(connection=self.connection, key__in=batch.records)
        }
        new = [
            FakeRecord(connection=self.connection, key=k, value=value)
            for k in batch.records
            if k not in existing
        ]
        FakeRecord.objects.bulk_create(new)
        counts.created = len(new)
        if existing:
            FakeRecord.objects.filter(pk__in=[r.pk for r in existing.values()]).update(
                value=value, writes=F("writes") + 1
            )
            counts.updated = len(existing)
        if batch.deleted:
            counts.deleted = FakeRecord.objects.filter(
                connection=self.connection, key__in=batch.deleted, deleted=False
            ).update(deleted=True)
        return counts

    def push(self, ctx: SyncContext) -> Iterator[Batch]:
        with self._tracked(ctx):
            self._maybe_fail(0)
            if self.config.delay:
                time.sleep(self.config.delay)
            yield Batch(
                records=[int(ctx.payload.get("item", 1))], note="Pushed one item.", final=True
            )
