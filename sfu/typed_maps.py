"""Frozen dataclasses as checked msgpack maps: what a typed message schema needs, and no more.

Each field's annotation is turned once into a converter that checks a decoded value (``int``,
``str``, ``bytes``, ``bool``, ``float``, ``list[...]``, ``dict[...]``, unions, nested structs)
and into an encoder that leaves plain values as they are. ``decode_struct`` says which field is
wrong, so a receiver can refuse a message precisely instead of failing somewhere later.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar, Union

# --- value converters, built once per field from its annotation ---------------------------------

Convert = Callable[[Any], Any]


def _identity(value: Any) -> Any:
    return value


def _check(kind: type) -> Convert:
    def convert(value: Any) -> Any:
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise TypeError(f"expected {kind.__name__}, got {type(value).__name__}")
        return value

    return convert


def _decoder(tp: Any) -> Convert:
    """A function that checks a decoded msgpack value against ``tp`` and builds structs."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return _identity
    if tp is type(None):
        return _check(type(None))
    if origin in (Union, types.UnionType):
        options = [_decoder(arg) for arg in typing.get_args(tp)]

        def either(value: Any) -> Any:
            for option in options:
                try:
                    return option(value)
                except (TypeError, ValueError):
                    continue
            raise TypeError(f"expected {describe(tp)}, got {type(value).__name__}")

        return either
    if origin is list:
        item = _decoder(typing.get_args(tp)[0])
        check_list = _check(list)
        return lambda value: [item(v) for v in check_list(value)]
    if origin is dict:
        key, val = (_decoder(arg) for arg in typing.get_args(tp))
        check_dict = _check(dict)
        return lambda value: {key(k): val(v) for k, v in check_dict(value).items()}
    if isinstance(tp, type) and issubclass(tp, Struct):
        struct = tp
        return lambda value: decode_struct(struct, value)
    if tp is float:
        number = _check((int, float))  # type: ignore[arg-type]
        return lambda value: float(number(value))
    if isinstance(tp, type):
        return _check(tp)
    raise TypeError(f"no converter for {tp!r}")


def _encoder(tp: Any) -> Convert | None:
    """None when the value goes on the wire as it is (the common case: no copy)."""
    origin = typing.get_origin(tp)
    if isinstance(tp, type) and issubclass(tp, Struct):
        return encode_struct
    if origin in (Union, types.UnionType):
        if any(_encoder(arg) for arg in typing.get_args(tp)):
            return lambda value: encode_struct(value) if isinstance(value, Struct) else value
        return None
    if origin is list:
        item = _encoder(typing.get_args(tp)[0])
        return None if item is None else (lambda value: [item(v) for v in value])
    if origin is dict:
        val = _encoder(typing.get_args(tp)[1])
        return None if val is None else (lambda value: {k: val(v) for k, v in value.items()})
    return None


def describe(tp: Any) -> str:
    """A type as the docs table spells it: ``list[int]``, ``ErrorInfo | None``."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return "any"
    if tp is type(None):
        return "None"
    if origin in (Union, types.UnionType):
        return " | ".join(describe(arg) for arg in typing.get_args(tp))
    if origin in (list, dict):
        return f"{origin.__name__}[{', '.join(describe(a) for a in typing.get_args(tp))}]"
    return str(getattr(tp, "__name__", tp))


@dataclass(frozen=True)
class FieldSpec:
    name: str
    type: Any
    doc: str
    required: bool
    decode: Convert
    encode: Convert | None


# --- structs ----------------------------------------------------------------------------------


class Struct:
    """A typed map; subclasses are frozen dataclasses, registered with ``struct`` (or a
    decorator that calls ``build_specs``)."""

    __slots__ = ()
    specs: ClassVar[tuple[FieldSpec, ...]] = ()


S = TypeVar("S", bound=Struct)


def build_specs(cls: type[Struct]) -> None:
    hints = typing.get_type_hints(cls)
    specs = []
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        tp = hints[f.name]
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        specs.append(FieldSpec(f.name, tp, f.metadata.get("doc", ""), required,
                               _decoder(tp), _encoder(tp)))
    cls.specs = tuple(specs)


def struct(cls: type[S]) -> type[S]:
    build_specs(cls)
    return cls


def encode_struct(value: Struct) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for spec in value.specs:
        item = getattr(value, spec.name)
        out[spec.name] = item if spec.encode is None else spec.encode(item)
    return out


def decode_struct(cls: type[S], data: Any, skip: frozenset[str] = frozenset()) -> S:
    """Check ``data`` against ``cls``'s fields; raises TypeError/ValueError saying what is off."""
    if not isinstance(data, dict):
        raise TypeError(f"{cls.__name__}: expected a map, got {type(data).__name__}")
    names = {spec.name for spec in cls.specs}
    extra = [k for k in data if k not in names and k not in skip]
    if extra:
        raise ValueError(f"unknown fields {sorted(map(str, extra))}")
    values: dict[str, Any] = {}
    for spec in cls.specs:
        if spec.name in data:
            try:
                values[spec.name] = spec.decode(data[spec.name])
            except (TypeError, ValueError) as exc:
                raise ValueError(f"field {spec.name!r}: {exc}") from None
        elif spec.required:
            raise ValueError(f"missing field {spec.name!r}")
    return cls(**values)
