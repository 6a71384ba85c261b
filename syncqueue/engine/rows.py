"""Model instances from rows of hand-written SQL (the engine's hottest statements return whole
rows so that no SELECT has to follow them)."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from django.db import connection as db
from django.db import transaction
from django.db.backends.utils import CursorDebugWrapper
from django.db.models import Model

M = TypeVar("M", bound=Model)


def columns(model: type[Model], alias: str = "") -> str:
    """The model's columns in field order, for a SELECT or RETURNING list."""
    prefix = f"{alias}." if alias else ""
    return ", ".join(f"{prefix}{db.ops.quote_name(f.column)}" for f in model._meta.concrete_fields)


@functools.cache
def _reading(
    model: type[Model], alias: str, vendor: str
) -> tuple[list[str], list[tuple[Any, list[Callable[..., Any]]]]]:
    """Attribute names and, per column, its expression and the converters the ORM would apply
    (worked out once per model: they depend on the fields and the database backend only)."""
    fields = model._meta.concrete_fields
    plan = []
    for f in fields:
        col = f.get_col(alias)
        converters = [*db.ops.get_db_converters(col), *f.get_db_converters(db)]  # type: ignore[attr-defined]
        plan.append((col, converters))
    return [f.attname for f in fields], plan


def fetch_one(sql: str, params: Sequence[Any]) -> tuple[Any, ...] | None:
    """Run one of the engine's hottest statements and return its first row.

    On PostgreSQL, as a prepared statement when the connection allows them (the
    ``prepare_threshold`` that ``DB_PREPARED_STATEMENTS`` sets): PostgreSQL then plans it once
    per connection instead of on every call. For the enqueue, planning took longer than
    running (0.29 ms against 0.13 ms), and a prepared enqueue is about 1 ms faster end to end.
    Logged, timed and error-mapped as Django's own cursor does."""
    wrapper = transaction.get_connection()
    with wrapper.cursor() as cursor:  # connected, checked and wrapped as Django does it
        raw = wrapper.connection
        if wrapper.vendor != "postgresql" or getattr(raw, "prepare_threshold", None) is None:
            cursor.execute(sql, params)
            row: tuple[Any, ...] | None = cursor.fetchone()
            return row
        import psycopg  # PostgreSQL only

        # Django's cursors bind on the client, which cannot prepare: one binding on the server
        with psycopg.Cursor(raw) as server, wrapper.wrap_database_errors:
            logged = (
                CursorDebugWrapper(server, wrapper).debug_sql(sql, params)
                if wrapper.queries_logged
                else contextlib.nullcontext()
            )
            with logged:
                server.execute(sql, params, prepare=True)
            return server.fetchone()


def from_row(model: type[M], values: Sequence[Any], alias: str) -> M:
    """An instance from the values of :func:`columns`, converted as the ORM converts them."""
    wrapper = transaction.get_connection()  # the thread's connection, looked up once
    names, plan = _reading(model, alias, wrapper.vendor)
    converted = []
    for (col, converters), value in zip(plan, values, strict=True):
        for converter in converters:
            value = converter(value, col, wrapper)
        converted.append(value)
    return model.from_db(wrapper.alias, names, converted)
