"""A training run's options (TrainOptions), those a resumed run must keep, and the per-step schedule."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .coarse import CoarseMix
from .data import DataMix

BASE_LR = 2.25e-4
WEIGHT_DECAY = 1e-4
# The paper decays at 22,500 and 37,500 of 45,000 iterations; we keep the same fractions.
DECAY_FRACTIONS = (0.5, 37_500 / 45_000)


@dataclass
class TrainOptions:
    """Everything that defines a training run (saved in every checkpoint)."""

    data: str
    out: str
    encoder: str = "mobilenet_v2"
    steps: int = 45_000
    batch: int = 12
    lr: float = BASE_LR
    seed: int = 0
    init: str = ""
    val_every: int = 500
    ckpt_every: int = 100
    val_images: int = 64
    query_window: int = 224  # side of the square window of queries per step (224 = every pixel)
    arch: dict[str, Any] = field(default_factory=dict)
    command: str = ""
    synthetic: float = 0.0  # fraction of samples that are synthetic composites (training/synthesis.py)
    zoom: float = 1.0  # photo crops: largest enlargement of the zoom augmentation (training/data.py); 1 = none
    transpose: float = 0.0  # share of samples turned on their diagonal (training/data.py); 0 = none
    coarse_mix: str = ""  # "paper=..,lowres=..,sam=..,clean=..,network=.." (training/coarse.py); "" = paper only
    network_masks: list[str] = field(default_factory=list)  # folders of real network masks (network mode)
    val_sets: list[str] = field(default_factory=list)  # extra named validation folders, "NAME=PATH"
    val_ratios: str = ""  # stage ratios for high-resolution (BIG-layout) sets; "" = the engine's default
    device: str = "auto"  # devices.resolve_device: auto, cpu, cuda[:N], mps
    workers: int = 0  # processes that make batches ahead of the step (0 = the training process itself)
    max_minutes: float = 0.0  # stop (checkpoint, validate, export) after this much wall time; 0 = no limit
    stop_at: int = 0  # stop the same way at this step, the schedule still that of ``steps``; 0 = at ``steps``
    boundary_weight: float = 0.0  # extra loss weight on the ground truth's boundary band (training/loss.py)
    freeze_encoder: bool = False  # train fusion and decoder only; the encoder's weights and BN statistics stay
    cascade: float = 0.0  # share of samples whose coarse mask is the model's own half-size refinement (loop.py)
    keep_exports: bool = False  # also keep each validation's export as model_step<N>.safetensors

    def data_mix(self) -> DataMix:
        """The sample mix these options describe."""
        return DataMix(self.synthetic, CoarseMix.parse(self.coarse_mix) if self.coarse_mix else None, self.zoom,
                       self.transpose)


# The options that decide what a step's batch holds: a resumed run must keep them to replay the batches.
DATA_MIX_FIELDS = ("synthetic", "coarse_mix", "network_masks", "zoom", "transpose")
# The options that decide what a step optimises: a resumed run must keep them too (the optimiser's
# state holds only the trained parameters).
OBJECTIVE_FIELDS = ("boundary_weight", "freeze_encoder", "cascade")
# The options that decide each step's batch size, learning rate, seeds and query window: a resumed run
# with others would silently mix two schedules.
SCHEDULE_FIELDS = ("steps", "batch", "lr", "seed", "query_window")
DEFAULT_OPTIONS = TrainOptions(data="", out="")


def learning_rate(step: int, total: int, base: float = BASE_LR) -> float:
    """Step decay: divide by 10 at each of DECAY_FRACTIONS of the run."""
    drops = sum(step >= int(f * total) for f in DECAY_FRACTIONS)
    return base * (0.1**drops)


def query_window(size: int, window: int, seed: int, step: int) -> tuple[int, int, int, int]:
    """The step's square query window (top, bottom, left, right) inside a size x size crop."""
    window = min(window, size)
    if window == size:
        return 0, size, 0, size
    rng = np.random.default_rng([seed, step, 7])
    top, left = (int(v) for v in rng.integers(0, size - window + 1, size=2))
    return top, top + window, left, left + window
