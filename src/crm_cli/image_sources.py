"""An image's encoded bytes from a path, bytes, a pipe or standard input; ImageReadError, naming the file."""

from __future__ import annotations

import os
import stat
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

STDIN_NAME = "<stdin>"
# The label of encoded bytes given without a name: the API's bytes need not be standard input (the
# CLI passes name="<stdin>" with the bytes it reads from standard input).
BYTES_NAME = "<bytes>"
# Bytes longer than this are never taken for a file's path (Linux's PATH_MAX).
_PATH_BYTES_LIMIT = 4096


class ImageReadError(OSError):
    """An input image or mask is missing or cannot be decoded; the message names the file."""


def file_error(label: str, exc: OSError) -> ImageReadError:
    """A one-line message for a file that cannot be opened or read."""
    if isinstance(exc, FileNotFoundError):
        return ImageReadError(f"{label}: no such file")
    if isinstance(exc, IsADirectoryError):
        return ImageReadError(f"{label}: is a directory, not an image file")
    if isinstance(exc, PermissionError):
        return ImageReadError(f"{label}: permission denied")
    return ImageReadError(f"{label}: cannot read file ({exc.strerror or exc})")


def check_source(source: object) -> None:
    """TypeError for a ``source`` that is neither a path nor encoded bytes (an array or a PIL image
    given to a reader: os.stat's own wording would not say what was wrong)."""
    if not isinstance(source, (str, os.PathLike, bytes, bytearray, memoryview)):
        raise TypeError(f"an image source must be a path (str or os.PathLike) or the file's encoded bytes, "
                        f"not {type(source).__module__}.{type(source).__qualname__}")


def source_bytes(source: str | Path | bytes, name: str | None) -> tuple[bytes, str]:
    """The encoded bytes of ``source`` and the name to use in messages."""
    check_source(source)
    if isinstance(source, (bytes, bytearray, memoryview)):
        label = name or BYTES_NAME
        data = bytes(source)
    else:
        label = name or str(source)
        data = pipe_bytes(source, label)
        if data is None:
            try:
                data = Path(source).read_bytes()
            except OSError as exc:
                raise file_error(label, exc) from None
    if not data:
        raise ImageReadError(f"{label}: empty file")
    return data, label


def _spells_existing_path(source: bytes | bytearray | memoryview) -> bool:
    """Whether ``source`` (bytes that are no image) reads as the path of an existing file: short,
    without NUL, and there (``os.listdir(b".")`` gives such bytes)."""
    size = source.nbytes if isinstance(source, memoryview) else len(source)
    if not 0 < size <= _PATH_BYTES_LIMIT:
        return False
    data = bytes(source)
    return b"\0" not in data and os.path.isfile(data)


@contextmanager
def bytes_path_hint(source: str | Path | bytes, name: str | None) -> Iterator[None]:
    """An ImageReadError raised inside, when ``source`` is bytes an API caller gave (not standard
    input, which the CLI names STDIN_NAME) that spell an existing file's path, says that bytes are
    read as encoded image data and how to read the file instead."""
    try:
        yield
    except ImageReadError as exc:
        if (name == STDIN_NAME or not isinstance(source, (bytes, bytearray, memoryview))
                or not _spells_existing_path(source)):
            raise
        raise ImageReadError(f"{exc}; bytes are read as encoded image data, but these spell the path of an "
                             "existing file: to read that file, pass its path as a str or Path "
                             "(os.fsdecode(path))") from None


# A pipe given as a path (`<(cat mask.png)`, a FIFO, /dev/stdin fed by a pipe) can be read only
# once, but every input is probed before it is decoded: its bytes are kept here after the first
# read, by path and inode (so a new pipe behind a reused /dev/fd/N name is read afresh). Only the
# last few are kept: a pair needs two, and a long-running process must not hoard every pipe it read.
_PIPE_BYTES: dict[tuple[str, int, int], bytes] = {}
_PIPES_KEPT = 4


def pipe_bytes(path: str | Path, label: str) -> bytes | None:
    """All bytes of ``path`` when it is a pipe or FIFO (read once, then kept for every later read
    of the same path); None for a regular file or anything else."""
    try:
        info = os.stat(path)
    except OSError:
        return None  # the ordinary open reports it
    if not stat.S_ISFIFO(info.st_mode):
        return None
    key = (os.fspath(path), info.st_dev, info.st_ino)
    if key not in _PIPE_BYTES:
        try:
            with open(path, "rb") as handle:
                data = handle.read()
        except OSError as exc:
            raise file_error(label, exc) from None
        while len(_PIPE_BYTES) >= _PIPES_KEPT:
            del _PIPE_BYTES[next(iter(_PIPE_BYTES))]  # the oldest (dicts keep insertion order)
        _PIPE_BYTES[key] = data
    return _PIPE_BYTES[key]


def read_bytes_stdin() -> bytes:
    """All bytes of standard input (an encoded image); refuses to wait on an interactive terminal."""
    if sys.stdin is None:
        raise ImageReadError(f"{STDIN_NAME}: standard input is closed")
    if sys.stdin.isatty():
        raise ValueError("refusing to read an image from a terminal; pipe a file in or pass a path")
    return sys.stdin.buffer.read()
