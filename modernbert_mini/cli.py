"""The command line of the package's scripts (`python -m modernbert_mini.train`, `python -m
modernbert_mini.experiment`), generated from their config dataclasses: one --flag per field,
typed from the field's annotation; a field that is itself a dataclass (`optim.OptimConfig`)
gives its fields' flags, unprefixed (--lr, --warmup-steps)."""

from __future__ import annotations

import argparse
import json
import types
import typing
from dataclasses import MISSING, fields, is_dataclass, replace


def field_type(annotation) -> type:
    """The type a flag parses: X for `X | None`, else the annotation itself."""
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        (annotation,) = [a for a in typing.get_args(annotation) if a is not type(None)]
    return annotation


def add_fields(parser: argparse.ArgumentParser, cls, *, skip: tuple[str, ...] = (),
               unset: bool = False, help: dict[str, str] | None = None, defaults=None) -> None:
    """A --flag per field of the dataclass `cls`: bool -> --x / --no-x; tuple[float, float] -> two
    floats; dict -> JSON; int, float, str (and `X | None`) -> X; a dataclass -> its own fields'
    flags. unset=True: every default is None, so that `given` tells the flags set apart from the
    dataclass's defaults. defaults: the instance whose values are the defaults (a nested
    dataclass's come from its parent's default)."""
    hints = typing.get_type_hints(cls)
    for f in fields(cls):
        if f.name in skip:
            continue
        kind = field_type(hints[f.name])
        origin, args = typing.get_origin(kind) or kind, typing.get_args(kind)
        if defaults is not None:
            value = getattr(defaults, f.name)
        else:
            value = f.default_factory() if f.default is MISSING else f.default
        if is_dataclass(kind):
            add_fields(parser, kind, skip=skip, unset=unset, help=help, defaults=value)
            continue
        flag = dict(default=None if unset else value, help=(help or {}).get(f.name))
        name = "--" + f.name.replace("_", "-")
        if kind is bool:
            parser.add_argument(name, action=argparse.BooleanOptionalAction, **flag)
        elif origin is tuple:
            parser.add_argument(name, type=args[0], nargs=len(args), **flag)
        elif origin is dict:
            parser.add_argument(name, type=json.loads, **flag)
        elif kind in (int, float, str):
            parser.add_argument(name, type=kind, **flag)
        else:
            raise TypeError(f"{cls.__name__}.{f.name}: no flag for the type {kind!r}")


def given(args: argparse.Namespace, cls) -> dict:
    """The fields of `cls` (and of the dataclasses it holds) that the parsed args hold a value
    for, by name (lists as tuples)."""
    hints = typing.get_type_hints(cls)
    values = {}
    for f in fields(cls):
        kind = field_type(hints[f.name])
        if is_dataclass(kind):
            values.update(given(args, kind))
        elif getattr(args, f.name, None) is not None:
            value = getattr(args, f.name)
            values[f.name] = tuple(value) if isinstance(value, list) else value
    return values


def build(base, values: dict):
    """`base` (a dataclass instance) with `values` (as `given` returns them) in place, each
    field in the dataclass that holds it."""
    changes = {}
    for f in fields(base):
        inner = getattr(base, f.name)
        if is_dataclass(inner):
            changes[f.name] = build(inner, values)
        elif f.name in values:
            changes[f.name] = values[f.name]
    return replace(base, **changes)
