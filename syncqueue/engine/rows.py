"""Model instances from rows of hand-written SQL (the engine's hottest statements return whole
rows so that no SELECT has to follow them)."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from django.db import connection as db
from django.db import transaction
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
