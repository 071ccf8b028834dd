"""``crm batch DIR -o OUTDIR``: refine every pair in a folder (or of two folders, ``--masks``), resumably."""

from __future__ import annotations

import hashlib
import heapq
import json
import os
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from enum import Enum
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from ..config import DEEP_CUTOUT_BITS, PHOTO_OUTPUT_KINDS
from ..errors import count_noun, failure_text, no_room_words
from .checks import (
    DESCRIPTOR,
    passthrough_note,
    passthrough_pair,
    precheck_pair,
    schedule_fields,
    special_file,
    unwritable_reason,
)
from .failures import shortage_message, user_errors
from .group import EMPTY_PATH
from .options import (
    JsonOpt,
    LabelsOpt,
    Mode,
    ModeOpt,
    OutputKind,
    OutputKindOpt,
    PhotoBits,
    PhotoBitsOpt,
    QuietOpt,
    RefinerOptions,
    ThresholdOpt,
    parse_labels,
    photo_bits_value,
    refiner_options,
    refuse_file_as_folder,
    refuse_standard_output,
    require_existing,
)
from .output import (
    FailureRecord,
    collect_warnings,
    console,
    finish_run,
    printable,
    report_failure,
    say,
    usage_errors_recorded,
    warn,
)
from .resumable import RayOpt, checked_ray_spec, weights_identity
from .stops import clear_leftover_temp_files, stop_behind

if TYPE_CHECKING:
    from rich.console import Console

    from ..locks import FolderClocks
    from ..pairing import FilePair, Pairing
    from ..writing import OutputCheck

def pair_job(pair: FilePair, output_dir: Path) -> dict[str, str]:
    """The JSON-able description of one pair for refine_pair_job: absolute paths (a Ray actor's
    working folder may be another), and the names by which the user gave them, which its messages use."""
    output = output_dir / pair.relative_output
    return {"image": str(pair.image.absolute()), "mask": str(pair.mask.absolute()), "output": str(output.absolute()),
            "name": pair.name, "image_name": str(pair.image), "mask_name": str(pair.mask), "output_name": str(output)}


def named_as_given(error: str, job: dict[str, Any]) -> str:
    """``error`` with each of ``job``'s absolute paths that it names (a write's "cannot write
    /abs/out/p.png: ...") named as the user gave it (pair_job), keeping its type (ContinuedText)."""
    for key in ("output", "image", "mask"):
        error = type(error)(error.replace(job[key], job.get(f"{key}_name", job[key])))
    return error


class InputFiles:
    """The batch's input files (photos, masks, ground truths, photos not paired) by file identity
    (device, inode), to tell an output that is one of them: a link (symbolic or hard) that a user left
    in the output folder, say to keep the coarse mask where no refined one is made. Writing it would
    replace that input (``write_atomic`` writes through a symbolic link), and it is no refined mask to
    skip. The inputs are looked at only once an output exists."""

    def __init__(self, found: Pairing[FilePair]) -> None:
        self._found = found
        self._by_identity: dict[tuple[int, int], Path] | None = None

    def _paths(self) -> Iterator[Path]:
        """Every input file: the pairs' photos, masks and ground truths, the photos not paired, and
        the files of the pairs left out for lying in the output folder."""
        for pair in self._found.pairs:
            yield from (pair.image, pair.mask) if pair.gt is None else (pair.image, pair.mask, pair.gt)
        yield from (failure.image for failure in self._found.unpaired_photos)
        # A left-out file that carries crm batch's settings record is an earlier run's output (another
        # format of a left-out photo's name, a mask there a photo outside would take), not an input.
        yield from (path for path in self._found.left_out_inputs
                    if (check := finished_output(path, with_record=True)) is None or check.text is None)

    def behind(self, output: Path) -> Path | None:
        """The input that ``output`` is (through any links), or None."""
        try:
            found = os.stat(output)
        except OSError:
            return None
        if found.st_ino == 0:  # a file system without inode numbers (some FUSE or SMB mounts): no telling
            return None
        if self._by_identity is None:
            self._by_identity = {}
            for path in self._paths():
                try:
                    info = os.stat(path)
                except OSError:
                    continue
                self._by_identity.setdefault((info.st_dev, info.st_ino), path)
        return self._by_identity.get((found.st_dev, found.st_ino))


def finished_output(output: Path, with_record: bool = False) -> OutputCheck | None:
    """What an existing ``output`` is (writing.check_output): None when there is none, else why it
    is not a finished output to skip on resume (``problem``, None when it is one) and, ``with_record``,
    its settings record (``text``: OutputRecord.stamp, None when it has none: made by an older crm or
    another tool, or not a PNG) or why that cannot be read (``text_problem``).

    A cheap check of the file's ends and of the chunks before a PNG's image data, in one opening of
    it: an empty or truncated file, left by a copy, rsync or an older non-atomic tool, is made again
    rather than kept; one that cannot be examined is not finished (``problem`` says why).
    """
    from ..writing import OutputCheck, check_output

    try:
        return check_output(output, SETTINGS_KEYWORD if with_record else None)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        if isinstance(exc, PermissionError) and not _can_stat(output):
            return None  # a folder on the way cannot be searched: nor written (unwritable_reason says so)
        return OutputCheck(f"cannot be read: {exc.strerror or exc}")


def not_a_file(output: Path) -> str | None:
    """What ``output`` is when it exists as no regular file, which batch can neither keep nor write:
    "a pipe" (opening it to check it would wait for a writer), "a character device" (/dev/null
    through a link: every run would "write" it and keep nothing), a socket, a folder; with the
    link's target when it is a symbolic link. None for a file, or nothing there. Nothing is opened."""
    kind = special_file(output)
    if kind is None or kind == DESCRIPTOR:  # a regular file, reached through a descriptor's name
        return None
    if output.is_symlink():
        kind += f" (a link to {os.readlink(output)})"
    return f"{kind}, not a regular file"


def _can_stat(path: Path) -> bool:
    """Whether ``path``'s folder entry can be looked at (every folder on the way searchable)."""
    try:
        path.stat()
    except OSError:
        return False
    return True


def written_since(output: Path, since_ns: int, clocks: FolderClocks | None = None) -> bool:
    """True when ``output`` was last written after ``since_ns`` and not after now, by its file
    system's clock. An output stamped in the same tick as the start counts as older: on a file
    system with coarse timestamps that may be a concurrent run's (redone: only wasted work) or a
    previous run's (kept: a stale output), and only the first mistake is harmless. One stamped in
    the future was not written by any run since the start (a file copied with its times, a clock
    set back), so it is not kept either. Where the folder's clock cannot be read (no file can be
    made there) and no earlier reading of it covers the stamp, this machine's is no stand-in for it
    and the output is not kept: redoing it then reports why the folder cannot be written, where
    keeping it would pass for done. ``clocks`` keeps the folder's readings of "now" between calls
    of one run (a new one by default)."""
    from ..locks import FolderClocks

    try:
        stamped = output.stat().st_mtime_ns
    except OSError:
        return False
    if stamped <= since_ns:
        return False
    # "Now" is read only for the rare output newer than the start: it costs a file made and removed.
    return (clocks or FolderClocks()).not_in_future(output.parent, stamped)


class NotDoneReason(Enum):
    """counts_as_done's reasons why a finished output is not done (its value says it in words)."""

    STALE = "older than its photo or mask"  # than one of its inputs: see older_than_inputs
    OTHER_SETTINGS = "made with other settings"  # than this run's: see OutputRecord.accepts

# The PNG text chunk in which batch records what made an output (OutputRecord.stamp), and the version of
# that record: raise it when its fields change, or when a change of crm makes batch write other pixels
# for the same settings. A record of another version (or not one at all: the bare fingerprint version 1
# wrote) counts as made with other settings. A label map's record names the ids its mask held and those
# refined (``held``, ``refined``) since session 35; the version-2 records written before name the
# --labels set instead (``labels``) and are still judged by it, so the version stayed 2: a new version
# would have had every output made before refined again. A refined pair's record names the scale of its
# 16-bit photo (``photo_bits``) only when --photo-bits fixes one (session 38): records without it are
# runs' on each file's own scale, as every record before, so the version stayed 2 for that too. Since
# session 39 only a photo whose pixels the scale shapes has it recorded (imageio.Photo.takes_photo_bits:
# 16-bit files, 32-bit integer TIFFs), so a rerun with another --photo-bits keeps the outputs of 8-bit
# photos; where a record differs from the run in its scale alone, the photo's header says which kind it
# is (OutputRecord.accepts), which also keeps session 38's records of 8-bit photos that name a scale.
# Since session 41 a cut-out's record says ``cutout_bits: 16`` (a 16-bit photo's cut-out is 16-bit): a
# cut-out recorded without it is redone only where the photo's header shows a photo of more than 8 bits.
SETTINGS_KEYWORD = "crm batch settings"
OUTPUT_FORMAT_VERSION = 2
# The largest label id a label map holds (uint8 or uint16 ids): a record naming more is damaged.
MAX_LABEL_ID = 65535
# A record lists each run of at least this many consecutive ids as [first, last] (compact_ids).
ID_RUN_MIN = 3


def compact_ids(ids: Sequence[int]) -> list[int | list[int]]:
    """Ascending ids as a record lists them, short: each run of ID_RUN_MIN or more consecutive ids as
    ``[first, last]`` (the instances 1..400 of a 16-bit map are ``[[1, 400]]``), the others as they are
    (VOC's ``[12, 15, 255]``)."""
    listed: list[int | list[int]] = []
    start = 0
    while start < len(ids):
        end = start
        while end + 1 < len(ids) and ids[end + 1] == ids[end] + 1:
            end += 1
        if end - start + 1 >= ID_RUN_MIN:
            listed.append([int(ids[start]), int(ids[end])])
        else:
            listed.extend(int(label) for label in ids[start:end + 1])
        start = end + 1
    return listed


def expand_ids(listed: Any) -> tuple[int, ...] | None:
    """The ascending ids a record's :func:`compact_ids` list stands for; None when it is no such list
    (a damaged or foreign record: ids not ascending, not integers, or past MAX_LABEL_ID)."""

    def is_id(value: Any) -> bool:
        return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_LABEL_ID

    if not isinstance(listed, list):
        return None
    ids: list[int] = []
    for entry in listed:
        if is_id(entry):
            first, last = entry, entry
        elif isinstance(entry, list) and len(entry) == 2 and all(is_id(end) for end in entry) and entry[0] < entry[1]:
            first, last = entry
        else:
            return None
        if ids and first <= ids[-1]:
            return None
        ids.extend(range(first, last + 1))
    return tuple(ids)


@dataclass(frozen=True)
class OutputRecord:
    """What shapes one batch run's outputs, normalised so that options making the same pixels are
    equal. Each output records what shaped it (:meth:`stamp`: a short JSON in a PNG text chunk,
    SETTINGS_KEYWORD), and a rerun compares that with its own options (:meth:`accepts`).

    ``mode`` is the run's --mode (auto, binary or labels). A mask refined as one object (mode binary)
    is shaped by ``output_kind`` and ``threshold`` (outputs.effective_rendering), not by --labels; a label map
    by the ids refined (:meth:`refined_of` its mask's ids: ``labels``, ascending, without the background,
    which is never refined, or None for all), not by the output options (it is written as a label
    image): its record names the ids its mask held and those refined, so that a rerun compares the ids
    it would refine without reading the mask (``--labels`` listing every id held is no --labels). A
    refined pair is shaped by ``preset`` (its ratios and switches, guard included) and ``weights`` too;
    a pair passed through (an image too small to refine: its mask is written unchanged, rendered as
    asked) by neither, nor by --labels.
    A pair is passed through by its image's size alone, so a record's pass-through is this run's own.
    A refined pair, and a cut-out or overlay passed through, is also shaped by the scale its 16-bit photo
    was read on: ``photo_bits`` (--photo-bits), recorded only when fixed, so that the records of runs
    without it (``auto``, each file's own scale) read as before, and only for a photo whose pixels it
    shapes (``imageio.Photo.takes_photo_bits``): an 8-bit photo's output is the same on any scale (a
    16-bit photo's cut-out passed through carries the file's own values, so a rerun on another scale
    redoes it for nothing). A cut-out's record names ``cutout_bits`` (16: a 16-bit photo's cut-out is
    16-bit), which records before session 41 lack."""

    mode: str
    labels: tuple[int, ...] | None
    output_kind: str
    threshold: float | None
    preset: dict[str, Any]
    weights: str
    photo_bits: int | None = None

    @classmethod
    def of(cls, *, mode: str, labels: Sequence[int] | None, output_kind: str, threshold: float | None,
           settings: Any, weights: str, photo_bits: int | None = None) -> OutputRecord:
        """The record of a run: ``settings`` the presets.Preset (its ratios and switches), ``weights``
        their weights_identity (recorded as a digest: an output names no folder of its maker's),
        ``photo_bits`` the --photo-bits scale (None: auto)."""
        from ..labels import BACKGROUND
        from ..outputs import effective_rendering

        kind, limit = effective_rendering(output_kind, threshold)
        ids = None if labels is None else tuple(sorted({int(label) for label in labels} - {BACKGROUND}))
        return cls(mode=mode, labels=ids, output_kind=kind, threshold=None if limit is None else float(limit),
                   preset=settings.record(),
                   weights=hashlib.sha256(weights.encode("utf-8", "surrogateescape")).hexdigest()[:16],
                   photo_bits=photo_bits)

    def refined_of(self, held: Sequence[int]) -> tuple[int, ...]:
        """The ids this run refines in a label map holding the ids ``held`` (ascending, no background):
        all of them without --labels, else those --labels lists (labels.select_labels, as refining does)."""
        from ..labels import select_labels

        return tuple(held) if self.labels is None else tuple(select_labels(held, self.labels)[0])

    def stamp(self, chosen: str, auto: str, passthrough: bool, held: Sequence[int] | None = None,
              scaled: bool = True) -> str:
        """The record written into an output of this run: ``chosen`` the mode the pair was refined in
        (binary or labels), ``auto`` the one --mode auto chooses for its mask (``chosen`` itself when
        this run's mode is auto), ``passthrough`` whether the pair was passed through, ``held`` the ids
        (ascending, no background) of a label map refined (with None, its record names --labels, as the
        version-2 records before the ids did: kept to judge those), ``scaled`` whether --photo-bits
        shapes the pair's photo (``pipeline.PairResult.takes_photo_bits``; an 8-bit photo's record
        names no scale)."""
        return json.dumps(self._fields(chosen, auto, passthrough, held, scaled), sort_keys=True,
                          separators=(",", ":"))

    def _fields(self, chosen: str, auto: str, passthrough: bool, held: Sequence[int] | None = None,
                scaled: bool = True) -> dict[str, Any]:
        """:meth:`stamp`'s record before it is written as JSON (plain values, equal to it read back)."""
        fields: dict[str, Any] = {"version": OUTPUT_FORMAT_VERSION, "mode": chosen, "auto": auto}
        if passthrough:
            fields["passthrough"] = True
        if chosen == "binary":
            fields.update(output=self.output_kind, threshold=self.threshold)
        elif not passthrough and held is None:
            fields["labels"] = None if self.labels is None else list(self.labels)
        elif not passthrough:
            fields.update(held=compact_ids(held), refined=compact_ids(self.refined_of(held)))
        if not passthrough:
            fields.update(preset=self.preset, weights=self.weights)
        # The photo's scale shapes what the model saw, and a pair passed through only where its
        # output carries the photo's pixels (cut-out, overlay); an 8-bit photo's, nothing (``scaled``).
        carries_photo = not passthrough or (chosen == "binary" and self.output_kind in PHOTO_OUTPUT_KINDS)
        if self.photo_bits is not None and scaled and carries_photo:
            fields["photo_bits"] = self.photo_bits
        if chosen == "binary" and self.output_kind == "cutout":
            fields["cutout_bits"] = DEEP_CUTOUT_BITS  # a 16-bit photo's cut-out is 16-bit since session 41
        return fields

    def accepts(self, recorded: str, photo: str | Path | None = None) -> bool:
        """True when an output whose record reads ``recorded`` is what this run would make of its pair.

        The pair's mode is this run's --mode, or with auto the one the record says auto chose (the mask
        is the one it was made from: an output older than its mask is redone as stale); it must be the
        mode the output was made in, and what shapes an output made in it must be this run's: for a
        label map whose record names the ids its mask held, this run must refine (:meth:`refined_of`
        them) the ids recorded as refined; one whose record names --labels instead (written before
        the ids were) must have been made with this run's --labels. A record of another version, or
        that is no JSON object, is not accepted. A record that differs from this run's in the photo's
        scale (``photo_bits``) alone is accepted when the pair's ``photo`` file is one the scale does not
        shape (an 8-bit photo: ``imageio.file_takes_photo_bits``, its header read only then); so is one
        that names no edge snap where this run has it on, when the photo is smaller than the snap's
        minimum (``edge_snap.SNAP_MIN_SIDE``, from its header), on whose pixels the snap changes nothing;
        without ``photo`` neither is."""
        from ..imageio import file_takes_photo_bits

        try:
            fields = json.loads(recorded)
        except ValueError:
            return False
        if not isinstance(fields, dict) or fields.get("version") != OUTPUT_FORMAT_VERSION:
            return False
        chosen, auto = fields.get("mode"), fields.get("auto")
        if chosen not in ("binary", "labels") or auto not in ("binary", "labels"):
            return False
        if (auto if self.mode == "auto" else self.mode) != chosen:
            return False
        passthrough = fields.get("passthrough") is True
        held = None
        if chosen == "labels" and not passthrough and "held" in fields:
            held = expand_ids(fields["held"])  # the ids refined are then compared as _fields lists them
            if held is None:
                return False
        expected = self._fields(chosen, auto, passthrough, held)
        if fields == expected:
            return True
        if photo is None:
            return False
        if _snap_unrecorded(fields, expected):
            # Written before the edge snap, which changes no pixel of a photo under its minimum size.
            if not _below_snap_size(photo):
                return False
            fields = {**fields, "preset": {**fields["preset"], "snap": True}}
            if fields == expected:
                return True
        # What may differ for a photo of 8 bits alone: a cut-out made before cut-outs of 16-bit photos
        # were 16-bit, and the scale (this run's or the record's, session 38 named it for 8-bit photos too).
        def relaxed(record: dict[str, Any]) -> dict[str, Any]:
            return {key: value for key, value in record.items() if key not in ("photo_bits", "cutout_bits")}

        if "cutout_bits" in fields and fields["cutout_bits"] != expected.get("cutout_bits"):
            return False
        if relaxed(fields) != relaxed(self._fields(chosen, auto, passthrough, held, scaled=False)):
            return False
        return not file_takes_photo_bits(photo)


def _snap_unrecorded(recorded: dict[str, Any], expected: dict[str, Any]) -> bool:
    """Whether a record names no edge snap where this run's preset has it on, as the records written
    before session 42's snap do (the rest of the record is the caller's to compare)."""
    preset, wanted = recorded.get("preset"), expected.get("preset")
    return isinstance(preset, dict) and isinstance(wanted, dict) and "snap" not in preset and wanted.get("snap") is True


def _below_snap_size(photo: str | Path) -> bool:
    """Whether the photo file is smaller than the edge snap's minimum (its header read only)."""
    from ..edge_snap import SNAP_MIN_SIDE
    from ..image_headers import file_long_side

    side = file_long_side(photo)
    return side is not None and side < SNAP_MIN_SIDE


def older_than_inputs(output: Path, inputs: Sequence[str | Path], clocks: FolderClocks | None = None) -> bool:
    """True when ``output`` was last written strictly before one of ``inputs`` (st_mtime_ns, links
    followed to the real files): it was made from a photo or mask replaced since, as make decides.

    A tie is not older: outputs are renamed into place once written, so one stamped in the same tick
    as its input (a file system with coarse timestamps) was most likely made from it. A file that
    cannot be read is left to the other checks (an input gone fails when the pair is refined). With
    ``clocks``, an input stamped after now by the output folder's clock (a camera card's local time
    copied with its stamps, a camera whose clock is wrong) tells nothing: every output would be older
    than it, and refined again on every run. A folder whose clock cannot be read judges as before.
    """
    try:
        written = os.stat(output).st_mtime_ns
    except OSError:
        return False
    for path in inputs:
        try:
            stamped = os.stat(path).st_mtime_ns
        except OSError:
            continue
        if written < stamped and (clocks is None or not clocks.after_now(output.parent, stamped)):
            return True
    return False


def counts_as_done(output: Path, overwrite: bool = False, since_ns: int | None = None,
                   clocks: FolderClocks | None = None, inputs: Sequence[str | Path] = (),
                   record: OutputRecord | None = None) -> tuple[bool, NotDoneReason | str | None]:
    """(whether to skip ``output`` as done, why an existing file is not: ``NotDoneReason.STALE`` or
    ``OTHER_SETTINGS``, or in words why it is no finished output or its record cannot be read).

    Without ``overwrite`` every finished output is done. With it, only one written after ``since_ns``
    (this run's start, see locks.folder_time_ns): another run on the same folder made it
    meanwhile, and making it again would only redo that run's work (an unfinished one is then not
    done, without a reason: it is redone anyway). ``since_ns`` None redoes all.
    Either way a finished output older than one of its ``inputs`` (its photo and mask, see
    older_than_inputs) is not done: ``STALE``; nor is one whose recorded settings (finished_output)
    ``record`` does not accept (OutputRecord.accepts, told the photo: the first of ``inputs``):
    ``OTHER_SETTINGS``. One without a record (an older crm's, another tool's) is judged as before;
    one whose record is damaged is not done. This is the one place of the rule: batch's scan, its
    jobs (in this process or on a Ray actor) and its summary all ask here. ``clocks``: see
    written_since.
    """
    if overwrite and (since_ns is None or not written_since(output, since_ns, clocks)):
        return False, None
    check = finished_output(output, with_record=record is not None)  # the file's one opening
    if check is None:
        return False, None
    if check.problem is not None:
        return False, None if overwrite else check.problem
    if older_than_inputs(output, inputs, clocks):
        return False, NotDoneReason.STALE
    if record is not None:
        if check.text_problem is not None:
            return False, check.text_problem
        if check.text is not None and not record.accepts(check.text, inputs[0] if inputs else None):
            return False, NotDoneReason.OTHER_SETTINGS
    return True, None


# The key under which refine_pair_job's outcome of a pair whose write found no room (a full disk,
# a used-up quota) holds the errno; the command stops the run there, and the key is no part of --json.
OUT_OF_SPACE_KEY = "out_of_space"


def refine_pair_job(refiner: Any, job: dict[str, Any], *, settings: Any, mode: str, labels: list[int] | None,
                    output_kind: str, threshold: float | None, overwrite: bool = False,
                    since_ns: int | None = None, clocks: FolderClocks | None = None,
                    hold_warnings: bool = True, record: OutputRecord | None = None,
                    photo_bits: int | None = None) -> dict[str, Any]:
    """Refine one pair and write its output; a bad pair gives ``status: failed`` instead of raising.

    The output is locked while it is made: a pair that another crm process is refining is left
    to it (``status: in_progress``, with who holds it), one it finished meanwhile is
    ``skipped`` (with ``overwrite``, when it finished after ``since_ns``: see counts_as_done);
    an existing but incomplete output (see finished_output), or one older than the job's photo or
    mask (see older_than_inputs) or made with other settings than ``record``'s, is made again; the
    output written records what shaped it (OutputRecord.stamp), when ``record`` is given. A job marked
    ``passthrough`` (image too small), or
    one whose mask holds none of ``labels``, writes its mask unchanged. Running out of memory or
    threads fails the pair, as crm refine words it (shortage_message). The warnings shown for the pair (its
    notes, named by the pair unless they name its file, and what the library logged, see
    collect_warnings) are listed in ``warnings``; with ``hold_warnings`` (a Ray actor, whose stderr is
    not the user's) they are not printed here, for the command to show. A write (of the output or of
    its lock) that found no room (writing.out_of_space: a full disk, a used-up quota) fails the pair
    with its errno under OUT_OF_SPACE_KEY, for the command to stop the run. Used as is by the plain
    loop and by the Ray actors, so both paths behave the same. ``photo_bits``: the scale of 16-bit
    photos (pipeline.refine_files), None for each file's own.
    """
    from ..evaluation import pair_failure
    from ..locks import OutputLock, describe_holder
    from ..pipeline import choose_mode, mask_keeping_notes, refine_files
    from ..writing import out_of_space, write_png

    start = time.perf_counter()
    lock = OutputLock(job["output"])
    with collect_warnings(hold=hold_warnings) as shown:
        try:
            if not lock.acquire():
                # The driver adds the lock file's path, named as the user gave the folder.
                return {"status": "in_progress", "seconds": 0.0, "lock_holder": describe_holder(job["output"]),
                        "warnings": shown}
            # Checked under the lock: a run that held it has just finished this output.
            if counts_as_done(Path(job["output"]), overwrite, since_ns, clocks, (job["image"], job["mask"]),
                              record)[0]:
                return {"status": "skipped", "seconds": 0.0, "warnings": shown}
            # The record says what --mode auto would choose for the mask (with --mode binary or labels,
            # for a later run with auto to compare), and a label map's ids: read from the mask as decoded,
            # before it is fitted to its photo (fitting keeps a label map one and its ids: it rotates,
            # or upsamples by nearest neighbour), and decoded once. Its reading notes ride on it, to be
            # listed after the photo's, as crm refine lists them (pipeline.read_photo_pair).
            decoded = None if record is None else mask_keeping_notes(job["mask"], job["mask_name"])
            passthrough = bool(job.get("passthrough"))
            if passthrough:
                result = passthrough_pair(job["image"], job["mask"], mode=mode, output_kind=output_kind,
                                          threshold=threshold, image_name=job["image_name"],
                                          mask_name=job["mask_name"], decoded_mask=decoded, photo_bits=photo_bits,
                                          cutout_bits=DEEP_CUTOUT_BITS)
                height, width = result.output.shape[:2]
                result.notes.append(passthrough_note(width, height, job["image_name"]))
            else:  # a label map holding none of --labels is written unchanged, without a model run
                result = refine_files(refiner, job["image"], job["mask"], settings, mode=mode, labels=labels,
                                      output_kind=output_kind, threshold=threshold, image_name=job["image_name"],
                                      mask_name=job["mask_name"], decoded_mask=decoded, photo_bits=photo_bits,
                                      cutout_bits=DEEP_CUTOUT_BITS)
            for note in result.notes:  # shown before the write, as crm refine shows them
                named = job["image_name"] in note or job["mask_name"] in note
                warn(note if named else f"{job['name']}: {note}")
            made_with = None
            if decoded is not None:  # decoded for the record only
                auto = result.mode if mode == "auto" else choose_mode(decoded, "auto", job["mask_name"])
                held = decoded.label_ids if result.mode == "labels" and not passthrough else None
                made_with = {SETTINGS_KEYWORD: record.stamp(result.mode, auto, passthrough, held,
                                                            result.takes_photo_bits)}
            write_png(job["output"], result.output, result.palette, result.icc_profile, made_with,
                      result.transparency)
            outcome: dict[str, Any] = {"status": "ok", "mode": result.mode, "passthrough": passthrough,
                                       **schedule_fields(result, passthrough)}
        except Exception as exc:  # noqa: BLE001 - a pair's own failure (pair_failure) is taken, the rest raised
            failure = pair_failure(exc)  # a MemoryError too: one image too large for the memory left
            if failure is None or stop_behind(exc):  # stop_behind: the command is being stopped
                raise
            error = named_as_given(shortage_message(exc) or failure_text(failure), job)
            outcome = {"status": "failed", "error": error}
            if isinstance(failure, MemoryError) and hasattr(refiner, "release_memory"):
                # What the failed refinement left in the runners' keeping (ONNX Runtime's arena, the
                # latent buffer) failed every pair after it under an address-space limit (ulimit -v).
                refiner.release_memory()
            if out_of_space(exc):  # the output or its lock found no room: the driver stops the run
                outcome[OUT_OF_SPACE_KEY] = exc.errno
        finally:
            lock.release()
    outcome["seconds"] = round(time.perf_counter() - start, 4)
    outcome["warnings"] = shown
    return outcome


def output_folder_name(output: str) -> str:
    """The output folder ``output`` (-o as typed) as batch names it (--json's output_dir, the summary
    line): as a Path reads it (./out/ is out), but a folder called "-" as ./-, by which it can be given
    again (a bare - is standard output, refused: named as typed)."""
    name = str(Path(output))
    return os.path.join(os.curdir, name) if name == "-" and output != "-" else name


@refiner_options(resumable=lambda values: not values["overwrite"])
def batch(
    folder: Annotated[Path, typer.Argument(
        metavar="FOLDER",
        help="A folder with images/ and masks/ (each mask named as its photo, or <name>_mask, <name>-matte...), "
             "a BIG-layout folder (*_im + *_seg), or photos with their <name>_mask masks beside them; with "
             "--masks, the photos' folder.")],
    # A str, checked here: as a Path, ./- would read "-" (standard output, refused below).
    output: Annotated[str, typer.Option(
        "--output", "-o", metavar="DIR",
        help="Output folder (mirrors sub-folders; may lie inside FOLDER).")],
    masks_dir: Annotated[Path | None, typer.Option(
        "--masks", metavar="DIR",
        help="The masks' folder, FOLDER holding the photos (shots/ + mattes/): paired as images/ + masks/ are.")
    ] = None,
    options: RefinerOptions = RefinerOptions(),
    threshold: ThresholdOpt = None,
    output_kind: OutputKindOpt = OutputKind.soft,
    mode: ModeOpt = Mode.auto,
    labels: LabelsOpt = None,
    photo_bits: PhotoBitsOpt = PhotoBits.auto,
    overwrite: Annotated[bool, typer.Option(
        "--overwrite", help="Redo outputs that already exist (those another run on the folder writes meanwhile "
                            "are kept).")] = False,
    ray_address: RayOpt = None,
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", help="Pair and check the files, the weights and the device, list what would be refined, "
                          "and stop before the model loads (exit 1 if some pair, or the run, would fail).")] = False,
    json_out: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Refine every image/mask pair under FOLDER (with --masks DIR, FOLDER's photos with DIR's masks).
    What was paired is said before the run (--dry-run lists it and stops); finished outputs are
    skipped unless --overwrite, older than their photo or mask, or made with other settings (each
    output records them); a bad pair is reported and the rest go on, but a full disk stops the run (the
    pairs left are not attempted: free space and run it again); the exit code is 1 if any pair failed."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from ..locks import STALE_LOCK_AGE_S, FolderClocks, abandoned, folder_time_ns, lock_path
    from ..pairing import scan_folder_pairs, scan_pairs, split_output_clashes
    from ..pairing_hints import MAX_LISTED
    from ..raybatch import RayRunError, ray_run
    from ..writing import is_folder, name_too_long

    output_dir = Path(output)
    folder_name = output_folder_name(output)
    items: list[dict] = []
    order: dict[str, int] = {}  # each photo's place among the items (input_order), once the folder is scanned
    # With --json, the summary of what was known when the run stopped, marked failed.
    fatal = FailureRecord(json_out, lambda failure: {**summary_counts(items), **failure, "output_dir": folder_name,
                                                     "items": in_input_order(items, order)})
    # With --json, crm's own usage errors print this record too, as runtime failures do.
    with usage_errors_recorded(fatal):
        require_existing(folder, "'FOLDER'")
        if masks_dir is not None:
            require_existing(masks_dir, "'--masks'")
        refuse_standard_output(output, "crm batch writes one file per pair into a folder, not to standard output",
                               "'--output'")
        if not output:  # Path("") is the working folder: -o "$OUT" with OUT unset would write there
            raise typer.BadParameter(EMPTY_PATH, param_hint="'--output'")
        if (too_long := name_too_long(output_dir, "folder")) is not None:  # before it is stat'ed
            raise fatal.fail(f"cannot write into {output_dir}: {too_long}")
        refuse_file_as_folder(output_dir, "'--output'", shown=output)
        ray_spec = checked_ray_spec(options, ray_address)
        label_ids = parse_labels(labels, mode.value)
        settings = options.settings()
        bits = photo_bits_value(photo_bits)
        input_folders = (folder, masks_dir) if masks_dir is not None else (folder, folder / "images", folder / "masks")
        if output_dir.resolve() in {path.resolve() for path in input_folders}:
            raise typer.BadParameter("the output folder must differ from the input folders")
    # With --overwrite, outputs stamped from now on are a concurrent run's (counts_as_done); a
    # folder that does not exist yet holds none from before.
    since_ns = (folder_time_ns(output_dir) if is_folder(output_dir) else 0) if overwrite else None
    clocks = FolderClocks()  # each output folder's clock read once, for the scan and the jobs (Ray actors: a copy)
    # What makes this run's outputs, recorded in each and compared on resume: the weights are named
    # from their sidecar or file, so pairs passed through and --dry-run need no model loaded.
    record = OutputRecord.of(mode=mode.value, labels=label_ids, output_kind=output_kind.value, threshold=threshold,
                             settings=settings, weights=weights_identity(options.weights), photo_bits=bits)
    # The warnings shown for each pair, as its --json item lists them.
    pair_warnings: dict[FilePair, list[str]] = {}

    def warn_pair(pair: FilePair, text: str, out: Console | None = None, show: bool = True) -> None:
        """Show a warning for ``pair`` (unless ``show`` is False: it was shown already) and add it to its
        item's list, once."""
        if show:
            warn(text, out)
        listed = pair_warnings.setdefault(pair, [])
        if text not in listed:
            listed.append(text)

    # Nothing to refine in FOLDER, or --masks naming FOLDER itself (NoPairsError), is a usage error: exit 2.
    with user_errors(fatal.emit):
        found = (scan_pairs(folder, exclude=output_dir) if masks_dir is None
                 else scan_folder_pairs(folder, masks_dir, exclude=output_dir))
    order.update(input_order(found))
    for note in found.notes:
        warn(note)
    # Pairs whose outputs would be one file on macOS or Windows fail, before resume could take one's
    # output for the other's.
    pairs, clashes = split_output_clashes(found.pairs, output_dir)
    # Errors are not progress: each failure is named as it is found, even with -q. Its item names its
    # image, as the other items name theirs (it has no output to write).
    for failure in (*found.failures, *clashes):
        report_failure("", failure.error)
        items.append({"name": failure.name, "image": str(failure.image), "mask": None, "output": None,
                      "status": "failed", "error": failure.error, "seconds": 0.0, "warnings": []})
    todo: list[FilePair] = []
    stale: list[Path] = []  # finished outputs older than their photo or mask (NotDoneReason.STALE)
    other_settings: list[Path] = []  # finished outputs made with other settings (NotDoneReason.OTHER_SETTINGS)
    inputs = InputFiles(found)
    linked = 0  # outputs that are inputs
    special = 0  # outputs that are no regular file (not_a_file)
    for pair in pairs:
        output = output_dir / pair.relative_output
        if (source := inputs.behind(output)) is not None:
            # Neither finished (it is no refined mask) nor to be written (through a symbolic link, that
            # would replace the input).
            linked += 1
            if source == output:  # an input of a pair left out for lying in the output folder
                error = (f"{output} is an input (the output folder {output_dir} holds photos or masks, whose pairs "
                         "are left out); give -o a folder that holds no inputs")
            else:
                error = f"{output} is the input {source} (a link to it); remove {output} to refine {pair.name}"
            report_failure(f"{pair.name}: ", error)
            items.append({"name": pair.name, "image": str(pair.image), "mask": str(pair.mask), "output": str(output),
                          "status": "failed", "error": error, "seconds": 0.0, "warnings": []})
            continue
        if (kind := not_a_file(output)) is not None:
            special += 1
            error = f"{output} is {kind}; remove it to refine {pair.name}"
            report_failure(f"{pair.name}: ", error)
            items.append({"name": pair.name, "image": str(pair.image), "mask": str(pair.mask), "output": str(output),
                          "status": "failed", "error": error, "seconds": 0.0, "warnings": []})
            continue
        finished, problem = counts_as_done(output, overwrite, since_ns, clocks, (pair.image, pair.mask), record)
        if problem is NotDoneReason.STALE:
            stale.append(output)
        elif problem is NotDoneReason.OTHER_SETTINGS:
            other_settings.append(output)
        elif problem is not None:
            warn_pair(pair, f"{output} is incomplete ({problem}); refining {pair.name} again")
        if finished:
            items.append({"name": pair.name, "image": str(pair.image), "mask": str(pair.mask),
                          "output": str(output), "status": "skipped", "warnings": []})
        else:
            todo.append(pair)
    if stale and not overwrite:  # with --overwrite, all of them are redone anyway
        older = "output older than its" if len(stale) == 1 else "outputs older than their"
        warn(f"{len(stale)} {older} photo or mask: {'would be refined' if dry_run else 'refined'} again "
             f"(e.g. {stale[0]})")
    if other_settings and not overwrite:
        made = "output was" if len(other_settings) == 1 else "outputs were"
        warn(f"{len(other_settings)} {made} made with other settings (mode, labels, output kind, threshold, "
             f"photo bits, preset, ratios, guard, edge snap or weights; outputs made before the edge snap have "
             f"none): "
             f"{'would be refined' if dry_run else 'refined'} again (e.g. {other_settings[0]})")
    if not dry_run and is_folder(output_dir):
        clear_leftover_temp_files((output_dir / pair.relative_output for pair in pairs), quiet)
    # Checked before the model loads: the output folder, and each pair's headers, sizes and memory.
    if todo and (reason := unwritable_reason(output_dir, folder=True)) is not None:
        raise fatal.fail(reason)
    small: dict[FilePair, bool] = {}
    failed_early: set[FilePair] = set()
    for pair in todo:
        target = output_dir / pair.relative_output
        if (too_long := name_too_long(target)) is not None:  # its temp and lock files are shortened, not it
            error = f"cannot write {target}: {too_long}; give the photo {pair.image} a shorter name"
        else:
            error, _, small[pair] = precheck_pair(pair.image, pair.mask, str(pair.image), str(pair.mask),
                                                  settings, options.tile_size, mode=mode.value)
        if error is not None:
            failed_early.add(pair)
            report_failure(f"{pair.name}: ", error)
            items.append({"name": pair.name, "image": str(pair.image), "mask": str(pair.mask),
                          "output": str(output_dir / pair.relative_output), "status": "failed", "error": error,
                          "seconds": 0.0, "warnings": pair_warnings.get(pair, [])})
    todo = [pair for pair in todo if pair not in failed_early]
    if not quiet:  # what was paired, before a long run starts (the failures were named above)
        done_before = sum(1 for item in items if item["status"] == "skipped")
        where = f"{folder} + {masks_dir}" if masks_dir is not None else str(folder)
        found_line = [f"{count_noun(len(found.pairs), 'pair')} found in {where} ({found.layout})"]
        unpaired, unread = len(found.unpaired_photos), len(found.unreadable_folders)
        found_line += [f"{count_noun(unpaired, 'image')} not paired"] if unpaired else []
        found_line += [f"{count_noun(unread, 'folder')} unreadable"] if unread else []
        found_line += [f"{len(clashes)} sharing an output file"] if clashes else []
        found_line += [f"{linked} whose output is an input"] if linked else []
        found_line += [f"{special} whose output is no regular file"] if special else []
        found_line += [f"{done_before} already done"] if done_before else []
        found_line += [f"{len(failed_early)} failing the checks"] if failed_early else []
        say(f"batch: {', '.join(found_line)}; {'would refine' if dry_run else 'refining'} {len(todo)} -> "
            f"{folder_name}")
    if dry_run:
        # Every pair is listed first, also when the run as a whole would fail (its record holds them).
        for pair in todo:
            items.append({"name": pair.name, "image": str(pair.image), "mask": str(pair.mask),
                          "output": str(output_dir / pair.relative_output), "status": "todo",
                          "warnings": pair_warnings.get(pair, [])})
            if not quiet:
                say(f"  {pair.name}: {pair.image} + {pair.mask} -> {output_dir / pair.relative_output}")
        if any(not small[pair] for pair in todo):  # as the run loads the model: a pair to refine
            with user_errors(fatal.emit):  # the run would fail at once: the weights, or a GPU asked for
                options.check_loadable(gpu=ray_address is None)  # a Ray run's GPUs are the cluster's
        counts = {**summary_counts(items), "todo": len(todo)}
        finish_run({**counts, "dry_run": True, "output_dir": folder_name, "items": in_input_order(items, order)},
                   failed=bool(counts["failed"]), json_out=json_out)
        return
    work = partial(refine_pair_job, settings=settings, mode=mode.value, labels=label_ids,
                   output_kind=output_kind.value, threshold=threshold, overwrite=overwrite, since_ns=since_ns,
                   clocks=clocks, hold_warnings=ray_address is not None, record=record, photo_bits=bits)
    jobs = [{**pair_job(pair, output_dir), "passthrough": small[pair]} for pair in todo]
    # (job index, outcome) from either executor; a Ray run starts when its `with` is entered below.
    held_back: dict[int, dict[str, Any]] = {}  # plain run: pairs left to another run, until tried again
    run: AbstractContextManager[Iterator[tuple[int, dict[str, Any]]]] = nullcontext(iter(()))
    if todo and ray_address is not None:
        run = ray_run(ray_address, jobs, work, ray_spec, quiet=quiet, log=None if quiet else say)
    elif todo:
        refiner = None  # images too small to refine need no model
        if not all(small[pair] for pair in todo):
            with user_errors(fatal.emit):
                refiner = options.load(quiet)
        run = nullcontext(plain_results(partial(work, refiner), jobs, held_back))
    finished_jobs: dict[int, dict[str, Any]] = {}
    # Where a write found no room (a full disk, a used-up quota) and its errno: the run stops there.
    no_room: tuple[Path, int] | None = None
    # No bar when nothing is left to refine: the summary says it all.
    with Progress(TextColumn("refine"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TextColumn("{task.fields[current]}", markup=False), console=console,
                  disable=quiet or not todo) as progress:
        task = progress.add_task("batch", total=len(todo), current="")

        def take(index: int, outcome: dict[str, Any]) -> int | None:
            """Record (and show) one pair's outcome; the errno of a write that found no room, if any."""
            pair = todo[index]
            progress.update(task, current=printable(pair.name))
            full = outcome.pop(OUT_OF_SPACE_KEY, None)
            # Shown as they came in this process; a Ray actor's were held for the driver to show.
            for text in outcome.pop("warnings", []):
                warn_pair(pair, text, progress.console, show=ray_address is not None)
            if outcome["status"] == "failed":
                report_failure(f"{pair.name}: ", outcome["error"], progress.console)
            elif outcome.get("schedule") and not quiet:
                from ..pipeline import record_summary

                say(f"{pair.name}: {record_summary(outcome)}", progress.console)
            if outcome["status"] == "in_progress":  # named as the user gave the folder
                outcome["lock"] = str(lock_path(output_dir / pair.relative_output))
            finished_jobs[index] = {"name": pair.name, "image": str(pair.image), "mask": str(pair.mask),
                                    "output": str(output_dir / pair.relative_output), **outcome,
                                    "warnings": pair_warnings.get(pair, [])}
            progress.advance(task)
            return full

        try:
            with run as results:  # on Ray, stdout is stderr until the block is left
                for index, outcome in results:
                    if (full := take(index, outcome)) is not None:
                        # Every pair left would be refined only to fail at its write: stopped here
                        # (on Ray, leaving the block stops the actors).
                        no_room = ((output_dir / todo[index].relative_output).parent, full)
                        break
            for index, outcome in list(held_back.items()):  # stopped before their second try: as first found
                take(index, outcome)
        except RayRunError as exc:
            items.extend(finished_jobs[index] for index in sorted(finished_jobs))
            raise fatal.fail(str(exc), exc.exit_code) from None
    items.extend(finished_jobs[index] for index in sorted(finished_jobs))
    if no_room is not None:  # the pairs not attempted: still to do, as --dry-run lists them
        items.extend({"name": pair.name, "image": str(pair.image), "mask": str(pair.mask),
                      "output": str(output_dir / pair.relative_output), "status": "todo",
                      "warnings": pair_warnings.get(pair, [])}
                     for index, pair in enumerate(todo) if index not in finished_jobs)
    items[:] = in_input_order(items, order)  # as --dry-run lists them, whenever each pair finished
    for item in items:
        if item["status"] != "in_progress":
            continue
        # A pair left to another run that has finished it since is done: the summary does not send
        # the user after a lock that is gone. One whose run has ended without finishing it (killed,
        # say) is not done, and nobody is making it: it fails, so that the run's exit code says so.
        if counts_as_done(Path(item["output"]), overwrite, since_ns, clocks, (item["image"], item["mask"]),
                          record)[0]:
            item["status"] = "skipped"
        elif abandoned(item["output"]):
            item["status"] = "failed"
            item["error"] = (f"the crm run that held {item['lock']} ({item['lock_holder']}) ended without finishing "
                             f"{item['output']}: run the same command again to refine {item['name']}")
            report_failure(f"{item['name']}: ", item["error"])
        else:
            continue
        item.pop("lock", None)
        item.pop("lock_holder", None)
    counts = summary_counts(items)
    if not quiet:
        busy = f"{counts['in_progress']} left to another crm run, " if counts["in_progress"] else ""
        not_attempted = f", {counts['todo']} not attempted" if counts.get("todo") else ""
        say(f"batch: {counts['done']} refined, {counts['skipped']} skipped (already done), {busy}"
            f"{counts['failed']} failed{not_attempted} -> {folder_name}")
        if counts["kept_coarse"]:
            console.print(f"  {counts['kept_coarse']} kept the coarse mask (the model was unsure of its changes: "
                          "review these)", highlight=False)
        for item in items:
            if item["status"] == "in_progress":
                say(f"  left to another run: {item['name']} (lock {item['lock']}: {item['lock_holder']}; "
                    f"taken over once {STALE_LOCK_AGE_S / 60:.0f} min old, or delete it if no run is busy)")
        failures = [item for item in items if item["status"] == "failed"]
        for item in failures[:MAX_LISTED]:  # each was named as it failed: thousands are not listed twice
            label = f"{item['name']}: " if item["name"] and item["mask"] else ""
            report_failure(label, item["error"], prefix="  failed")
        if len(failures) > MAX_LISTED:
            console.print(f"  ... and {len(failures) - MAX_LISTED} more failed (each named above)", highlight=False)
    if no_room is not None:  # the record, with --json, and the error line last
        raise fatal.fail(out_of_space_message(*no_room, counts.get("todo", 0), overwrite))
    finish_run({**counts, "output_dir": folder_name, "items": items}, failed=bool(counts["failed"]),
               json_out=json_out)


def plain_results(work: Callable[[dict[str, Any]], dict[str, Any]], jobs: Sequence[dict[str, Any]],
                  held_back: dict[int, dict[str, Any]]) -> Iterator[tuple[int, dict[str, Any]]]:
    """(job index, outcome) of every job, run in this process. A job left to another crm run (its
    output locked: ``in_progress``) is tried once more after the others, in case that run has ended
    without finishing it meanwhile (a worker killed for memory): its lock is then taken over and
    the pair refined here. Until then its first outcome waits in ``held_back`` (for a caller that
    stops early: a full disk)."""
    from ..locks import abandoned

    for index, job in enumerate(jobs):
        outcome = work(job)
        if outcome["status"] == "in_progress":
            held_back[index] = outcome
        else:
            yield index, outcome
    for index in list(held_back):
        outcome = held_back.pop(index)
        yield index, work(jobs[index]) if abandoned(jobs[index]["output"]) else outcome


def input_order(found: Pairing[FilePair]) -> dict[str, int]:
    """The place of each photo's item in batch's summary and --json, by its name: the pairs in the order
    they were paired (and are refined, and --dry-run lists them), each photo without its mask among them
    by its path. Every item of a run has its place, whatever became of its pair and when."""
    from ..naming import natural_key

    paired = ((pair.image, pair.name) for pair in found.pairs)
    unpaired = ((failure.image, failure.name) for failure in found.failures)
    # merge keeps each list's own order, and puts the unpaired photos between the pairs by path, in
    # the natural order the pairs come in (frame_2 before frame_10).
    merged = heapq.merge(paired, unpaired, key=lambda item: natural_key(item[0]))
    return {name: place for place, (_, name) in enumerate(merged)}


def in_input_order(items: list[dict[str, Any]], order: dict[str, int]) -> list[dict[str, Any]]:
    """``items`` sorted by their names' places in ``order`` (input_order); those without one last, as
    they came."""
    return sorted(items, key=lambda item: order.get(item["name"], len(order)))


def out_of_space_message(folder: Path, code: int, not_attempted: int, overwrite: bool = False) -> str:
    """The error line of a batch stopped because a write into ``folder`` found no room (errno ``code``:
    ENOSPC, a full disk, or EDQUOT, a used-up quota), ``not_attempted`` pairs being left. Under
    ``overwrite`` a rerun refines every pair again: it is not told to go on."""
    then = ("free space, then run the same command again (with --overwrite it refines every pair again)"
            if overwrite else "free space, then run the same command again to go on (finished outputs are kept)")
    return f"{no_room_words(folder, code)}: batch stopped, {count_noun(not_attempted, 'pair')} not attempted; {then}"


def summary_counts(items: list[dict[str, Any]]) -> dict[str, int]:
    """The counts of batch's summary and --json: done, skipped, in_progress, failed, kept_coarse, and
    todo where some items are still to do (a run stopped by a full disk; --dry-run counts its own).

    ``kept_coarse`` counts refinements (labels count one each) whose coarse mask was kept: the ones
    to review by hand.
    """
    counts = {key: sum(1 for item in items if item["status"] == status)
              for key, status in (("done", "ok"), ("skipped", "skipped"), ("in_progress", "in_progress"),
                                  ("failed", "failed"))}
    counts["kept_coarse"] = sum(item.get("kept_coarse") or 0 for item in items if item["status"] == "ok")
    if todo := sum(1 for item in items if item["status"] == "todo"):
        counts["todo"] = todo
    return counts


def register(app: typer.Typer) -> None:
    """Add the command to the app."""
    app.command("batch", short_help="Refine every image/mask pair of a folder (resumable).")(batch)
