"""The job table's indexes in the database are exactly those the model declares: a migration
can neither lose a constraint (Django's AlterField with db_index=False dropped the partial
unique index that allows one running job per connection) nor leave an index that every insert
and claim pays for but nothing reads (the foreign keys' own, covered by other indexes)."""

from __future__ import annotations

import pytest
from django.db import connection

from syncqueue.models import SyncJob

pytestmark = pytest.mark.django_db


def test_the_job_table_has_exactly_the_declared_indexes() -> None:
    meta = SyncJob._meta
    with connection.cursor() as cursor:
        found = connection.introspection.get_constraints(cursor, meta.db_table)
    indexes = {
        name
        for name, info in found.items()
        if (info["index"] or info["unique"]) and not info["primary_key"]
    }
    declared = {index.name for index in meta.indexes} | {c.name for c in meta.constraints}
    assert indexes == declared
    assert [f.name for f in meta.concrete_fields if getattr(f, "db_index", False)] == []
