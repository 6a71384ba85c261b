"""Typed readers for settings that come from the environment.

Every reader records the variable (name, default, meaning) in ``REGISTRY`` so the list of
environment variables in the documentation is generated from the code and cannot drift
(``manage.py env_docs``). A value that cannot be parsed raises ``ImproperlyConfigured`` naming
the variable, instead of surfacing later as a confusing type error. A default that depends on
the machine or on another variable is documented by ``doc_default`` (e.g. ``$SYNC_VAR_DIR/media``),
so the generated list is the same on every machine.

``env_secret`` also accepts ``<NAME>_FILE``: the path of a file holding the value, which is how
container platforms and systemd credentials hand out secrets.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured


@dataclass(frozen=True)
class EnvVar:
    """One documented environment variable."""

    name: str
    default: str
    help: str
    secret: bool = False


REGISTRY: dict[str, EnvVar] = {}

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def _register(
    name: str, default: object, help: str, secret: bool = False, doc_default: str | None = None
) -> str | None:
    shown = "" if default is None else str(default)
    if doc_default is not None:
        shown = doc_default
    elif isinstance(default, bool):
        shown = "true" if default else "false"
    elif isinstance(default, list | tuple):
        shown = ",".join(str(v) for v in default)
    REGISTRY[name] = EnvVar(name=name, default=shown, help=help, secret=secret)
    return os.environ.get(name)


def env_str(name: str, default: str, help: str, *, doc_default: str | None = None) -> str:
    """Return the variable's text, or ``default`` when it is unset."""
    raw = _register(name, default, help, doc_default=doc_default)
    return default if raw is None else raw


def env_bool(name: str, default: bool, help: str, *, doc_default: str | None = None) -> bool:
    """Return a boolean; accepts 1/0, true/false, yes/no, on/off (any case)."""
    raw = _register(name, default, help, doc_default=doc_default)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ImproperlyConfigured(f"{name}={raw!r} is not a boolean; use true or false.")


def env_int(
    name: str,
    default: int,
    help: str,
    *,
    minimum: int | None = None,
    doc_default: str | None = None,
) -> int:
    """Return an integer, refusing values below ``minimum``."""
    raw = _register(name, default, help, doc_default=doc_default)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name}={raw!r} is not a whole number.") from None
    if minimum is not None and value < minimum:
        raise ImproperlyConfigured(f"{name}={value} is below the minimum of {minimum}.")
    return value


def env_float(
    name: str,
    default: float,
    help: str,
    *,
    minimum: float | None = None,
    doc_default: str | None = None,
) -> float:
    """Return a float, refusing values below ``minimum``."""
    raw = _register(name, default, help, doc_default=doc_default)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name}={raw!r} is not a number.") from None
    if minimum is not None and value < minimum:
        raise ImproperlyConfigured(f"{name}={value} is below the minimum of {minimum}.")
    return value


def env_list(name: str, default: list[str], help: str) -> list[str]:
    """Return a comma-separated list with blanks removed."""
    raw = _register(name, default, help)
    if raw is None:
        return list(default)
    return [item.strip() for item in raw.split(",") if item.strip()]


def env_rate(name: str, default: str, help: str) -> tuple[int, float]:
    """Return a rate written 'requests/seconds', e.g. '10/60', as (requests, seconds)."""
    raw = _register(name, default, help)
    text = (raw or default).strip()
    count, _, seconds = text.partition("/")
    try:
        value = (int(count), float(seconds))
    except ValueError:
        raise ImproperlyConfigured(f"{name}={text!r} is not a rate such as '10/60'.") from None
    if value[0] < 0 or value[1] <= 0:
        raise ImproperlyConfigured(f"{name}={text!r}: give requests >= 0 per seconds > 0.")
    return value


def env_secret(name: str, help: str) -> str | None:
    """Return a secret from ``NAME`` or from the file named by ``NAME_FILE``; None if neither."""
    raw = _register(name, None, help + f" (or {name}_FILE: a file holding it)", secret=True)
    path = os.environ.get(f"{name}_FILE")
    if raw and path:
        raise ImproperlyConfigured(f"Set {name} or {name}_FILE, not both.")
    if path:
        try:
            return Path(path).read_text().strip()
        except OSError as exc:
            raise ImproperlyConfigured(f"{name}_FILE={path!r} cannot be read: {exc}") from None
    return raw or None
