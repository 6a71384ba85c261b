"""The explicit list of connector kinds: one line per provider, imported lazily.

Adding a provider means one line here and its package in ``INSTALLED_APPS``. Extra kinds (the
test suite's connector, plug-ins) come from the ``SYNC_EXTRA_CONNECTORS`` setting.
"""

from __future__ import annotations

from django.conf import settings
from django.utils.module_loading import import_string

from integrations.base import Connector
from integrations.errors import Permanent

CONNECTORS: dict[str, str] = {
    "imap": "integrations.imap.connector.ImapConnector",
    "msgraph": "integrations.msgraph.connector.GraphConnector",
    "zendesk": "integrations.zendesk.connector.ZendeskConnector",
    "zimbra": "integrations.zimbra.connector.ZimbraConnector",
}


class UnknownConnectorKind(Permanent):
    """No connector is registered for a connection's kind."""


def available() -> dict[str, str]:
    """All registered kinds mapped to their connector class paths."""
    return {**CONNECTORS, **settings.SYNC_EXTRA_CONNECTORS}


def get_connector_class(kind: str) -> type[Connector]:
    """Return the connector class for ``kind``; raises ``UnknownConnectorKind``."""
    path = available().get(kind)
    if path is None:
        known = ", ".join(sorted(available())) or "none"
        raise UnknownConnectorKind(
            f"There is no connector for kind {kind!r} (known kinds: {known}).",
            code="unknown_kind",
        )
    return import_string(path)


def label_of(kind: str) -> str:
    """The provider in words ("Microsoft 365 mailbox"), not its code ("msgraph"); the code for
    a kind no connector is registered for, since it is all there is."""
    try:
        return str(get_connector_class(kind).label)
    except UnknownConnectorKind:
        return kind


def kinds_with(capability: str) -> list[str]:
    """Kinds whose connector class has ``capability`` (a class attribute) set, e.g.
    ``searches_history``: how the host asks for "mailboxes that can search history" without
    naming a provider."""
    return sorted(
        kind for kind in available() if getattr(get_connector_class(kind), capability, False)
    )


def kind_choices() -> list[tuple[str, str]]:
    """(kind, label) pairs for forms; choices are not stored on the model field."""
    return [(kind, get_connector_class(kind).label) for kind in sorted(available())]
