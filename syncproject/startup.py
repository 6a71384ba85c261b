"""Start-up refusal for the web server: the serious system checks of this project."""

from __future__ import annotations

from django.core import checks
from django.core.exceptions import ImproperlyConfigured


def refuse_unsafe_start() -> None:
    """Raise ``ImproperlyConfigured`` listing every serious ``syncproject`` check message."""
    serious = [m for m in checks.run_checks(tags=["syncproject"]) if m.is_serious()]
    if serious:
        raise ImproperlyConfigured(
            "Refusing to start:\n"
            + "\n".join(f"  {m.id}: {m.msg}" + (f" ({m.hint})" if m.hint else "") for m in serious)
        )
