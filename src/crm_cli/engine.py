"""The inference engine: ``Refiner`` runs a model on many image/mask pairs; loading is apart.

Multi-resolution schedule (DESIGN §2): for each ratio s, the image and the current mask are
resized to s x full size, padded, encoded once, and the implicit decoder is queried on the grid the
next stage consumes (the full grid for the last stage). Each stage's soft output is the next
stage's mask. One stage is stages.py's; this module plans the schedule and chains the stages.

Loading: ``Refiner.from_checkpoint(path)`` (or ``Refiner()`` / ``Refiner(path)``) reads a
checkpoint; ``Refiner(model)`` runs an in-memory model as given. The stages run on a backend:
torch (``stages.StageRunner``, any device) or, on a CPU, ONNX Runtime with a NumPy decoder
(``onnx_runner.OnnxStageRunner``) when the weights ship an exported encoder; that path never
imports torch (see :func:`choose_backend`). Process-wide torch settings (threads, cuDNN
autotuning) are runtime.configure_torch's, not this module's.
"""

from __future__ import annotations

import functools
import logging
import math
import os
import threading
from collections.abc import Iterable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .checkpoint import (
    SAFETENSORS_KIND,
    CheckpointInfo,
    PartnerEntry,
    WeightsError,
    WeightsSidecar,
    check_partner_digest,
    default_weights_path,
    lone_stage_weights,
    onnx_encoder_path,
    partner_weights,
    recorded_onnx_encoder,
    sidecar_path,
)
from .config import BACKEND_CHOICES
from .edge_snap import snap_radius, snap_to_edges
from .errors import host_memory_error
from .guard import (
    GUARD_CERTAINTY,
    apply_guard,
    certainty_pull,
    change_confidence,
    change_weight,
    free_near,
    holes_on_edges,
    keep_given_lines,
    keep_precise_boundary,
    region_changes,
)
from .masks import check_mask_fits, check_rgb_image, checked_mask, has_boundary, strict_probability, weak_mask_note
from .photo_memo import held_photo, memoized, same_photo
from .photo_noise import photo_is_noise
from .presets import Preset, get_preset
from .resampling import area_or_linear
from .runtime import numpy_pages_unadvised, release_free_heap, usable_threads
from .schedule import (
    CHANGE_CONFIDENCE_RAMP,
    REGION_MAX_ATTACHED,
    REGION_MAX_SHARE,
    FinalStage,
    Schedule,
    choose_schedule,
    fitting_stages,
    guard_distance,
    photo_is_flat,
    photo_noise_level,
    region_radius,
    schedule_text,
    stage_fits,
    stage_size,
    trust_and_noise,
)
from .stage_geometry import StageTiming, check_precision, check_tile_options, whole_number

if TYPE_CHECKING:
    import torch
    from PIL import Image

__all__ = ["BACKENDS", "MIN_STAGE_SIDE", "RefineResult", "Refiner", "choose_backend"]

# What a caller should know about how a Refiner was loaded (unverified weights, a slow precision)
# is logged here as a warning: without any logging set up, Python prints it on stderr.
logger = logging.getLogger(__name__)
# Set while a Refiner builds its partner or lone-stage weights, which share its device and precision: a
# warning about those is the Refiner's own, shown once.
_building_helper = threading.local()

BACKENDS = BACKEND_CHOICES

# Stages whose input would be smaller than this (shorter side) are skipped, except the last. The
# model was trained on 224-px crops; on a smaller stage the whole object is tiny and it fills holes
# or erases thin parts (carvana-dev: skipping the 160-px stage gained 0.4 IoU and 0.8 mBA).
MIN_STAGE_SIDE = 224
# With the guard on, the first stage is decoded only within this many free distances of the coarse boundary,
GUARD_BAND = 3
# ... and a final stage that runs alone (precise masks, small photos, every earlier stage too small)
# within this many: at full size that band is most of its cost, and from two free distances on the
# guard's full pull (a flip needs the model 99% sure) holds anyway. On a 4K IS-Net car its decoding
# went from 0.53 to 0.36 s and no pixel changed side; on coarse-to-fine schedules two cost
# carvana-dev 0.04 IoU, so they keep three.
FINAL_ONLY_GUARD_BAND = 2
# Lone-stage weights run a lone final stage only where the mask's boundary sharpness (the plan's,
# schedule.boundary_sharpness; None where it was not measured) is below this: a boundary this sharp
# lies on crisp edges, a mask to keep. Session 69, lone-stage weights crm_mobilenet_v2_thin_composites:
# the lines, scenes and text of do_no_harm.py that plan a lone final stage read 3.68-18.7 (1-px lines
# at 2K fell to 98.76 IoU on that route, 6-px lines turned to 98.73; its disc under noise, 2.8 at
# 1024 px, comes back whole either way), the thin set's coarse masks 1.1-3.3
# (its mBA 85.42 routed whatever the sharpness, 85.46 below 3.0: the two above 3.0 lost 0.1 and
# 1.7); 15 of the thin photos' IS-Net masks' 39 lone stages read 3.0-5.2 (mBA 71.23 with all 39
# routed, 70.71 with the 24 below 3.0, 70.09 with none).
LONE_STAGE_MAX_SHARPNESS = 3.0
# ... and only where the mask loses at least this much detail (schedule.detail_loss) at the finest coarse
# stage: the lone-stage weights learnt thin structures, and grow the objects of smooth masks (IS-Net
# masks of cars at 512 px: the one car routed, at 0.056, went from 92.96 to 92.13 IoU, 1.18 below its
# coarse mask; the thin set's masks below 0.1, 3 of 43 routed, gained nothing there).
LONE_STAGE_MIN_DETAIL = 0.1
# Why a refinement may return the given mask before any stage runs (RefineResult.kept_given): it has no
# boundary (empty or full), or the photo is one flat colour, or nothing but noise (keep_given rules).
KEPT_GIVEN_REASONS = ("no_boundary", "flat_photo", "noise_photo")


@dataclass
class RefineResult:
    """Final probability map plus optional per-stage maps and timings."""

    probability: np.ndarray
    stages: list[np.ndarray] = field(default_factory=list)
    # Indices into ``stages`` of the stages skipped for size (``min_stage_side``): each holds the mask
    # that stage was given, no output of its own.
    skipped_stages: list[int] = field(default_factory=list)
    timings: list[StageTiming] = field(default_factory=list)
    ratios: tuple[float, ...] = ()  # the schedule that was run (chosen per image by ``auto``)
    guard_px: float | None = None  # the trust region's free distance, when the guard was on
    trust: float = 0.0  # 0..1: how much evidence the guard asked for right at the coarse boundary
    guard_restored: int = 0  # pixels whose side of 0.5 the guard kept as in the coarse mask
    regions: tuple[float, ...] = ()  # a precise mask's region pass (schedule.py), if one ran
    region_pixels: int = 0  # pixels the region pass changed
    region_refused: int = 0  # pixels a region pass proposed and did not take: over REGION_MAX_SHARE
    holes_kept: int = 0  # pixels of holes a region pass would have filled, left open: on the photo's edges
    boundary_shift: float | None = None  # mean boundary move, measured when the schedule sets a min_shift
    boundary_kept: bool = False  # the move was below it and the coarse boundary was kept
    change_confidence: float | None = None  # mean |2p - 1| where the mask changed side (guard on)
    kept_coarse: bool = False  # the model was unsure of its changes: the coarse mask was kept (near the
    # threshold, CHANGE_CONFIDENCE_RAMP, with less than half of the refinement blended in)
    change_weight: float = 1.0  # the share of the refinement taken by the gate (guard.change_weight)
    mirrored: bool = False  # the last stage was averaged with its run on the mirrored image
    snap_px: int = 0  # the edge snap's radius (edge_snap.py); 0 when it did not run
    # The weights' partner refined the whole image (Refiner's partner_below_side and settings rule);
    # False when these weights did, even where the partner ran their region pass.
    by_partner: bool = False
    # The weights' lone-stage weights ran the final stage (a plan of that stage alone: Refiner's
    # lone_stage_model); the plan, trust region and snap are these weights' own.
    by_lone_stage: bool = False
    # Why the given mask came back as it was before any stage ran (KEPT_GIVEN_REASONS), or None when the
    # stages ran. ``ratios`` and ``timings`` then hold the planned stages, each timed at zero.
    kept_given: str | None = None

    @property
    def schedule(self) -> str:
        """The stages run, as text: ``"0.25,0.5,1"`` or ``"1+regions 0.25,0.5"``."""
        return schedule_text(self.ratios, self.regions)


def finest_detail(plan: Schedule) -> float | None:
    """The detail the plan measured at its finest coarse stage (the largest ratio below 1 in
    ``plan.detail``), or None where it measured none."""
    coarse = [ratio for ratio in plan.detail if ratio < 1.0]
    return float(plan.detail[max(coarse)]) if coarse else None


def _auto_own(settings: Preset) -> bool:
    """Whether ``settings`` are ``auto``'s own schedule with its guard (the one that partner and
    lone-stage weights were paired for)."""
    return settings.adaptive and settings.guard and settings.ratios == get_preset("auto").ratios


def plan_schedule(settings: Preset, image: np.ndarray, foreground: np.ndarray, min_side: int,
                  final: FinalStage = FinalStage()) -> Schedule:
    """The stages, trust-region distance and trust (and region pass, for ``auto``) for one image;
    ``final``: how ``auto`` runs the final stage (the weights' ``FinalStage``)."""
    if settings.adaptive:
        return choose_schedule(foreground, settings.ratios, image if settings.guard else None, min_side=min_side,
                               final=final)
    height, width = foreground.shape
    ratios = settings.ratios
    fitting = fitting_stages(height, width, ratios, min_side)
    free_px = guard_distance(ratios[(fitting or [len(ratios) - 1])[0]])
    trust, noise = 0.0, None
    if settings.guard and has_boundary(foreground):
        trust, noise = trust_and_noise(image, foreground, ratios, min_side)
    return Schedule(ratios, free_px, trust, final_only=not fitting, noise=noise)


def unrefined(result: RefineResult, probability: np.ndarray, keep_stages: bool, reason: str) -> RefineResult:
    """``result`` answered with ``probability`` and no stage run, for ``reason`` (one of
    KEPT_GIVEN_REASONS): each of its planned stages (its ``ratios``) timed at zero and, with
    ``keep_stages``, a copy of that answer (so that per-stage scores count every image)."""
    if reason not in KEPT_GIVEN_REASONS:
        raise ValueError(f"unknown reason {reason!r}; choose {', '.join(KEPT_GIVEN_REASONS)}")
    result.kept_given = reason
    result.probability = probability
    result.stages = [probability.copy() for _ in result.ratios] if keep_stages else []
    result.timings = [StageTiming(r, 0.0, 0.0) for r in result.ratios]
    return result


def resize_map(values: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Float32 (H, W) map resized to ``size`` = (height, width), each axis on its own: area average
    along an axis that shrinks, bilinear along one that grows (``resampling.area_or_linear``)."""
    if values.shape == size:
        return values.astype(np.float32)
    return area_or_linear(values.astype(np.float32, copy=False), size)


def backend_name(backend: str | None) -> str:
    """``backend`` as one of BACKENDS, ignoring case and spaces (None: "auto"); ValueError otherwise."""
    name = (backend or "auto").strip().lower() if isinstance(backend, str) or backend is None else backend
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose {', '.join(BACKENDS)}")
    return name


@functools.cache
def onnxruntime_problem() -> str | None:
    """Why ONNX Runtime cannot run here, in one line ("not installed", or the error its import raised:
    an installed package whose native library does not load, as in a container without libgomp), or
    None when it imports. Imported at most once per process."""
    from importlib.util import find_spec

    if find_spec("onnxruntime") is None:
        return "not installed"
    try:
        import onnxruntime  # noqa: F401 - the import is the test
    except Exception as exc:  # noqa: BLE001 - ImportError, OSError of a native library, anything of its own
        first_line = (str(exc).strip().splitlines() or [""])[0]
        return f"it does not import ({type(exc).__name__}: {first_line})"
    return None


def choose_backend(weights: Path | str | WeightsSidecar | None, device: str = "auto", precision: str = "fp32",
                   backend: str = "auto") -> Path | None:
    """The ONNX encoder to refine with (the ``onnx`` backend), or None for torch.

    ``auto`` takes ONNX Runtime when it imports (:func:`onnxruntime_problem`), the weights are a .safetensors checkpoint
    whose sidecar names an encoder exported from them (``onnx_export``), the precision is fp32,
    and the device is the CPU: ``cpu``, or ``auto`` where no GPU is (:func:`_on_cpu`: judged without
    importing torch unless a driver is there). ``onnx`` insists on it
    (ValueError / WeightsError naming what is missing); ``torch`` never takes it. ``weights``: a
    path (None: the shipped weights), or the ``checkpoint.WeightsSidecar`` that the whole load reads.
    """
    backend = backend_name(backend)
    if backend == "torch":
        return None
    from .devices import device_name

    side = WeightsSidecar.of(weights if weights is not None else default_weights_path())
    path = side.weights
    kind = device_name(device)  # cpu:0 is the CPU, as everywhere else
    if backend == "onnx":
        if kind not in ("auto", "cpu"):
            raise ValueError(f"the onnx backend runs on the CPU only, not on device {device!r} "
                             "(use the torch backend)")
        if precision != "fp32":
            raise ValueError(f"the onnx backend runs in fp32, not in precision {precision!r} (use the torch backend)")
        if (problem := onnxruntime_problem()) == "not installed":
            raise ValueError("the onnx backend needs onnxruntime: pip install onnxruntime")
        if problem is not None:
            raise ValueError(f"the onnx backend needs onnxruntime, but {problem}")
        if side.kind != SAFETENSORS_KIND:  # a missing file or a directory fails here too
            raise WeightsError(f"{path}: the onnx backend runs .safetensors weights, not a torch training "
                               "checkpoint (use the torch backend)")
        encoder = onnx_encoder_path(side)
        if encoder is None:
            raise WeightsError(f"{path}: no ONNX encoder exported from these weights "
                               f"(python -m crm_cli.onnx_export {path})")
        return encoder
    # A missing file or a non-checkpoint fails here as loading would, before torch is imported.
    if precision != "fp32" or side.kind != SAFETENSORS_KIND:
        return None
    encoder = onnx_encoder_path(side)
    if encoder is None or not _on_cpu(kind):
        return None
    # Checked last: it imports ONNX Runtime, which only a CPU run with an exported encoder needs.
    if (problem := onnxruntime_problem()) is not None:
        if problem != "not installed":  # installed, so meant to be used: say why torch runs instead
            logger.warning("onnxruntime is installed, but %s: refining with torch (slower on a CPU)", problem)
        return None
    return encoder


def _on_cpu(kind: str) -> bool:
    """Whether the device ``kind`` (``devices.device_name``'s spelling) is the CPU: ``cpu``, or ``auto``
    on a machine where no GPU can be present (judged without importing torch) or where torch, asked
    because a driver is there, sees none (a CPU-only torch beside an NVIDIA driver) or does not import."""
    from .devices import accelerator_possible, available_devices

    if kind != "auto":
        return kind == "cpu"
    if not accelerator_possible():
        return True
    try:  # imports torch, which the GPU would need anyway
        return all(name == "cpu" for name in available_devices())
    except (ImportError, OSError):
        return True


def warn_of_missing_encoder(sidecar: WeightsSidecar, device: str) -> None:
    """Warn when the sidecar names an ONNX encoder exported from these weights that is not beside them,
    on a device where it would have run (removed, or not copied with the weights): nothing else would
    say why the Refiner runs on torch, slower."""
    from .devices import device_name

    recorded = recorded_onnx_encoder(sidecar)
    if recorded is None or recorded.is_file() or not _on_cpu(device_name(device)):
        return
    path = sidecar.weights
    logger.warning("%s: the exported encoder %s that its sidecar names is missing: refining with torch, about 2.5 "
                   "times slower on a CPU (copy it beside the weights, or export it again: python -m "
                   "crm_cli.onnx_export %s)", path, recorded.name, path)


def _helper_refiner(model: Any, recorded: PartnerEntry | None, option: str, sidecar: WeightsSidecar | None,
                    options: dict[str, Any]) -> Refiner | None:
    """A Refiner's partner or lone-stage weights: ``model`` as given (None or False: none), or the file
    of the sidecar entry ``recorded``, checked against its sha256; built with ``options`` and without
    helpers of its own. ``option`` names the argument in a TypeError."""
    if recorded is not None:
        model = recorded.path
    if model is None or model is False:
        return None
    _building_helper.active = True
    try:
        helper = Refiner(model, partner_model=False, lone_stage_model=False, **options)
    except TypeError as exc:
        raise TypeError(f"{option}: {exc}") from None
    finally:
        _building_helper.active = False
    if recorded is not None:
        assert sidecar is not None
        check_partner_digest(recorded.path, helper.weights_info.sha256, recorded.sha256, sidecar.weights)
    return helper


class Refiner:
    """Refine any number of (image, mask) pairs with one CRM model (and its partner, when the weights
    name one: ``partner_model``) on one device.

    Example:
        >>> refiner = Refiner()  # shipped weights, best device (= Refiner.from_checkpoint())
        >>> prob = refiner.refine(rgb, coarse)  # float32 (H, W) in [0, 1]

    The stages run on ``self.runner``: a ``stages.StageRunner`` (``backend`` "torch") or an
    ``onnx_runner.OnnxStageRunner`` ("onnx"), which holds the device and tile options.

    One Refiner may be shared between threads: its refinements run one at a time (the runner's
    buffers, such as the onnx backend's kept latent, serve one refinement at a time).

    A long-running process that refines photos of varied sizes keeps the memory glibc freed
    (resident memory grew from 0.55 to 1.5 GB over 300 photos of 300-1000 px, then levelled off);
    :meth:`release_memory` hands it back, for a server to call when it goes idle.

    A Refiner pickles and deep-copies (process pools, joblib, Dask): on torch the copy carries the
    model's weights; on onnx it carries its encoder's path and reopens that file, which must still
    have the sha256 the original loaded (``checkpoint.WeightsError`` otherwise).
    """

    def __init__(self, model: torch.nn.Module | str | Path | None = None, device: str | torch.device = "auto", *,
                 info: CheckpointInfo | None = None, precision: str = "fp32", channels_last: bool | None = None,
                 min_stage_side: int = MIN_STAGE_SIDE, fold_bn: bool = True, final_stage: FinalStage | None = None,
                 backend: str = "auto", threads: int | None = None,
                 partner_model: torch.nn.Module | str | Path | bool | None = None,
                 partner_below_side: int | None = None,
                 lone_stage_model: torch.nn.Module | str | Path | bool | None = None, **tiles: int) -> None:
        """Args:
            model: a CRMNet, run as given on torch (never folded, its memory format kept unless
                ``channels_last``), or a checkpoint path (None: the shipped weights) loaded as
                :meth:`from_checkpoint` does, with BatchNorm folded into the convolutions (``fold_bn``).
            device: "auto" (CUDA, else MPS, else the CPU), "cpu", "cuda", "cuda:N" or "mps", in any
                case, or a ``torch.device``; a device that is not present is a ``devices.DeviceError``,
                a value that is neither a TypeError.
            info: what is known about ``model``'s checkpoint (``weights_info``).
            precision: the encoder's precision on torch, "fp32" (default), "fp16" or "bf16"; the
                reduced ones are meant for GPUs (on a CPU they run, much slower, with a warning).
            channels_last: NHWC on torch; by default on for CUDA and CPU when the model was loaded here.
            min_stage_side: stages (but the last) whose input is shorter than this are skipped; a
                whole number >= 0 (0: none is skipped).
            fold_bn: fold BatchNorm into the convolutions of a model loaded here (torch; False keeps
                ``auto`` on torch).
            final_stage: how ``auto`` runs the final stage by photo size, a ``schedule.FinalStage``; by
                default the weights' (``CheckpointInfo.final_stage``: their sidecar's entry over
                ``FinalStage``'s defaults).
            backend: "auto" (default; :func:`choose_backend`: onnx on a CPU when the weights ship an
                exported encoder, torch otherwise), "torch" or "onnx", in any case; an in-memory
                model is torch's.
            threads: CPU threads of the onnx backend's encoder and decoder, a whole number >= 0
                (None or 0: ONNX Runtime's default, the physical cores, and a decoder thread per CPU
                the process may use); torch's are process-wide (``runtime.configure_torch``).
            partner_model: the partner, a model that runs ``auto``'s region pass (the coarse stages
                that decide whether whole regions belong) and every refinement but ``auto``'s own
                (a fixed preset or ratios, the guard off) or of a photo under
                ``partner_below_side``: a CRMNet or a checkpoint path, loaded with the same options.
                None (default): the one the weights' sidecar names (``checkpoint.partner_weights``,
                its sha256 checked), else none; False: none (``model`` runs everything).
            partner_below_side: photos whose longer side is shorter than this (px) are refined wholly
                by the partner; None (default): the sidecar's ``below_side`` with the partner it
                names, else 0 (none).
            lone_stage_model: the lone-stage weights, a model that runs the final stage of the
                refinements these weights make themselves with ``auto``'s own schedule and guard
                when that stage runs alone (no coarse stage, no region pass), with its own
                ``final_stage`` certainty and gate: a CRMNet or a checkpoint path, loaded with the
                same options. None (default): the one the weights' sidecar names
                (``checkpoint.lone_stage_weights``, its sha256 checked), else none; False: none.
            tiles: tile sizes and the decode budget (see ``StageRunner``; ``stage_geometry.TILE_MINIMUMS``
                gives each one's smallest value).

        Raises:
            ValueError: an option out of range or that the backend cannot honour (the onnx backend
                asked for without onnxruntime installed, or on a GPU).
            TypeError: a ``final_stage`` that is not a ``FinalStage``, an unknown tile option, a
                ``partner_model`` of another type.
            WeightsError: (``checkpoint.WeightsError``, a RuntimeError) weights that are missing,
                corrupt, not a crm checkpoint or do not match their sidecar's sha256, an exported
                ONNX encoder that cannot be loaded, and partner weights that are missing or not
                the ones the sidecar records.
            DeviceError: (``devices.DeviceError``, a RuntimeError) a device that is not present
                (``"cuda"`` without a CUDA GPU) or an unknown device name.
            MemoryError: too little memory to load the model.

        All but TypeError and ValueError are the server's (its weights, its hardware), not a
        request's; each class is importable from ``crm_cli`` itself.

        Weights without a sidecar sha256 load unverified, with a warning logged (``logging``; on
        stderr when logging is not set up).
        """
        check_precision(precision)
        backend = backend_name(backend)
        # Checked here, before loading: a bad value would otherwise fail (or be silently taken) in
        # the first refine, deep inside the schedule.
        min_stage_side = whole_number("min_stage_side", min_stage_side, 0)
        if final_stage is not None and not isinstance(final_stage, FinalStage):
            raise TypeError(f"final_stage must be a crm_cli.schedule.FinalStage or None, not "
                            f"{type(final_stage).__name__}")
        if threads is not None:
            # Bounded here, once: the partner is built with the same count, and would warn again.
            asked = whole_number("threads", threads, 0) or None
            threads = usable_threads(asked) if asked else None
        check_tile_options(tiles)
        if partner_model is True:
            raise TypeError("partner_model must be a model, a checkpoint path, None or False, not True")
        if lone_stage_model is True:
            raise TypeError("lone_stage_model must be a model, a checkpoint path, None or False, not True")
        if partner_below_side is not None:
            partner_below_side = whole_number("partner_below_side", partner_below_side, 0)
        in_memory = model is not None and not isinstance(model, (str, os.PathLike))
        if not in_memory and model is not None and not os.fspath(model):
            raise ValueError("model is an empty path; give a checkpoint's path, or None for the shipped weights")
        if in_memory and backend == "onnx":
            raise ValueError("the onnx backend runs exported checkpoints, not an in-memory model")
        # Options only torch has (a memory format, unfolded BatchNorm) keep "auto" on torch.
        torch_options = channels_last is not None or not fold_bn
        if torch_options and backend == "onnx":
            raise ValueError("channels_last and fold_bn are options of the torch backend")
        # One read of the weights' sidecar and of their first bytes (their kind) serves the backend choice and the load.
        weights_path = default_weights_path() if model is None else None if in_memory else Path(os.fspath(model))
        sidecar = None if weights_path is None else WeightsSidecar(weights_path)
        encoder = None if sidecar is None or (torch_options and backend == "auto") else choose_backend(
            sidecar, device, precision, backend)
        if sidecar is not None and encoder is not None:
            self.runner, info = self._onnx_runner(sidecar, encoder, threads, tiles)
        else:
            if sidecar is not None and backend == "auto" and not torch_options and precision == "fp32":
                warn_of_missing_encoder(sidecar, device)
            self.runner, info = self._torch_runner(model, sidecar, device, info, precision, channels_last, fold_bn,
                                                   tiles)
        if not in_memory and not info.verified:
            weights = Path(str(info.path))
            # The sidecar also names the exported encoder: a copy of the weights alone runs on torch,
            # about 2.5 times slower on a CPU, and nothing else would say why.
            slower = (encoder is None and backend == "auto" and not torch_options
                      and self.runner.device.type == "cpu" and onnxruntime_problem() is None)
            hint = ("; without it no exported ONNX encoder, the faster CPU backend, is used either: copy the .json "
                    "file (and any .encoder.onnx) that came with the weights beside them") if slower else ""
            logger.warning("weights %s are not verified: no sidecar with a sha256 (%s)%s", weights,
                           sidecar_path(weights).name, hint)
        self.weights_info: CheckpointInfo = info
        self.min_stage_side = min_stage_side
        self.final_stage: FinalStage = final_stage or self.weights_info.final_stage
        # The partner and the lone-stage weights, when there are some: Refiners whose runners and
        # refinements run under this Refiner's lock and inference context (never their own lock), built
        # with its options. The lone-stage weights keep their own final_stage (certainty, gate) unless
        # ``final_stage`` was given, which then holds for every model here.
        options = dict(device=device, precision=precision, channels_last=channels_last, min_stage_side=min_stage_side,
                       fold_bn=fold_bn, final_stage=final_stage, backend=backend, threads=threads, **tiles)
        recorded = None if partner_model is not None or sidecar is None else partner_weights(sidecar)
        self.partner: Refiner | None = _helper_refiner(partner_model, recorded, "partner_model", sidecar, options)
        if partner_below_side is None:
            partner_below_side = recorded.below_side if recorded is not None else 0
        self.partner_below_side: int = partner_below_side if self.partner is not None else 0
        lone_recorded = None if lone_stage_model is not None or sidecar is None else lone_stage_weights(sidecar)
        self.lone_stage: Refiner | None = _helper_refiner(lone_stage_model, lone_recorded, "lone_stage_model", sidecar,
                                                          options)
        # One refinement at a time: the runner keeps buffers between calls (the onnx backend's
        # latent store, its decoder pool's BLAS limit), and two threads sharing them got each
        # other's latents, a silently wrong mask. The partner, whose runner this Refiner runs under
        # its own lock, takes the same lock when called by itself (and so do the lone-stage weights).
        self._lock = threading.RLock()
        self._share_lock()

    def _share_lock(self) -> None:
        """Hand this Refiner's lock to its partner and lone-stage weights."""
        for helper in (self.partner, self.lone_stage):
            if helper is not None:
                helper._lock = self._lock

    def __getstate__(self) -> dict[str, Any]:
        """The Refiner's state without its lock (a lock is neither picklable nor copyable)."""
        state = self.__dict__.copy()
        state.pop("_lock", None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Restore a pickled or deep-copied Refiner (new runners), with a lock of its own that its
        partner and lone-stage weights share."""
        self.__dict__.setdefault("lone_stage", None)
        self.__dict__.update(state)
        self._lock = threading.RLock()
        self._share_lock()

    def __copy__(self) -> Refiner:
        """A shallow copy shares the runners, so it shares their lock too: two threads refining with
        a Refiner and its copy take turns, as with one Refiner. ``copy.deepcopy`` gives runners
        (and a lock) of its own."""
        copied = type(self).__new__(type(self))
        copied.__dict__.update(self.__dict__)
        return copied

    @staticmethod
    def _torch_runner(model: Any, sidecar: WeightsSidecar | None, device: str, info: CheckpointInfo | None,
                      precision: str, channels_last: bool | None, fold_bn: bool,
                      tiles: dict[str, int]) -> tuple[Any, CheckpointInfo]:
        """A ``stages.StageRunner`` and the weights' info (torch is imported here): ``model`` as given,
        or, with the ``sidecar`` of a checkpoint, that checkpoint loaded."""
        import torch

        from .checkpoint import load_model
        from .devices import resolve_device
        from .model.fold import fold_batchnorm
        from .stages import StageRunner

        loaded = sidecar is not None
        if not loaded and not isinstance(model, torch.nn.Module):
            raise TypeError(f"model must be a torch.nn.Module or a checkpoint path, not {type(model).__name__}")
        resolved = resolve_device(device)
        if sidecar is not None:
            model, info = load_model(sidecar)
            model = model.to(resolved).eval()
            if fold_bn:
                fold_batchnorm(model)
        if channels_last is None:
            # NHWC suits tensor cores, and oneDNN's CPU depthwise kernels: 25% faster at 4K.
            channels_last = loaded and resolved.type in ("cuda", "cpu")
        runner = StageRunner(model, resolved, precision=precision, channels_last=channels_last, **tiles)
        if resolved.type == "cpu" and precision != "fp32" and not getattr(_building_helper, "active", False):
            # Measured on a 2-core CPU: one `crm refine` took 15.1 s in fp16 against 1.35 s in fp32.
            logger.warning("precision %s is much slower than fp32 on the CPU (fp16 took 11x as long in one "
                           "measurement): reduced precision is meant for GPUs", precision)
        return runner, info if info is not None else CheckpointInfo.of_model(model)

    @staticmethod
    def _onnx_runner(sidecar: WeightsSidecar, encoder: Path, threads: int | None,
                     tiles: dict[str, int]) -> tuple[Any, CheckpointInfo]:
        """An ``onnx_runner.OnnxStageRunner`` and the info of the weights (``sidecar.weights``), both
        checked against the sidecar."""
        from .checkpoint import checked_info, verify_encoder
        from .onnx_runner import NumpyDecoder, OnnxStageRunner

        info = checked_info(sidecar)
        # The bytes just verified, read once: the session runs them even if the file changes now.
        data, digest = verify_encoder(encoder, sidecar)
        decoder = NumpyDecoder.from_checkpoint(sidecar.weights, info.config)
        runner = OnnxStageRunner(encoder, decoder, info.config, threads=threads, encoder_data=data,
                                 encoder_sha256=digest, **tiles)
        return runner, info

    @property
    def backend(self) -> str:
        """"torch" or "onnx"."""
        return self.runner.backend

    @property
    def partner_weights_info(self) -> CheckpointInfo | None:
        """The info of the partner weights (``partner_model``), None without a partner."""
        return None if self.partner is None else self.partner.weights_info

    @property
    def lone_stage_weights_info(self) -> CheckpointInfo | None:
        """The info of the lone-stage weights (``lone_stage_model``), None without them."""
        return None if self.lone_stage is None else self.lone_stage.weights_info

    @property
    def device_type(self) -> str:
        """"cpu", "cuda" or "mps"."""
        device = getattr(self.runner, "device", None)
        return device.type if device is not None else "cpu"

    @classmethod
    def from_checkpoint(cls, weights: str | Path | None = None, device: str | torch.device = "auto",
                        **options: object) -> Refiner:
        """Load a checkpoint (None: the shipped weights, or ``CRM_WEIGHTS``) and run it on ``device``."""
        return cls(weights, device, **options)  # type: ignore[arg-type]

    @classmethod
    def from_model(cls, model: torch.nn.Module, device: str = "auto", **options: object) -> Refiner:
        """Run an in-memory model (training-time validation, tests) on torch, unfolded.

        The model itself is moved to ``device`` and put in eval mode (``StageRunner``): a caller
        that goes on training it must call ``model.train()`` again.
        """
        return cls(model, device, **options)  # type: ignore[arg-type]

    @property
    def device_name(self) -> str:
        """Human-readable device description."""
        return self.runner.device_name

    def refine_detailed(self, image: np.ndarray | Image.Image, mask: np.ndarray | Image.Image,
                        ratios: Sequence[float] | str | None = None, roi: bool | None = None,
                        full_decode: bool | None = None, *, adaptive: bool | None = None,
                        guard: bool | None = None, snap: bool | None = None, preset: Preset | str | None = None,
                        keep_stages: bool = False) -> RefineResult:
        """Refine and also return the schedule, timings and (with ``keep_stages``) every stage.

        Settings come from ``preset`` (a name or a Preset; default ``auto``); explicit ``ratios``
        fix the stages (no per-image choice), and the other keywords override single switches.
        With ``keep_stages`` each stage is decoded at full resolution, as the reference code does;
        otherwise intermediate stages are decoded only at the size the next stage consumes (unless
        ``full_decode``). The image and mask are :meth:`refine`'s. ``stages`` never share memory with
        the given mask. Unlike :meth:`refine` it logs no warning for a faint mask.

        Raises:
            SizeMismatchError: (``masks.SizeMismatchError``, a ValueError) a mask of another size than
                its image.
            ValueError: an image or mask of another shape, type or range than :meth:`refine` lists,
                an empty image, or invalid settings.
            TypeError: an image or mask that is no array (None, a path, a file's bytes), or a mask
                that is not numeric.
            MemoryError: too little of the machine's memory for this image (NumPy's, ONNX
                Runtime's, and OpenCV's and torch's on the CPU, raised from theirs). A GPU's
                shortage keeps torch's type (``torch.OutOfMemoryError``, a RuntimeError);
                ``errors.out_of_memory_message`` tells it and the others from other errors.
        """
        try:
            with self._lock, numpy_pages_unadvised(), self._inference():
                return self._refine_detailed(image, mask, ratios, roi, full_decode, adaptive=adaptive, guard=guard,
                                             snap=snap, preset=preset, keep_stages=keep_stages)
        except Exception as exc:
            if (shortage := host_memory_error(exc)) is not None:
                raise shortage from exc
            raise

    def _inference(self) -> ExitStack:
        """The runners' inference contexts, the partner's included (all entered, or none)."""
        with ExitStack() as stack:
            stack.enter_context(self.runner.inference())
            for helper in (self.partner, self.lone_stage):
                if helper is not None:
                    stack.enter_context(helper.runner.inference())
            return stack.pop_all()

    def release_memory(self) -> bool:
        """Hand the memory that refinements freed back to the system (glibc's ``malloc_trim``); True
        when it ran, False without glibc. For a long-running process to call when it goes idle: after
        50 photos of 300-1000 px on torch, resident memory went from 1.0 GB to 0.65 GB in about 20 ms.
        On the onnx backend it first empties ONNX Runtime's CPU arena, which malloc_trim cannot reach
        (``OnnxStageRunner.release_memory``): after 30 photos of 200-1000 px, 475 MB -> 231 MB instead
        of 438 MB, in 20-70 ms. Not done after every refinement: the next one faults the pages back
        in (12-20% slower at those sizes), and between calls memory levels off by itself. Waits for
        a refinement running in another thread."""
        with self._lock:
            for refiner in (self, self.partner, self.lone_stage):
                if refiner is not None and refiner.backend == "onnx":
                    refiner.runner.release_memory()
            return release_free_heap()

    def _refines_itself(self, image: np.ndarray, settings: Preset) -> bool:
        """Whether these weights refine ``image`` under ``settings`` (else their partner does all of it):
        only ``auto``'s own schedule with its guard, which plans the region pass that the partner runs,
        and only photos of ``partner_below_side`` and more. Everything else is what the partner did
        before it became one (weights paired for that schedule only)."""
        return _auto_own(settings) and max(image.shape[:2]) >= self.partner_below_side

    def _lone_stage_for(self, settings: Preset, plan: Schedule) -> Refiner | None:
        """The lone-stage weights when they run the final stage of this refinement (else None): they exist, the
        settings are ``auto``'s own schedule with its guard, ``plan`` is the final stage alone, the
        mask's boundary is not as sharp as LONE_STAGE_MAX_SHARPNESS, and its detail at the finest
        coarse stage reaches LONE_STAGE_MIN_DETAIL (either one counts as met where not measured)."""
        if self.lone_stage is None or not (_auto_own(settings) and plan.final_only and not plan.regions):
            return None
        detail = finest_detail(plan)
        takes = ((plan.sharpness is None or plan.sharpness < LONE_STAGE_MAX_SHARPNESS)
                 and (detail is None or detail >= LONE_STAGE_MIN_DETAIL))
        return self.lone_stage if takes else None

    def _refine_detailed(self, image: np.ndarray, mask: np.ndarray, ratios: Sequence[float] | str | None,
                         roi: bool | None, full_decode: bool | None, *, adaptive: bool | None, guard: bool | None,
                         snap: bool | None, preset: Preset | str | None, keep_stages: bool) -> RefineResult:
        """:meth:`refine_detailed`'s work, inside the runner's inference context."""
        settings = get_preset(preset).overridden(ratios, roi=roi, full_decode=full_decode, adaptive=adaptive,
                                                 guard=guard, snap=snap)
        image = check_rgb_image(image)
        if image.shape[0] == 0 or image.shape[1] == 0:
            raise ValueError(f"image is empty ({image.shape[1]}x{image.shape[0]})")
        if self.partner is not None and not self._refines_itself(image, settings):
            # The partner's whole refinement (its runner's context is entered: _inference).
            delegated = self.partner._refine_settled(image, mask, settings, keep_stages)
            delegated.by_partner = True
            return delegated
        return self._refine_settled(image, mask, settings, keep_stages)

    def _refine_settled(self, image: np.ndarray, mask: np.ndarray, settings: Preset,
                        keep_stages: bool) -> RefineResult:
        """These weights' own refinement of a checked ``image`` under settled ``settings``."""
        mask = checked_mask(mask)
        check_mask_fits(mask.shape, image.shape)
        # C order: both runners write decoded pixels through a flat view of the mask's resized copy.
        mask = np.ascontiguousarray(strict_probability(mask))
        # torch.from_numpy (the torch runner's inputs) warns of undefined behaviour on a read-only
        # array (np.asarray of a PIL image is one); nothing writes into them, but a copy of such an
        # input keeps that warning away. The onnx backend takes them as they are (no copy).
        if any(refiner is not None and refiner.backend == "torch" for refiner in (self, self.partner, self.lone_stage)):
            if not image.flags.writeable:
                image = image.copy()
            if not mask.flags.writeable:
                mask = mask.copy()
        foreground = mask > 0.5
        plan = plan_schedule(settings, image, foreground, self.min_stage_side, self.final_stage)
        regions = plan.regions  # only auto with the guard plans one (choose_schedule sees the image)
        result = RefineResult(probability=np.empty(0, np.float32), ratios=plan.ratios,
                              guard_px=plan.guard_px if settings.guard else None, trust=plan.trust, regions=regions,
                              mirrored=plan.mirror)
        if not has_boundary(foreground):
            # Empty mask -> empty output, full mask -> full output: there is no boundary to refine.
            return unrefined(result, foreground.astype(np.float32), keep_stages, "no_boundary")
        if settings.keep_given and memoized(image, "photo_is_flat", lambda: photo_is_flat(image)):
            # Nothing in the photo to refine against: the model's answer would be a guess (a disc on a
            # black photo came back reshaped, 91-95 IoU, its change confidence 0.66).
            logger.warning("the photo is one flat colour, with nothing to refine the mask against: the mask "
                           "is kept as given")
            return unrefined(result, mask.copy(), keep_stages, "flat_photo")
        if settings.keep_given and memoized(image, "photo_is_noise", lambda: photo_is_noise(image)):
            # A disc's exact mask on pure noise came back frayed (2048x1536: 92.56 / 54.39).
            logger.warning("the photo holds nothing but noise, with nothing to refine the mask against: the mask "
                           "is kept as given")
            return unrefined(result, mask.copy(), keep_stages, "noise_photo")
        given, given_foreground = mask, foreground
        reference = foreground  # the mask the final pass starts from and the guard holds to
        base: float | np.ndarray = plan.trust
        if regions:
            mask, reference, taken = self._correct_regions(image, mask, foreground, regions, settings, result)
            if taken is not None:
                # The edges of a taken region are the region pass's, drawn at its coarser size: the
                # image's edges do not vouch for them, so the final stage may move them freely.
                base = free_near(taken, plan.guard_px, plan.trust)
        # Beyond a few free distances the guard needs near-certainty to change anything, so the
        # first stage is decoded only inside that band (the rest keeps the coarse mask).
        bands = FINAL_ONLY_GUARD_BAND if plan.final_only else GUARD_BAND
        first_band = bands * plan.guard_px if settings.guard and settings.roi else None
        # A lone final stage may be another model's, which brings its own certainty and gate.
        stage_owner = self._lone_stage_for(settings, plan) or self
        result.by_lone_stage = stage_owner is not self
        final = stage_owner.final_stage
        probability = self._run_stages(image, mask, plan.ratios, settings, first_band, result,
                                       keep_stages=keep_stages, mirror_last=plan.mirror, runner=stage_owner.runner)
        if settings.guard:
            certainty = final.final_only_certainty if plan.final_only and not regions else GUARD_CERTAINTY
            probability, result.guard_restored = apply_guard(probability, reference, plan.guard_px,
                                                             certainty_pull(certainty), base=base)
        if plan.min_shift > 0:
            probability, result.boundary_shift, result.boundary_kept, restored = keep_precise_boundary(
                probability, reference, mask, plan.min_shift)
            result.guard_restored += restored
        weight = 1.0
        if settings.guard:
            result.change_confidence = confidence = change_confidence(probability, reference)
            if confidence is not None:
                threshold = final.min_change_confidence
                result.kept_coarse = confidence < threshold
                result.change_weight = weight = change_weight(confidence, threshold, CHANGE_CONFIDENCE_RAMP)
        # The snap belongs to the refinement: a kept coarse mask stays exactly as given, and in a
        # blend it is taken in the refinement's share.
        if settings.snap and weight > 0.0:
            result.snap_px = snap_radius(*probability.shape)
            if result.snap_px:
                noise = plan.noise if plan.noise is not None else photo_noise_level(image)
                probability = snap_to_edges(image, probability, result.snap_px, noise=noise)
        if weight <= 0.0:
            probability = mask.copy()
        elif weight < 1.0:  # near the threshold: a blend, so that a sequence's frames do not flip
            probability = mask + np.float32(weight) * (probability - mask)
        if settings.keep_given:
            probability, restored = keep_given_lines(probability, given, given_foreground, image=image)
            result.guard_restored += restored
        result.probability = probability
        if keep_stages:
            result.stages.append(probability)
        return result

    def _correct_regions(self, image: np.ndarray, mask: np.ndarray, foreground: np.ndarray,
                         regions: Sequence[float], settings: Preset,
                         result: RefineResult) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """A precise mask's region pass: (corrected float mask, its binary form, the pixels taken
        from the pass, or None when it took none).

        The coarse-to-fine ``regions`` stages propose a mask; of its changes only whole regions
        (``guard.region_changes``) are taken into the coarse mask, whose boundary elsewhere is kept
        for the final pass to refine, and no hole whose outline lies on the photo's edges is filled
        (``guard.holes_on_edges``).
        """
        # The whole first stage is decoded, the regions it should catch may lie far from the boundary,
        # but on its own grid: the next stage upsamples it and redraws the uncertain band. Decoding it
        # on the next stage's grid (4x the points) cost 0.2-0.4 s at 2K, and IS-Net 1024 was 0.12 IoU
        # lower with it.
        # The pass works at its last stage's own size: it only has to find regions a disc of several
        # px fits in, and the final stage, free near their edges, draws those edges at full size.
        height, width = foreground.shape
        work_hw = stage_size(height, width, regions[-1])
        scale = work_hw[0] / height
        runner = self.runner if self.partner is None else self.partner.runner
        proposal = self._run_stages(image, mask, regions, settings, None, result, final_hw=work_hw,
                                    first_at_own_size=True, runner=runner)
        small_foreground = resize_map(foreground, work_hw) > 0.5
        # The boundary's precision (trust) is not in question here: whether a region belongs is.
        proposal, _ = apply_guard(proposal, small_foreground, guard_distance(regions[0]) * scale)
        small_taken = region_changes(proposal > 0.5, small_foreground,
                                     math.ceil(region_radius(regions[0]) * scale), REGION_MAX_ATTACHED)
        if not small_taken.any():
            return mask, foreground, None
        proposed = resize_map(proposal, (height, width)) > 0.5
        taken = (resize_map(small_taken, (height, width)) > 0.5) & (proposed != foreground)
        most_pixels = REGION_MAX_SHARE * np.count_nonzero(foreground)
        if np.count_nonzero(taken & ~proposed) <= most_pixels:  # else refused below whatever the holes
            kept_open = holes_on_edges(image, taken & proposed)
            result.holes_kept = int(np.count_nonzero(kept_open))
            taken &= ~kept_open
        proposed_pixels = int(np.count_nonzero(taken))
        if proposed_pixels > most_pixels:
            result.region_refused = proposed_pixels
            return mask, foreground, None
        result.region_pixels = proposed_pixels
        if not result.region_pixels:
            return mask, foreground, None
        corrected = mask.copy()
        corrected[taken] = proposed[taken]
        return corrected, corrected > 0.5, taken

    def _run_stages(self, image: np.ndarray, mask: np.ndarray, ratios: Sequence[float], settings: Preset,
                    first_band: float | None, result: RefineResult, *, keep_stages: bool = False,
                    final_hw: tuple[int, int] | None = None, mirror_last: bool = False,
                    first_at_own_size: bool = False, runner: Any = None) -> np.ndarray:
        """Chain the stages from ``mask``; appends timings (and intermediate stages) to ``result``.

        ``first_band``: decode the first stage only within this distance (px) of the mask's boundary.
        ``mirror_last``: average the last stage with its run on the mirrored image.
        ``first_at_own_size``: decode the first stage that runs on its own grid, not the next stage's
        (which then upsamples it).
        ``runner``: the stage runner (None: this Refiner's own).
        Returns the last stage's probability, at full size or at ``final_hw``.
        """
        height, width = mask.shape
        runner = self.runner if runner is None else runner
        current = runner.stage_mask(mask)
        stages_run = 0  # the first stage that runs sees the whole image (or the band)
        for k, ratio in enumerate(ratios):
            last = k == len(ratios) - 1
            if not last and not stage_fits(height, width, ratio, self.min_stage_side):
                result.timings.append(StageTiming(ratio, 0.0, 0.0))
                if keep_stages:
                    # A copy: before any stage has run, ``current`` may be the caller's own mask.
                    result.skipped_stages.append(len(result.stages))
                    result.stages.append(np.array(runner.as_array(current, (height, width)), copy=True))
                continue
            at_full_size = last or keep_stages or settings.full_decode
            target = (height, width) if at_full_size else stage_size(height, width, ratios[k + 1])
            if last and final_hw is not None:
                target = final_hw
            elif stages_run == 0 and first_at_own_size and not at_full_size:
                target = stage_size(height, width, ratio)
            band = first_band if stages_run == 0 else None
            roi = band is not None if stages_run == 0 else settings.roi
            run_stage = runner._mirrored_stage if last and mirror_last else runner._stage
            current, timing = run_stage(image, current, ratio, target, roi=roi, band_px=band)
            stages_run += 1
            result.timings.append(timing)
            if keep_stages and not last:
                result.stages.append(runner.as_array(current))
        return runner.as_array(current)

    def refine(self, image: np.ndarray | Image.Image, mask: np.ndarray | Image.Image,
               ratios: Sequence[float] | str | None = None, roi: bool | None = None,
               full_decode: bool | None = None, *, adaptive: bool | None = None,
               guard: bool | None = None, snap: bool | None = None, preset: Preset | str | None = None) -> np.ndarray:
        """Refine a coarse mask; returns a float32 probability map (H, W) in [0, 1].

        Args:
            image: (H, W, 3) uint8 RGB, at least 1x1.
            mask: (H, W) coarse mask, one of: uint8 0-255 (one holding only 0 and 1 is read as
                0/1, a binary mask); uint16 0-65535 (or 0-255 when its largest value is 2 to 255,
                ``masks.uint16_full_scale``; 0/1 as uint8); bool; any other integer type holding only
                0 and 1; float16/32/64 in [0, 1] (no NaN).
            ratios: fixed increasing stage ratios (the last one is usually 1.0; a sequence, or a
                string as the CLI's ``--ratios``, "0.5,1") instead of the preset's per-image choice.
            roi, full_decode, adaptive, guard, snap: override one switch of the preset (see ``Preset``).
            preset: ``"auto"`` (default), ``"fast"``, ``"balanced"``, ``"quality"`` or a Preset.

        Raises:
            SizeMismatchError: (``masks.SizeMismatchError``, a ValueError, so ``except ValueError``
                catches it too) a mask of another size than its image.
            TypeError: an image or mask that is no array (None, a path, a file's bytes), or a mask
                that is not numeric.
            ValueError: an image or mask of another shape or type than listed, an empty image,
                float values outside [0, 1] or NaN, integer values other than 0/1 in a type other
                than uint8/uint16, or invalid settings.
            MemoryError: too little of the machine's memory for this image; a GPU's shortage is
                torch's own (see :meth:`refine_detailed`).

        SizeMismatchError, ValueError and TypeError are the caller's (its arrays); loading errors
        (``WeightsError``, ``DeviceError``) come from building the Refiner, never from here.

        A mask with no pixel above 0.5 has no foreground, and the result is all zeros (the model
        does not run). Only a mask that is not all zero (a faint soft mask, largest value at most
        0.5) is warned of, on the ``crm_cli.engine`` logger (on stderr when logging is not set up);
        an all-zero mask, such as an empty frame of a video, is not.
        """
        probability = self.refine_detailed(image, mask, ratios, roi, full_decode, adaptive=adaptive, guard=guard,
                                           snap=snap, preset=preset).probability
        if not probability.any():  # rare, so the mask is read again only then
            note = weak_mask_note(strict_probability(checked_mask(mask)), "the coarse mask")
            if note is not None:
                logger.warning("%s", note)
        return probability

    def refine_many(self, image: np.ndarray | Image.Image, masks: Iterable[np.ndarray | Image.Image],
                    **settings: Any) -> list[np.ndarray]:
        """:meth:`refine` of each of ``masks`` on one ``image`` (several objects of a photo, a label
        map's ids), with the same keyword ``settings``; the results are exactly :meth:`refine`'s, in
        order. What the refinement reads of the photo alone (whether it is flat or noise, its grey
        image and gradients, its resized copy for each stage on the onnx backend) is worked out once
        (``photo_memo.same_photo``). Raises what :meth:`refine` raises, at the first mask that fails."""
        image = held_photo(check_rgb_image(image))
        with same_photo(image):
            return [self.refine(image, mask, **settings) for mask in masks]
