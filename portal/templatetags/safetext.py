"""``{{ value|neutral }}``: remote text with control and direction-changing characters shown
as ``[U+XXXX]`` markers (see ``syncproject.safetext``)."""

from __future__ import annotations

from django import template

from syncproject.safetext import neutral as _neutral

register = template.Library()


@register.filter
def neutral(value: object) -> str:
    return _neutral(value)
