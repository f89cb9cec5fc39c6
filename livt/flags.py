"""Command-line flags generated from typed dataclasses (the training stage configs, export options).

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


def _nullable(type_: type) -> Any:
    """Parse ``none`` as None (to switch an optional setting off from the command line)."""

    def parse(text: str) -> Any:
        return None if text.lower() == "none" else type_(text)

    parse.__name__ = getattr(type_, "__name__", "value")
    return parse
