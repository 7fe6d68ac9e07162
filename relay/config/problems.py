"""Pydantic's validation errors in the words of the config file's author.

``servers[1].port: must be a whole number, not the string "x"``: the field
named as it stands in the file, the problem in plain words, and the rejected
value only where it cannot be a password. An unknown key gets the known one
it most resembles (``histroy: is not a known setting; did you mean
"history"?``), found among the fields of the model at its place.
"""

from __future__ import annotations

import difflib
import types
from collections.abc import Iterable, Sequence
from typing import Union, get_args, get_origin

import orjson
from pydantic import BaseModel
from pydantic_core import ErrorDetails

from relay.config.secrets import SECRET_SOURCE_ERROR

#: Fields whose rejected value must not be echoed in an error.
_SECRET_FIELDS = frozenset({"pass", "password"})
#: Sections whose rejected values are never echoed: a password may stand anywhere in them
#: (the broker's in a URL given where an object belongs).
_SECRET_SECTIONS = frozenset({"cluster_status", "broker"})

_TYPE_NAMES = {
    "int_type": "a whole number",
    "int_from_float": "a whole number",
    "float_type": "a number",
    "string_type": "a string",
    "bool_type": "true or false",
    "list_type": "a list",
    "tuple_type": "a list",
    "dict_type": "an object",
    "model_type": "an object",
    "model_attributes_type": "an object",
}


def describe_error(error: ErrorDetails, model: type[BaseModel] | None = None) -> str:
    """Turn one pydantic error into ``location: plain-words problem``.

    ``model`` is the model that was validated; given, an unknown key is
    answered with the known key of its place that it most resembles.
    """
    location = _location(error["loc"])
    kind = error["type"]
    given = error.get("input")
    loc = error["loc"]
    if any(part in _SECRET_FIELDS for part in loc) or (loc and loc[0] in _SECRET_SECTIONS):
        given = "(hidden)"
    if kind == "missing":
        return f"{location}: is required but missing"
    if kind == "extra_forbidden":
        return f"{location}: is not a known setting{_suggestion(model, loc)}"
    if kind == SECRET_SOURCE_ERROR:
        # The secret's reader names the field; the location is its model's.
        field = error.get("ctx", {}).get("field")
        where = _location([*loc, field]) if field else location
        return f"{where}: {error['msg']}"
    if kind in _TYPE_NAMES:
        return f"{location}: must be {_TYPE_NAMES[kind]}, not {_json_type(given)}"
    if kind == "literal_error":
        expected = error.get("ctx", {}).get("expected", "")
        return f"{location}: must be {expected}, not {_json_repr(given)}"
    message = error["msg"]
    message = message.removeprefix("Value error, ").replace("Input should be", "must be")
    return f"{location}: {message}"


def _location(loc: Sequence[int | str]) -> str:
    """``('servers', 1, 'ssl.key')`` as ``servers[1].ssl.key``."""
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        elif not part.startswith("function-"):
            text += f".{part}" if text else part
    return text or "(top level)"


def _suggestion(model: type[BaseModel] | None, loc: Sequence[int | str]) -> str:
    """``; did you mean "history"?`` for the unknown key at ``loc``, or nothing."""
    if model is None or not loc or not isinstance(loc[-1], str):
        return ""
    models = {model}
    for part in loc[:-1]:
        if isinstance(part, int) or part.startswith("function-"):
            continue  # an entry's index, or a validator's: the model stays the same
        models = {
            found
            for current in models
            for name, field in current.model_fields.items()
            if part in (name, field.alias)
            for found in _models_in(field.annotation)
        }
    known = {
        field.alias or name for current in models for name, field in current.model_fields.items()
    }
    # 0.75 still catches one slip in a four-letter word ("tpye", "hots"), and
    # keeps off guesses that merely share letters ("colour", "cluster").
    close = difflib.get_close_matches(loc[-1], sorted(known), n=1, cutoff=0.75)
    return f'; did you mean "{close[0]}"?' if close else ""


def _models_in(annotation: object) -> Iterable[type[BaseModel]]:
    """The models a field holds: itself, or inside ``X | None``, tuples and lists."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        yield annotation
    elif get_origin(annotation) in (Union, types.UnionType, tuple, list):
        for argument in get_args(annotation):
            yield from _models_in(argument)


def _json_type(value: object) -> str:
    """Name a decoded JSON value's type the way the file's author sees it."""
    if value is None:
        return "null"
    if value == "(hidden)":
        return "a value (not shown)"
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, int | float):
        return f"the number {value}"
    if isinstance(value, str):
        return f'the string "{value}"'
    if isinstance(value, list):
        return "a list"
    return "an object"


def _json_repr(value: object) -> str:
    """A short JSON rendering of a rejected value."""
    if value == "(hidden)":
        return "the value given (not shown)"
    return orjson.dumps(value).decode()[:80] if value is not None else "null"
