"""``manage.py rotate_secrets``: re-encrypt stored credentials under the newest key."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction

from integrations import crypto
from integrations.models import Connection


def _rotated(conn: Connection) -> str:
    """``conn``'s stored secret under the newest key; one stored before secrets were sealed is
    sealed for where ``conn`` points now. Raises ``SecretsUnavailable`` if no key opens it."""
    values, sealed_for = crypto.open_secrets(conn.secret)
    if sealed_for is not None:
        return crypto.rotate(conn.secret)
    return crypto.encrypt_secrets(values, conn.destination())


class Command(BaseCommand):
    help = (
        "Re-encrypt every stored credential with the first key of SYNC_ENCRYPTION_KEYS. "
        "Rotation: put a new key first, run this, then remove the old key."
    )
    # --generate-key is the way out of the check that refuses a shared database without keys,
    # so the checks must not stop it; rotation checks the keys itself.
    requires_system_checks: list[str] = []

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--generate-key", action="store_true", help="Only print a new random key."
        )

    def _retired(self) -> int:
        """The credentials kept for deleting Graph subscriptions of deleted connections
        (``integrations.msgraph.models.RetiredSubscription``), rotated and sealed as the
        connections' are. One no key opens is left as it is (and said): it is dropped when
        its subscription expires, within days."""
        from integrations.msgraph.models import RetiredSubscription

        rotated = unreadable = 0
        for retired in RetiredSubscription.objects.exclude(secret="").select_for_update():
            gone = Connection(kind="msgraph", config=retired.config, secret=retired.secret)
            try:
                new = _rotated(gone)  # the deleted connection as it was
            except crypto.SecretsUnavailable:
                unreadable += 1
                continue
            RetiredSubscription.objects.filter(pk=retired.pk).update(secret=new)
            rotated += 1
        if unreadable:
            self.stdout.write(
                f"{unreadable} credential(s) kept to delete Graph subscriptions of deleted "
                "connections could not be decrypted; they are dropped when those expire."
            )
        return rotated

    def handle(self, *args: Any, **options: Any) -> None:
        if options["generate_key"]:
            self.stdout.write(crypto.generate_key())
            return
        problem = crypto.check_keys()
        if problem:
            raise CommandError(problem)
        rotated, unreadable = 0, []
        with transaction.atomic():
            for conn in Connection.objects.exclude(secret="").select_for_update():
                try:
                    new = _rotated(conn)
                except crypto.SecretsUnavailable:
                    unreadable.append(conn.pk)
                    continue
                Connection.objects.filter(pk=conn.pk).update(secret=new)
                rotated += 1
            rotated += self._retired()
        self.stdout.write(f"Re-encrypted {rotated} credential(s) under the newest key.")
        if unreadable:
            raise CommandError(
                f"{len(unreadable)} connection(s) could not be decrypted with any configured key "
                f"(ids {unreadable}); their credentials must be entered again."
            )
