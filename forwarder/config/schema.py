"""The schema, read from the model: each section's YAML keys, the reading of its fields
with their defaults and bounds (`read`), and the settings only a start applies.

The model states each field once (`model.setting`); this module is the only reader of
those statements. A field whose type is a plain value (bool, int, float, str, an enum)
or a settings dataclass is read here; anything else (lists of rules, mappings of groups)
is read by the section's own parser, passed in as *custom*.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any

import forwarder.config.model as model
from forwarder.config.values import (
    Reader,
    as_bool,
    as_float,
    as_int,
    as_text,
    bounded,
    parse_duration,
    parse_host,
    parse_name,
    parse_qtype,
    parse_server,
)

Custom = Mapping[str, Callable[[Reader], Any]]


def key_of(f: dataclasses.Field[Any]) -> str:
    """The YAML key of field *f*."""
    return f.metadata.get("key") or f.name


def fields_of(cls: type) -> list[dataclasses.Field[Any]]:
    """The fields of section *cls* that the YAML sets (not the derived ones)."""
    return [f for f in dataclasses.fields(cls) if not f.metadata.get("derived")]


def keys(cls: type) -> set[str]:
    """The keys a YAML mapping for section *cls* may have."""
    return {key_of(f) for f in fields_of(cls)}


def default_of(f: dataclasses.Field[Any]) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _plain_type(hint: Any) -> Any:
    """*hint* without `| None`."""
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        return args[0] if len(args) == 1 else hint
    return hint


def section(r: Reader, cls: type, custom: Custom | None = None) -> Any:
    """Reads one settings section into *cls*."""
    return cls(**read(r, cls, custom))


def child(r: Reader, cls: type, key: str) -> Reader:
    """A reader for the mapping at *key* of *r*, which holds section *cls*."""
    return Reader(r.problems, r.at(key), r.data.get(key), keys(cls))


def read(r: Reader, cls: type, custom: Custom | None = None,
         skip: tuple[str, ...] = ()) -> dict[str, Any]:
    """The keyword arguments of *cls* read from *r*: each field by its statement in the
    model, or by `custom[name](r)`; the fields in *skip* are left to the caller. A
    required field that is missing is a problem (and answers a placeholder: the caller's
    object is never used then)."""
    custom = custom or {}
    out = {}
    for f in fields_of(cls):
        if f.name in skip:
            continue
        if f.name in custom:
            out[f.name] = custom[f.name](r)
        else:
            out[f.name] = read_field(r, cls, f.name)
    return out


def read_field(r: Reader, cls: type, name: str, default: Any = dataclasses.MISSING) -> Any:
    """Reads field *name* of section *cls* from *r*; *default* overrides the model's
    (a default that depends on other fields)."""
    f = next(f for f in dataclasses.fields(cls) if f.name == name)
    key, meta = key_of(f), f.metadata
    kind = _plain_type(_hints(cls)[name])
    if default is dataclasses.MISSING:
        default = default_of(f)
    if dataclasses.is_dataclass(kind):
        return section(child(r, kind, key), kind)
    if default is dataclasses.MISSING:
        if not r.has(key):
            if r.ok:
                r.fail(key, "required")
            return _placeholder(kind)
        default = _placeholder(kind)
    convert = _converter(kind, meta)
    if convert is None:
        raise TypeError(f"{cls.__name__}.{name}: give its section a custom reader")
    return r.get(key, default, convert)


def _converter(kind: Any, meta: Mapping[str, Any]) -> Callable[[Any], Any] | None:
    how, lo, hi = meta.get("kind"), meta.get("lo"), meta.get("hi")
    if how == "duration":
        return lambda v: bounded(parse_duration(v), lo, hi)
    if how == "name":
        return parse_name
    if how == "qtype":
        return parse_qtype
    if how == "address":
        return _listen_address
    if how == "host":
        return parse_host
    if kind is bool:
        return as_bool
    if kind is int:
        return lambda v: bounded(as_int(v), lo, hi)
    if kind is float:
        return lambda v: bounded(as_float(v), lo, hi)
    if isinstance(kind, type) and issubclass(kind, enum.Enum):
        return _words(kind, tuple(m.value for m in kind))
    if kind is str:
        choices = meta.get("choices")
        return _words(str, choices) if choices else as_text
    return None


def _words(make: Callable[[str], Any], choices: tuple[str, ...]) -> Callable[[Any], Any]:
    def convert(v: Any) -> Any:
        word = as_text(v).lower()
        if word not in choices:
            raise ValueError(f"{v!r} is not one of: {', '.join(choices)}")
        return make(word)

    return convert


def _listen_address(v: Any) -> str:
    parse_server(v, any_port=True)
    return as_text(v).strip()


def _placeholder(kind: Any) -> Any:
    if isinstance(kind, type) and issubclass(kind, enum.Enum):
        return next(iter(kind))
    return {bool: False, int: 0, float: 0.0, str: ""}.get(kind)


# --- what only a start applies ---------------------------------------------------------------


def start_only(cfg: model.Config) -> dict[str, Any]:
    """The values of the settings only a start applies, by dotted key (`metrics.listen`)."""
    out: dict[str, Any] = {}
    for f in fields_of(model.Config):
        value = getattr(cfg, f.name)
        if f.metadata.get("restart"):
            out[key_of(f)] = value
        elif dataclasses.is_dataclass(value):
            for sub in fields_of(type(value)):
                if sub.metadata.get("restart"):
                    out[f"{key_of(f)}.{key_of(sub)}"] = getattr(value, sub.name)
    return out


def keep_start_only(new: model.Config, running: model.Config) -> model.Config:
    """*new* with the start-only settings of *running* (what a reload can apply)."""
    changes: dict[str, Any] = {}
    for f in fields_of(model.Config):
        value = getattr(new, f.name)
        if f.metadata.get("restart"):
            changes[f.name] = getattr(running, f.name)
        elif dataclasses.is_dataclass(value):
            kept = {sub.name: getattr(getattr(running, f.name), sub.name)
                    for sub in fields_of(type(value)) if sub.metadata.get("restart")}
            if kept:
                changes[f.name] = dataclasses.replace(value, **kept)
    return dataclasses.replace(new, **changes)
