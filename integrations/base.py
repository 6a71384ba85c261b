"""The connector contract: what every provider package implements.

A connector is built for one ``Connection`` and one job, keeps no state between runs (the
engine stores cursors and checkpoints) and offers:

- ``check()`` — a cheap reachability + authentication probe; returns a ``CheckResult`` or raises
  one of the ``integrations.errors`` classes.
- ``sync(ctx)`` — a generator of ``Batch`` objects, starting from ``ctx.cursor`` (the
  connection's stream state) and ``ctx.checkpoint`` (this job's own progress, e.g. a history
  search). The engine commits each batch's writes, cursor and checkpoint in one transaction,
  then asks for the next; it may stop asking at any batch boundary (time budget, cancel) and
  will later call ``sync`` again with the committed state — so a connector must be able to
  resume from that state alone. Resources (sockets, sessions) belong in a ``try/finally``
  inside the generator: the engine closes the generator when it stops early.
- ``apply(batch, log)`` — write one batch's records; called by the engine inside its
  transaction. ``log`` writes to the job's log (with the transaction: a batch that is rolled
  back leaves no line); a connector never writes log rows itself.
- ``push(ctx)`` — outbound providers only: like ``sync`` but sends local changes out.

Every failure is raised as a class from ``integrations.errors``; mapping library exceptions
happens once per protocol, in the provider package.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, ClassVar, Generic, Protocol, TypeVar, cast

from pydantic import BaseModel, ConfigDict, ValidationError

from integrations.errors import ConfigError, Permanent, SyncError

if TYPE_CHECKING:
    from integrations.models import Connection


def _plain(value: Any) -> Any:
    """A JSON-comparable form of a config value (dates and the like as text)."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)


class ConnectorConfig(BaseModel):
    """Base for per-provider, non-secret configuration; unknown keys are rejected."""

    model_config = ConfigDict(extra="forbid", frozen=True)


@dataclass
class Counts:
    """What a batch (or a job) did to local data."""

    created: int = 0
    updated: int = 0
    deleted: int = 0
    unchanged: int = 0  # seen again as stored: nothing to write

    def __add__(self, other: Counts) -> Counts:
        return Counts(
            self.created + other.created,
            self.updated + other.updated,
            self.deleted + other.deleted,
            self.unchanged + other.unchanged,
        )

    def as_dict(self) -> dict[str, int]:
        return {
            "created": self.created,
            "updated": self.updated,
            "deleted": self.deleted,
            "unchanged": self.unchanged,
        }


@dataclass
class Batch:
    """One unit of work yielded by ``sync``/``push``, committed atomically by the engine.

    ``cursor``/``checkpoint`` replace the stored state when not None. ``note`` is an event for
    the job's log; ``progress`` says where the sync is and replaces the job's position.
    ``done``/``total`` are the job's absolute progress after this batch, when the connector
    knows them. ``final`` says "this is my last batch": the engine then checks that the
    generator is indeed finished and commits the batch and the job's success in one
    transaction (one write fewer per job). It is only a hint — if more batches follow, they are
    committed as usual.
    """

    records: Sequence[Any] = ()
    deleted: Sequence[Any] = ()
    cursor: dict[str, Any] | None = None
    checkpoint: dict[str, Any] | None = None
    done: int | None = None
    total: int | None = None
    note: str = ""
    #: where the sync is now, in the provider's words ("INBOX: up to UID 43,300"): kept on the
    #: job (its position), not written to the log — the log keeps events (``note``)
    progress: str = ""
    final: bool = False


@dataclass(frozen=True)
class ItemRef:
    """Which remote item a record is: a ``key`` the connector can find it again by (e.g.
    ``INBOX/1712/4711``) and a ``label`` for people (``INBOX UID 4711``)."""

    key: str
    label: str


@dataclass
class Unreadable:
    """A record for an item the connector could not read (a shape it does not know, a bug in
    its conversion): the engine lists it as a skipped item and the sync goes on."""

    ref: ItemRef
    error_class: str
    message: str
    detail: str = ""

    @classmethod
    def from_exception(cls, ref: ItemRef, exc: BaseException) -> Unreadable:
        return cls(
            ref, type(exc).__name__, str(exc)[:300], "".join(traceback.format_exception(exc))
        )


@dataclass
class NoLongerThere:
    """A skipped item the connector tried again is gone from the server: nothing to store."""

    ref: ItemRef


def read_each(
    items: Iterable[Any], ref: Callable[[Any], ItemRef], read: Callable[[Any], Any]
) -> list[Any]:
    """``read`` every remote item into a record; an item whose reading raises becomes an
    ``Unreadable`` record instead of stopping the sync. Errors of our own classes (the
    connection, the provider's answer) still stop it."""
    records = []
    for item in items:
        try:
            records.append(read(item))
        except SyncError:
            raise
        except Exception as exc:  # one item's shape must not stop everything
            records.append(Unreadable.from_exception(ref(item), exc))
    return records


class JobLog(Protocol):
    """Writes one line to the running job's log: ``log("info", "Took 40% from Zimbra",
    assignment=7)`` (the keyword arguments are kept as the line's data)."""

    def __call__(self, level: str, message: str, **data: Any) -> None: ...


@dataclass(frozen=True)
class PersonalSwitch:
    """A per-user on/off setting a provider offers on the settings page, e.g. "Add tasks
    assigned to me to my Zimbra task list". Stored as ``UserSwitch`` rows by ``key``."""

    key: str
    label: str
    help: str = ""
    value_label: str = ""  # a per-user text value shown next to the switch (e.g. an address)
    #: the value is an email address that decides whose data is touched (e.g. which Zimbra
    #: mailbox gets the tasks): a person may only set it by confirming a mail sent to it; staff
    #: set it in the admin. Until then the person's own email is used.
    value_is_confirmed_address: bool = False


@dataclass
class CheckResult:
    """Outcome of a successful ``check()``: a short message for people, details for staff."""

    message: str
    details: dict[str, Any] = field(default_factory=dict)


@dataclass
class SyncContext:
    """What a connector may know about the job it runs for."""

    job_id: int | None
    job_kind: str
    payload: Mapping[str, Any]
    cursor: dict[str, Any]
    checkpoint: dict[str, Any]
    deadline: float = float("inf")  # time.monotonic() value when the slice should end
    log: JobLog = lambda level, message, **data: None
    progress_done: int = 0  # the job's committed progress (earlier slices)
    #: skipped items of this connection to read again first (a bounded number per slice)
    retry: Sequence[ItemRef] = ()
    #: what the connector is reading now, in words; an unexpected error names it
    working_on: str = ""

    def time_left(self) -> float:
        """Seconds left in this slice's budget."""
        return self.deadline - time.monotonic()


ConfigT = TypeVar("ConfigT", bound="ConnectorConfig")


class Connector(Generic[ConfigT]):
    """Base class for connectors; subclasses set the class attributes and implement methods.

    ``Connector[ImapConfig]`` says which ``Config`` model ``self.config`` is."""

    kind: ClassVar[str]
    label: ClassVar[str]
    Config: ClassVar[type[ConnectorConfig]] = ConnectorConfig
    #: names of the keys kept in the encrypted secret (shown as "replace ..." fields in forms)
    secret_fields: ClassVar[tuple[str, ...]] = ()
    #: config keys that decide where the secret (or a token made from it) is sent. Changing
    #: one requires entering the secret again: it is sealed for these values (see
    #: ``destination`` and ``Connection.get_secrets``).
    destination_fields: ClassVar[tuple[str, ...]] = ()
    #: config keys that name the account whose data the connection mirrors (compared without
    #: regard to case). Once the connection holds synced data they cannot change: its stored
    #: items and position belong to that account (``Connection.account_problem``).
    account_fields: ClassVar[tuple[str, ...]] = ()
    #: schedule given to new connections of this kind ("" = manual only)
    default_schedule: ClassVar[str] = ""
    #: dotted path of the form users fill in on the settings page ("" = staff set it up)
    settings_form: ClassVar[str] = ""
    #: per-user switches this provider offers on the settings page
    personal_switches: ClassVar[tuple[PersonalSwitch, ...]] = ()
    # an organization's account (e.g. Zendesk) rather than a person's
    requires_organization: ClassVar[bool] = False
    #: can search a mailbox's whole history for one contact's mail (a case's mailboxes)
    searches_history: ClassVar[bool] = False

    def __init__(self, connection: Connection, secrets: Mapping[str, Any] | None = None) -> None:
        self.connection = connection
        self.config: ConfigT = cast(ConfigT, self.validate_config(connection.config))
        self._secrets = secrets

    @property
    def secrets(self) -> Mapping[str, Any]:
        """Decrypted credentials, read on first use (raises ``SecretsUnavailable``)."""
        if self._secrets is None:
            self._secrets = self.connection.get_secrets()
        return self._secrets

    @classmethod
    def serves(cls, user: Any) -> bool:
        """Whether this provider's ``personal_switches`` apply to ``user``: an enabled shared
        connection of this kind exists — the company's (no organization) or one of the
        person's organizations'. No such connection, no switch on the settings page."""
        from django.db.models import Q

        from integrations.models import Connection

        return (
            Connection.objects.filter(kind=cls.kind, enabled=True, owner=None)
            .filter(Q(organization=None) | Q(organization__members=user))
            .exists()
        )

    @classmethod
    def validate_config(cls, data: Mapping[str, Any]) -> ConnectorConfig:
        """Return the validated config; raises ``ConfigError`` naming each bad field."""
        try:
            return cls.Config.model_validate(dict(data or {}))
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in err['loc']) or 'config'}: {err['msg']}"
                for err in exc.errors()
            )
            raise ConfigError(f"Invalid {cls.label} settings: {problems}") from None

    @classmethod
    def destination(cls, config: Mapping[str, Any]) -> dict[str, Any]:
        """Where this config sends the secret: the ``destination_fields`` as the validated
        config reads them (so defaults and spelling variants compare equal). A config that does
        not validate is compared by its raw values."""
        try:
            validated = cls.Config.model_validate(dict(config or {}))
        except ValidationError:
            return {name: (config or {}).get(name) for name in cls.destination_fields}
        return {name: _plain(getattr(validated, name)) for name in cls.destination_fields}

    @classmethod
    def account(cls, config: Mapping[str, Any]) -> dict[str, Any]:
        """The account this config reads: the ``account_fields`` as the validated config reads
        them, text case-folded (``Alice`` and ``alice`` log in to the same mailbox)."""
        try:
            validated = cls.Config.model_validate(dict(config or {}))
            values = {name: getattr(validated, name) for name in cls.account_fields}
        except ValidationError:
            values = {name: (config or {}).get(name) for name in cls.account_fields}
        return {
            name: value.strip().casefold() if isinstance(value, str) else _plain(value)
            for name, value in values.items()
        }

    @classmethod
    def account_changes(cls, before: Mapping[str, Any], after: Mapping[str, Any]) -> list[str]:
        """The account fields that differ between two configs (a form marks the first)."""
        old, new = cls.account(before), cls.account(after)
        return [name for name in cls.account_fields if old.get(name) != new.get(name)]

    @classmethod
    def account_label(cls, name: str) -> str:
        """How an account field is called in messages: the settings form's label."""
        return {"username": "user name"}.get(name, name.replace("_", " "))

    @classmethod
    def holds_data(cls, connection: Connection) -> bool:
        """Whether items synced from the account are stored for ``connection`` (also after
        its position was cleared, by a full resync that has not stored anything yet)."""
        return False

    @classmethod
    def stats(cls, connection: Connection) -> dict[str, Any]:
        """Figures about the synced data for the admin, in the provider's terms (messages and
        folders, tickets, tasks); none by default."""
        return {}

    @classmethod
    def push_watched(cls, connection: Connection) -> bool:
        """Does this connection's configuration let push watch it (a public URL for Graph,
        IDLE on for IMAP)? Whether push is live as well is ``Connection.push_until``, kept by
        the provider's push machinery; both make its poll only the safety net. Must not query
        the database (it is asked whenever a next run is computed)."""
        return False

    @classmethod
    def doctor_notes(cls) -> list[tuple[str, str, str]]:
        """(level "ok"/"warn"/"fail", area, message) lines for ``sync_doctor`` about this
        provider's own machinery (e.g. push subscriptions). Asked whether or not connections
        of this kind exist: say nothing about a provider nobody uses, but do report what
        deleted connections left behind."""
        return []

    @classmethod
    def describe_position(cls, cursor: Mapping[str, Any]) -> list[str]:
        """The stored sync position in words, one line per stream (e.g. "INBOX: up to UID
        43,300, UIDVALIDITY 1712…"); the admin shows these instead of the raw cursor."""
        return []

    @classmethod
    def folder_label(cls, cursor: Mapping[str, Any], folder: str) -> str:
        """A stored message's ``folder`` as people know it (IMAP's folder names already are;
        a provider that files messages by an opaque id names it from its ``cursor``)."""
        return folder

    def check(self) -> CheckResult:
        """Probe reachability and credentials cheaply."""
        raise NotImplementedError(f"{type(self).__name__} must implement check()")

    def sync(self, ctx: SyncContext) -> Iterator[Batch]:
        """Yield batches from ``ctx.cursor``/``ctx.checkpoint`` onward."""
        raise Permanent(f"{self.label} connections do not sync from the remote side.")

    def apply(self, batch: Batch, log: JobLog) -> Counts:
        """Write a batch's records (inside the engine's transaction) and say what changed;
        ``log`` writes to the job's log."""
        raise NotImplementedError(f"{type(self).__name__} must implement apply()")

    def items(self, batch: Batch) -> list[Batch]:
        """``batch`` split into the smallest batches that can be stored on their own.

        Used only when storing the whole batch failed: the engine then stores these one by
        one, each in its own savepoint, and lists the ones that fail as skipped items. The
        default is one record (or one deleted id) per batch, with the batch's cursor; a
        connector whose records depend on each other overrides it.
        """
        parts = [replace(batch, records=[r], deleted=(), note="") for r in batch.records]
        parts += [replace(batch, records=(), deleted=[d], note="") for d in batch.deleted]
        return parts

    def describe(self, batch: Batch) -> ItemRef | None:
        """The remote item a one-item batch (from ``items``) is about; None when it is not
        about one item (e.g. a folder's bookkeeping), which is then reported by its kind."""
        return None

    def push(self, ctx: SyncContext) -> Iterator[Batch]:
        """Outbound providers: send the change named in ``ctx.payload``."""
        raise Permanent(f"{self.label} connections do not push changes.")
