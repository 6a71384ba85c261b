"""Model instances from rows of hand-written SQL (the engine's hottest statements return whole
rows so that no SELECT has to follow them)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar

from django.db import connection as db
from django.db.models import Model

M = TypeVar("M", bound=Model)


def columns(model: type[Model], alias: str = "") -> str:
    """The model's columns in field order, for a SELECT or RETURNING list."""
    prefix = f"{alias}." if alias else ""
    return ", ".join(f"{prefix}{db.ops.quote_name(f.column)}" for f in model._meta.concrete_fields)


def from_row(model: type[M], values: Sequence[Any], alias: str) -> M:
    """An instance from the values of :func:`columns`, converted as the ORM converts them."""
    fields = model._meta.concrete_fields
    converted = []
    for f, value in zip(fields, values, strict=True):
        col = f.get_col(alias)
        converters = [*db.ops.get_db_converters(col), *f.get_db_converters(db)]  # type: ignore[attr-defined]
        for converter in converters:
            value = converter(value, col, db)
        converted.append(value)
    return model.from_db(db.alias, [f.attname for f in fields], converted)
