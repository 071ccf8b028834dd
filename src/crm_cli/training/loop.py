"""The training loop (DESIGN §3): deterministic batches, step-decay Adam, checkpoints, exact resume.

Every step draws its batch from ``numpy.random.default_rng([seed, step])`` and seeds torch from
(seed, step), so a run resumed from a checkpoint replays exactly the batches and dropout masks of a
straight run. Multi-GPU runs go through ``torchrun`` + DistributedDataParallel: each rank takes
a disjoint slice of the step's global batch.
"""

from __future__ import annotations

import csv
import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..checkpoint import save_weights
from ..config import PRESET_ARCHS, ArchConfig, Provenance
from ..model import build_crm
from ..model.pretrained import initialise_encoder, load_imagenet_init  # noqa: F401 - its old home
from ..transforms import network_input
from .data import Pair, PairCache, list_pairs, make_sample, split_pairs, synthesize_coarse
from .loss import crm_loss

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


def step_batch(cache: PairCache, seed: int, step: int, batch: int, rank: int = 0,
               world: int = 1) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """This rank's share of the global batch of ``step``: (rgb, coarse, gt) tensors."""
    rng = np.random.default_rng([seed, step])
    indices = rng.integers(0, len(cache), size=batch)
    sample_seeds = rng.integers(0, 2**63 - 1, size=batch)
    images, coarses, gts = [], [], []
    for k in range(rank, batch, world):
        image, gt = cache.get(int(indices[k]))
        rgb, coarse, soft = make_sample(image, gt, np.random.default_rng(int(sample_seeds[k])))
        images.append(rgb)
        coarses.append(coarse)
        gts.append(soft)
    rgb = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float().div_(255.0)
    return rgb, torch.from_numpy(np.stack(coarses)).unsqueeze(1), torch.from_numpy(np.stack(gts))


class Trainer:
    """Owns model, optimiser, data and logs for one run directory."""

    def __init__(self, options: TrainOptions, val_pairs: list[Pair] | None = None) -> None:
        self.options = options
        self.out = Path(options.out)
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        if self.world > 1:
            import torch.distributed as dist

            dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
        if torch.cuda.is_available():
            local = int(os.environ.get("LOCAL_RANK", "0"))
            self.device = torch.device("cuda", local)
            torch.cuda.set_device(self.device)
        else:
            self.device = torch.device("cpu")
        if options.encoder not in PRESET_ARCHS:
            raise ValueError(f"unknown encoder {options.encoder!r}; choose from {sorted(PRESET_ARCHS)}")
        arch = PRESET_ARCHS[options.encoder].to_dict()
        arch.update(options.arch)
        self.config = ArchConfig.from_dict(arch)
        torch.manual_seed(options.seed)
        self.model = build_crm(self.config).to(self.device)
        self.init_note = initialise_encoder(self.model, options.init)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=options.lr, weight_decay=WEIGHT_DECAY)
        pairs = list_pairs(Path(options.data))
        train_pairs, held_out = split_pairs(pairs)
        self.cache = PairCache(train_pairs)
        self.val_pairs = (val_pairs if val_pairs is not None else held_out)[: options.val_images]
        self.step = 0
        self.net: torch.nn.Module = self.model
        if self.world > 1:
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device.index] if self.device.type == "cuda" else None
            self.net = DistributedDataParallel(self.model, device_ids=ids)

    # -------------------------------------------------------------- checkpoints
    @property
    def checkpoint_path(self) -> Path:
        return self.out / "last.pt"

    def save_checkpoint(self) -> None:
        """Atomically write ``last.pt`` (model, optimiser, step, options)."""
        if self.rank != 0:
            return
        self.out.mkdir(parents=True, exist_ok=True)
        payload = {
            "config": self.config.to_dict(),
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "step": self.step,
            "options": asdict(self.options),
            "provenance": {"init": self.init_note},
        }
        tmp = self.checkpoint_path.with_suffix(".pt.tmp")
        torch.save(payload, tmp)
        os.replace(tmp, self.checkpoint_path)

    def resume(self) -> bool:
        """Load ``last.pt`` if present; returns whether it did."""
        if not self.checkpoint_path.exists():
            return False
        payload = torch.load(self.checkpoint_path, map_location=self.device, weights_only=True)
        if ArchConfig.from_dict(payload["config"]) != self.config:
            raise ValueError(f"{self.checkpoint_path}: architecture differs from this run's")
        self.model.load_state_dict(payload["model"])
        self.optimizer.load_state_dict(payload["optimizer"])
        self.step = int(payload["step"])
        self.init_note = payload.get("provenance", {}).get("init", self.init_note)
        self._truncate_log()
        return True

    def _truncate_log(self) -> None:
        """Drop log rows written after the checkpoint we resume from (they will be replayed)."""
        log_path = self.out / "log.csv"
        if self.rank != 0 or not log_path.exists():
            return
        lines = log_path.read_text().splitlines(keepends=True)
        kept = lines[:1] + [line for line in lines[1:] if int(line.split(",", 1)[0]) <= self.step]
        log_path.write_text("".join(kept))

    # -------------------------------------------------------------- training
    def train_step(self) -> dict[str, float]:
        """One optimisation step on this step's deterministic batch."""
        options = self.options
        lr = learning_rate(self.step, options.steps, options.lr)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        torch.manual_seed(options.seed * 1_000_003 + self.step)
        rgb, coarse, gt = step_batch(self.cache, options.seed, self.step, options.batch, self.rank, self.world)
        rgb, coarse, gt = rgb.to(self.device), coarse.to(self.device), gt.to(self.device)
        self.net.train()
        window = query_window(gt.shape[-1], options.query_window, options.seed, self.step)
        logits = self.net(network_input(rgb, coarse, *self.config.input_norm), window=window)
        top, bottom, left, right = window
        loss, terms = crm_loss(logits, gt[:, top:bottom, left:right])
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.step += 1
        return {"loss": float(loss.detach()), "lr": lr, **terms}

    def validate(self) -> dict[str, float]:
        """Coarse vs refined IoU/mBA on the held-out pairs (fixed synthetic coarse masks, s = 1)."""
        from ..engine import Refiner
        from ..metrics import DatasetScore, score_pair
        from .data import load_pair

        refiner = Refiner.from_model(self.model, device=str(self.device))
        coarse_score, refined_score = DatasetScore(), DatasetScore()
        for k, pair in enumerate(self.val_pairs):
            image, gt = load_pair(pair)
            coarse = synthesize_coarse(gt, np.random.default_rng([12345, k]))
            prob = refiner.refine(image, coarse, ratios=(1.0,))
            coarse_score.add(score_pair(coarse, gt, pair.name))
            refined_score.add(score_pair(prob, gt, pair.name))
        self.model.train()
        return {
            "coarse_iou": coarse_score.iou, "coarse_mba": coarse_score.mba or 0.0,
            "refined_iou": refined_score.iou, "refined_mba": refined_score.mba or 0.0,
        }

    def export(self, path: Path, scores: dict[str, float] | None = None) -> str:
        """Write the shipped-format weights (fp16 safetensors + sidecar) for the current step."""
        provenance = Provenance(
            command=self.options.command, data=self.options.data, steps=self.step, init=self.init_note,
            scores=scores or {},
        )
        return save_weights(self.model, path, provenance)

    def run(self, progress: Any = None) -> None:
        """Train until ``options.steps``, checkpointing and validating on schedule."""
        options = self.options
        self.out.mkdir(parents=True, exist_ok=True)
        # Only rank 0 touches the log, so other ranks cannot create it first and lose the header.
        log_path = self.out / "log.csv" if self.rank == 0 else Path(os.devnull)
        new_log = self.rank == 0 and not log_path.exists()
        with open(log_path, "a", newline="") as log_file:
            writer = csv.writer(log_file)
            if new_log:
                writer.writerow(["step", "lr", "loss", "bce", "l1", "l2", "grad", "seconds"])
            while self.step < options.steps:
                start = time.perf_counter()
                stats = self.train_step()
                seconds = time.perf_counter() - start
                if self.rank == 0:
                    writer.writerow([self.step, f"{stats['lr']:.3g}", *(f"{stats[k]:.5f}" for k in
                                     ("loss", "bce", "l1", "l2", "grad")), f"{seconds:.3f}"])
                    log_file.flush()
                if progress is not None:
                    progress(self.step, stats)
                if self.step % options.ckpt_every == 0 or self.step == options.steps:
                    self.save_checkpoint()
                if self.rank == 0 and (self.step % options.val_every == 0 or self.step == options.steps):
                    scores = self.validate()
                    with open(self.out / "val.jsonl", "a") as handle:
                        handle.write(json.dumps({"step": self.step, **scores}) + "\n")
                    self.export(self.out / "model.safetensors", scores)
