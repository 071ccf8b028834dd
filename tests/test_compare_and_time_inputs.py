"""Defects found driving ``crm time``, ``crm compare``, ``crm info`` and ``--json`` output as a user would."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import coarse_of, flat, synthetic_scene
from typer.testing import CliRunner

from crm_cli.cli import app
from crm_cli.writing import write_png

runner = CliRunner()



@pytest.fixture
def scene(tmp_path: Path) -> dict[str, Path]:
    image, gt = synthetic_scene(96, 128, seed=3)
    files = {name: tmp_path / f"{name}.png" for name in ("image", "coarse", "refined", "gt")}
    write_png(files["image"], image)
    write_png(files["coarse"], coarse_of(gt))
    write_png(files["refined"], gt)
    write_png(files["gt"], gt)
    return files


@pytest.mark.parametrize("role", ["IMAGE", "COARSE", "REFINED", "GT"])
def test_compare_refuses_an_output_that_is_one_of_its_inputs(scene: dict[str, Path], role: str) -> None:
    # `-o` naming an input (here through another spelling of its path) used to overwrite it with the
    # strip, destroying the user's photo or mask; crm refine refuses -o naming its image the same way.
    names = ("image", "coarse", "refined", "gt")
    target = scene[names[("IMAGE", "COARSE", "REFINED", "GT").index(role)]]
    before = target.read_bytes()
    spelled = target.parent / "." / target.name
    result = runner.invoke(app, ["compare", *(str(scene[name]) for name in names), "-o", str(spelled)])
    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    assert role in result.stderr and target.name in flat(result.stderr)
    assert "Traceback" not in result.output
    assert target.read_bytes() == before  # the input is untouched
    assert not list(target.parent.glob("*.tmp"))


def test_compare_still_writes_next_to_its_inputs(scene: dict[str, Path]) -> None:
    out = scene["image"].parent / "cmp.png"
    result = runner.invoke(app, ["compare", *(str(scene[n]) for n in ("image", "coarse", "refined")), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert out.stat().st_size > 0


NO_REFINEMENT = "the model does not run, so these times measure no refinement"


@pytest.mark.parametrize("kind", ["empty", "full", "faint16"])
def test_time_warns_when_the_mask_leaves_nothing_to_time(scene: dict[str, Path], tiny_weights: Path,
                                                         tmp_path: Path, kind: str) -> None:
    # A mask with no boundary is passed through without running the model, so crm time reported
    # 0.000 s per stage and ~100 MP/s with no word why (crm refine warns about the faint mask).
    mask = tmp_path / f"{kind}.png"
    if kind == "empty":
        write_png(mask, np.zeros((96, 128), np.uint8))
    elif kind == "full":
        write_png(mask, np.full((96, 128), 255, np.uint8))
    else:  # 12-bit values in a 16-bit file: read on the 16-bit scale, no pixel is above 0.5
        faint = (coarse_of(synthetic_scene(96, 128, seed=3)[1]) > 0).astype(np.uint16) * 4095
        faint[:, 64] //= 2  # a second level: 0 and one value alone would be a binary mask
        write_png(mask, faint)
    args = ["time", str(scene["image"]), str(mask), "-n", "1", "-w", str(tiny_weights), "--device", "cpu"]
    result = runner.invoke(app, [*args, "--json", "-q"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)  # stdout holds the JSON report alone
    assert report["width"] == 128 and report["height"] == 96
    text = flat(result.stderr)
    assert text.startswith(f"warning: {mask}") and NO_REFINEMENT in text
    if kind == "faint16":
        assert "no pixel of the mask is above 0.5" in text


def test_time_says_nothing_of_the_kind_for_an_ordinary_mask(scene: dict[str, Path], tiny_weights: Path) -> None:
    result = runner.invoke(app, ["time", str(scene["image"]), str(scene["coarse"]), "-n", "1",
                                 "-w", str(tiny_weights), "--device", "cpu", "--json", "-q"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["width"] == 128
    assert NO_REFINEMENT not in flat(result.stderr) and "warning:" not in result.stderr


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full (Linux)")
def test_json_to_a_full_disk_is_one_error_line_not_a_traceback(scene: dict[str, Path]) -> None:
    with open("/dev/full", "w") as full:
        done = subprocess.run([sys.executable, "-m", "crm_cli", "score", str(scene["refined"]), str(scene["gt"]),
                               "--json"], stdout=full, stderr=subprocess.PIPE, text=True, timeout=120)
    assert done.returncode == 1
    assert "error: cannot write the JSON to standard output: No space left on device" in flat(done.stderr)
    assert "Traceback" not in done.stderr and "Exception ignored" not in done.stderr


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full (Linux)")
def test_an_image_to_a_full_disk_names_standard_output(scene: dict[str, Path], tiny_weights: Path) -> None:
    with open("/dev/full", "w") as full:
        done = subprocess.run([sys.executable, "-m", "crm_cli", "refine", str(scene["image"]), str(scene["coarse"]),
                               "-o", "-", "-w", str(tiny_weights), "-d", "cpu"],
                              stdout=full, stderr=subprocess.PIPE, text=True, timeout=120)
    assert done.returncode == 1
    assert "error: cannot write the image to standard output: No space left on device" in flat(done.stderr)
    assert "Traceback" not in done.stderr and "Exception ignored" not in done.stderr


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full (Linux)")
def test_a_failure_record_that_cannot_be_written_leaves_the_cause_and_its_code(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with open("/dev/full", "w") as full:
        done = subprocess.run([sys.executable, "-m", "crm_cli", "batch", str(tmp_path / "empty"), "-o",
                               str(tmp_path / "out"), "--json"], stdout=full, stderr=subprocess.PIPE, text=True,
                              timeout=120)
    assert done.returncode == 2  # no pairs: a usage error, whatever happened to the record
    assert "no pairs found" in flat(done.stderr) and "standard output" not in done.stderr
    assert "Traceback" not in done.stderr and "Exception ignored" not in done.stderr
