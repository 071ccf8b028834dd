"""A run's CSV log (log.csv) and JSONL validation log (val.jsonl): the training columns, a new log started, a
resumed run's header checked against its validation sets, and the logs cut back to the step it resumes from."""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from pathlib import Path

from ..evaluation import SCORE_KEYS
from ..writing import write_atomic

TRAIN_COLUMNS = ("step", "lr", "loss", "bce", "l1", "l2", "grad", "seconds")


def _logged_step(line: bytes, parse: Callable[[bytes], int]) -> int | None:
    """The step of one log line, or None for a line a killed run left cut short or unreadable."""
    if not line.endswith(b"\n"):
        return None
    try:
        return parse(line)
    except (ValueError, KeyError, TypeError):
        return None


def start_log(log_path: Path, columns: list[str]) -> None:
    """Write a new CSV log at ``log_path`` holding only the header ``columns``, written as the
    rows are (csv's default dialect)."""
    with open(log_path, "w", newline="") as handle:
        csv.writer(handle).writerow(columns)


def truncate_log(log_path: Path, step: int) -> None:
    """Drop log rows written after the checkpoint a run resumes from (they will be replayed), and a
    last row cut short by a kill; the header and the rows kept stay byte for byte as they were."""
    cut_back(log_path, read_lines(log_path), step, row_step, header_lines=1)


def truncate_val_log(path: Path, step: int) -> None:
    """Drop validation records written after ``step`` (they will be replayed), and a last record cut
    short by a kill."""
    cut_back(path, read_lines(path), step, lambda record: int(json.loads(record)["step"]), header_lines=0)


def row_step(row: bytes) -> int:
    """The step of a log.csv row (its first column)."""
    return int(row.split(b",", 1)[0])


def read_lines(path: Path) -> list[bytes]:
    """A log's lines, each with its line end; none when there is no log."""
    # Bytes, not text: csv ends rows with \r\n, which reading text would turn into \n.
    return path.read_bytes().splitlines(keepends=True) if path.exists() else []


def cut_back(path: Path, lines: list[bytes], step: int, parse_step: Callable[[bytes], int],
              header_lines: int) -> None:
    """Keep the first ``header_lines`` of the log's ``lines`` (as read from ``path``) and the records
    ``parse_step`` dates at ``step`` or earlier (a record it cannot read, cut short by a kill, goes
    too); rewritten atomically only when something was dropped, so a kill meanwhile leaves the
    whole old log rather than part of it."""
    kept = lines[:header_lines] + [line for line in lines[header_lines:]
                                   if (logged := _logged_step(line, parse_step)) is not None and logged <= step]
    if kept != lines:
        write_atomic(path, b"".join(kept))


def check_logged_val_sets(log_path: Path, names: list[str]) -> list[str] | None:
    """The log's header (None when there is no log yet, or only a header a kill cut short), checked
    against this run's validation sets ``names``: a log with other sets' columns is refused, since
    the CSV writer would silently drop the scores of sets its header lacks."""
    if not log_path.exists():
        return None
    with open(log_path, newline="") as handle:
        return checked_header(log_path, handle.readline(), names)


def checked_header(log_path: Path, first: str, names: list[str]) -> list[str] | None:
    """:func:`check_logged_val_sets` on the log's ``first`` line, as read with its line end."""
    if not first.endswith("\n"):
        return None
    header = next(csv.reader([first]))
    suffix = "_" + SCORE_KEYS[0]
    logged = [column[: -len(suffix)] for column in header if column.endswith(suffix)]
    if set(logged) == set(names):
        return header
    differences = []
    if dropped := [name for name in logged if name not in names]:
        differences.append("without " + ", ".join(dropped))
    if added := [name for name in names if name not in logged]:
        differences.append("with new " + ", ".join(added))
    raise ValueError(f"{log_path}: the run validates on sets {', '.join(logged) or '(none)'}, but this one is "
                     f"{' and '.join(differences)}; resume with the same --val-set names or choose another --out")
