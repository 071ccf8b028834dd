"""JSON whose numbers are written back as they were read: ``1e-7`` stays ``1e-7``, ``1e400`` stays ``1e400``.

Python's ``json`` keeps a number's value but not its text: ``1e-7`` comes back as ``1e-07``, ``1.50``
as ``1.5``, and ``1e400`` (read as infinity) as ``Infinity``, which strict JSON parsers refuse.
:func:`loads` keeps the source text of every number whose ``repr`` would differ, in a float or int
subclass that behaves as the plain number everywhere else; :func:`dumps` writes that text back.
Numbers that ``repr`` reproduces (nearly all of them) stay plain floats and ints, so a large file
costs no more memory than with ``json.loads``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from typing import Any


class JsonFloat(float):
    """A float read from JSON whose text (``1e-7``, ``1.50``, ``1e400``) is not its ``repr``."""

    __slots__ = ("text",)
    text: str

    def __new__(cls, text: str) -> JsonFloat:
        """The float of ``text`` (infinity for ``1e400``), remembering ``text``."""
        number = super().__new__(cls, text)
        number.text = text
        return number

    def __reduce__(self) -> tuple[type, tuple[str]]:
        return JsonFloat, (self.text,)


class JsonInt(int):
    """An int read from JSON whose text is not its ``repr``: only ``-0`` is."""

    text: str

    def __new__(cls, text: str) -> JsonInt:
        """The int of ``text``, remembering ``text``."""
        number = super().__new__(cls, text)
        number.text = text
        return number

    def __reduce__(self) -> tuple[type, tuple[str]]:
        return JsonInt, (self.text,)


def _parse_float(text: str, _float: type = float, _repr: Any = float.__repr__) -> float:
    number = _float(text)
    return number if _repr(number) == text else JsonFloat(text)


def _parse_int(text: str, _int: type = int) -> int:
    return JsonInt(text) if text == "-0" else _int(text)


def loads(raw: str | bytes) -> Any:
    """Parse JSON as ``json.loads`` does, keeping the text of numbers whose ``repr`` differs (see the
    module's docstring). ``NaN`` and ``Infinity`` (not JSON, but Python writes them) are read as the
    plain float values."""
    return json.loads(raw, parse_float=_parse_float, parse_int=_parse_int)


_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)
_SCALARS = frozenset({str, int, float, bool, type(None)})
_CONSTANTS = {None: "null", True: "true", False: "false"}


class _Writer:
    """Compact JSON text of a value: numbers read by :func:`loads` as they were written, NaN and
    infinities (which have no JSON form) as ``null``, counted in ``nulls``."""

    def __init__(self) -> None:
        self.nulls = 0

    def leaf(self, value: Any) -> str | None:
        """The text of a scalar, or of a container holding only plain scalars (json's C encoder
        writes those, which is where nearly all of a COCO file's bytes go); None for a container
        that needs :meth:`write`'s walk."""
        kind = type(value)
        if kind is str:
            return _ENCODER.encode(value)
        if kind is float:
            if math.isfinite(value):
                return float.__repr__(value)
            self.nulls += 1
            return "null"
        if kind is int:
            return int.__repr__(value)
        if kind is JsonFloat or kind is JsonInt:
            return value.text
        if value is None or kind is bool:
            return _CONSTANTS[value]
        if kind is list or kind is tuple or kind is dict:
            items = value.values() if kind is dict else value
            if _SCALARS.issuperset(map(type, items)):
                try:
                    return _ENCODER.encode(value)
                except ValueError:
                    pass  # a NaN inside: the walk writes it as null
            return None
        if isinstance(value, list | tuple | dict):  # a subclass: walked as its base
            return None
        if isinstance(value, int) and not isinstance(value, bool):  # an IntEnum, say: json writes int's text
            return int.__repr__(value)
        if isinstance(value, float):  # numpy.float64 is one
            return self.leaf(float(value))
        return _ENCODER.encode(value)  # a str subclass, or json's TypeError for what it cannot write

    def write(self, value: Any) -> str:
        """The JSON text of ``value``. The walk keeps its own stack, so no nesting depth that
        ``json.loads`` reads is too deep for it."""
        text = self.leaf(value)
        if text is not None:
            return text
        # Each open container: its parts, the iterator over what is left of it, and its brackets.
        stack: list[tuple[list[str], Iterator[tuple[str, Any]], str, int]] = []
        prefixes: list[str] = []  # what goes before each open container in its parent: a key and a colon
        open_ids: set[int] = set()

        def enter(container: Any, prefix: str) -> None:
            if id(container) in open_ids:
                raise ValueError("Circular reference detected")
            open_ids.add(id(container))
            if isinstance(container, dict):
                items = ((self._key(key) + ":", item) for key, item in container.items())
                stack.append(([], items, "{}", id(container)))
            else:
                stack.append(([], (("", item) for item in container), "[]", id(container)))
            prefixes.append(prefix)

        enter(value, "")
        while True:
            parts, items, brackets, ident = stack[-1]
            for prefix, item in items:
                text = self.leaf(item)
                if text is None:
                    enter(item, prefix)
                    break
                parts.append(prefix + text)
            else:
                stack.pop()
                open_ids.discard(ident)
                text = brackets[0] + ",".join(parts) + brackets[1]
                prefix = prefixes.pop()
                if not stack:
                    return text
                stack[-1][0].append(prefix + text)

    @staticmethod
    def _key(key: Any) -> str:
        """An object key as json writes it: a string, or a scalar turned into one (``1`` -> ``"1"``)."""
        if isinstance(key, str):
            return _ENCODER.encode(key)
        if key is None or isinstance(key, bool | int | float):
            return _ENCODER.encode(_ENCODER.encode(key))
        raise TypeError(f"keys must be str, int, float, bool or None, not {type(key).__name__}")


def dumps(value: Any) -> tuple[str, int]:
    """Compact JSON text of ``value`` (``ensure_ascii=False``) and how many NaN or infinite numbers
    were written as ``null``: the text is always strict JSON. Numbers read by :func:`loads` are
    written as they were read; everything else as ``json.dumps`` writes it."""
    writer = _Writer()
    return writer.write(value), writer.nulls
