"""The validation sets a run scores on (held-out pairs and named --val-set folders): --val-set parsed, each
set's pairs found and read once (:func:`validation_sets`), and a model's scores on them (:func:`validation_scores`)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from ..evaluation import Sample
from ..pairing import FilePair
from ..presets import check_ratios
from .data import synthetic_samples, too_many_unreadable, training_pairs, unusable_pairs_error
from .options import TrainOptions

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ValidationSet:
    """One validation set's samples, held in memory for the whole run: score keys start with
    ``prefix``; ``ratios`` are the stage ratios it is refined with (None = the engine's default);
    ``left_out`` names its pairs that could not be read."""

    prefix: str
    samples: list[Sample]
    ratios: tuple[float, ...] | None
    left_out: tuple[str, ...] = ()


def validation_sets(val_pairs: list[FilePair], val_sets: dict[str, Path], options: TrainOptions,
                    found: dict[str, list[FilePair]] | None = None) -> list[ValidationSet]:
    """Every validation set's samples, read once.

    The held-out pairs (keys ``coarse_iou`` .. ``refined_mba``) get fixed synthetic coarse masks
    and one stage at s = 1, as they are low resolution. Each named set ``NAME`` (keys
    ``NAME_coarse_iou`` ..) takes its first ``val_images`` items: a BIG-layout folder's ``_im``,
    ``_seg`` and ``_gt`` triples (those without ``_gt`` left out), refined with ``val_ratios``, or
    an images/ + masks/ folder treated like the held-out pairs. They stay in memory for the run
    (BIG-layout images at full size). ``found`` holds the sets' pairs where they were found already
    (:func:`val_set_pairs`)."""
    ratios = check_ratios(options.val_ratios) if options.val_ratios else None
    sets = [synthetic_set("", val_pairs, "to validate on")]
    for name, folder in val_sets.items():
        sets.append(folder_set(folder, name, options.val_images, ratios, (found or {}).get(name)))
    return sets


def synthetic_set(prefix: str, pairs: list[FilePair], where: str) -> ValidationSet:
    """The validation set of ``pairs`` (their masks the GT) with synthetic coarse masks, refined in
    one stage at s = 1. A pair that cannot be read is left out by :func:`checked_left_out`'s rule,
    ``where`` naming the set."""
    left_out: dict[str, str] = {}
    samples = list(synthetic_samples(pairs, on_error=lambda name, exc: left_out.setdefault(name, str(exc))))
    return ValidationSet(prefix, samples, (1.0,), checked_left_out(left_out, len(pairs), where))


def checked_left_out(left_out: dict[str, str], total: int, where: str) -> tuple[str, ...]:
    """The names of the pairs of a validation set of ``total`` left out as unreadable (``left_out``:
    name: the reason, naming the file), each warned of. More than data.MOST_UNREADABLE of them raise the
    ValueError of :func:`~.data.unusable_pairs_error`, ``where`` naming the set."""
    if too_many_unreadable(len(left_out), total):
        raise unusable_pairs_error(list(left_out.values()), total, where)
    for reason in left_out.values():
        logger.warning("%s; left out of validation", reason)
    return tuple(left_out)


def validation_scores(model: torch.nn.Module, device: torch.device,
                      sets: list[ValidationSet]) -> dict[str, float]:
    """Coarse vs refined IoU/mBA of ``model`` on every validation set (see :func:`validation_sets`).
    The model is left in eval mode."""
    from ..engine import Refiner
    from ..evaluation import evaluate

    refiner = Refiner.from_model(model, device=str(device))
    scores: dict[str, float] = {}
    for validation_set in sets:
        evaluation = evaluate(refiner, validation_set.samples, ratios=validation_set.ratios)
        scores.update(evaluation.scores(validation_set.prefix))
    return scores


def parse_val_sets(specs: list[str]) -> dict[str, Path]:
    """``["thin=THIN_DIR", ...]`` as {name: folder}; names are letters, digits, - and _."""
    import re

    sets: dict[str, Path] = {}
    for spec in specs:
        name, sep, path = spec.partition("=")
        if not sep or not re.fullmatch(r"[A-Za-z0-9_-]+", name) or not path:
            raise ValueError(f"validation set {spec!r}: expected NAME=FOLDER (NAME of letters, digits, - and _)")
        if name in sets:
            raise ValueError(f"validation set {name!r} given twice")
        if not Path(path).is_dir():
            raise ValueError(f"validation set {name!r}: {path} is not a folder")
        sets[name] = Path(path)
    return sets


def val_set_pairs(name: str, folder: Path) -> list[FilePair]:
    """The pairs in validation set ``name``'s ``folder``, as :func:`~crm_cli.pairing.scan_pairs` finds
    them; none is a NoPairsError (a usage error) naming the set. In the BIG layout only the pairs with
    a ground truth ``<name>_gt`` (:func:`~crm_cli.pairing.ground_truth_pairs`): the others are left out
    with a warning, and none with one is a NoPairsError too (its ``_seg`` masks are coarse masks to
    refine, not ground truths to score against)."""
    from ..pairing import NoPairsError, ground_truth_pairs, scan_pairs

    try:
        found = scan_pairs(folder, command="crm train")
        if not found.pairs:
            problems = found.problems
            raise NoPairsError(f"no image/mask pairs under {folder}" + (f", e.g. {problems[0]}" if problems else ""))
        pairs, left_out = ground_truth_pairs(found, folder, "left out", "a BIG-layout set is scored against its _gt "
                                             "masks (the _seg ones are the coarse masks it refines)")
    except NoPairsError as exc:
        raise NoPairsError(f"--val-set {name}: {exc}") from None
    for note in left_out:
        logger.warning("--val-set %s: %s", name, note)
    return pairs


def folder_set(folder: Path, name: str, limit: int, ratios: tuple[float, ...] | None,
               found: list[FilePair] | None = None) -> ValidationSet:
    """Validation set ``name``'s first ``limit`` samples from its ``folder`` (score keys ``NAME_...``):
    BIG layout (the triples with a ground truth, their own coarse masks refined with ``ratios``) or
    images/ + masks/ (the masks are the GT; synthetic coarse masks, one stage at s = 1). ``found``
    are its pairs where they were found already, else they are found here (:func:`val_set_pairs`)."""
    from ..evaluation import folder_samples

    prefix = name + "_"
    if found is None:
        found = val_set_pairs(name, folder)
    triples = [p for p in found if p.gt is not None]
    if triples:
        # A triple that cannot be read follows the rule of synthetic_set's pairs: left out with a
        # warning, and more than data.MOST_UNREADABLE of them stop the run before its first step
        # (loop.Trainer.run reads the validation sets first).
        chosen = triples[:limit]
        left_out: dict[str, str] = {}
        samples = list(folder_samples(chosen, on_error=lambda pair, exc: left_out.setdefault(pair, str(exc))))
        return ValidationSet(prefix, samples, ratios,
                             checked_left_out(left_out, len(chosen), f"of validation set {name}"))
    # The pairs found above, not the folder walked again.
    return synthetic_set(prefix, training_pairs(found, folder)[:limit], f"of validation set {name}")
