"""Type hints to JSON schema, and model-sent JSON back to typed Python values.

Each annotation is compiled once, at decoration time, into a small converter that knows both its
schema (what the model is told) and how to check and convert a value (what the model sent).
Checking against the same object that produced the schema keeps the two from drifting apart.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Literal, Protocol, Union

from .._errors import ToolArgsInvalid
from ._docstring import param_descriptions, summary

SUPPORTED = "str, int, float, bool, list[T], dict[str, T], T | None, Literal[...] and dataclasses"
REQUIRED: object = object()  # the argument is required
_FROM_FACTORY: object = object()  # optional, with no value to advertise


class Converter(Protocol):
    def schema(self) -> dict[str, object]: ...

    def convert(self, value: object, path: str) -> object:
        """``value`` as the Python type; raises ``ToolArgsInvalid`` naming ``path``."""
        ...


def show(value: object) -> str:
    """A short rendering of a model-sent value for an error message."""
    text = repr(value) if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= 60 else text[:57] + "..."


def invalid(path: str, expected: str, value: object) -> ToolArgsInvalid:
    return ToolArgsInvalid(f"argument '{path}' must be {expected}, got {show(value)}")


@dataclass(frozen=True, slots=True)
class _Scalar:
    py_type: type
    json_type: str
    noun: str

    def schema(self) -> dict[str, object]:
        return {"type": self.json_type}

    def convert(self, value: object, path: str) -> object:
        is_number = isinstance(value, int | float) and not isinstance(value, bool)
        if self.py_type is float and is_number:
            return float(typing.cast(float, value))
        if self.py_type is int and isinstance(value, float) and value.is_integer():
            return int(value)  # a model writing 30.0 for 30 meant 30
        if isinstance(value, self.py_type) and not (
            isinstance(value, bool) and self.py_type is int
        ):
            return value
        raise invalid(path, self.noun, value)


_SCALARS: dict[object, _Scalar] = {
    str: _Scalar(str, "string", "a string"),
    int: _Scalar(int, "integer", "an integer"),
    float: _Scalar(float, "number", "a number"),
    bool: _Scalar(bool, "boolean", "true or false"),
}


@dataclass(frozen=True, slots=True)
class _Literal:
    values: tuple[object, ...]

    def schema(self) -> dict[str, object]:
        kinds = {type(v) for v in self.values}
        json_type = {str: "string", int: "integer", bool: "boolean"}.get(next(iter(kinds)))
        found: dict[str, object] = {"enum": list(self.values)}
        return {"type": json_type, **found} if len(kinds) == 1 and json_type else found

    def convert(self, value: object, path: str) -> object:
        for allowed in self.values:
            if type(allowed) is type(value) and allowed == value:
                return value
        raise invalid(path, "one of " + ", ".join(show(v) for v in self.values), value)


@dataclass(frozen=True, slots=True)
class _Optional:
    inner: Converter

    def schema(self) -> dict[str, object]:
        return {"anyOf": [self.inner.schema(), {"type": "null"}]}

    def convert(self, value: object, path: str) -> object:
        return None if value is None else self.inner.convert(value, path)


@dataclass(frozen=True, slots=True)
class _List:
    items: Converter

    def schema(self) -> dict[str, object]:
        return {"type": "array", "items": self.items.schema()}

    def convert(self, value: object, path: str) -> object:
        if not isinstance(value, list):
            raise invalid(path, "an array", value)
        return [self.items.convert(v, f"{path}[{i}]") for i, v in enumerate(value)]


@dataclass(frozen=True, slots=True)
class _Dict:
    values: Converter

    def schema(self) -> dict[str, object]:
        return {"type": "object", "additionalProperties": self.values.schema()}

    def convert(self, value: object, path: str) -> object:
        if not isinstance(value, dict):
            raise invalid(path, "an object", value)
        return {k: self.values.convert(v, f"{path}.{k}") for k, v in value.items()}


@dataclass(frozen=True, slots=True)
class Field:
    """One named member of an object: a tool parameter or a dataclass field."""

    name: str
    converter: Converter
    default: object = REQUIRED
    description: str = ""

    @property
    def required(self) -> bool:
        return self.default is REQUIRED

    def schema(self) -> dict[str, object]:
        found = self.converter.schema()
        if self.description:
            found["description"] = self.description
        if not self.required and _is_json(self.default):
            found["default"] = self.default
        return found


@dataclass(frozen=True, slots=True)
class ObjectConverter:
    """A JSON object with known keys: a tool's arguments, or a dataclass (``build`` it)."""

    fields: tuple[Field, ...]
    build: Callable[..., object] | None = None
    description: str = ""
    by_name: Mapping[str, Field] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "by_name", {f.name: f for f in self.fields})

    def schema(self) -> dict[str, object]:
        found: dict[str, object] = {"type": "object"}
        if self.description:
            found["description"] = self.description
        found["properties"] = {f.name: f.schema() for f in self.fields}
        required = [f.name for f in self.fields if f.required]
        if required:
            found["required"] = required
        found["additionalProperties"] = False
        return found

    def convert(self, value: object, path: str) -> object:
        if not isinstance(value, dict):
            raise invalid(path, "an object", value)
        for key in value:
            if key not in self.by_name:
                expected = ", ".join(self.by_name) or "none"
                where = _join(path, key)
                raise ToolArgsInvalid(f"unknown argument '{where}' (expected: {expected})")
        for f in self.fields:
            if f.required and f.name not in value:
                raise ToolArgsInvalid(f"missing required argument '{_join(path, f.name)}'")
        kwargs = {k: self.by_name[k].converter.convert(v, _join(path, k)) for k, v in value.items()}
        return kwargs if self.build is None else self.build(**kwargs)


def compile_annotation(
    annotation: object, where: str, seen: frozenset[type] = frozenset()
) -> Converter:
    """The converter for ``annotation``; ``TypeError`` naming ``where`` when it is unsupported.

    ``seen`` holds the dataclasses being compiled around this one, to refuse recursive types.
    """
    if annotation in _SCALARS:
        return _SCALARS[annotation]
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is Literal and all(isinstance(a, str | int | bool) for a in args):
        return _Literal(args)
    if origin in (Union, types.UnionType) and len(args) == 2 and type(None) in args:
        inner = next(a for a in args if a is not type(None))
        return _Optional(compile_annotation(inner, where, seen))
    if origin is list and len(args) == 1:
        return _List(compile_annotation(args[0], where, seen))
    if origin is dict and len(args) == 2 and args[0] is str:
        return _Dict(compile_annotation(args[1], where, seen))
    if isinstance(annotation, type) and dataclasses.is_dataclass(annotation):
        return compile_dataclass(annotation, where, seen)
    raise TypeError(f"{where} has unsupported type {_name(annotation)}; supported: {SUPPORTED}")


def compile_dataclass(cls: type, where: str, seen: frozenset[type] = frozenset()) -> Converter:
    """An object converter that builds ``cls`` from its fields."""
    if cls in seen:
        raise TypeError(f"{where}: dataclass {cls.__name__} refers to itself, which is unsupported")
    hints = resolve_hints(cls, where)
    docs = param_descriptions(cls.__doc__)
    members = []
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        if f.name not in hints:
            raise TypeError(f"{where}: field '{f.name}' of {cls.__name__} has no annotation")
        inner_where = f"{where} (field '{f.name}' of {cls.__name__})"
        converter = compile_annotation(hints[f.name], inner_where, seen | {cls})
        default = f.default if f.default is not dataclasses.MISSING else REQUIRED
        if f.default_factory is not dataclasses.MISSING:
            default = _FROM_FACTORY
        members.append(Field(f.name, converter, default, docs.get(f.name, "")))
    return ObjectConverter(tuple(members), build=cls, description=_class_summary(cls))


def resolve_hints(obj: object, where: str) -> dict[str, object]:
    """``typing.get_type_hints`` with a ``TypeError`` that says which tool could not be read."""
    try:
        return typing.get_type_hints(obj)
    except (NameError, TypeError) as exc:
        raise TypeError(f"{where}: cannot resolve type hints ({exc})") from exc


def _class_summary(cls: type) -> str:
    doc = cls.__doc__ or ""
    generated = doc.startswith(f"{cls.__name__}(")  # dataclasses write the signature when empty
    return "" if generated else summary(doc)


def _is_json(value: object) -> bool:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return False
    return True


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _name(annotation: object) -> str:
    return annotation.__name__ if isinstance(annotation, type) else repr(annotation)
