"""Which trained weights to ship: candidates against the shipped default on whole dev sets, per image.

A new default ships only if it is better on every dev set, and a refiner is judged by the images
it harms, not only by its means. For each (weights, set) this runs ``crm eval SET -w WEIGHTS
--json`` in its own process (each result is kept under ``--out``, so an interrupted run continues
where it stopped) and prints one table per set: IoU and mBA, their change against the baseline,
the images more than 1 point below their coarse mask (IoU / mBA), the images more than 1 point
below the baseline's own result, and the images whose coarse mask the gate kept. The last line
names the candidates better than the baseline on every set.

    python benchmarks/choose_checkpoint.py runs/gpu --set carvana=../shared/data/carvana-dev \\
        --set real1024=REAL/isnet1024 --set real256=REAL/isnet256 --set thin=THIN --set duts=DUTS \\
        [--baseline weights/crm_mobilenet_v2_blend.safetensors] [--out runs/choose] [-- CRM_EVAL_OPTIONS]
        [--partner weights/crm_mobilenet_v2_blend.safetensors [--partner-below-side 1000]]

With ``--partner`` each candidate runs as the shipped default does since session 43, as a pair: the
partner runs ``auto``'s region pass and every stage of photos under ``--partner-below-side`` px (a
copy of the candidate with a sidecar naming the partner is made under ``--out``; the partner's
files are linked beside it). The copy has no exported encoder, so it runs on torch while the partner
runs on its ONNX encoder (outputs differ from an all-ONNX pair by a level on a few pixels); with
``--onnx`` the copy's encoder is exported beside it (torch and the ``onnx`` package), so the pair runs
as the shipped one does, on this 2-core CPU about 2.5 times faster. Without ``--partner`` a candidate
runs alone, which the default pair is not.

Kept results are keyed by the weights' content and the set's path, not by crm's code: after a
change to the engine or the presets, start with an empty ``--out``.

A candidate is a weights file or a run folder, whose ``model_step*.safetensors`` (``crm train
--keep-exports``) and ``model.safetensors`` are all taken. Session 19 learnt why this matters: a
checkpoint that led on eight validation images per set was 1.4 IoU points worse on the whole of
carvana-dev.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from eval_cache import cached_eval
from forward_args import split_forwarded
from named_sets import named_folders

from crm_cli.checkpoint import DEFAULT_WEIGHTS_NAME

# The shipped default in this checkout (not CRM_WEIGHTS: the baseline is what a new default must beat).
DEFAULT_BASELINE = Path(__file__).resolve().parents[1] / "weights" / DEFAULT_WEIGHTS_NAME
HARM_POINTS = 1.0  # an image "harmed" loses more than this many points (of 100) of IoU or mBA


@dataclass
class SetScore:
    """One weights file on one set: mean IoU / mBA in points, harmed images, per-image results."""

    iou: float
    mba: float
    below_coarse_iou: int
    below_coarse_mba: int
    kept: int
    images: dict[str, tuple[float, float]]  # name -> (refined IoU, refined mBA), in points


def score_of(summary: dict) -> SetScore:
    """The ``SetScore`` of one ``crm eval --json`` summary."""
    images = {item["name"]: (100 * item["refined_iou"], 100 * item["refined_mba"]) for item in summary["images"]}
    below_iou = sum(100 * (i["coarse_iou"] - i["refined_iou"]) > HARM_POINTS for i in summary["images"])
    below_mba = sum(100 * (i["coarse_mba"] - i["refined_mba"]) > HARM_POINTS for i in summary["images"])
    return SetScore(100 * summary["refined"]["iou"], 100 * summary["refined"]["mba"], below_iou, below_mba,
                    int(summary.get("kept_coarse") or 0), images)


def below_baseline(candidate: SetScore, baseline: SetScore) -> int:
    """Images where the candidate's result is more than HARM_POINTS below the baseline's (IoU or mBA)."""
    count = 0
    for name, (iou, mba) in candidate.images.items():
        if name in baseline.images:
            base_iou, base_mba = baseline.images[name]
            count += base_iou - iou > HARM_POINTS or base_mba - mba > HARM_POINTS
    return count


def better_on_set(candidate: SetScore, baseline: SetScore) -> bool:
    """Neither mean lower (to 0.01 point), one of them higher, and no more images harmed against coarse."""
    iou, mba = round(candidate.iou - baseline.iou, 2), round(candidate.mba - baseline.mba, 2)
    harmed = candidate.below_coarse_iou + candidate.below_coarse_mba
    baseline_harmed = baseline.below_coarse_iou + baseline.below_coarse_mba
    return iou >= 0 and mba >= 0 and (iou > 0 or mba > 0) and harmed <= baseline_harmed


def expand_candidates(paths: list[Path]) -> list[Path]:
    """Weights files as given; a folder gives its ``model_step*.safetensors`` then ``model.safetensors``."""
    found: list[Path] = []
    for path in paths:
        if path.is_dir():
            found += sorted(path.glob("model_step*.safetensors"))
            if (path / "model.safetensors").exists():
                found.append(path / "model.safetensors")
        elif path.exists():
            found.append(path)
        else:
            raise SystemExit(f"{path}: no such weights file or run folder")
    return found


def label_of(weights: Path) -> str:
    """A short name: the file's stem, with its run folder when the stem alone is ambiguous."""
    return f"{weights.parent.name}/{weights.stem}" if weights.stem.startswith("model") else weights.stem


@functools.cache
def file_sha256(weights: Path) -> str:
    """A weights file's sha256 (read once per file and process)."""
    return hashlib.sha256(weights.read_bytes()).hexdigest()


def content_key(weights: Path) -> str:
    """The first 12 hex digits of a weights file's sha256."""
    return file_sha256(weights)[:12]


def result_path(out: Path, weights: Path, folder: Path, options: Sequence[str] = ()) -> Path:
    """Where one eval's JSON is kept: by the weights' content (and their partner's, when their sidecar
    names one; and "-onnx" when it records an exported encoder, which moves a few pixels by a level),
    the set folder's absolute path and the ``crm eval`` ``options`` forwarded after ``--`` (a run
    with other options is another result; none keeps the names of results kept before they counted)."""
    from crm_cli.checkpoint import onnx_encoder_path, partner_weights

    weights_key = content_key(weights)
    partner = partner_weights(weights)
    if partner is not None:
        weights_key += f"-partner-{partner.sha256[:12]}-{partner.below_side}"
    if onnx_encoder_path(weights) is not None:
        weights_key += "-onnx"
    folder_key = hashlib.sha256(str(folder.resolve()).encode()).hexdigest()[:8]
    if options:
        folder_key += "-" + hashlib.sha256("\0".join(options).encode("utf-8", "surrogateescape")).hexdigest()[:8]
    return out / f"{weights.stem}-{weights_key}" / f"{folder.name}-{folder_key}.json"


def paired(candidate: Path, partner: Path, below_side: int, out: Path, encode: bool = False) -> Path:
    """A copy of ``candidate`` under ``out`` whose sidecar names ``partner`` (linked beside it, with its
    sidecar and exported encoder) as its partner for photos under ``below_side`` px; returns its path.
    With ``encode`` the copy's encoder is exported beside it and recorded in its sidecar."""
    from crm_cli.checkpoint import onnx_encoder_path, sidecar_path

    # The copy's folder is named by the candidate's content, so a copy found there holds its bytes.
    candidate_sha256, partner_sha256 = file_sha256(candidate), file_sha256(partner)
    folder = out / "pairs" / f"{candidate.stem}-{candidate_sha256[:12]}-with-{partner.stem}-{partner_sha256[:12]}"
    folder.mkdir(parents=True, exist_ok=True)
    weights = folder / candidate.name
    if not weights.exists():
        shutil.copyfile(candidate, weights)
    made = json.loads(sidecar_path(weights).read_text()) if sidecar_path(weights).exists() else {}
    side = json.loads(sidecar_path(candidate).read_text()) if sidecar_path(candidate).exists() else {}
    side.pop("onnx", None)  # the candidate's own encoder is not beside the copy: it runs on torch ...
    side.update(file=weights.name, sha256=candidate_sha256,
                partner={"file": partner.name, "sha256": partner_sha256, "below_side": below_side})
    exported = made.get("onnx")
    if encode and isinstance(exported, dict) and exported.get("weights_sha256") == side["sha256"] \
            and (folder / str(exported.get("file"))).is_file():
        side["onnx"] = exported  # ... unless an earlier call exported the copy's (the load checks its sha256)
    sidecar_path(weights).write_text(json.dumps(side, indent=2) + "\n")
    if encode and "onnx" not in side:
        from crm_cli.onnx_export import export_encoder

        export_encoder(weights)  # recorded under "onnx" in the sidecar just written, the partner kept
    encoder = onnx_encoder_path(partner)  # the one the partner's sidecar names, if any
    for source in [partner, sidecar_path(partner), *([encoder] if encoder is not None else [])]:
        link = folder / source.name
        if source.exists() and not link.exists():
            link.symlink_to(source.resolve())
    return weights


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("candidates", nargs="+", type=Path, help="weights files or run folders")
    parser.add_argument("--set", dest="sets", action="append", required=True, metavar="NAME=FOLDER",
                        help="a dev set in BIG layout (repeatable)")
    parser.add_argument("--baseline", type=Path, default=DEFAULT_BASELINE, help="default: the shipped weights")
    parser.add_argument("--out", type=Path, default=Path("runs/choose"), help="where each eval's JSON is kept")
    parser.add_argument("--partner", type=Path, default=None,
                        help="run each candidate paired with these weights (their region pass, small photos)")
    parser.add_argument("--partner-below-side", type=int, default=1000,
                        help="with --partner: photos shorter than this (px, longer side) are the partner's")
    parser.add_argument("--onnx", action="store_true",
                        help="with --partner: export each paired copy's encoder, so it runs as the shipped pair does")
    own, extra = split_forwarded(sys.argv[1:])  # after --: extra `crm eval` options, e.g. --device cpu
    args = parser.parse_args(own)
    if not args.baseline.is_file():
        raise SystemExit(f"{args.baseline}: no such weights file (--baseline)")
    sets = named_folders(args.sets, "--set")
    candidates = [c for c in expand_candidates(args.candidates) if c.resolve() != args.baseline.resolve()]
    if args.partner is not None:
        if args.partner_below_side < 0:
            raise SystemExit(f"--partner-below-side must be >= 0, got {args.partner_below_side}")
        if not args.partner.is_file():
            raise SystemExit(f"{args.partner}: no such weights file (--partner)")
        candidates = [paired(c, args.partner, args.partner_below_side, args.out, encode=args.onnx)
                      for c in candidates]
    elif args.onnx:
        raise SystemExit("--onnx exports the encoder of a paired copy: it needs --partner")
    everyone = [args.baseline, *candidates]
    scores = {(w, name): score_of(cached_eval(folder, ["-w", str(w), *extra], result_path(args.out, w, folder, extra)))
              for name, folder in sets for w in everyone}

    winners = []
    for name, folder in sets:
        base = scores[(args.baseline, name)]
        print(f"\n{name} ({folder}, {len(base.images)} images)\n")
        print("| weights | IoU | mBA | ΔIoU | ΔmBA | >1 pt below coarse (IoU / mBA) | >1 pt below baseline | kept |")
        print("| --- | --- | --- | --- | --- | --- | --- | --- |")
        for weights in everyone:
            s = scores[(weights, name)]
            is_base = weights == args.baseline
            cells = [f"{label_of(weights)} (baseline)" if is_base else label_of(weights), f"{s.iou:.2f}",
                     f"{s.mba:.2f}", "" if is_base else f"{s.iou - base.iou:+.2f}",
                     "" if is_base else f"{s.mba - base.mba:+.2f}", f"{s.below_coarse_iou} / {s.below_coarse_mba}",
                     "" if is_base else str(below_baseline(s, base)), str(s.kept)]
            print("| " + " | ".join(cells) + " |")
    for weights in candidates:
        if all(better_on_set(scores[(weights, name)], scores[(args.baseline, name)]) for name, _ in sets):
            winners.append(label_of(weights))
    print(f"\nbetter than {label_of(args.baseline)} on every set: {', '.join(winners) if winners else 'none'}")


if __name__ == "__main__":
    main()
