"""Error wording shared by modules that cannot import each other (a leaf: it imports nothing of crm's)."""

from __future__ import annotations


def first_line(exc: BaseException) -> str:
    """The first non-blank line of an exception's message, or its type's name: the part of a
    library's (often many-line) message that fits in crm's one-line errors."""
    return next((line.strip() for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
