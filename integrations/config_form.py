"""Form fields made from a provider's ``Config`` model, so staff fill in labelled fields with
defaults and help — never raw JSON — and errors land on the field they are about.

Each pydantic field becomes one Django form field named ``cfg_<name>``: text, number, yes/no,
a choice (``Literal``), a date, or a list (one value per line). Required fields, choices,
yes/no switches and lists are the main settings; tuning numbers with defaults (page sizes,
timeouts) are "advanced".
"""

from __future__ import annotations

import types
from collections.abc import Mapping
from datetime import date
from typing import Any, Literal, Union, get_args, get_origin

from django import forms
from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

PREFIX = "cfg_"


def _plain_type(annotation: Any) -> tuple[Any, bool]:
    """(the type without ``None``, whether ``None`` is allowed)."""
    origin = get_origin(annotation)
    if origin in (Union, types.UnionType):
        args = [a for a in get_args(annotation) if a is not type(None)]
        optional = len(args) < len(get_args(annotation))
        return (args[0] if len(args) == 1 else str), optional
    return annotation, False


def _default(info: FieldInfo) -> Any:
    if info.default is not PydanticUndefined:
        return info.default
    if info.default_factory is not None:
        return info.default_factory()  # type: ignore[call-arg]
    return PydanticUndefined


WORDS = {"url": "URL", "id": "ID", "api": "API", "soap": "SOAP", "oauth": "OAuth"}


def label_for(name: str, capitalize: bool = True) -> str:
    """``soap_url`` → "SOAP URL", ``api_token`` → "API token"."""
    words = [WORDS.get(w, w) for w in name.split("_")]
    if capitalize and words[0] not in WORDS.values():
        words[0] = words[0].capitalize()
    return " ".join(words)


def _label(name: str, info: FieldInfo) -> str:
    return info.title or label_for(name)


def is_advanced(name: str, info: FieldInfo) -> bool:
    """Tuning numbers with a default (page sizes, timeouts): shown under "Advanced"."""
    kind, _ = _plain_type(info.annotation)
    tuned = not info.is_required() and _default(info) is not None
    return tuned and kind in (int, float) and "history" not in name


def form_field(name: str, info: FieldInfo) -> forms.Field:
    """The Django form field for one config field."""
    kind, optional = _plain_type(info.annotation)
    default = _default(info)
    required = info.is_required()
    help_parts = [info.description or ""]
    if default not in (PydanticUndefined, None, "", [], False):
        shown = ", ".join(map(str, default)) if isinstance(default, list) else default
        help_parts.append(f"Default: {shown}.")
    if optional and default is None:
        help_parts.append("Leave empty for none.")
    common: dict[str, Any] = {
        "label": _label(name, info),
        "required": required,
        "help_text": " ".join(p for p in help_parts if p),
    }
    if default is not PydanticUndefined:
        lines = _line_list(kind) and isinstance(default, list)
        common["initial"] = "\n".join(map(str, default)) if lines else default
    if get_origin(kind) is Literal:
        choices = [(str(c), str(c)) for c in get_args(kind)]
        return forms.ChoiceField(choices=choices, **common)
    if kind is bool:
        return forms.BooleanField(**{**common, "required": False})
    if kind is int:
        return forms.IntegerField(**common)
    if kind is float:
        return forms.FloatField(**common)
    if kind is date:
        return forms.DateField(widget=forms.DateInput(attrs={"type": "date"}), **common)
    if _line_list(kind):
        common["help_text"] = f"One per line. {common['help_text']}".strip()
        return forms.CharField(widget=forms.Textarea(attrs={"rows": 3, "cols": 40}), **common)
    if get_origin(kind) in (list, dict):  # structured values (test connectors): JSON
        common["initial"] = default if default is not PydanticUndefined else None
        return forms.JSONField(widget=forms.Textarea(attrs={"rows": 3, "cols": 60}), **common)
    return forms.CharField(**common)


def _line_list(kind: Any) -> bool:
    """A list of plain values, typed one per line."""
    return get_origin(kind) is list and all(a in (str, int, float) for a in get_args(kind))


def config_fields(config: type[BaseModel]) -> dict[str, forms.Field]:
    return {PREFIX + name: form_field(name, info) for name, info in config.model_fields.items()}


def initial_values(config: type[BaseModel], stored: Mapping[str, Any]) -> dict[str, Any]:
    """Form initial values from a stored config."""
    found: dict[str, Any] = {}
    for name in config.model_fields:
        if name in stored:
            value = stored[name]
            kind, _ = _plain_type(config.model_fields[name].annotation)
            lines = _line_list(kind) and isinstance(value, list)
            found[PREFIX + name] = "\n".join(map(str, value)) if lines else value
    return found


def to_config(
    config: type[BaseModel], cleaned: Mapping[str, Any], base: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The config dict from cleaned form data: ``base`` (the stored config, so keys the form
    does not show survive) updated with every field; an empty optional field is its default
    (or ``None``), lists are one value per line."""
    # keys the provider no longer knows are dropped (its config forbids them: kept, they would
    # block every save); see ``unknown_keys``
    result = {k: v for k, v in (base or {}).items() if k in config.model_fields}
    for name, info in config.model_fields.items():
        key = PREFIX + name
        if key not in cleaned:
            continue
        value = cleaned[key]
        kind, optional = _plain_type(info.annotation)
        if _line_list(kind):
            value = [line for line in str(value or "").splitlines() if line.strip()]
        default = _default(info)
        if name not in result and default is not PydanticUndefined and value == default:
            continue  # left at its default: not frozen into the stored config
        if value in (None, "", []) and not info.is_required():
            if optional and value != []:
                result[name] = None  # emptied on purpose: "none" (e.g. all history)
            elif name in result:
                result[name] = default  # stored before: stays stored, as the default
            continue
        if isinstance(value, date):
            value = value.isoformat()
        result[name] = value
    return result


def unknown_keys(config: type[BaseModel], stored: Mapping[str, Any]) -> list[str]:
    """Stored keys the provider no longer knows (dropped on the next save)."""
    return sorted(k for k in stored if k not in config.model_fields)


def normalized(config: type[BaseModel], values: Mapping[str, Any]) -> dict[str, Any]:
    """``values`` as the provider reads them (numbers as numbers, dates as ISO text), keeping
    only the keys given."""
    dumped = config.model_validate(dict(values)).model_dump(mode="json")
    return {k: dumped[k] for k in values}


def field_errors(exc: ValidationError) -> tuple[dict[str, list[str]], list[str]]:
    """pydantic's errors as (per form field, for the whole form), in plain words."""
    per_field: dict[str, list[str]] = {}
    general: list[str] = []
    for err in exc.errors():
        message = str(err["msg"]).removeprefix("Value error, ")
        loc = err.get("loc") or ()
        if loc:
            per_field.setdefault(PREFIX + str(loc[0]), []).append(message)
        else:
            general.append(message)
    return per_field, general
