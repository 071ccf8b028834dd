"""JSON whose numbers are written back as they were read: ``1e-7`` stays ``1e-7``, ``1e400`` stays ``1e400``.

Python's ``json`` keeps a number's value but not its text: ``1e-7`` comes back as ``1e-07``, ``1.50``
as ``1.5``, and ``1e400`` (read as infinity) as ``Infinity``, which strict JSON parsers refuse.
:func:`loads` keeps the source text of every number whose ``repr`` would differ, in a float or int
subclass that behaves as the plain number everywhere else; :func:`dumps` writes that text back.

What it costs: :func:`loads` first scans the text for the number forms whose ``repr`` may differ
(an exponent, a fraction ending in 0, ``0.0000``, 16 or more digits, ``-0``) and checks each found.

- None to keep (a file written by Python, or of rounded numbers): ``json`` parses alone, in C; the
  scan adds about 60% to its time and nothing to its memory.
- A few, here and there (``1e-7``, ``1.50``): ``json`` converts every number in C, looking its text
  up in a table of those to keep: about twice ``json.loads``'s time.
- All over (``%.2f`` output, where 1 number in 10 ends in 0): every float goes through a Python
  hook, through a cache of their texts where the first ones repeat: about ``json.loads``'s time to
  2.5 times with the cache, 3 to 6 times without (full-precision numbers).

A kept number costs one object for each distinct text (about 100 bytes with its text, where a float
takes 24), shared by every place the text occurs; under the cache plain floats are shared too, so a
``%.2f`` file takes about half ``json.loads``'s memory. Many distinct texts to keep (``%.17g``
output) take more memory than ``json.loads``: about 100 bytes more for each.
"""

from __future__ import annotations

import itertools
import json
import math
import re
from collections.abc import Callable, Iterator
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
    """An int read from JSON whose text is not its ``repr``: only ``-0`` is. (An int subclass cannot
    have ``__slots__``; :func:`loads` makes one per file.)"""

    text: str

    def __new__(cls, text: str) -> JsonInt:
        """The int of ``text``, remembering ``text``."""
        number = super().__new__(cls, text)
        number.text = text
        return number

    def __reduce__(self) -> tuple[type, tuple[str]]:
        return JsonInt, (self.text,)


def _exact_float(text: str, _float: type = float, _repr: Any = float.__repr__) -> float:
    """The float of a number's text: a :class:`JsonFloat` where ``repr`` would not give the text back."""
    number = _float(text)
    # The common case without repr: at most 14 digits, no exponent, no 0 ending the fraction, and
    # not below 1e-4 (repr writes those with an exponent). A float gives back any 15 digits.
    if len(text) < 16 and text[-1] != "0" and "e" not in text and "E" not in text and not -1e-4 < number < 1e-4:
        return number
    return number if _repr(number) == text else JsonFloat(text)


class _Floats(dict):
    """``parse_float`` as a table of the texts to keep (``json`` looks each number up in C): a text not
    in it is converted by ``float``, as ``json`` converts it."""

    __missing__ = float


class _Ints(dict):
    """``parse_int`` as a table, like :class:`_Floats`: ``-0`` and nothing else."""

    __missing__ = int


class _FloatCache(dict):
    """``parse_float`` for a text with too many numbers to keep to list them first (``%.2f`` output):
    each distinct number text is checked once, later ones are looked up in C and share its object."""

    def __missing__(self, text: str) -> float:
        number = _exact_float(text)
        if len(self) >= _CACHE_SIZE:
            self.clear()
        self[text] = number
        return number


_CACHE_SIZE = 1 << 17  # texts; cleared when full (about 15 MB)
# The scan: what may follow a number token (a superset of JSON's whitespace, commas and brackets).
_END = r"(?![^\s,\]}])"
# Each matches inside every float token whose text may not be its repr (and inside a few that are,
# or in strings): a fraction ending in 0 (1.50), 0.0000 (repr writes 1e-05), 16 or more digits
# (0.10000000000000001 is 0.1; with no more than 15, a float gives its digits back), an exponent.
_SUSPECTS = (
    re.compile(rf"\.(?:\d+0{_END}|\d{{8}}|0000|(?<=\d{{9}}\.)\d*{_END})"),
    re.compile(rf"e(?<=\de)[-+]?\d+{_END}"),  # two literal-led patterns scan faster than one [eE]
    re.compile(rf"E(?<=\dE)[-+]?\d+{_END}"),
)
_NEGATIVE_ZERO = re.compile(rf"-0{_END}")
_NUMBER = re.compile(r"-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][-+]?\d+)?")
_LONGEST = 100  # characters of a number the scan reads; a longer one leaves every float to the hook
_NUMBER_RUN = re.compile(rf"[-+.\deE]{{0,{_LONGEST + 1}}}")
_NUMBER_CHARS = frozenset("0123456789-+.eE")
_BEFORE = frozenset("[,: \t\n\r")  # what a JSON number follows (or the text's start)
_AFTER = frozenset("]}, \t\n\r")  # and what it is followed by (or the text's end)
# Past one suspect per this many characters (after the first _DENSE_AFTER), checking each before the
# parse costs more than a hook on every float.
_DENSE_SPACING = 256
_DENSE_AFTER = 1024
_SAMPLE = 16384


class _Overlong(Exception):
    """A run of number characters longer than ``_LONGEST``: reading each such run would take the scan
    quadratic time on a crafted text."""


def _token_at(text: str, index: int) -> str | None:
    """The JSON number token around ``text[index]``; None where none stands there between JSON's
    separators (digits inside a string)."""
    start = index
    while start and text[start - 1] in _NUMBER_CHARS:
        start -= 1
        if index - start > _LONGEST:
            raise _Overlong
    end = _NUMBER_RUN.match(text, index).end()  # type: ignore[union-attr]  # it matches the empty text
    if end - start > _LONGEST:
        raise _Overlong
    if (start and text[start - 1] not in _BEFORE) or (end < len(text) and text[end] not in _AFTER):
        return None
    token = text[start:end]
    return token if _NUMBER.fullmatch(token) else None


def _parse_float_for(text: str) -> Callable[[str], float] | None:
    """The ``parse_float`` that keeps the text of ``text``'s floats whose ``repr`` differs: None where
    there are none (``json``'s own conversion), a table of them where they are few, else a hook."""
    kept: dict[str, float] = {}
    try:
        for pattern in _SUSPECTS:
            found = 0
            for match in pattern.finditer(text):
                index = match.start()
                found += 1
                if found > index // _DENSE_SPACING + _DENSE_AFTER:
                    return _dense_hook(text, pattern, kept)
                token = _token_at(text, index)
                if token is not None and token not in kept:
                    number = _exact_float(token)
                    if type(number) is JsonFloat:
                        kept[token] = number
    except _Overlong:
        return _exact_float
    return _Floats(kept).__getitem__ if kept else None


def _dense_hook(text: str, pattern: re.Pattern[str], kept: dict[str, float]) -> Callable[[str], float]:
    """``parse_float`` for a text with suspects all over (``%.2f`` output): the cache where the first
    ones' texts repeat, else the check of each float (full-precision numbers)."""
    sample = [_token_at(text, match.start()) for match in itertools.islice(pattern.finditer(text), _SAMPLE)]
    return _FloatCache(kept).__getitem__ if 2 * len(set(sample)) < len(sample) else _exact_float


def _hooks(text: str) -> dict[str, Any]:
    """``json``'s number hooks for ``text``: None (its own C conversion) where no number needs its text."""
    parse_int = _Ints({"-0": JsonInt("-0")}).__getitem__ if _NEGATIVE_ZERO.search(text) else None
    return {"parse_float": _parse_float_for(text), "parse_int": parse_int}


def loads(raw: str | bytes) -> Any:
    """Parse JSON as ``json.loads`` does, keeping the text of numbers whose ``repr`` differs (see the
    module's docstring). ``NaN`` and ``Infinity`` (not JSON, but Python writes them) are read as the
    plain float values."""
    if isinstance(raw, bytes | bytearray):
        # What json.loads does with bytes: decode as it detects, then parse (no BOM check on the text).
        text = raw.decode(json.detect_encoding(raw), "surrogatepass")
        return json.JSONDecoder(**_hooks(text)).decode(text)
    return json.loads(raw, **_hooks(raw)) if isinstance(raw, str) else json.loads(raw)


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
