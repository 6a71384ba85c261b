"""The connector contract (tests/support/contract.py) for IMAP, against the real Dovecot."""

from __future__ import annotations

from typing import Any

import pytest

from mail.models import MailMessage
from tests.support.contract import ConnectorContract, Provider
from tests.support.mailfactory import message

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def provider(dovecot: Any, imap_user: str, make_imap_connection: Any) -> Provider:
    made: list[int] = [0]

    def seed(count: int) -> None:
        start = made[0]
        dovecot.deliver_many(imap_user, (message(subject=f"m{start + i}") for i in range(count)))
        made[0] += count

    def break_credentials(conn: Any) -> None:
        conn.set_secrets({"password": "not-the-password"})  # the account's password changed
        conn.save()

    return Provider(
        connect=lambda: make_imap_connection(batch_size=10),
        seed=seed,
        stored=lambda conn: list(
            MailMessage.objects.filter(connection=conn, deleted=False).values_list(
                "message_id", flat=True
            )
        ),
        break_credentials=break_credentials,
        forget_position=lambda: dovecot.bump_uidvalidity(imap_user),
        throttle=None,  # IMAP (RFC 3501/9051) has no "slow down, retry after N seconds"
        disorder=None,  # FETCH answers are keyed by UID; order does not matter
        kill_items=2000,
    )


class TestImapContract(ConnectorContract):
    pass
