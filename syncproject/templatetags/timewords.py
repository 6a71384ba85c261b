"""``{% load timewords %}``: ``{{ moment|relative }}`` and ``{{ connection|next_sync }}``."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django import template

from syncproject import timewords

register = template.Library()


@register.filter
def relative(moment: datetime | None, empty: str = "never") -> str:
    return timewords.relative(moment, empty)


@register.filter
def next_sync(conn: Any) -> str:
    return timewords.next_sync(conn)
