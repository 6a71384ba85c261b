"""A poison item made by the database itself: a trigger that refuses to write one row.

Real poison items are a constraint nobody expected, a value one database rejects, a bug that
only one item's shape reaches. A trigger reproduces exactly that without touching our code (no
mock): every write of the chosen row fails inside the database, the rest succeed, and dropping
the trigger is "the fix". Works on SQLite and PostgreSQL; the trigger is committed, so real
worker processes see it too.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from django.db import connection, transaction


@contextmanager
def poisoned(table: str, column: str, value: str, name: str = "poison") -> Iterator[None]:
    """While inside, INSERTs and UPDATEs of ``table`` rows whose ``column`` equals ``value``
    fail with a database error ("poisoned row")."""
    trigger = f"{name}_{table}"
    quoted = value.replace("'", "''")
    with transaction.atomic(), connection.cursor() as cursor:
        if connection.vendor == "sqlite":
            for event in ("INSERT", "UPDATE"):
                cursor.execute(
                    f"CREATE TRIGGER {trigger}_{event.lower()} BEFORE {event} ON {table} "
                    f"FOR EACH ROW WHEN NEW.{column} = '{quoted}' "
                    "BEGIN SELECT RAISE(ABORT, 'poisoned row'); END"
                )
        else:
            cursor.execute(
                f"CREATE FUNCTION {trigger}() RETURNS trigger AS $$ BEGIN "
                f"IF NEW.{column} = '{quoted}' THEN RAISE EXCEPTION 'poisoned row'; END IF; "
                "RETURN NEW; END $$ LANGUAGE plpgsql"
            )
            cursor.execute(
                f"CREATE TRIGGER {trigger} BEFORE INSERT OR UPDATE ON {table} "
                f"FOR EACH ROW EXECUTE FUNCTION {trigger}()"
            )
    try:
        yield
    finally:
        cure(table, name)


def cure(table: str, name: str = "poison") -> None:
    """Drop the trigger (the fix)."""
    trigger = f"{name}_{table}"
    with transaction.atomic(), connection.cursor() as cursor:
        if connection.vendor == "sqlite":
            for event in ("insert", "update"):
                cursor.execute(f"DROP TRIGGER IF EXISTS {trigger}_{event}")
        else:
            cursor.execute(f"DROP TRIGGER IF EXISTS {trigger} ON {table}")
            cursor.execute(f"DROP FUNCTION IF EXISTS {trigger}()")
