"""File-level refinement shared by ``refine``, ``batch`` and ``eval``: read, check, refine, render.

This layer knows about files and output kinds; the engine knows only arrays.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .config import CUTOUT_BIT_DEPTHS, DEEP_CUTOUT_BITS, MODES
from .image_headers import apply_orientation
from .image_sources import BYTES_NAME
from .imageio import Photo, log_notes, read_mask_noted, read_photo
from .masks import (
    MaskData,
    SizeMismatchError,
    drawn_on_stored_pixels,
    match_mask_to_image,
    one_object_notes,
    photo_note,
    scale_note,
    value_notes,
    weak_mask_note,
)
from .photo_depth import CUTOUT_16BIT_API_HINT
from .presets import Preset

if TYPE_CHECKING:
    from .engine import RefineResult

Source = str | Path | bytes

# Log text of each engine.KEPT_GIVEN_REASONS (the engine is imported lazily: it loads NumPy-heavy modules).
KEPT_GIVEN_TEXT = {"no_boundary": "no boundary", "flat_photo": "a flat photo",
                   "noise_photo": "a photo of noise"}


@dataclass(frozen=True)
class StageRun:
    """The schedule one refinement ran: its stage ratios, their text (with any region pass) and how
    sure the model was of its changes."""

    ratios: tuple[float, ...]
    text: str
    change_confidence: float | None = None  # the gate's measure (None: guard off, or nothing changed)
    kept_coarse: bool = False  # the model was unsure of its changes, so the coarse mask was kept
    change_weight: float = 1.0  # the share of the refinement taken (engine.RefineResult.change_weight)
    snap_px: int = 0  # the edge snap's radius (engine.RefineResult.snap_px), 0 when it did not run
    by_partner: bool = False  # the weights' partner refined it (engine.RefineResult.by_partner)
    kept_given: str | None = None  # why no stage ran and the mask came back as given (engine.RefineResult)
    by_lone_stage: bool = False  # the lone-stage weights ran its final stage (RefineResult.by_lone_stage)

    @classmethod
    def of(cls, result: RefineResult) -> StageRun:
        """The run recorded in an ``engine.RefineResult``."""
        return cls(result.ratios, result.schedule, result.change_confidence, result.kept_coarse,
                   result.change_weight, result.snap_px, result.by_partner, result.kept_given,
                   result.by_lone_stage)

    @property
    def summary(self) -> str:
        """What ran, for a log line (:func:`run_text`)."""
        return run_text(self.text, self.kept_given)


def run_text(schedule: str, kept_given: str | None) -> str:
    """A refinement's log text: ``stages 0.5,1``, or why none ran (``kept as given: a flat photo``)."""
    return f"stages {schedule}" if kept_given is None else f"kept as given: {KEPT_GIVEN_TEXT[kept_given]}"


@dataclass
class PairResult:
    """What refining one pair produced: the array to write, its palette (and the palette's
    transparency, ``MaskData.transparency``) and notes for the log."""

    output: np.ndarray
    palette: list[int] | None
    mode: str
    seconds: float
    probability: np.ndarray | None = None
    notes: list[str] = field(default_factory=list)
    runs: list[StageRun] = field(default_factory=list)  # the schedule run (one per label for label maps)
    label_ids: list[int] = field(default_factory=list)  # a label map's ids refined, in the order of ``runs``
    guard_restored: int = 0
    # The photo's RGB colour profile, for an output that carries its pixels (cut-out, overlay).
    icc_profile: bytes | None = None
    # A label map's palette transparency (one transparent index, or per-entry alpha bytes), written with it.
    transparency: int | bytes | None = None
    # Whether the photo's pixels depend on the scale asked for (``photo_bits``): imageio.Photo.takes_photo_bits.
    takes_photo_bits: bool = False

    @property
    def kept_coarse(self) -> int:
        """Refinements (one per label for label maps) that kept the coarse mask."""
        return sum(run.kept_coarse for run in self.runs)


def source_name(source: Source, fallback: str = BYTES_NAME) -> str:
    """A printable name for a path or an in-memory file (the CLI names standard input itself)."""
    return fallback if isinstance(source, (bytes, bytearray, memoryview)) else str(source)


def choose_mode(mask: MaskData, mode: str, mask_name: str = "the mask") -> str:
    """``auto`` becomes ``labels`` for label maps and ``binary`` otherwise."""
    if mode == "auto":
        return "labels" if mask.is_label_map() else "binary"
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; choose auto, binary or labels")
    if mode == "labels" and mask.kind == "float":
        raise float_labels_error(mask_name)
    return mode


def float_labels_error(mask_name: str) -> ValueError:
    """The refusal of ``--mode labels`` for a floating-point mask (raised from its header before the
    model loads, and from its pixels by :func:`choose_mode`)."""
    return ValueError(f"{mask_name}: --mode labels needs integer label ids, but this mask holds "
                      "floating-point probabilities")


def read_pair(image_source: Source, mask_source: Source, image_name: str | None = None,
              mask_name: str | None = None, decoded_mask: MaskData | None = None, *,
              photo_bits: int | None = None) -> tuple[np.ndarray, MaskData, list[str]]:
    """Read an image and its mask, fitting the mask to the image (:func:`fit_mask_to_image`).
    ``decoded_mask``: ``mask_source`` as the caller has decoded it already (``read_mask``), not decoded again.
    ``photo_bits``: the scale of a 16-bit photo, None for the file's own (``imageio.read_image``).

    Returns:
        (RGB uint8 image, mask, notes for the log).
    """
    photo, mask, notes = read_photo_pair(image_source, mask_source, image_name, mask_name, decoded_mask,
                                         photo_bits=photo_bits)
    return photo.pixels, mask, notes


def mask_keeping_notes(source: Source, name: str | None = None) -> MaskData:
    """The mask decoded before its photo (for checks that need its pixels first), with its reading
    notes kept on it (``MaskData.reading_notes``) rather than logged, so that :func:`read_photo_pair`
    lists them after the photo's, as when it reads the mask itself."""
    mask, notes = read_mask_noted(source, name=name)
    return replace(mask, reading_notes=tuple(notes))


def read_photo_pair(image_source: Source, mask_source: Source, image_name: str | None = None,
                    mask_name: str | None = None, decoded_mask: MaskData | None = None, *,
                    photo_bits: int | None = None, keep_16bit: bool = False) -> tuple[Photo, MaskData, list[str]]:
    """:func:`read_pair` with the photo as ``imageio.Photo`` (its pixels and colour profile; a 16-bit
    file's own values too with ``keep_16bit``, ``imageio.read_photo``). The notes list the photo's
    reading first, then the mask's (``MaskData.reading_notes`` of a ``decoded_mask``), then what fitting
    the mask found."""
    photo, mask, notes, _ = _read_photo_pair(image_source, mask_source, image_name, mask_name, decoded_mask,
                                             photo_bits, keep_16bit)
    return photo, mask, notes


def _read_photo_pair(image_source: Source, mask_source: Source, image_name: str | None,
                     mask_name: str | None, decoded_mask: MaskData | None, photo_bits: int | None = None,
                     keep_16bit: bool = False) -> tuple[Photo, MaskData, list[str], list[str]]:
    """:func:`read_photo_pair`, and the mask's reading notes among its notes (for a caller that shows
    them if it fails later, :func:`_shown_if_failing`)."""
    image_name = image_name or source_name(image_source)
    mask_name = mask_name or source_name(mask_source)
    reading = list(decoded_mask.reading_notes) if decoded_mask is not None else []
    with _shown_if_failing(reading):  # extended below: the list is read only on failure
        photo = read_photo(image_source, name=image_name, photo_bits=photo_bits, keep_16bit=keep_16bit)
        if decoded_mask is None:
            decoded_mask, found = read_mask_noted(mask_source, name=mask_name)
            reading += found
        mask, mask_notes = fit_mask_to_image(decoded_mask, photo.pixels.shape[:2], photo.orientation, image_name,
                                             mask_name)
    return photo, mask, photo.notes + reading + mask_notes, reading


@contextmanager
def _shown_if_failing(reading_notes: list[str]) -> Iterator[None]:
    """Inside, a failure first logs a mask's reading notes, which a pair lists after its photo's: they
    reach the log before the error, as when reading the mask logged them at once (``imageio.read_mask``)."""
    try:
        yield
    except Exception:
        log_notes(reading_notes)
        raise


def fit_mask_to_image(mask: MaskData, image_hw: tuple[int, int], image_orientation: int, image_name: str,
                      mask_name: str, role: str = "mask") -> tuple[MaskData, list[str]]:
    """One mask of an upright image made to fit it: rotated like the image when it was made from
    the stored pixels, a smaller same-aspect copy upsampled (SizeMismatchError otherwise, calling the
    file a ``role``: "ground truth" for crm eval's).

    Returns (the mask, notes for the log), a note for each rule that applied, including a 16-bit
    mask read on the 8-bit scale, and first a colour mask that looks like a photo (the image and
    mask swapped?).
    """
    notes: list[str] = []
    if (note := photo_note(mask, mask_name)) is not None:
        notes.append(note)
    if drawn_on_stored_pixels(mask.shape, mask.orientation, image_hw, image_orientation):
        mask = replace(mask, values=apply_orientation(mask.values, image_orientation), orientation=image_orientation)
        notes.append(f"{mask_name}: fits {image_name} as stored, before its EXIF rotation; rotated the same way")
    mask, upsampled = _match_noted(mask, image_hw, image_name, mask_name, role=role)
    notes += upsampled
    if (note := scale_note(mask, mask_name)) is not None:
        notes.append(note)
    return mask, notes


def _match_noted(mask: MaskData, image_hw: tuple[int, int], image_name: str,
                 mask_name: str, to_mask: bool = False, role: str = "mask") -> tuple[MaskData, list[str]]:
    """``masks.match_mask_to_image``, with the note for a mask upsampled (none when the sizes are equal);
    ``to_mask``: ``image_name`` is another mask, whose size it took (scoring)."""
    mask, resized = match_mask_to_image(mask, image_hw, image_name, mask_name, role)
    target = f"the size of {image_name}," if to_mask else "the image size"
    return mask, [f"{mask_name}: upsampled to {target} {image_hw[1]}x{image_hw[0]}"] if resized else []


def fit_masks_for_scoring(pred: MaskData, gt: MaskData, pred_name: str,
                          gt_name: str) -> tuple[MaskData, MaskData, list[str]]:
    """A prediction and its ground truth at one size, as ``crm score`` scores them: a smaller
    same-aspect copy of the other is upsampled to its size, as :func:`fit_mask_to_image` upsamples a
    small ground truth to its photo for ``crm eval``, so that both commands score the same.

    Returns the two masks and notes for the log: first, for each file, one if it looks like a photo
    (``masks.photo_note``), one if its values look like class ids read as a soft mask
    (``masks.ids_note``) and one for a 16-bit mask read on the 8-bit scale (``masks.scale_note``; each
    once when both names are the same), then one for the mask upsampled.

    Raises:
        SizeMismatchError: the sizes differ otherwise (a ValueError naming both files and sizes); its
            ``notes`` are the photo notes, worth showing before the error.
    """
    notes = list(dict.fromkeys(note for mask, name in ((pred, pred_name), (gt, gt_name))
                               for note in value_notes(mask, name)))
    (pred_h, pred_w), (gt_h, gt_w) = pred.shape[:2], gt.shape[:2]
    try:
        if gt_h <= pred_h and gt_w <= pred_w:
            gt, upsampled = _match_noted(gt, (pred_h, pred_w), pred_name, gt_name, to_mask=True)
            return pred, gt, notes + upsampled
        if pred_h <= gt_h and pred_w <= gt_w:
            pred, upsampled = _match_noted(pred, (gt_h, gt_w), gt_name, pred_name, to_mask=True)
            return pred, gt, notes + upsampled
    except SizeMismatchError:
        pass
    raise SizeMismatchError(f"size mismatch: {pred_name} is {pred_w}x{pred_h} but {gt_name} is {gt_w}x{gt_h}", notes)


class PresetRefiner:
    """Refines with one preset and keeps every engine result (the per-label schedules of a label map),
    each without its probability map: a label map of 50 ids at 3840x2160 held 33 MB a map (2.3 GB),
    and one of 255 would have held 8.5 GB."""

    def __init__(self, refiner, preset: Preset) -> None:  # noqa: ANN001 - engine.Refiner, imported lazily
        self.refiner = refiner
        self.preset = preset
        self.details: list = []

    def refine(self, image: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """Refine one binary mask and remember the result."""
        detail = self.refiner.refine_detailed(image, mask, preset=self.preset)
        self.details.append(replace(detail, probability=np.empty(0, np.float32), stages=[]))
        return detail.probability


def ids_text(ids: Sequence[int], one: str, many: str | None = None) -> str:
    """Ids for a message after their noun, singular (``one``) for one id and plural (``many``,
    default ``one`` + "s") otherwise: ``label 3``, ``categories 5, 7``; the ids past
    pairing_hints.MAX_LISTED are counted. Serves ``--labels`` here and ``crm coco --category-ids``."""
    from .pairing_hints import listed

    return f"{one if len(ids) == 1 else many or one + 's'} {listed(ids)}"


def label_map_notes(output_kind: str, threshold: float | None) -> list[str]:
    """The warnings for the output options a label map ignores (it is written as a label image, ids and
    palette kept): an output kind other than soft or binary, and a threshold. Known only once the mask
    is read (``--mode auto``), so they are warnings, never usage errors."""
    ignored = [] if output_kind in ("soft", "binary") else [f"--output-kind {output_kind}"]
    if threshold is not None:
        ignored.append("--threshold")
    return [f"label maps are written as label images; {option} ignored" for option in ignored]


def labels_notes(mask: MaskData, chosen: str, labels: Sequence[int], mask_name: str) -> tuple[list[str], bool]:
    """What ``--labels`` does to a mask read in mode ``chosen``: warnings naming the ids it does not
    hold (or saying it is refined as one object, so they are ignored), and whether none of them is
    there, so that nothing is left to refine."""
    from .labels import BACKGROUND, select_labels

    if chosen != "labels":
        return [f"--labels ignored: {mask_name} is refined as one binary mask, not as a label map "
                "(see --mode)"], False
    present = mask.label_ids
    targets, missing = select_labels(present, labels)
    problems = []
    if BACKGROUND in labels:
        problems.append("label 0 is the background, which is never refined")
    if missing:
        problems.append(f"{ids_text(missing, 'label')} {'is' if len(missing) == 1 else 'are'} not in {mask_name}")
    if not problems:
        return [], False
    if targets:
        outcome = f"refining {ids_text(targets, 'label')} only"
    else:
        held = ids_text(present, "label") if present else "no labels"
        outcome = f"it holds {held}: nothing to refine, so the mask is written unchanged"
    return [f"--labels: {'; '.join(problems)}; {outcome}"], not targets


def refine_files(refiner, image_source: Source, mask_source: Source, preset: Preset, *,  # noqa: ANN001
                 mode: str = "auto", labels: Sequence[int] | None = None, output_kind: str = "soft",
                 threshold: float | None = None, image_name: str | None = None,
                 mask_name: str | None = None, decoded_mask: MaskData | None = None,
                 photo_bits: int | None = None, cutout_bits: int = 8) -> PairResult:
    """Refine one image/mask pair from files (or encoded bytes) and render the requested output
    (``decoded_mask`` and ``photo_bits``: see :func:`read_pair`). ``cutout_bits``: 16 makes the cut-out
    of a 16-bit photo a 16-bit RGBA image of the file's own values (PNG only, ``writing.encode_image``);
    a cut-out of a photo of more than 8 bits per channel that is written in 8 bits gets a note
    (:func:`cutout_depth_note`).

    Raises:
        ImageReadError: (``imageio.ImageReadError``, an OSError) a file is missing, empty, truncated,
            corrupt, out of range or too large (the message names it; see ``imageio.read_image``).
        SizeMismatchError: (``masks.SizeMismatchError``, a ValueError) image and mask sizes differ
            and the mask is not a smaller same-aspect copy to upsample; the message names both files.
        ValueError: an unknown ``mode`` or ``output_kind``, ``mode="labels"`` for a floating-point
            mask, a ``threshold`` or ``photo_bits`` out of range, invalid ``preset`` settings.
        MemoryError: too little memory (and the refiner's own shortages, see
            ``engine.Refiner.refine_detailed``).

    ImageReadError and SizeMismatchError are the files' fault; the ValueErrors are the caller's
    options (a mismatch is a ValueError too, so catch SizeMismatchError first to tell them apart).
    """
    from .labels import refine_labels, select_labels
    from .outputs import check_rendering, render_output

    check_rendering(output_kind, threshold)  # before the files are read and the model runs
    photo, mask, notes, reading = _read_photo_pair(image_source, mask_source, image_name, mask_name,
                                                   decoded_mask, photo_bits,
                                                   keep_16bit=wants_16bit_cutout(output_kind, cutout_bits))
    with _shown_if_failing(reading):  # the model can still fail (out of memory)
        image = photo.pixels
        chosen = choose_mode(mask, mode, mask_name or source_name(mask_source))
        # Listed after the other notes, as when they were found before the pair was read.
        label_notes = [] if labels is None else labels_notes(mask, chosen, labels,
                                                              mask_name or source_name(mask_source))[0]
        start = time.perf_counter()
        if chosen == "labels":
            photo = replace(photo, pixels16=None)  # a label map has no cut-out: no 16-bit copy held meanwhile
            notes.extend(label_map_notes(output_kind, threshold))
            per_label = PresetRefiner(refiner, preset)
            refined = refine_labels(per_label, image, mask.values, labels=labels, present=mask.label_ids)
            runs = [StageRun.of(d) for d in per_label.details]
            # Each label kept coarse is said, as a one-object mask's is (refine_labels' order of labels).
            refined_ids = mask.label_ids if labels is None else select_labels(mask.label_ids, labels)[0]
            notes += [f"label {label}: {kept_coarse_note(detail.change_confidence, run.change_weight)}"
                      for label, detail, run in zip(refined_ids, per_label.details, runs, strict=True)
                      if run.kept_coarse]
            return PairResult(refined, mask.palette, chosen, time.perf_counter() - start, notes=notes + label_notes,
                              runs=runs, label_ids=list(refined_ids),
                              guard_restored=sum(d.guard_restored for d in per_label.details),
                              transparency=mask.transparency, takes_photo_bits=photo.takes_photo_bits)
        coarse = mask.probability()
        if mode == "auto":
            notes += one_object_notes(mask, mask_name or source_name(mask_source))
        if (note := weak_mask_note(coarse, mask_name or source_name(mask_source))) is not None:
            notes.append(note)
        detail = refiner.refine_detailed(image, coarse, preset=preset)
        seconds = time.perf_counter() - start
        output = render_output(output_kind, detail.probability, image=cutout_pixels(photo), coarse=coarse,
                               threshold=threshold)
        if (note := cutout_depth_note(photo, output_kind, image_name or source_name(image_source))) is not None:
            notes.append(note)
        run = StageRun.of(detail)
        if run.kept_coarse:
            notes.append(kept_coarse_note(detail.change_confidence, run.change_weight))
        return PairResult(output, None, chosen, seconds, probability=detail.probability, notes=notes + label_notes,
                          runs=[run], guard_restored=detail.guard_restored,
                          icc_profile=photo.profile_for(output_kind), takes_photo_bits=photo.takes_photo_bits)


def kept_coarse_note(confidence: float, weight: float) -> str:
    """The note for a refinement whose coarse mask was kept (its change ``confidence`` below the gate's
    threshold), saying what share of the refinement was blended in all the same: ``weight``, above 0
    just below the threshold (``schedule.CHANGE_CONFIDENCE_RAMP``)."""
    head = f"the model was unsure of its changes (confidence {confidence:.2f}): the coarse mask was"
    if weight <= 0.0:
        return f"{head} kept"
    share = f"{weight:.0%}" if weight >= 0.01 else "under 1%"
    return f"{head} mostly kept: {share} of the refinement blended in"


def wants_16bit_cutout(output_kind: str, cutout_bits: int) -> bool:
    """Whether a pair's output is a cut-out asked for in 16 bits (so a 16-bit photo's own values are
    kept when it is read); ValueError for a ``cutout_bits`` not in CUTOUT_BIT_DEPTHS."""
    if cutout_bits not in CUTOUT_BIT_DEPTHS:
        raise ValueError(f"cutout_bits must be 8 or 16, got {cutout_bits!r}")
    return output_kind == "cutout" and cutout_bits == DEEP_CUTOUT_BITS


def cutout_pixels(photo: Photo) -> np.ndarray:
    """The photo's pixels a cut-out carries: its own 16-bit values when they were kept
    (``Photo.pixels16``), its 8-bit RGB otherwise."""
    return photo.pixels16 if photo.pixels16 is not None else photo.pixels


def cutout_depth_note(photo: Photo, output_kind: str, image_name: str) -> str | None:
    """The note for a ``cutout`` written in 8 bits of a photo stored in more: it holds less than the
    photo. A 16-bit photo's cut-out keeps 16 bits as PNG (``cutout_bits=16``, which crm's commands ask
    for when they write PNG); a 32-bit photo's is 8-bit in any format, and a soft16 matte over the
    photo itself keeps every bit. None for any other output, an 8-bit photo or a 16-bit cut-out."""
    if output_kind != "cutout" or photo.stored_bits <= 8 or photo.pixels16 is not None:
        return None
    head = f"{image_name}: a {photo.stored_bits}-bit photo, but its cut-out is written with 8-bit colour and alpha"
    if photo.stored_bits == 16:
        return head + CUTOUT_16BIT_API_HINT  # the CLI names a .png output instead (photo_depth.cli_note)
    return f"{head}; to keep every bit, write -k soft16 and use it as the alpha of the photo itself"


def schedule_label(runs: Sequence[StageRun]) -> str:
    """The schedules run as one text; label maps join theirs with ``" | "``."""
    return " | ".join(run.text for run in runs)


def runs_summary(runs: Sequence[StageRun]) -> str:
    """What ran, for a log line: ``stages 0.5,1``, ``kept as given: a flat photo``; a label map's
    runs joined with ``" | "`` (``stages 0.5,1 | stages 1``)."""
    return " | ".join(run.summary for run in runs)


def record_summary(record: Mapping[str, Any]) -> str:
    """:func:`runs_summary` of a pair's ``--json`` record (``cli.checks.schedule_fields``: its
    ``schedule``, and ``kept_given`` or a label map's ``label_kept_given``), for batch's log line."""
    texts = str(record["schedule"]).split(" | ")
    reasons = record.get("label_kept_given") or [record.get("kept_given")] * len(texts)
    return " | ".join(run_text(text, reason) for text, reason in zip(texts, reasons, strict=True))
