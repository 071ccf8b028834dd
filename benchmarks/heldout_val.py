"""Coarse vs refined IoU/mBA on the held-out DUTS-TR split (every 20th pair, never trained on).

Coarse masks are synthesised with the training recipe (DESIGN §3) from training.data.SYNTHETIC_SEED
per image, the same as training-time validation, so the numbers are reproducible and agree with
the ``val.jsonl`` of a training run. The images are low resolution (183-400 px), so one stage at s = 1
is used unless ``--ratios`` says otherwise.

    python benchmarks/heldout_val.py --data ../shared/data/duts-tr [--weights PATH] [--ratios 1]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from script_errors import one_line_errors

from crm_cli.engine import Refiner
from crm_cli.evaluation import evaluate
from crm_cli.training.data import list_pairs, split_pairs, synthetic_samples


@one_line_errors
def main() -> None:
    """Score the coarse and refined masks of the whole held-out split and print one line (+ JSON)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="../shared/data/duts-tr")
    parser.add_argument("--weights", default=None)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--ratios", default="1")
    parser.add_argument("--limit", type=int, default=0)
    args = parser.parse_args()
    ratios = tuple(float(r) for r in args.ratios.split(","))
    _, held_out = split_pairs(list_pairs(Path(args.data)))
    if args.limit:
        held_out = held_out[: args.limit]
    refiner = Refiner.from_checkpoint(args.weights, device=args.device)
    scores = evaluate(refiner, synthetic_samples(held_out), ratios=ratios)
    coarse_scores, refined_scores = scores.coarse, scores.refined
    summary = {
        "n": len(held_out), "ratios": list(ratios),
        "coarse": {"iou": coarse_scores.iou, "mba": coarse_scores.mba},
        "refined": {"iou": refined_scores.iou, "mba": refined_scores.mba},
    }
    print(f"DUTS-TR held-out (n={len(held_out)}): coarse {100 * coarse_scores.iou:.2f}/{100 * coarse_scores.mba:.2f}"
          f" -> refined {100 * refined_scores.iou:.2f}/{100 * refined_scores.mba:.2f} (IoU/mBA)")
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
