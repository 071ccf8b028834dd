"""A dataset builder's audit of `crm batch` (session 51): outputs that are links to the inputs,
folders that cannot be read, and pairs left to a run that has died since."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
from conftest import write_scene_files
from typer.testing import CliRunner

from crm_cli.cli import app

runner = CliRunner()


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture()
def pairs(tmp_path: Path) -> Path:
    """A BIG-layout folder of three small pairs p0-p2."""
    folder = tmp_path / "in"
    for index in range(3):
        write_scene_files(folder, f"p{index}_im", f"p{index}_seg", size=(96, 128), seed=index)
    return folder


@pytest.mark.parametrize("overwrite", [False, True])
@pytest.mark.parametrize("how", ["symlink", "hardlink"])
def test_an_output_that_is_a_link_to_an_input_fails_and_leaves_the_input_alone(
        pairs: Path, tmp_path: Path, how: str, overwrite: bool) -> None:
    """Seeding the output folder with links to the coarse masks wrote the refined mask through the
    link into the input (--overwrite), or counted the coarse mask as done (exit 0 either way)."""
    out = tmp_path / "out"
    out.mkdir()
    own_mask, other_photo = pairs / "p0_seg.png", pairs / "p2_im.jpg"
    for output, source in ((out / "p0_mask.png", own_mask), (out / "p1_mask.png", other_photo)):
        os.symlink(source, output) if how == "symlink" else os.link(source, output)
    before = {path: digest(path) for path in pairs.iterdir()}
    result = runner.invoke(app, ["batch", str(pairs), "-o", str(out), "-d", "cpu", "--json",
                                 *(["--overwrite"] if overwrite else [])])
    assert result.exit_code == 1, result.output
    assert {path: digest(path) for path in pairs.iterdir()} == before  # no input was written
    items = {item["name"]: item for item in json.loads(result.stdout)["items"]}
    assert items["p2"]["status"] == "ok"
    for name, source in (("p0", own_mask), ("p1", other_photo)):
        assert items[name]["status"] == "failed"
        assert items[name]["error"] == (f"{out / f'{name}_mask.png'} is the input {source} (a link to it); "
                                        f"remove {out / f'{name}_mask.png'} to refine {name}")
        assert items[name]["error"] in " ".join(result.stderr.split())
    os.unlink(out / "p0_mask.png")  # as the message says: the rerun refines it
    rerun = runner.invoke(app, ["batch", str(pairs), "-o", str(out), "-d", "cpu", "--json"])
    assert {item["name"]: item["status"] for item in json.loads(rerun.stdout)["items"]} == {
        "p0": "ok", "p1": "failed", "p2": "skipped"}
    assert not (out / "p0_mask.png").is_symlink() and digest(own_mask) == before[own_mask]


def test_an_output_linked_elsewhere_is_still_written_through(pairs: Path, tmp_path: Path) -> None:
    """A link to a file that is no input (outputs kept on another disk) is written as before."""
    out, elsewhere = tmp_path / "out", tmp_path / "elsewhere"
    out.mkdir()
    elsewhere.mkdir()
    os.symlink(elsewhere / "p0_mask.png", out / "p0_mask.png")  # dangling until written
    result = runner.invoke(app, ["batch", str(pairs), "-o", str(out), "-d", "cpu", "--json"])
    assert result.exit_code == 0, result.output
    assert (out / "p0_mask.png").is_symlink() and (elsewhere / "p0_mask.png").stat().st_size > 0
