"""Measuring a refiner: coarse against refined IoU/mBA for a set of pairs, and the timing protocol.

One scoring function (:func:`evaluate`) serves ``crm eval``, training-time validation and the
benchmarks, so their numbers on the same pairs agree:

- pairs with their own coarse masks (the BIG layout) are read as ``crm eval`` reads them
  (:func:`folder_samples`);
- image/GT pairs get the training recipe's synthetic coarse masks from one fixed seed per pair
  (``training.data.synthetic_samples``; this module never imports training);
- the refined mask is scored as it would be written (the soft 8-bit output);
- except that ``crm eval`` passes images under ``config.MIN_REFINE_SIDE`` through unrefined, as
  ``crm refine`` and ``crm batch`` write them (``min_side``), while validation and the benchmarks
  refine every image: their numbers differ on such images only (DUTS-TR's photos are 183 px and up).

:func:`time_refine` is ``crm time``'s protocol (one warm-up, then N timed runs, medians per stage,
peak memory from runtime.py).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np

from .config import SMALL_PHOTO
from .metrics import DatasetScore, score_pair
from .pairing import FilePair
from .presets import Preset

SCORE_KEYS = ("coarse_iou", "coarse_mba", "refined_iou", "refined_mba")
# What one bad pair can raise while it is read, refined, scored or written; crm batch and eval
# report it for that pair and go on.
PAIR_ERRORS = (OSError, ValueError, RuntimeError, MemoryError)


def pair_failure(exc: Exception) -> Exception | None:
    """``exc`` as the failure of one pair, which the others outlive: itself for PAIR_ERRORS, a
    MemoryError for another library's shortage of memory (``errors.host_memory_error``: one image too
    large for OpenCV, ONNX Runtime or torch on the CPU); None for anything else."""
    from .errors import host_memory_error

    if isinstance(exc, PAIR_ERRORS):
        return exc
    return host_memory_error(exc)


@dataclass
class Sample:
    """One scored pair: the image, the coarse mask the refiner gets, and the ground truth.

    ``coarse_scoring`` is scored in place of ``coarse`` when given (a palette mask, a 0/1 mask or
    one of 0 and one value scores its foreground, see ``MaskData.scoring_values``).
    """

    name: str
    image: np.ndarray
    coarse: np.ndarray
    gt: np.ndarray
    coarse_scoring: np.ndarray | None = None
    notes: list[str] = field(default_factory=list)


def folder_samples(pairs: Iterable[FilePair],
                   on_error: Callable[[str, Exception], None] | None = None, *,
                   photo_bits: int | None = None) -> Iterator[Sample]:
    """Samples of pairs with their own coarse mask and a GT (the BIG layout), read lazily.

    A pair that cannot be read raises, or with ``on_error`` is passed to it (name, error) and left
    out, and the next pair comes. ``photo_bits``: the scale of 16-bit photos (``imageio.read_image``),
    None for each file's own.
    """
    for pair in pairs:
        try:
            sample = _folder_sample(pair, photo_bits)
        except Exception as exc:  # noqa: BLE001 - a pair's own failure is passed on, anything else raised
            failure = pair_failure(exc)
            if on_error is None or failure is None:
                raise
            on_error(pair.name, failure)
            continue
        yield sample


def _folder_sample(pair: FilePair, photo_bits: int | None = None) -> Sample:
    """One pair of :func:`folder_samples`, read now."""
    from .imageio import read_image_noted, read_mask
    from .masks import ids_note, weak_mask_note
    from .pipeline import fit_mask_to_image

    if pair.gt is None:
        raise ValueError(f"{pair.image}: no ground truth to score against")
    # The photo's notes (a 16-bit photo read on a smaller scale) come first, as crm refine lists them.
    image, orientation, notes = read_image_noted(pair.image, photo_bits=photo_bits)
    fit = partial(fit_mask_to_image, image_hw=image.shape[:2], image_orientation=orientation,
                  image_name=str(pair.image))
    coarse, coarse_notes = fit(read_mask(pair.mask), mask_name=str(pair.mask))
    gt, gt_notes = fit(read_mask(pair.gt), mask_name=str(pair.gt), role="ground truth")
    notes += coarse_notes + gt_notes
    # Both are read as one object here (crm eval has no --mode), so ids look-alikes are only named.
    notes += [note for mask, name in ((coarse, pair.mask), (gt, pair.gt))
              if (note := ids_note(mask, str(name), advice="")) is not None]
    probability = coarse.probability()
    if (note := weak_mask_note(probability, str(pair.mask))) is not None:
        notes.append(note)
    return Sample(pair.name, image, probability, gt.scoring_values(), coarse.scoring_values(), notes)


@dataclass
class Evaluation:
    """Dataset scores of the coarse and the refined masks, and with ``per_stage`` of the stages run
    at each ratio (``stages_by_ratio``: under ``auto`` each image has its own schedule)."""

    coarse: DatasetScore = field(default_factory=DatasetScore)
    refined: DatasetScore = field(default_factory=DatasetScore)
    stages_by_ratio: dict[float, DatasetScore] = field(default_factory=dict)
    images: list[dict[str, Any]] = field(default_factory=list)  # per image: schedule and both scores
    schedules: Counter[str] = field(default_factory=Counter)  # how often each schedule ran
    refine_seconds: float = 0.0

    @property
    def count(self) -> int:
        """How many pairs were scored."""
        return len(self.refined.images)

    def scores(self, prefix: str = "") -> dict[str, float]:
        """``{prefix}coarse_iou`` .. ``{prefix}refined_mba`` (an mBA without any boundary counts 0)."""
        values = (self.coarse.iou, self.coarse.mba or 0.0, self.refined.iou, self.refined.mba or 0.0)
        return {prefix + key: value for key, value in zip(SCORE_KEYS, values, strict=True)}


def evaluate(refiner: Any, samples: Iterable[Sample], preset: Preset | str | None = None, *,
             ratios: Sequence[float] | None = None, per_stage: bool = False, threshold: float | None = None,
             on_sample: Callable[[Sample, np.ndarray], None] | None = None,
             on_error: Callable[[str, Exception], None] | None = None, min_side: int = 0) -> Evaluation:
    """Refine every sample with ``refiner`` (an ``engine.Refiner``) and score coarse and refined.

    Args:
        preset, ratios: the refine settings (see ``Refiner.refine_detailed``).
        per_stage: also score every stage's output (each decoded at full size).
        threshold: score the refined masks (and the stages') binarised at probability > threshold;
            by default the 8-bit soft mask is scored, with the evaluation's > 128 rule.
        on_sample: called with each sample and its refined uint8 mask, soft or binarised as scored
            (to write it, or to advance a progress bar).
        on_error: called with a sample's name and the error when refining, scoring or ``on_sample``
            fails for it (:func:`pair_failure`); that sample is then left out of every score and the rest go
            on. Without it the error is raised.
        min_side: a sample whose image has a shorter side is not refined: its coarse mask is scored
            (and given to ``on_sample``) as the refined one, schedule ``"passthrough"``, as ``crm
            refine`` and ``crm batch`` write it (``config.MIN_REFINE_SIDE``; 0: every sample is refined).
    """
    from .outputs import render_output

    result = Evaluation()
    for sample in samples:
        try:
            start = time.perf_counter()
            passthrough = min(sample.image.shape[:2]) < min_side
            detail = None if passthrough else refiner.refine_detailed(
                sample.image, sample.coarse, ratios, keep_stages=per_stage, preset=preset)
            seconds = time.perf_counter() - start
            refined = render_output("soft", sample.coarse if detail is None else detail.probability,
                                    threshold=threshold)
            coarse = sample.coarse if sample.coarse_scoring is None else sample.coarse_scoring
            # The rendered soft mask is 8-bit levels even when its largest is 1, which binarize would
            # take for a 0/1 mask: it is cut at > 128 here.
            before, after = score_pair(coarse, sample.gt, sample.name), score_pair(soft_foreground(refined), sample.gt,
                                                                                   sample.name)
            stage_scores = []  # (ratio, score); none without per_stage
            for k, (ratio, stage) in enumerate(zip(detail.ratios, detail.stages, strict=False) if detail else ()):
                if k not in detail.skipped_stages:  # a stage skipped for size holds the mask it was given
                    stage_scores.append((ratio, score_pair(soft_foreground(render_output("soft", stage,
                                                                                         threshold=threshold)),
                                                           sample.gt, sample.name)))
            if on_sample is not None:
                on_sample(sample, refined)
        except Exception as exc:  # noqa: BLE001 - a pair's own failure is passed on, anything else raised
            failure = pair_failure(exc)
            if on_error is None or failure is None:
                raise
            on_error(sample.name, failure)
            continue
        # Counted only once the sample went through whole, so a failed one leaves no partial score.
        result.refine_seconds += seconds
        schedule = "passthrough" if detail is None else detail.schedule
        result.schedules[schedule] += 1
        result.coarse.add(before)
        result.refined.add(after)
        result.images.append({"name": sample.name, "schedule": schedule, "passthrough": detail is None,
                              "guard_restored": 0 if detail is None else detail.guard_restored,
                              "boundary_kept": detail is not None and detail.boundary_kept,
                              "kept_coarse": detail is not None and detail.kept_coarse,
                              "change_confidence": None if detail is None else detail.change_confidence,
                              "snap_px": 0 if detail is None else detail.snap_px,
                              "by_partner": detail is not None and detail.by_partner,
                              "by_lone_stage": detail is not None and detail.by_lone_stage,
                              "kept_given": SMALL_PHOTO if detail is None else detail.kept_given,
                              "coarse_iou": before.iou, "refined_iou": after.iou,
                              "coarse_mba": before.mba, "refined_mba": after.mba})
        for ratio, stage_score in stage_scores:
            result.stages_by_ratio.setdefault(float(ratio), DatasetScore()).add(stage_score)
    return result


def soft_foreground(levels: np.ndarray) -> np.ndarray:
    """The foreground of a rendered 8-bit soft mask (``outputs.render_output``): levels over 128, as
    ``masks.binarize`` cuts 8-bit values, but never read as a 0/1 mask when its largest level is 1."""
    return np.asarray(levels) > 128


def time_refine(refiner: Any, image: np.ndarray, coarse: np.ndarray, preset: Preset | str | None = None,
                repeat: int = 3) -> dict[str, Any]:
    """``crm time``'s protocol: one warm-up, then ``repeat`` timed refinements.

    Returns the median and minimum total seconds, the median encoder/decoder seconds of each stage
    of the schedule run (a region pass's stages first, marked ``"pass": "regions"``), megapixels
    per second, and the peak memory (process RSS; allocated GPU memory on CUDA, counted after the
    warm-up).
    """
    from .runtime import peak_gpu_mb, peak_rss_mb

    if repeat < 1:
        raise ValueError(f"repeat must be at least 1, got {repeat}")
    is_cuda = refiner.device_type == "cuda"
    refiner.refine_detailed(image, coarse, preset=preset)  # warm-up
    if is_cuda:
        import torch

        torch.cuda.reset_peak_memory_stats(refiner.runner.device)
    runs = []
    for _ in range(repeat):
        start = time.perf_counter()
        result = refiner.refine_detailed(image, coarse, preset=preset)
        runs.append((time.perf_counter() - start, result.timings))
    totals = np.array([seconds for seconds, _ in runs])
    median = float(np.median(totals))
    stages = []
    # The schedule run (auto picks it from the mask): a precise mask's region pass, then the stages.
    passes = [("regions", ratio) for ratio in result.regions] + [("stages", ratio) for ratio in result.ratios]
    for k, (part, ratio) in enumerate(passes):
        stages.append({
            "ratio": ratio,
            "pass": part,
            "encode_s": float(np.median([timings[k].encode_s for _, timings in runs])),
            "decode_s": float(np.median([timings[k].decode_s for _, timings in runs])),
        })
    height, width = image.shape[:2]
    return {
        "width": width, "height": height, "device": refiner.device_name, "ratios": list(result.ratios),
        "regions": list(result.regions), "schedule": result.schedule, "snap_px": result.snap_px,
        "by_partner": result.by_partner, "by_lone_stage": result.by_lone_stage, "kept_given": result.kept_given,
        "repeat": repeat, "total_s": median, "min_s": float(totals.min()),
        "megapixels_per_s": width * height / 1e6 / median, "stages": stages,
        "peak_rss_mb": None if (peak := peak_rss_mb()) is None else round(peak, 1),
        "peak_gpu_mb": round(peak_gpu_mb(refiner.runner.device), 1) if is_cuda else None,
        **backend_versions(refiner),
    }


def backend_versions(refiner: Any) -> dict[str, Any]:
    """The backend a Refiner runs on, its library's version and its CPU threads (None: the default);
    for weights with a partner also ``partner_backend``, the partner's, with its library's version
    when that is another library and ``partner_threads`` when its thread count differs; for weights
    with lone-stage weights also ``lone_stage_backend``."""
    versions = _runner_versions(refiner)
    if refiner.partner is not None:
        partner = _runner_versions(refiner.partner)
        versions["partner_backend"] = partner.pop("backend")
        partner_threads = partner.pop("threads")
        if partner_threads != versions["threads"]:
            versions["partner_threads"] = partner_threads
        versions.update({key: value for key, value in partner.items() if key not in versions})
    lone_stage = getattr(refiner, "lone_stage", None)  # a stand-in refiner may not have the attribute
    if lone_stage is not None:
        versions["lone_stage_backend"] = lone_stage.backend
    return versions


def _runner_versions(refiner: Any) -> dict[str, Any]:
    """``backend_versions`` of one Refiner, its partner left out."""
    if refiner.backend == "onnx":
        import onnxruntime

        return {"backend": "onnx", "onnxruntime": onnxruntime.__version__, "threads": refiner.runner.threads}
    import torch

    return {"backend": "torch", "torch": torch.__version__, "threads": torch.get_num_threads()}
