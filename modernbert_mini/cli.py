"""The command line of the package's scripts (`train`, `finetune`, `experiment`), generated from
their config dataclasses: one --flag per field, typed from the field's annotation."""

from __future__ import annotations

import argparse
import json
import types
import typing
from dataclasses import MISSING, fields


def field_type(annotation) -> type:
    """The type a flag parses: X for `X | None`, else the annotation itself."""
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        (annotation,) = [a for a in typing.get_args(annotation) if a is not type(None)]
    return annotation


def add_fields(parser: argparse.ArgumentParser, cls, *, skip: tuple[str, ...] = (),
               unset: bool = False, help: dict[str, str] | None = None) -> None:
    """A --flag per field of the dataclass `cls`: bool -> --x / --no-x; tuple[float, float] -> two
    floats; dict -> JSON; int, float, str (and `X | None`) -> X. unset=True: every default is
    None, so that `given` tells the flags set apart from the dataclass's defaults."""
    hints = typing.get_type_hints(cls)
    for f in fields(cls):
        if f.name in skip:
            continue
        kind = field_type(hints[f.name])
        origin, args = typing.get_origin(kind) or kind, typing.get_args(kind)
        default = None if unset else (f.default_factory() if f.default is MISSING else f.default)
        flag = dict(default=default, help=(help or {}).get(f.name))
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
    """The fields of `cls` that the parsed args hold a value for (lists as tuples)."""
    values = {f.name: getattr(args, f.name, None) for f in fields(cls)}
    return {name: tuple(v) if isinstance(v, list) else v
            for name, v in values.items() if v is not None}
