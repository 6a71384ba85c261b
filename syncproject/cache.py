"""Django's database cache with an atomic ``incr``, so counters kept in it (rate limits) are
shared by every web process and host without Redis or memcached.

Django's ``DatabaseCache.incr`` is a read followed by a write: two requests at once can both
read 4 and both write 5. Here, on PostgreSQL, the write happens only if the row still holds
what was read (compare-and-swap), and is retried from a fresh read otherwise — after a few
tries, under the row lock; on SQLite, read and write share one immediate transaction, which
SQLite serialises. Either way concurrent increments all count.
Values are stored exactly as ``DatabaseCache`` stores them (base64 of a pickle), so every
other method is Django's own.
"""

from __future__ import annotations

import base64
import pickle
from datetime import datetime
from typing import Any

from django.core.cache.backends.base import DEFAULT_TIMEOUT
from django.core.cache.backends.db import DatabaseCache
from django.db import connections, models, router, transaction
from django.utils.timezone import now as tz_now


class AtomicDatabaseCache(DatabaseCache):
    # Compare-and-swap attempts before an increment takes the row lock instead: each failed
    # attempt means another increment of the same key succeeded, so this many in a row only
    # happens to a key under a flood (one client's burst against its own limit), which the lock
    # then queues fairly.
    SWAP_ATTEMPTS = 5

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # The row the last ``add`` found in place: (key, value as stored, expiry). Django keeps
        # one cache object per thread, so this is the thread's own; and it is only a hint, which
        # the compare-and-swap checks.
        self._found: tuple[str, Any, datetime] | None = None

    def add(
        self,
        key: Any,
        value: Any,
        timeout: Any = DEFAULT_TIMEOUT,
        version: int | None = None,
    ) -> bool:
        """Django's ``add``, answered from one read when the key is there and unexpired.

        A rate limit calls ``add`` on every request, and only the first request of a window
        adds anything. Django's own ``add`` counts the whole table (for culling) and opens a
        write transaction whose INSERT fails on the existing key — on SQLite, the database's
        single write lock, taken for nothing. The row read is kept: the ``incr`` that follows
        (a rate limit's next call) starts its compare-and-swap from it."""
        made = self.make_and_validate_key(key, version=version)
        self._found = None
        connection = connections[router.db_for_write(self.cache_model_class)]
        with connection.cursor() as cursor:
            row = self._row(cursor, made, lock=False)
        if row is not None:
            self._found = (made, *row)
            return False
        return super().add(key, value, timeout, version)

    def incr(self, key: Any, delta: int = 1, version: int | None = None) -> int:
        """Add ``delta`` to a stored integer and return it; ``ValueError`` if the key is
        missing or expired (as every Django cache backend does).

        On PostgreSQL, a read, then a write only if the row still holds what was read
        (compare-and-swap, each statement on its own): no transaction and no row lock, so two
        round trips where a locked read-modify-write takes four (BEGIN, SELECT … FOR UPDATE,
        UPDATE, COMMIT) — and one right after an ``add`` that found the key, whose read it
        uses. When another request changed the row in between, the write matches nothing and
        the increment starts again from a fresh read. Comparing the value is enough for a
        counter: a write that matches adds ``delta`` to what the row holds at that moment,
        whatever happened in between (even a window that ended and was opened again).
        """
        key = self.make_and_validate_key(key, version=version)
        connection = connections[router.db_for_write(self.cache_model_class)]
        quote = connection.ops.quote_name
        update = (
            f"UPDATE {quote(self._table)} SET {quote('value')} = %s "  # type: ignore[attr-defined]  # noqa: S608
            f"WHERE {quote('cache_key')} = %s"
        )
        found, self._found = self._found, None
        row = found[1:] if found is not None and found[0] == key else None
        # SQLite: no round trips to save (it is a library in this process), and a write outside
        # a transaction would wait in SQLite's sleeping busy handler rather than in the writers'
        # queue (syncproject.sqlite): its immediate transaction is the quicker way there.
        attempts = self.SWAP_ATTEMPTS if connection.features.has_select_for_update else 0
        with connection.cursor() as cursor:
            for _attempt in range(attempts):
                if row is None or row[1] < tz_now():
                    row = self._row(cursor, key, lock=False)
                if row is None:
                    raise ValueError(f"Key '{key}' not found")
                stored = row[0]
                value = self._decode(connection, stored) + delta
                cursor.execute(
                    f"{update} AND {quote('value')} = %s", [self._encode(value), key, stored]
                )
                if cursor.rowcount == 1:
                    return value
                row = None
            with transaction.atomic(using=connection.alias):
                row = self._row(cursor, key, lock=True)
                if row is None:
                    raise ValueError(f"Key '{key}' not found")
                value = self._decode(connection, row[0]) + delta
                cursor.execute(update, [self._encode(value), key])
        return value

    def _row(self, cursor: Any, key: str, *, lock: bool) -> tuple[Any, datetime] | None:
        """The value of ``key`` as stored and its expiry; None when it is missing or expired.
        ``lock``: ``SELECT … FOR UPDATE`` where the database has it (SQLite's immediate
        transactions already serialise writers)."""
        connection = cursor.db
        quote = connection.ops.quote_name
        suffix = " FOR UPDATE" if lock and connection.features.has_select_for_update else ""
        cursor.execute(
            f"SELECT {quote('value')}, {quote('expires')} FROM {quote(self._table)} "  # type: ignore[attr-defined]  # noqa: S608
            f"WHERE {quote('cache_key')} = %s{suffix}",
            [key],
        )
        row = cursor.fetchone()
        if row is None:
            return None
        stored, moment = row
        expression = models.Expression(output_field=models.DateTimeField())
        for converter in connection.ops.get_db_converters(
            expression
        ) + expression.get_db_converters(connection):
            moment = converter(moment, expression, connection)
        return None if moment < tz_now() else (stored, moment)

    @staticmethod
    def _decode(connection: Any, stored: Any) -> Any:
        text = connection.ops.process_clob(stored)
        return pickle.loads(base64.b64decode(text.encode()))  # noqa: S301 - our own rows

    def _encode(self, value: int) -> str:
        """As ``DatabaseCache.set`` stores a value: base64 of a pickle."""
        return base64.b64encode(pickle.dumps(value, self.pickle_protocol)).decode("latin1")

    def decr(self, key: Any, delta: int = 1, version: int | None = None) -> int:
        return self.incr(key, -delta, version)
