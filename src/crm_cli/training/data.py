"""Training data: pair listing, held-out split, augmentation and coarse-mask synthesis (DESIGN §3).

Every random choice comes from a ``numpy.random.Generator`` passed in by the caller, so a step's
batch is a pure function of (seed, step) and resumed runs see exactly the same samples.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import cv2
import numpy as np

from .. import pairing
from ..errors import ContinuedText, count_noun, one_line
from ..evaluation import Sample
from ..image_sources import ImageReadError
from ..masks import MaskData
from ..pairing import FilePair, Pairing
from .coarse import CoarseMix, make_coarse, synthesize_coarse

logger = logging.getLogger(__name__)

CROP = 224
# The seed of the synthetic coarse masks of validation pairs: pair k gets default_rng([SEED, k]).
SYNTHETIC_SEED = 12345
NETWORK_ONLY = CoarseMix(paper=0, lowres=0, sam=0, clean=0, network=1)
# Composites for training: no drawn layer may be (almost) invisible against what lies below it.
MIN_CONTRAST = 16.0
# With zoom augmentation, the share of photo crops taken from an enlarged photo.
ZOOM_SHARE = 0.5
# The largest share of unreadable pairs a run trains on without them (leaving them out); past it the
# data, or the disk it lies on, is too damaged, and the run stops naming them.
MOST_UNREADABLE = 0.1
# The seed of the order in which other pairs are tried as the stand-in of an unreadable one.
STAND_IN_SEED = 4242
# What reading a pair's files (or a network mask) raises when they cannot be read or do not fit:
# the pair is then unreadable (SizeMismatchError is a ValueError).
UNREADABLE_PAIR_ERRORS = (ImageReadError, ValueError)


class UnreadablePairsError(ValueError):
    """No pair of a training set can be read (every one fails to decode); the message names them."""


def list_pairs(root: Path) -> list[FilePair]:
    """The pairs under ``root`` to train on (or validate on, as ``--val``), sorted by name: the layouts
    of :func:`~crm_cli.pairing.scan_pairs` (``images/**`` + ``masks/**`` with the same relative stem,
    ...), the mask of each its soft ground truth, but in the BIG layout ``<name>_im`` with its
    ground truth ``<name>_gt`` (see :func:`target_pairs`). Photos left out are counted in warnings;
    none left is a FileNotFoundError."""
    root = Path(root)
    pairs, warnings = target_pairs(pairing.scan_pairs(root, command="crm train"), root)
    for warning in warnings:
        logger.warning("%s", warning)
    return pairs


def target_pairs(found: Pairing[FilePair], root: Path) -> tuple[list[FilePair], list[str]]:
    """The pairs of ``found`` (``root`` scanned) whose mask is the target, sorted by name, and a warning
    for each kind of photo left out: those without a mask (the scan's failures), and in the BIG
    layout those without a ``<name>_gt``. A BIG-layout pair trains on its ground truth: its
    ``<name>_seg`` is a coarse mask, and the training recipe makes its coarse masks from the ground
    truth. No pair left is a FileNotFoundError (a NoPairsError where none has a ground truth), naming an
    example."""
    pairs, left_out = pairing.ground_truth_pairs(found, root, "left out (the _seg masks are coarse masks, not targets)",
                                                 "training learns the _gt masks (the _seg ones are coarse masks, not "
                                                 "targets)")
    unpaired = [failure.error for failure in found.unpaired_photos]
    unread = [failure.error for failure in found.unreadable_folders]
    if not pairs and unpaired:
        raise FileNotFoundError(f"no image/mask pairs under {root}: no photo has its mask, e.g. {unpaired[0]}")
    if not pairs and unread:
        raise FileNotFoundError(f"no image/mask pairs under {root}: {unread[0]}")
    warnings = []
    if unpaired:
        warnings.append(f"{root}: {count_noun(len(unpaired), 'photo')} without a mask left out, e.g. {unpaired[0]}")
    if unread:
        warnings.append(f"{root}: {count_noun(len(unread), 'folder')} left out, e.g. {unread[0]}")
    return training_pairs(pairs, root), warnings + left_out


def training_pairs(found: list[FilePair], root: Path) -> list[FilePair]:
    """``found``, pairs found under ``root`` (:func:`target_pairs`, or ``training.validation.val_set_pairs``),
    as :func:`list_pairs` gives them: sorted by name, a pair
    with a ground truth (BIG layout) training on it, and none at all an error."""
    if not found:
        raise FileNotFoundError(f"no image/mask pairs under {root}/images and {root}/masks")
    return sorted((replace(pair, mask=pair.gt) if pair.gt is not None else pair for pair in found),
                  key=lambda p: p.name)


def pair_problems(pairs: Sequence[FilePair], network_dirs: Sequence[Path] = ()) -> list[str]:
    """What would stop a run when a pair is first read (:func:`load_pair`, ``PairCache``), found
    before the run starts: one message per bad pair, naming its file. From the headers: a missing,
    empty, unrecognised or too large file, a mask (or a network mask in ``network_dirs``) that
    cannot fit its upright photo. Files whose values can be refused are decoded too: JPEG masks
    (class ids JPEG altered), and 32-bit, signed or floating-point photos and masks (values out of
    range). A file damaged after its header passes, and is left out when first read (``PairCache``
    with ``stand_ins``)."""
    from ..image_headers import probe_image, refusal_needs_decoding
    from ..imageio import read_image_noted, read_mask_noted
    from ..masks import check_mask_size

    problems = []
    for pair in pairs:
        try:
            image = probe_image(pair.image)
            # Decoded only to find a refusal; what reading notes is said when the pair is loaded.
            if refusal_needs_decoding(image, as_mask=False):
                read_image_noted(pair.image)
            masks = [pair.mask, *network_mask_paths(pair, network_dirs)]
            for path in masks:
                header = probe_image(path)
                # Training fits masks to the upright photo and never rotates one (unlike crm refine).
                check_mask_size(header.shape, image.shape, str(pair.image), str(path))
                if refusal_needs_decoding(header, as_mask=True):
                    read_mask_noted(path)
        except UNREADABLE_PAIR_ERRORS as exc:
            problems.append(str(exc))
    return problems


def network_mask_paths(pair: FilePair, network_dirs: Sequence[Path]) -> tuple[Path, ...]:
    """The network masks of ``pair`` in ``network_dirs``: each folder's ``<pair name>.png``, where it exists."""
    return tuple(path for folder in network_dirs if (path := Path(folder) / f"{pair.name}.png").is_file())


def unusable_pairs_error(problems: list[str], total: int, where: str, shown: int = 10) -> ValueError:
    """The error for :func:`pair_problems`' findings among ``total`` pairs ``where`` ("that the run
    reads"), with :func:`unusable_pairs_message`."""
    return ValueError(unusable_pairs_message(problems, total, where, shown))


def unusable_pairs_message(problems: Sequence[str], total: int, where: str, shown: int = 10) -> str:
    """How many of ``total`` pairs ``where`` cannot be read (``problems``), and the first ``shown`` of them."""
    return ContinuedText(f"{len(problems)} of {total} pairs {one_line(where)} cannot be read; fix or remove them:"
                         f"{listed_problems(problems, shown)}")


def listed_problems(problems: Sequence[str], shown: int = 10) -> str:
    """The first ``shown`` of ``problems``, one indented line each after a line break, and how many more.
    A line break inside a problem (a file name can hold one) is shown as ``\\n``: only the list's own
    line breaks start a line (the CLI keeps those, escaping everything else: cli.output.printable)."""
    listed = "".join(f"\n  {one_line(problem)}" for problem in problems[:shown])
    return listed + (f"\n  ... and {len(problems) - shown} more" if len(problems) > shown else "")


def too_many_unreadable(unreadable: int, total: int) -> bool:
    """Whether ``unreadable`` distinct pairs of a set of ``total`` is more than a run leaves out."""
    return unreadable > MOST_UNREADABLE * total


def split_pairs(pairs: list[FilePair], every: int = 20) -> tuple[list[FilePair], list[FilePair]]:
    """Fixed split: every ``every``-th pair (sorted order) is held out for validation."""
    train = [p for i, p in enumerate(pairs) if i % every != 0]
    val = [p for i, p in enumerate(pairs) if i % every == 0]
    return train, val


class NoTrainingPairsError(ValueError):
    """Every pair of the training data is held out for validation: a usage error (exit 2). crm train
    refuses it as one of ``--data``, from a new run's split and a resumed run's alike;
    ``cli.failures.user_errors`` reads ``exit_code`` elsewhere."""

    exit_code = 2


def training_split(pairs: list[FilePair], holds_out: bool, root: Path,
                   resumed: bool = False) -> tuple[list[FilePair], list[FilePair]]:
    """The pairs of ``root`` to train on, and those held out for validation: every 20th one
    (:func:`split_pairs`) when ``holds_out``, else none. A NoTrainingPairsError when none is left to
    train on; ``resumed`` words it for a run given ``--val`` that keeps the split of the checkpoint
    it resumes from."""
    train, held_out = split_pairs(pairs) if holds_out else (list(pairs), [])
    if not train:
        which = "only pair is" if len(pairs) == 1 else f"{len(pairs)} pairs are all"
        if resumed:
            why = ("the checkpoint resumed from held every 20th pair out even with --val, as runs did before --val "
                   "stopped the split, and a resumed run keeps its split")
            advice = "add pairs, or start a new run in another --out"
        else:
            why = "every 20th pair is, unless --val is given"
            advice = "add pairs, or pass --val FOLDER to validate on other pairs"
        raise NoTrainingPairsError(f"{root}: its {which} held out for validation ({why}), leaving none to train on; "
                                   f"{advice}")
    return train, held_out


def load_pair(pair: FilePair) -> tuple[np.ndarray, np.ndarray]:
    """RGB uint8 (H, W, 3) and soft GT float32 (H, W) in [0, 1], read as inference reads them, with
    the warnings crm refine and crm eval give for such a mask (:func:`warn_of_target`)."""
    from ..imageio import read_image, read_mask
    from ..masks import match_mask_to_image

    image = read_image(pair.image)
    mask, _ = match_mask_to_image(read_mask(pair.mask), image.shape[:2], str(pair.image), str(pair.mask))
    target = mask.probability()
    warn_of_target(mask, target, str(pair.mask))
    return image, target


# A folder of wrong targets (photos, 12-bit values, ids) would warn once per file: the first few say it.
# Counted per process (each loader worker has its own count; the training process shows each text once).
MOST_TARGET_WARNINGS = 20
_target_warnings = [0]


def reset_target_warnings() -> None:
    """Start this process's count of :func:`warn_of_target`'s warnings again (a new run)."""
    _target_warnings[0] = 0


def warn_of_target(mask: MaskData, target: np.ndarray, mask_name: str) -> None:
    """Log the warnings that crm refine and crm eval give for ``mask`` (read as ``target``) where it is a
    training target: a photo (the folders swapped?), values that look like class ids, a 16-bit mask read
    on the 8-bit scale, no pixel above 0.5 (a mask on another scale: the model would learn to erase).
    The first MOST_TARGET_WARNINGS of a process (of a run: :func:`reset_target_warnings`) are shown, then
    one line saying that more are not."""
    from ..masks import value_notes, weak_mask_note

    weak = weak_mask_note(target, mask_name)
    for note in value_notes(mask, mask_name) + ([weak] if weak is not None else []):
        _target_warnings[0] += 1
        if _target_warnings[0] <= MOST_TARGET_WARNINGS:
            logger.warning("%s; used as read", note)
        elif _target_warnings[0] == MOST_TARGET_WARNINGS + 1:
            logger.warning("more warnings about ground-truth masks are not shown (%d were)", MOST_TARGET_WARNINGS)


def synthetic_coarse(gt: np.ndarray, index: int, seed: int = SYNTHETIC_SEED) -> np.ndarray:
    """The training recipe's coarse mask for the ``index``-th validation pair (DESIGN §3)."""
    return synthesize_coarse(gt, np.random.default_rng([seed, index]))


def synthetic_samples(pairs: Sequence[FilePair], seed: int = SYNTHETIC_SEED,
                      on_error: Callable[[str, Exception], None] | None = None) -> Iterator[Sample]:
    """Samples of image/GT pairs (the mask is the GT) with synthetic coarse masks, read lazily.

    A pair that cannot be read raises, or with ``on_error`` is passed to it (name, error, which names
    the file) and left out, as :func:`~crm_cli.evaluation.folder_samples` does; the other pairs keep
    their coarse masks."""
    for index, pair in enumerate(pairs):
        try:
            image, gt = load_pair(pair)
        except UNREADABLE_PAIR_ERRORS as exc:
            if on_error is None:
                raise
            on_error(pair.name, exc)
            continue
        yield Sample(pair.name, image, synthetic_coarse(gt, index, seed), gt)


def random_crop(image: np.ndarray, gt: np.ndarray, rng: np.random.Generator, size: int = CROP,
                extra: tuple[np.ndarray, ...] = ()) -> tuple[np.ndarray, np.ndarray, tuple[np.ndarray, ...]]:
    """A size x size crop of image, GT and the ``extra`` masks, reflect-padding sides shorter than
    ``size``. The extras take no random draws, so they do not change the crop."""
    height, width = gt.shape
    pad_y, pad_x = max(0, size - height), max(0, size - width)
    if pad_y or pad_x:
        top, left = pad_y // 2, pad_x // 2
        border = (top, pad_y - top, left, pad_x - left)
        image = cv2.copyMakeBorder(image, *border, cv2.BORDER_REFLECT_101)
        gt = cv2.copyMakeBorder(gt, *border, cv2.BORDER_REFLECT_101)
        extra = tuple(cv2.copyMakeBorder(m, *border, cv2.BORDER_REFLECT_101) for m in extra)
        height, width = gt.shape
    y = int(rng.integers(0, height - size + 1))
    x = int(rng.integers(0, width - size + 1))
    window = (slice(y, y + size), slice(x, x + size))
    return image[window], gt[window], tuple(m[window] for m in extra)


def zoom_in(image: np.ndarray, gt: np.ndarray, rng: np.random.Generator, most: float,
            extra: tuple[np.ndarray, ...] = ()) -> tuple[np.ndarray, np.ndarray, tuple[np.ndarray, ...]]:
    """Enlarge image, GT and the ``extra`` masks by a factor drawn from U(1, ``most``), bilinearly.

    A photo of 2K and more shows its edges a few pixels wide, where a DUTS photo (about 300 px)
    shows them one pixel wide; enlarged crops show the model such edges (and less context), as the
    final full-size stage sees them. The extras are binary again after the resize.
    """
    factor = float(rng.uniform(1.0, most))
    height, width = gt.shape
    size = (max(1, round(width * factor)), max(1, round(height * factor)))
    image = cv2.resize(image, size, interpolation=cv2.INTER_LINEAR)
    gt = cv2.resize(gt, size, interpolation=cv2.INTER_LINEAR)
    extra = tuple((cv2.resize(m, size, interpolation=cv2.INTER_LINEAR) >= 0.5).astype(np.float32) for m in extra)
    return image, gt, extra


def photometric(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Colour jitter (brightness 0.2, contrast 0.05, saturation 0.05) and grayscale with p = 0.1."""
    x = image.astype(np.float32)
    x *= rng.uniform(0.8, 1.2)
    gray = x @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    x = (x - gray.mean()) * rng.uniform(0.95, 1.05) + gray.mean()
    gray = x @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    x = (x - gray[..., None]) * rng.uniform(0.95, 1.05) + gray[..., None]
    if rng.random() < 0.1:
        gray = x @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
        x = np.repeat(gray[..., None], 3, axis=2)
    return np.clip(x, 0, 255).astype(np.uint8)


def make_sample(image: np.ndarray, gt: np.ndarray, rng: np.random.Generator,
                coarse_mix: CoarseMix | None = None,
                network_masks: tuple[np.ndarray, ...] = (), zoom: float = 1.0,
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One augmented training sample: RGB crop (224, 224, 3), coarse {0,1} and soft GT crops.

    ``coarse_mix`` None is the paper's recipe (the perturbation only), as before the mix existed.
    ``network_masks`` are real networks' masks of this photo (float32 {0,1}, its size), for the
    mix's ``network`` mode. ``zoom`` > 1 enlarges half the photos first (:func:`zoom_in`); at 1
    no random draw is spent on it, so earlier runs' samples are unchanged."""
    if zoom > 1.0 and rng.random() < ZOOM_SHARE:
        image, gt, network_masks = zoom_in(image, gt, rng, zoom, network_masks)
    image, gt, network_masks = random_crop(image, gt, rng, extra=network_masks)
    if rng.random() < 0.5:
        image, gt = image[:, ::-1], gt[:, ::-1]
        network_masks = tuple(m[:, ::-1] for m in network_masks)
    image = photometric(np.ascontiguousarray(image), rng)
    gt = np.ascontiguousarray(gt)
    return image, sample_coarse(gt, image, rng, coarse_mix, network_masks), gt


def sample_coarse(gt: np.ndarray, image: np.ndarray, rng: np.random.Generator, coarse_mix: CoarseMix | None,
                  network_masks: tuple[np.ndarray, ...] = ()) -> np.ndarray:
    """The coarse mask of a training crop: the paper's perturbation, or a mode drawn from the mix.
    ``network`` picks one of ``network_masks``; without any it falls back to ``sam``."""
    if coarse_mix is None:
        return synthesize_coarse(gt, rng)
    mode = coarse_mix.choose(rng)
    if mode == "network":
        if network_masks:
            chosen = network_masks[int(rng.integers(0, len(network_masks)))]
            return np.ascontiguousarray(chosen, dtype=np.float32)
        mode = "sam"
    return make_coarse(gt, rng, mode, image=image)


@dataclass(frozen=True)
class DataMix:
    """What training samples are made of: ``synthetic`` is the fraction of composites (thin
    structures and pasted foregrounds, :mod:`.synthesis`) among photo crops; ``coarse`` the
    coarse-mask mix (None = the paper's perturbation only)."""

    synthetic: float = 0.0
    coarse: CoarseMix | None = None
    zoom: float = 1.0  # photo crops: the largest enlargement (make_sample); 1 = none
    transpose: float = 0.0  # the share of samples turned on their diagonal (make_training_sample); 0 = none


def make_training_sample(library: PairCache, index: int, rng: np.random.Generator,
                         mix: DataMix) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One sample of the mix: a crop of pair ``index``, or a composite drawn from the library.

    With a ``network`` weight (and network masks in the library), that share of the samples is
    a crop of a photo that has a network mask, drawn from those instead of ``index``. With a
    ``transpose`` share, that share of the samples is then turned on its diagonal (rows become
    columns; after a left-right flip, a quarter turn), so that lines run across and down the crops
    alike; at 0 no random draw is spent on it, so earlier runs' samples are unchanged."""
    image, coarse, gt = mix_sample(library, index, rng, mix)
    if mix.transpose > 0 and rng.random() < mix.transpose:
        image, coarse, gt = (np.ascontiguousarray(np.swapaxes(part, 0, 1)) for part in (image, coarse, gt))
    return image, coarse, gt


def mix_sample(library: PairCache, index: int, rng: np.random.Generator,
               mix: DataMix) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`make_training_sample` before its turn: the crop or composite the mix draws."""
    from .synthesis import composite

    coarse = mix.coarse
    network = coarse is not None and coarse.network > 0 and library.has_network_masks
    if network:
        coarse = coarse.without_network()
    if mix.synthetic > 0 and rng.random() < mix.synthetic:
        sample = composite(rng, library, CROP, CROP, fast_strokes=True, min_contrast=MIN_CONTRAST)
        image = photometric(sample.image, rng)
        return image, sample_coarse(sample.gt, image, rng, coarse), sample.gt
    if network and rng.random() < mix.coarse.network_share():
        index = library.network_pair(rng)
        image, gt = library.get(index)
        return make_sample(image, gt, rng, NETWORK_ONLY, library.network_masks(index), zoom=mix.zoom)
    image, gt = library.get(index)
    return make_sample(image, gt, rng, coarse, zoom=mix.zoom)


@dataclass
class ReadNotes:
    """What a :class:`PairCache` met since its notes were last taken: ``stood_in`` reads of a pair
    (:meth:`PairCache.get`) answered by another pair, and the files found unreadable in this process
    (pair name, or network mask path: the reason, which names the file)."""

    stood_in: int = 0
    unreadable_pairs: dict[str, str] = field(default_factory=dict)
    unreadable_network_masks: dict[str, str] = field(default_factory=dict)


class PairCache:
    """Decoded training pairs kept in memory (DUTS-TR fits in about 2.5 GB), with the real network
    masks found for them: ``network_dirs`` hold ``<pair name>.png`` masks of the photos, made offline
    by a segmentation network (read as inference reads masks, thresholded at 0.5).

    With ``stand_ins``, a pair that cannot be read (a file damaged after its header) is left out:
    another pair stands in for it (:meth:`stand_in`), and an unreadable network mask is skipped.
    Without, reading it raises, as :func:`load_pair` does."""

    def __init__(self, pairs: list[FilePair], network_dirs: tuple[Path, ...] = (), stand_ins: bool = False) -> None:
        self.pairs = pairs
        self.network_dirs = tuple(Path(d) for d in network_dirs)
        self.stand_ins = stand_ins
        self._cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self._network: dict[int, tuple[np.ndarray, ...]] = {}  # bool masks; network_masks() gives float32
        self._unreadable: dict[int, str] = {}
        self._stand_in: dict[int, int] = {}
        self._notes = ReadNotes()
        # Listed once, so a run (and its resume) sees a fixed set even if a folder is still filling.
        self._network_paths: dict[int, tuple[Path, ...]] = {}
        for k, pair in enumerate(pairs):
            if found := network_mask_paths(pair, self.network_dirs):
                self._network_paths[k] = found
        self.network_indices = sorted(self._network_paths)

    @property
    def has_network_masks(self) -> bool:
        """Whether any pair has a network mask."""
        return bool(self.network_indices)

    def network_pair(self, rng: np.random.Generator) -> int:
        """A random pair among those with a network mask."""
        return self.network_indices[int(rng.integers(0, len(self.network_indices)))]

    def __len__(self) -> int:
        return len(self.pairs)

    def get(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Decoded (image, gt) for pair ``index``; with ``stand_ins``, those of its :meth:`stand_in`."""
        if not self.stand_ins:
            return self._decoded(index)
        usable = self.stand_in(index)
        if usable != index:
            self._notes.stood_in += 1
        return self._cache[usable]

    def stand_in(self, index: int) -> int:
        """``index`` when pair ``index`` can be read; else the first readable pair of an order drawn
        from ``index`` alone. Which pairs are readable is a property of the files, so every process
        (each loader worker, a resumed run) picks the same pair, whatever it read before.
        UnreadablePairsError when no pair can be read."""
        if index not in self._stand_in:
            self._stand_in[index] = next((k for k in self._candidates(index) if self._readable(k)), -1)
        if self._stand_in[index] < 0:
            problems = [self._unreadable[k] for k in sorted(self._unreadable)]
            raise UnreadablePairsError(unusable_pairs_message(problems, len(self.pairs), "to train on"))
        return self._stand_in[index]

    def take_notes(self) -> ReadNotes:
        """What reading met since the last call (:class:`ReadNotes`), and a fresh start."""
        notes, self._notes = self._notes, ReadNotes()
        return notes

    def _candidates(self, index: int) -> Iterator[int]:
        """``index``, then every other pair in an order drawn from ``index`` alone."""
        yield index
        order = np.random.default_rng([STAND_IN_SEED, index]).permutation(len(self.pairs))
        yield from (int(k) for k in order if k != index)

    def _readable(self, index: int) -> bool:
        """Whether pair ``index`` can be read: decoded into the cache on the first call, or noted as
        unreadable (once per process)."""
        if index in self._cache:
            return True
        if index in self._unreadable:
            return False
        try:
            self._decoded(index)
        except UNREADABLE_PAIR_ERRORS as exc:
            self._unreadable[index] = str(exc)
            self._notes.unreadable_pairs[self.pairs[index].name] = str(exc)
            return False
        return True

    def _decoded(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Pair ``index``, decoded on the first call; an unreadable one raises."""
        if index not in self._cache:
            self._cache[index] = load_pair(self.pairs[index])
        return self._cache[index]

    def network_masks(self, index: int) -> tuple[np.ndarray, ...]:
        """The network masks of pair ``index`` (float32 {0, 1}, the photo's size); () when none.
        With ``stand_ins``, those of its :meth:`stand_in` that can be read."""
        from ..imageio import read_mask
        from ..masks import match_mask_to_image

        if self.stand_ins:
            index = self.stand_in(index)
        if index not in self._network:
            pair = self.pairs[index]
            shape = self._decoded(index)[1].shape
            found = []
            for path in self._network_paths.get(index, ()):
                try:
                    mask, _ = match_mask_to_image(read_mask(path), shape, str(pair.image), str(path))
                except UNREADABLE_PAIR_ERRORS as exc:
                    if not self.stand_ins:
                        raise
                    self._notes.unreadable_network_masks[str(path)] = str(exc)
                    continue
                found.append(mask.probability() >= 0.5)
            # Kept as bool, a quarter of float32: 400 composites' masks (736 Mpx) took 2.9 GB as floats.
            self._network[index] = tuple(found)
        return tuple(kept.astype(np.float32) for kept in self._network[index])
