"""benchmarks/choose_checkpoint.py: candidates against a baseline on whole sets, image by image."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import pytest
from conftest import coarse_of, load_benchmark, synthetic_scene

choose = load_benchmark("choose_checkpoint")
ROOT = Path(__file__).resolve().parents[1]


def summary(*images: tuple[str, float, float, float, float], kept: int = 0) -> dict:
    """A `crm eval --json` summary from (name, coarse IoU, refined IoU, coarse mBA, refined mBA) rows."""
    rows = [{"name": n, "coarse_iou": ci, "refined_iou": ri, "coarse_mba": cm, "refined_mba": rm}
            for n, ci, ri, cm, rm in images]
    mean = {key: sum(r[key] for r in rows) / len(rows) for key in ("refined_iou", "refined_mba")}
    return {"images": rows, "refined": {"iou": mean["refined_iou"], "mba": mean["refined_mba"]},
            "kept_coarse": kept}


def test_scores_count_the_images_harmed_by_more_than_a_point() -> None:
    score = choose.score_of(summary(("a", 0.90, 0.95, 0.60, 0.70),   # better in both
                                    ("b", 0.90, 0.885, 0.60, 0.595),  # -1.5 IoU, -0.5 mBA
                                    ("c", 0.90, 0.905, 0.60, 0.58), kept=1))  # +0.5 IoU, -2 mBA
    assert (score.below_coarse_iou, score.below_coarse_mba, score.kept) == (1, 1, 1)
    assert score.iou == pytest.approx(100 * (0.95 + 0.885 + 0.905) / 3)
    assert score.images["b"] == pytest.approx((88.5, 59.5))


def test_below_baseline_and_better_on_set() -> None:
    base = choose.score_of(summary(("a", 0.9, 0.95, 0.6, 0.70), ("b", 0.9, 0.93, 0.6, 0.65)))
    # a loses 1.5 IoU against the baseline's own result, b gains: one image below the baseline,
    # and the mean IoU falls, so the candidate is not better on this set.
    worse = choose.score_of(summary(("a", 0.9, 0.935, 0.6, 0.71), ("b", 0.9, 0.94, 0.6, 0.66)))
    assert choose.below_baseline(worse, base) == 1
    assert not choose.better_on_set(worse, base)
    better = choose.score_of(summary(("a", 0.9, 0.95, 0.6, 0.71), ("b", 0.9, 0.93, 0.6, 0.65)))
    assert choose.below_baseline(better, base) == 0 and choose.better_on_set(better, base)
    assert not choose.better_on_set(base, base)  # equal is not better
    # Higher means but one more image harmed against its coarse mask: not better.
    harmful = choose.score_of(summary(("a", 0.9, 0.999, 0.6, 0.80), ("b", 0.9, 0.885, 0.6, 0.65)))
    assert harmful.iou > base.iou and harmful.mba > base.mba and not choose.better_on_set(harmful, base)


def test_run_folders_give_their_step_exports_then_the_final_model(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    for name in ("model_step000200.safetensors", "model_step000100.safetensors", "model.safetensors", "last.pt"):
        (run / name).write_bytes(b"x")
    single = tmp_path / "w.safetensors"
    single.write_bytes(b"y")
    assert [p.name for p in choose.expand_candidates([run, single])] == [
        "model_step000100.safetensors", "model_step000200.safetensors", "model.safetensors", "w.safetensors"]
    with pytest.raises(SystemExit, match="missing.safetensors"):
        choose.expand_candidates([tmp_path / "missing.safetensors"])


def test_the_script_compares_whole_sets_and_keeps_its_results(tiny_weights: Path, tmp_path: Path) -> None:
    folder = tmp_path / "set"
    folder.mkdir()
    for k in range(2):
        image, gt = synthetic_scene(96, 128, seed=k)
        cv2.imwrite(str(folder / f"s{k}_im.jpg"), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        cv2.imwrite(str(folder / f"s{k}_seg.png"), coarse_of(gt))
        cv2.imwrite(str(folder / f"s{k}_gt.png"), gt)
    same = tmp_path / "copy.safetensors"
    shutil.copy(tiny_weights, same)
    shutil.copy(tiny_weights.with_suffix(".json"), same.with_suffix(".json"))
    command = [sys.executable, str(ROOT / "benchmarks" / "choose_checkpoint.py"), str(same), "--set",
               f"tiny={folder}", "--baseline", str(tiny_weights), "--out", str(tmp_path / "out"), "--",
               "--device", "cpu"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "| tiny (baseline) |" in done.stdout and "| copy |" in done.stdout
    assert "| +0.00 | +0.00 |" in done.stdout  # the same weights: the same results
    assert done.stdout.rstrip().endswith("better than tiny on every set: none")
    kept = sorted(p.parent.name for p in (tmp_path / "out").rglob("*.json"))
    assert len(kept) == 2  # one eval per weights file (the copy has its own name, the same content)
    again = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and again.stdout == done.stdout


def test_a_candidate_paired_with_a_partner_runs_as_the_default_pair_does(tiny_weights: Path, tmp_path: Path) -> None:
    from conftest import make_tiny_model

    from crm_cli.checkpoint import partner_weights, save_weights, sha256_file
    from crm_cli.config import Provenance
    from crm_cli.engine import Refiner

    candidate = tmp_path / "run" / "model_step000100.safetensors"
    candidate.parent.mkdir()
    save_weights(make_tiny_model(5), candidate, Provenance(notes="candidate"))
    out = tmp_path / "out"
    pair = choose.paired(candidate, tiny_weights, 200, out)
    assert pair != candidate and pair.read_bytes() == candidate.read_bytes()
    entry = partner_weights(pair)
    assert entry is not None and entry.below_side == 200 and entry.sha256 == sha256_file(tiny_weights)
    refiner = Refiner(pair, "cpu", backend="torch")
    assert refiner.partner_weights_info is not None and refiner.partner_below_side == 200
    # Kept results of the pair and of the candidate alone do not collide.
    folder = tmp_path / "set"
    assert choose.result_path(out, pair, folder) != choose.result_path(out, candidate, folder)
    assert choose.paired(candidate, tiny_weights, 200, out) == pair  # made again in place


def test_onnx_exports_the_paired_copys_encoder_once(tiny_weights: Path, tmp_path: Path) -> None:
    pytest.importorskip("onnx")
    from conftest import make_tiny_model

    from crm_cli.checkpoint import onnx_encoder_path, partner_weights, save_weights
    from crm_cli.config import Provenance
    from crm_cli.engine import Refiner

    candidate = tmp_path / "run" / "model_step000100.safetensors"
    candidate.parent.mkdir()
    save_weights(make_tiny_model(5), candidate, Provenance(notes="candidate"))
    out = tmp_path / "out"
    pair = choose.paired(candidate, tiny_weights, 200, out, encode=True)
    encoder = onnx_encoder_path(pair)
    assert encoder is not None and encoder.parent == pair.parent and encoder.is_file()
    assert partner_weights(pair) is not None  # the export kept the partner entry
    refiner = Refiner(pair, "cpu")  # the tiny partner has no encoder of its own: it runs on torch
    assert refiner.backend == "onnx" and refiner.partner_weights_info is not None
    exported = encoder.stat().st_mtime_ns
    assert choose.paired(candidate, tiny_weights, 200, out, encode=True) == pair
    assert encoder.stat().st_mtime_ns == exported  # kept, not exported again
    # The kept results of the exported pair are not those of the pair run on torch.
    folder = tmp_path / "set"
    on_onnx = choose.result_path(out, pair, folder)
    choose.paired(candidate, tiny_weights, 200, out)
    assert onnx_encoder_path(pair) is None and choose.result_path(out, pair, folder) != on_onnx
