"""Typed dataclasses (the training stage configs, export options) to and from the command line and
plain data: flags generated from their fields, YAML values coerced to their types, choices checked;
and the flags of a pydantic settings model (``livt-serve``), from its fields the same way.

Each field becomes ``--field-name`` (underscores to dashes) with the type of its annotation, the help
text of its metadata and its default named in that help, so a default is written once, in the
dataclass. Parsers use ``argument_default=SUPPRESS``: only flags given explicitly appear in the
namespace, and the dataclass (or a recipe under the flags) supplies the rest.

Field metadata keys: ``help``; ``flag`` (False: no flag); ``aliases`` (more option strings);
``name`` (the option string instead of ``--field-name``); ``choices``; ``group`` (an argument group
title); ``nargs`` and ``const`` (e.g. an optional value); ``metavar``; ``required``.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from typing import Any

Parser = argparse.ArgumentParser | argparse._ArgumentGroup


def field_flag(name: str) -> str:
    """``batch_size`` -> ``--batch-size``."""
    return "--" + name.replace("_", "-")


def add_dataclass_flags(parser: argparse.ArgumentParser, cls: type, *, skip: tuple[str, ...] = ()) -> None:
    """One flag per field of dataclass ``cls`` (but those in ``skip`` or with ``flag=False``)."""
    hints = typing.get_type_hints(cls)
    groups: dict[str, Parser] = {}
    for f in dataclasses.fields(cls):
        if f.name in skip or f.metadata.get("flag") is False:
            continue
        title = f.metadata.get("group")
        target = parser if title is None else groups.setdefault(title, parser.add_argument_group(title))
        _add_field(target, f, hints[f.name])


def _add_field(parser: Parser, f: dataclasses.Field, hint: Any) -> None:
    optional = False
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        hint, optional = next(a for a in typing.get_args(hint) if a is not type(None)), True
    names = (f.metadata.get("name", field_flag(f.name)), *f.metadata.get("aliases", ()))
    kwargs: dict[str, Any] = {"help": _help(f), "dest": f.name}
    choices = f.metadata.get("choices")
    if choices is not None:
        kwargs["choices"] = [*choices, None] if optional else list(choices)
        shown = [*map(str, choices), *(["none"] if optional and f.metadata.get("nargs") != "?" else [])]
        kwargs["metavar"] = "{" + ",".join(shown) + "}"
    for key in ("nargs", "const", "required", "metavar"):
        if key in f.metadata:
            kwargs[key] = f.metadata[key]
    if hint is bool:
        parser.add_argument(*names, action=argparse.BooleanOptionalAction, **kwargs)
    elif typing.get_origin(hint) is tuple:
        parser.add_argument(*names, type=float, nargs=2, metavar="X", **kwargs)
    else:
        parse = _nullable(hint) if optional else hint
        parser.add_argument(*names, type=parse, **kwargs)


def _help(f: dataclasses.Field) -> str:
    text = f.metadata.get("help", "")
    # A help text that says its default itself ("default: the model's") knows better.
    if f.metadata.get("required") or "default:" in text or f.default_factory is not dataclasses.MISSING:
        return text
    default = None if f.default is dataclasses.MISSING else f.default
    if default == "":
        return text
    shown = (
        "none" if default is None else ("on" if default is True else "off" if default is False else default)
    )
    return f"{text} (default: {shown})" if text else f"(default: {shown})"


def add_settings_flags(parser: argparse.ArgumentParser, model: type, *, skip: tuple[str, ...] = ()) -> None:
    """One flag per field of pydantic model ``model`` (but those in ``skip``), help from its description.

    Values stay text: the model parses and validates them as it does its environment variables, so
    a flag and a variable are read alike and fail alike. A ``bool`` is ``--x / --no-x``, a ``Literal``
    lists its choices.
    """
    for name, info in model.model_fields.items():
        if name in skip:
            continue
        hint = info.annotation
        if typing.get_origin(hint) in (typing.Union, types.UnionType):
            hint = next(a for a in typing.get_args(hint) if a is not type(None))
        kwargs: dict[str, Any] = {"dest": name, "help": _settings_help(info)}
        if hint is bool:
            parser.add_argument(field_flag(name), action=argparse.BooleanOptionalAction, **kwargs)
            continue
        if typing.get_origin(hint) is typing.Literal:
            kwargs["choices"] = list(typing.get_args(hint))
        parser.add_argument(field_flag(name), **kwargs)


def _settings_help(info: Any) -> str:
    text = info.description or ""
    if "default:" in text or info.default_factory is not None or info.is_required() or info.default is None:
        return text
    shown = "on" if info.default is True else "off" if info.default is False else info.default
    return f"{text} (default: {shown})" if text else f"(default: {shown})"


def _nullable(type_: type) -> Any:
    """Parse ``none`` as None (to switch an optional setting off from the command line)."""

    def parse(text: str) -> Any:
        return None if text.lower() == "none" else type_(text)

    parse.__name__ = getattr(type_, "__name__", "value")
    return parse


def plain_values(cls: type, data: dict[str, Any], where: str) -> dict[str, Any]:
    """``data`` (as YAML reads it) with each value converted to its field's type in dataclass ``cls``.

    Raises ``ValueError`` naming the unknown keys (and the known ones) or the value of the wrong type.
    """
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(
            f"unknown key(s) in {where}: {', '.join(unknown)}; known: {', '.join(sorted(known))}"
        )
    hints = typing.get_type_hints(cls)
    return {k: _coerce(k, v, hints[k]) for k, v in data.items()}


def check_choices(obj: Any) -> None:
    """Raise ``ValueError`` for a field of dataclass instance ``obj`` outside its ``choices`` metadata."""
    for f in dataclasses.fields(obj):
        choices = f.metadata.get("choices")
        value = getattr(obj, f.name)
        if choices is not None and value is not None and value not in choices:
            raise ValueError(f"{f.name} must be one of {', '.join(map(str, choices))}, got {value!r}")


def _coerce(name: str, value: Any, hint: Any) -> Any:
    """Convert a plain value to the field's type; YAML reads ``1e-3`` as a string, for one."""
    args = typing.get_args(hint)
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        if value is None:
            return None
        hint = next(a for a in args if a is not type(None))
        args = typing.get_args(hint)
    origin = typing.get_origin(hint) or hint
    try:
        if origin is bool:
            if not isinstance(value, bool):
                raise TypeError
            return value
        if origin in (int, float):
            if isinstance(value, bool) or (
                origin is int and isinstance(value, float) and not value.is_integer()
            ):
                raise TypeError
            return origin(value)
        if origin is str:
            if not isinstance(value, str):
                raise TypeError
            return value
        if origin is tuple:
            return tuple(_coerce(name, v, args[0]) for v in value)
        if origin is dict:
            if not isinstance(value, dict):
                raise TypeError
            return dict(value)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name}: expected {getattr(hint, '__name__', hint)}, got {value!r}") from exc
    return value
