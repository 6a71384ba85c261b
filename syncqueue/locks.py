"""Named expiring locks taken with a conditional UPDATE, valid across processes and hosts."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta

from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from syncqueue import identity
from syncqueue.models import EngineLock


@contextmanager
def hold_lock(name: str, *, seconds: int, release: bool = True) -> Iterator[bool]:
    """Yield True if this process got lock ``name`` for ``seconds``, else False.

    With ``release=False`` the lock simply expires: a cheap "at most once every N seconds".
    """
    now = timezone.now()
    holder = identity.process()
    try:
        with transaction.atomic():
            EngineLock.objects.get_or_create(name=name)
    except IntegrityError:
        pass  # created concurrently by another process
    acquired = EngineLock.objects.filter(
        Q(locked_until__isnull=True) | Q(locked_until__lt=now), name=name
    ).update(holder=holder, locked_until=now + timedelta(seconds=seconds))
    try:
        yield bool(acquired)
    finally:
        if acquired and release:
            EngineLock.objects.filter(name=name, holder=holder).update(locked_until=None)
